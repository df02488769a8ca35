import Foundation
import Glibc
import Testing
@testable import ContentStore
import MeshCore

@Suite(.serialized) struct FaultTests {
    @Test func aFlippedBitIsDetectedOnReadAndByVerify() throws {
        let t = TempDir(); defer { t.cleanup() }
        let data = textBytes(200_000, seed: 20)
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let m = try store.importBytes(data)
        #expect(try store.verify().isHealthy)
        let victim = m.chunks[1].digest
        let loc = try store.location(of: victim)
        flipBit(loc.pack.packPath, at: loc.offset + UInt64(loc.length / 2))
        let e = expectError(.corruptChunk) { _ = try store.readChunk(victim) }
        #expect(e?.digest == victim)
        #expect(expectError(.corruptChunk) { _ = try store.reader(for: m.digest).bytes(0..<m.size) } != nil)
        // A failed get leaves nothing at the output path.
        #expect(throws: ContentStoreError.self) { try store.export(m.digest, to: t.sub("out")) }
        #expect(!FileManager.default.fileExists(atPath: t.sub("out")))
        let report = try store.verify()
        #expect(!report.isHealthy)
        #expect(report.corruptChunks.map(\.digest) == [victim])
        #expect(report.corruptChunks.first?.affectedBlobs == [m.digest])
        // The CLI names it and exits non-zero.
        if let fetch = gquicFetchPath() {
            store.close()
            let (status, out) = run([fetch, "verify", "--store", t.sub("s")])
            #expect(status == 1)
            #expect(out.contains(victim.description))
        } else {
            Issue.record("gquic-fetch was not built next to the tests; run swift build --build-tests")
        }
    }

    @Test("commit and export hash each byte once, yet still name a corrupt chunk and keep nothing of it")
    func oneHashPassStillNamesACorruptChunk() throws {
        let t = TempDir(); defer { t.cleanup() }
        let data = randomBytes(300_000, seed: 21)   // incompressible: stored raw, so a flipped bit still decodes
        let src = try ContentStore.open(path: t.sub("src"), options: testOptions())
        let m = try src.importBytes(data)
        // Chunks verified on arrival go in without a second hash, then commit checks the whole blob.
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let chunks = try m.chunks.map { VerifiedChunk(hashing: try src.readChunk($0.digest)) }
        #expect(try store.putChunks(chunks) == Set(m.chunks.map(\.digest)).count)
        let victim = m.chunks[1].digest
        let loc = try store.location(of: victim)
        flipBit(loc.pack.packPath, at: loc.offset + UInt64(loc.length / 2))
        #expect(expectError(.corruptChunk) { try store.commitBlob(m) }?.digest == victim)
        #expect(!store.hasBlob(m.digest))
        // Export from a committed blob whose chunk went bad: named, and no output file.
        let srcLoc = try src.location(of: victim)
        flipBit(srcLoc.pack.packPath, at: srcLoc.offset + UInt64(srcLoc.length / 2))
        #expect(expectError(.corruptChunk) { try src.export(m.digest, to: t.sub("out")) }?.digest == victim)
        #expect(!FileManager.default.fileExists(atPath: t.sub("out")))
        #expect(try FileManager.default.contentsOfDirectory(atPath: t.path).filter { $0.contains("gquic-partial") }.isEmpty)
    }

    @Test func aChildKilledMidImportLeavesNoPartialBlob() throws {
        guard let fetch = gquicFetchPath() else {
            Issue.record("gquic-fetch was not built next to the tests; run swift build --build-tests"); return
        }
        let t = TempDir(); defer { t.cleanup() }
        run(["/bin/sh", "-c", "head -c \(96 << 20) /dev/urandom > \(t.sub("big.bin"))"])
        let p = Process()
        p.executableURL = URL(fileURLWithPath: fetch)
        p.arguments = ["add", "--store", t.sub("s"), t.sub("big.bin")]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        // Wait until the child has appended chunks to a pack, then kill it without warning.
        let deadline = Date().addingTimeInterval(60)
        var sawChunks = false
        while Date() < deadline && p.isRunning {
            if packBytes(t.sub("s/packs")) > 1 << 20 { sawChunks = true; break }
            usleep(2000)
        }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(sawChunks, "the child never started writing chunks")
        #expect(p.terminationReason == .uncaughtSignal, "the child finished before it could be killed")
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        #expect(try store.blobs().isEmpty)
        #expect(tempFiles(t.sub("s/tmp")).isEmpty)
        // Pack bytes no durable index record covers (the interrupted append) were cut off on open.
        #expect(try packBytes(t.sub("s/packs")) == store.chunkDigests().reduce(UInt64(0)) { $0 + store.storedSize(ofChunk: $1)! })
        let report = try store.verify()
        #expect(report.isHealthy, "\(report)")
        #expect(report.orphanedChunks.count == (try store.chunkDigests()).count)
        try store.collectGarbage()
        #expect(try store.chunkDigests().isEmpty)
        #expect(packBytes(t.sub("s/packs")) == 0)
        // And the same import now completes.
        let m = try store.importFile(at: t.sub("big.bin"))
        #expect(try store.blobs() == [m.digest])
    }

