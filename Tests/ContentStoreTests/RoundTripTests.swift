import Foundation
import Glibc
import Testing
@testable import ContentStore
import MeshCore

@Suite struct RoundTripTests {
    @Test func fileRoundTripIsByteExactWithAStableDigest() throws {
        let t = TempDir(); defer { t.cleanup() }
        let data = randomBytes(700_000, seed: 3) + textBytes(900_000, seed: 4)
        writeFile(t.sub("in.bin"), data)
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let m = try store.importFile(at: t.sub("in.bin"))
        #expect(m.digest == Digest.of(data))
        #expect(m.size == UInt64(data.count))
        try store.export(m.digest, to: t.sub("out.bin"))
        #expect(readFile(t.sub("out.bin")) == data)
        // Another store, another run, one worker: same digest, same chunks.
        let other = try ContentStore.open(path: t.sub("s2"), options: testOptions(workers: 1))
        let m2 = try other.importBytes(data)
        #expect(m2 == m)
        // Random chunks are stored raw (flagged), text chunks compressed.
        let stored = m.distinctChunks.map { store.storedSize(ofChunk: $0.digest)! }
        #expect(stored.first! >= UInt64(m.chunks.first!.length))
        #expect(stored.last! < UInt64(m.chunks.last!.length) / 2)
        // Empty file.
        let empty = try store.importBytes([])
        #expect(empty.digest == Digest.of([UInt8]()))
        try store.export(empty.digest, to: t.sub("empty"))
        #expect(readFile(t.sub("empty")).isEmpty)
    }

    @Test func rangeReadsStreamAnySlice() throws {
        let t = TempDir(); defer { t.cleanup() }
        let data = textBytes(300_000, seed: 5)
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let m = try store.importBytes(data)
        let reader = try store.reader(for: m.digest)
        var rng = SeededRandom(seed: 9)
        for _ in 0..<40 {
            let a = Int(rng.next() % UInt64(data.count)), b = Int(rng.next() % UInt64(data.count))
            let r = min(a, b)..<max(a, b)
            #expect(try reader.bytes(UInt64(r.lowerBound)..<UInt64(r.upperBound)) == Array(data[r]))
        }
        #expect(try reader.bytes(0..<UInt64(data.count) + 100) == data)
        // Pieces are handed over one chunk at a time.
        var pieces = 0
        try reader.read(range: 0..<m.size) { piece in pieces += 1; #expect(piece.count <= 65536) }
        #expect(pieces == m.chunks.count)
    }

    static func makeTree(_ root: String, seed: UInt64) {
        mkdirs(root + "/bin"); mkdirs(root + "/lib/x86_64"); mkdirs(root + "/share/empty")
        writeFile(root + "/bin/tool", randomBytes(150_000, seed: seed) + textBytes(60_000, seed: seed + 1), mode: 0o755)
        writeFile(root + "/lib/x86_64/libfoo.so", textBytes(250_000, seed: seed + 2))
        writeFile(root + "/lib/readme.txt", Array("hello\n".utf8), mode: 0o600)
        writeFile(root + "/lib/zero", [])
        symlink("x86_64/libfoo.so", root + "/lib/libfoo.so")
    }

    @Test func treeRoundTripIsByteExactAndDeterministic() throws {
        let t = TempDir(); defer { t.cleanup() }
        Self.makeTree(t.sub("tree"), seed: 10)
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let m = try store.importTree(at: t.sub("tree"))
        #expect(m.kind == .tree)
        #expect(m.entries.map(\.path) == ["bin", "bin/tool", "lib", "lib/libfoo.so", "lib/readme.txt", "lib/x86_64", "lib/x86_64/libfoo.so", "lib/zero", "share", "share/empty"])
        try store.export(m.digest, to: t.sub("out"))
        let (status, diff) = run(["/usr/bin/diff", "-r", "--no-dereference", t.sub("tree"), t.sub("out")])
        #expect(status == 0, "diff: \(diff)")
        var st = stat()
        lstat(t.sub("out/bin/tool"), &st); #expect(st.st_mode & 0o7777 == 0o755)
        lstat(t.sub("out/lib/readme.txt"), &st); #expect(st.st_mode & 0o7777 == 0o600)
        lstat(t.sub("out/lib/libfoo.so"), &st); #expect(st.st_mode & S_IFMT == S_IFLNK)
        // Re-importing the exported copy (new inodes, new times) into a fresh store: same digest.
        let other = try ContentStore.open(path: t.sub("s2"), options: testOptions(workers: 1))
        #expect(try other.importTree(at: t.sub("out")).digest == m.digest)
        // A changed permission bit changes the digest.
        chmod(t.sub("out/lib/zero"), 0o600)
        #expect(try other.importTree(at: t.sub("out")).digest != m.digest)
        // Exporting onto an existing path is refused and leaves it alone.
        #expect(throws: ContentStoreError.self) { try store.export(m.digest, to: t.sub("out")) }
    }

    @Test func manifestsRoundTripThroughTheWireCodecAndRejectHostileCounts() throws {
        var m = BlobManifest()
        m.digest = Digest.of([1])
        m.size = 10
        m.chunks = [ChunkRef(digest: Digest.of([2]), length: 10)]
        let bytes = m.wireBytes()
        #expect(try BlobManifest(wireBytes: bytes) == m)
        // A chunk count of 2^30 in a short buffer is refused before anything is allocated.
        var w = WireWriter()
        w.varint(1); w.raw(Digest.of([1]).bytes); w.u8(0); w.varint(10); w.varint(0); w.varint(1 << 30)
        #expect(throws: WireError.self) { try BlobManifest(wireBytes: w.bytes) }
        // Tree entries with ".." are refused by validation.
        var tree = BlobManifest()
        tree.kind = .tree
        tree.entries = [TreeEntry(path: "../etc", type: .directory, mode: 0o755)]
        tree.digest = TreeListing(entries: tree.entries).digest
        let e = expectError(.pathTraversal) { try tree.validate() }
        #expect(e != nil)
    }
}

/// The import hashes with the SHA extensions (chunk digests interleaved with the blob digest) or,
/// on CPUs without them, with OpenSSL one message at a time: both must give the same manifest.
@Suite struct ImportHashingPathTests {
    @Test func shaLanesAndOpenSSLGiveTheSameManifest() throws {
        let t = TempDir(); defer { t.cleanup() }
        // Large enough for two workers and many chunks; odd sizes exercise the padding paths.
        let data = randomBytes(3_000_017, seed: 41) + textBytes(2_500_003, seed: 42) + [UInt8](repeating: 9, count: 700_001)
        let lanes = try ContentStore.open(path: t.sub("a"), options: testOptions(workers: 2))
        let openssl = try ContentStore.open(path: t.sub("b"), options: testOptions(workers: 2))
        openssl.hashWithSHALanes = false
        let m1 = try lanes.importBytes(data)
        let m2 = try openssl.importBytes(data)
        #expect(m1 == m2)
        #expect(m1.digest == Digest.of(data))
        var at = 0
        for c in m1.chunks {
            let n = Int(c.length)
            #expect(c.digest == Digest.of(data[at..<(at + n)]))
            at += n
        }
        #expect(try lanes.verify().isHealthy)
        #expect(try openssl.verify().isHealthy)
    }
}
