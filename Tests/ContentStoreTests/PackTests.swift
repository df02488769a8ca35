import Foundation
import Glibc
import Testing
@testable import ContentStore
import MeshCore

/// The pack-file layer: what garbage collection frees, and what opening a store repairs.
@Suite struct PackTests {
    @Test(arguments: [true, false])
    func garbageCollectionFreesTheSpaceOfUnreferencedChunks(punchHoles: Bool) throws {
        let t = TempDir(); defer { t.cleanup() }
        var o = testOptions()
        o.punchHoles = punchHoles   // false: the pack is compacted (copied) instead
        let store = try ContentStore.open(path: t.sub("s"), options: o)
        let a = try store.importBytes(randomBytes(1_500_000, seed: 70))
        let bData = textBytes(600_000, seed: 71) + randomBytes(400_000, seed: 72)
        let b = try store.importBytes(bData)
        let before = store.usedBytes
        try store.removeBlob(a.digest)
        let freed = try store.collectGarbage()
        #expect(freed > 1_300_000, "freed \(freed) of a 1.5 MB blob")
        #expect(store.usedBytes + 1_300_000 < before)
        #expect(a.chunks.allSatisfy { !store.hasChunk($0.digest) })
        #expect(try store.reader(for: b.digest).bytes(0..<b.size) == bData)
        #expect(try store.verify().isHealthy)
        let kept = try store.chunkDigests()
        store.close()
        // The rewritten index is what a new process sees.
        let reopened = try ContentStore.open(path: t.sub("s"), options: o)
        #expect(try reopened.chunkDigests() == kept)
        #expect(try reopened.reader(for: b.digest).bytes(0..<b.size) == bData)
        #expect(try reopened.verify().orphanedChunks.isEmpty)
    }

    @Test func openingRepairsATornIndexAndCutsUnindexedPackBytes() throws {
        let t = TempDir(); defer { t.cleanup() }
        let data = textBytes(400_000, seed: 80)
        var m: BlobManifest
        var pack = "", idx = ""
        do {
            let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
            m = try store.importBytes(data)
            let loc = try store.location(of: m.chunks[0].digest)
            pack = loc.pack.packPath; idx = loc.pack.indexPath
            store.close()
        }
        let packSize = fileSize(pack), indexSize = fileSize(idx)
        // What a crash mid-append leaves: frame bytes nobody indexed and half an index record.
        appendBytes(pack, randomBytes(70_000, seed: 81))
        appendBytes(idx, randomBytes(30, seed: 82))
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        #expect(fileSize(pack) == packSize)
        #expect(fileSize(idx) == indexSize)
        #expect(try store.reader(for: m.digest).bytes(0..<m.size) == data)
        #expect(try store.verify().isHealthy)
        store.close()
        // A damaged record in the middle of an index is reported, and the chunk it named is missing.
        flipBit(idx, at: UInt64(PackIndexRecord.size + 3))
        let damaged = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let report = try damaged.verify()
        #expect(!report.isHealthy)
        #expect(report.damagedIndexes.count == 1)
        #expect(report.missingChunks.count == 1)
    }