    @Test func aFullDiskGivesAClearErrorAndNoPartialBlob() throws {
        let t = TempDir(); defer { t.cleanup() }
        let mnt = t.sub("small")
        mkdirs(mnt)
        guard mount("tmpfs", mnt, "tmpfs", 0, "size=2m") == 0 else {
            print("SKIPPED aFullDiskGivesAClearErrorAndNoPartialBlob: mounting a tmpfs is not permitted here (errno \(errno)); run as root")
            return
        }
        defer { umount2(mnt, Int32(MNT_DETACH)) }
        writeFile(t.sub("big.bin"), randomBytes(6 << 20, seed: 40))
        do {
            let store = try ContentStore.open(path: mnt + "/s", options: testOptions())
            let e = expectError(.noSpace) { try store.importFile(at: t.sub("big.bin")) }
            #expect(e != nil)
            #expect(e?.description.contains("no space left") == true)
            #expect(try store.blobs().isEmpty)
            #expect(packBytes(mnt + "/s/packs") == 0, "the failed import left pack data")
        }
        let reopened = try ContentStore.open(path: mnt + "/s", options: testOptions())
        #expect(try reopened.blobs().isEmpty)
        #expect(tempFiles(mnt + "/s/tmp").isEmpty)
        #expect(try reopened.verify().isHealthy)
        // Once space is freed the store works again.
        try reopened.collectGarbage()
        #expect(try reopened.importBytes(textBytes(100_000, seed: 41)).size == 100_000)
    }

    @Test func aManifestListingAMissingChunkIsRefused() throws {
        let t = TempDir(); defer { t.cleanup() }
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let data = textBytes(100_000, seed: 50)
        let m = try store.importBytes(data)
        let other = try ContentStore.open(path: t.sub("s2"), options: testOptions())
        for c in m.chunks.dropFirst() { try other.putChunk(try store.readChunk(c.digest), digest: c.digest) }
        let e = expectError(.missingChunk) { try other.commitBlob(m) }
        #expect(e?.digest == m.chunks[0].digest)
        #expect(!other.hasBlob(m.digest))
        // A chunk that does not match its digest is refused too.
        #expect(expectError(.digestMismatch) { try other.putChunk([1, 2, 3], digest: m.chunks[0].digest) } != nil)
        try other.putChunk(try store.readChunk(m.chunks[0].digest), digest: m.chunks[0].digest)
        try other.commitBlob(m)
        #expect(try other.reader(for: m.digest).bytes(0..<m.size) == data)
    }

    @Test func capacityEvictsLeastRecentlyUsedUnpinnedBlobs() throws {
        let t = TempDir(); defer { t.cleanup() }
        var o = testOptions()
        o.capacityBytes = 2_600_000
        let store = try ContentStore.open(path: t.sub("s"), options: o)
        let a = try store.importBytes(randomBytes(1_000_000, seed: 60))
        try store.pin(a.digest)
        let b = try store.importBytes(randomBytes(1_000_000, seed: 61))
        usleep(20_000)
        let c = try store.importBytes(randomBytes(1_000_000, seed: 62))
        #expect(store.hasBlob(a.digest), "pinned blob was evicted")
        #expect(!store.hasBlob(b.digest), "least recently used blob was kept")
        #expect(store.hasBlob(c.digest))
        #expect(store.usedBytes <= 2_600_000)
        #expect(b.chunks.allSatisfy { !store.hasChunk($0.digest) })
        #expect(try store.verify().isHealthy)
    }
}

/// Bytes in the pack files (not indexes) of a store's packs/ directory.
func packBytes(_ dir: String) -> UInt64 {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    return names.filter { $0.hasSuffix(".pack") }.reduce(UInt64(0)) { total, name in
        var st = stat()
        return total + (stat(dir + "/" + name, &st) == 0 ? UInt64(st.st_size) : 0)
    }
}

func flipBit(_ path: String, at offset: UInt64) {
    let fd = open(path, O_RDWR)
    var b: UInt8 = 0
    _ = pread(fd, &b, 1, off_t(offset))
    b ^= 0x10
    _ = pwrite(fd, &b, 1, off_t(offset))
    close(fd)
}

/// Regular files left anywhere under a store's tmp/ (its fan-out subdirectories do not count).
func tempFiles(_ dir: String) -> [String] {
    var out: [String] = []
    var isDir: ObjCBool = false
    for p in FileManager.default.subpaths(atPath: dir) ?? [] where FileManager.default.fileExists(atPath: dir + "/" + p, isDirectory: &isDir) && !isDir.boolValue {
        out.append(p)
    }
    return out
}