    @Test func concurrentImportsChunkPutsAndGarbageCollectionStayConsistent() throws {
        let t = TempDir(); defer { t.cleanup() }
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let source = try ContentStore.open(path: t.sub("src"), options: testOptions())
        let received = try source.importBytes(textBytes(500_000, seed: 95))
        let inputs = (0..<4).map { randomBytes(300_000, seed: UInt64(96 + $0)) + textBytes(300_000, seed: UInt64(100 + $0)) }
        let doomed = try store.importBytes(randomBytes(400_000, seed: 104))
        try store.removeBlob(doomed.digest)
        let results = NSLock()
        nonisolated(unsafe) var manifests: [Int: BlobManifest] = [:]
        nonisolated(unsafe) var failures: [String] = []
        DispatchQueue.concurrentPerform(iterations: 6) { i in
            do {
                switch i {
                case 0..<4:
                    let m = try store.importBytes(inputs[i])
                    results.withLock { manifests[i] = m }
                case 4:
                    for c in received.distinctChunks { try store.putChunk(try source.readChunk(c.digest), digest: c.digest) }
                    try store.commitBlob(received)
                default:
                    try store.collectGarbage()
                }
            } catch {
                results.withLock { failures.append("task \(i): \(error)") }
            }
        }
        #expect(failures.isEmpty, "\(failures)")
        for (i, m) in manifests { #expect(try store.reader(for: m.digest).bytes(0..<m.size) == inputs[i]) }
        #expect(store.hasBlob(received.digest))
        try store.collectGarbage()
        let report = try store.verify()
        #expect(report.isHealthy, "\(report)")
        #expect(report.orphanedChunks.isEmpty)
        store.close()
        let reopened = try ContentStore.open(path: t.sub("s"), options: testOptions())
        #expect(try reopened.blobs().count == 5)
        #expect(try reopened.verify().isHealthy)
    }

    @Test func aVersionOneStoreIsConvertedOnOpen() throws {
        let t = TempDir(); defer { t.cleanup() }
        let data = textBytes(300_000, seed: 90)
        let m: BlobManifest
        var frames: [Digest: [UInt8]] = [:]
        do {
            let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
            m = try store.importBytes(data)
            for c in m.distinctChunks { frames[c.digest] = try store.readChunkFrame(c.digest) }
            store.close()
        }
        // Rewrite it in the version-1 layout: one file per chunk under chunks/ab/<hex>.
        FileIO.removeTree(t.sub("s/packs"))
        for (d, f) in frames {
            mkdirs(t.sub("s/chunks/\(d.hex.prefix(2))"))
            writeFile(t.sub("s/chunks/\(d.hex.prefix(2))/\(d.hex)"), f)
        }
        writeFile(t.sub("s/gquic-store"), Array("gquic-content-store 1\n".utf8))
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        #expect(!FileManager.default.fileExists(atPath: t.sub("s/chunks")))
        #expect(try store.reader(for: m.digest).bytes(0..<m.size) == data)
        #expect(try store.verify().isHealthy)
        #expect(String(decoding: readFile(t.sub("s/gquic-store")), as: UTF8.self) == "gquic-content-store 2\n")
    }
}

func fileSize(_ path: String) -> UInt64 {
    var st = stat()
    return stat(path, &st) == 0 ? UInt64(st.st_size) : 0
}

func appendBytes(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_APPEND)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

@Suite("Batched chunk puts")
struct BatchPutTests {
    @Test("a batch of received chunks lands in one pack session, reads back verified, and a bad digest anywhere in it stores nothing")
    func batchPut() throws {
        let dir = NSTemporaryDirectory() + "gquic-batch-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let chunks = (0..<50).map { i -> (digest: Digest, bytes: [UInt8]) in
            let bytes = (0..<(1000 + i * 37)).map { UInt8(truncatingIfNeeded: $0 &* (i + 3)) }
            return (Digest.of(bytes), bytes)
        }
        do {
        let store = try ContentStore.open(path: dir)
        var bad = Array(chunks[50 - 10..<50])
        bad[5].bytes[0] ^= 1
        #expect(throws: ContentStoreError.self) { try store.putChunks(bad) }
        for c in bad { #expect(!store.hasChunk(c.digest)) }
        #expect(try store.putChunks(chunks) == 50)
        #expect(try store.putChunks(Array(chunks.prefix(5))) == 0)
        for c in chunks { #expect(try store.readChunk(c.digest) == c.bytes) }
        }
        let reopened = try ContentStore.open(path: dir)
        #expect(reopened.hasChunk(chunks[49].digest))
    }

    /// Minor page faults of the calling thread so far (RUSAGE_THREAD: other tests' threads do not count).
    static func threadFaults() -> Int {
        var u = rusage()
        getrusage(__rusage_who_t(1), &u)   // RUSAGE_THREAD
        return u.ru_minflt
    }

    @Test("batches of received chunks reuse the store's write buffers instead of touching fresh memory each time")
    func writeBuffersAreReused() throws {
        let dir = NSTemporaryDirectory() + "gquic-batch-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try ContentStore.open(path: dir)
        // Six batches of 8 MiB of incompressible 64 KiB chunks, made before measuring.
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        let batches = (0..<6).map { _ in
            (0..<128).map { _ in
                var bytes = [UInt8](repeating: 0, count: 64 << 10)
                bytes.withUnsafeMutableBytes { b in
                    for i in 0..<(b.count / 8) {   // xorshift64: incompressible, so zstd keeps them raw
                        x ^= x << 13; x ^= x >> 7; x ^= x << 17
                        b.storeBytes(of: x, toByteOffset: i * 8, as: UInt64.self)
                    }
                }
                return VerifiedChunk(hashing: bytes)
            }
        }
        try store.putChunks(batches[0])   // the first batch allocates the buffers
        let before = BatchPutTests.threadFaults()
        for b in batches.dropFirst() { try store.putChunks(b) }
        let faults = BatchPutTests.threadFaults() - before
        // Copying 40 MiB into fresh buffers faults once per 4 KiB page: ~10,000 times. Reused buffers
        // are resident already (about 1,000 faults remain: the allocator's own churn and the index).
        #expect(faults < 3_000, "\(faults) page faults for 40 MiB of chunks")
        for b in batches { for c in b { #expect(store.hasChunk(c.digest)) } }
    }
}
