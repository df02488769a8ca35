import Foundation
import Glibc
import MeshCore
import Testing
@testable import MeshPeer

/// `get -o FILE` written while the blob arrives: verified chunks at their offsets in a temp file next
/// to FILE, renamed onto FILE only after the commit, removed on every failure.
@Suite struct StreamedOutputTests {
    /// A blob of `sizes.count` chunks with distinct bytes, and its chunk list.
    static func blob(_ sizes: [Int], seed: UInt8 = 1) -> (bytes: [UInt8], chunks: [VerifiedChunk], list: [(digest: Digest, size: Int)]) {
        var bytes: [UInt8] = [], chunks: [VerifiedChunk] = []
        for (i, n) in sizes.enumerated() {
            let c = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i &* 7 &+ Int(seed)) }
            chunks.append(VerifiedChunk(hashing: c))
            bytes += c
        }
        return (bytes, chunks, chunks.map { ($0.digest, $0.bytes.count) })
    }

    static func tempDir() -> String {
        let dir = NSTemporaryDirectory() + "gquic-stream-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }
    static func contents(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { Array($0) } }
    static func partials(in dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.contains(".gquic-partial-") }
    }

    static let unreadable: @Sendable (Digest) throws -> VerifiedChunk = { d in throw PeerError.protocolError("no chunk \(d) here") }

    @Test func chunksInAnyOrderLandAtTheirOffsetsAndTheFileAppearsOnlyAtFinish() throws {
        let dir = Self.tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = Self.blob([1000, 70_000, 3, 65_536, 12_345])
        let target = dir + "/out.bin"
        let o = try StreamedOutput(target: target, blob: Digest.of(b.bytes), chunks: b.list, sync: true, owner: nil)
        #expect(o.tempPath.hasPrefix(dir + "/.out.bin.gquic-partial-\(getpid())-"))
        #expect(Self.exists(o.tempPath) && !Self.exists(target))
        for i in [3, 0, 4, 1, 2] { o.write(b.chunks[i]) }
        #expect(o.writtenChunks == 5 && o.state == .writing && !Self.exists(target))
        o.finish(committed: b.list, read: Self.unreadable)
        #expect(o.state == .done)
        #expect(Self.contents(target) == b.bytes)
        #expect(Self.partials(in: dir).isEmpty)
    }

    @Test func positionsNotWrittenAreFilledFromTheStoreAndARepeatedChunkGoesEverywhere() throws {
        let dir = Self.tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = Self.blob([500, 800, 500])
        // Chunk 2 repeats chunk 0: one write fills both positions.
        let chunks = [b.chunks[0], b.chunks[1], b.chunks[0]]
        let bytes = chunks.flatMap(\.bytes)
        let list = chunks.map { ($0.digest, $0.bytes.count) }
        let target = dir + "/dup.bin"
        let o = try StreamedOutput(target: target, blob: Digest.of(bytes), chunks: list, sync: false, owner: nil)
        o.write(chunks[0])
        #expect(o.writtenChunks == 2)
        // A chunk the blob does not list is ignored.
        o.write(VerifiedChunk(hashing: [9, 9, 9]))
        #expect(o.writtenChunks == 2)
        let store = [b.chunks[1].digest: b.chunks[1]]
        o.finish(committed: list) { d in
            guard let c = store[d] else { throw PeerError.protocolError("missing") }
            return c
        }
        #expect(o.state == .done)
        #expect(Self.contents(target) == bytes)
    }

    @Test func aFailureLeavesNothingAtTheTargetAndNoTempFile() throws {
        let dir = Self.tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = Self.blob([4096, 4096, 4096])
        let other = Self.blob([4096, 4096, 4096], seed: 9)
        // The commit names another chunk list than the one the output was opened with.
        let o1 = try StreamedOutput(target: dir + "/a", blob: Digest.of(b.bytes), chunks: b.list, sync: true, owner: nil)
        b.chunks.forEach(o1.write)
        o1.finish(committed: other.list, read: Self.unreadable)
        guard case .dropped = o1.state else { Issue.record("a changed chunk list must drop the output"); return }
        // A position the store cannot fill.
        let o2 = try StreamedOutput(target: dir + "/b", blob: Digest.of(b.bytes), chunks: b.list, sync: true, owner: nil)
        o2.write(b.chunks[0])
        o2.finish(committed: b.list, read: Self.unreadable)
        guard case .dropped = o2.state else { Issue.record("an unfillable position must drop the output"); return }
        // Abandoned (the fetch failed, the get went away): later writes and the finish do nothing.
        let o3 = try StreamedOutput(target: dir + "/c", blob: Digest.of(b.bytes), chunks: b.list, sync: true, owner: nil)
        o3.write(b.chunks[1])
        o3.abandon("test")
        b.chunks.forEach(o3.write)
        o3.finish(committed: b.list, read: Self.unreadable)
        #expect(o3.state == .dropped("test"))
        for name in ["a", "b", "c"] { #expect(!Self.exists(dir + "/" + name)) }
        #expect(Self.partials(in: dir).isEmpty)
    }

    @Test func anExistingTargetIsReplacedOnlyByTheCompleteFile() throws {
        let dir = Self.tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = Self.blob([3000, 3000])
        let target = dir + "/old"
        FileManager.default.createFile(atPath: target, contents: Data("old contents".utf8))
        let o = try StreamedOutput(target: target, blob: Digest.of(b.bytes), chunks: b.list, sync: true, owner: nil)
        o.write(b.chunks[1])
        #expect(Self.contents(target) == Array("old contents".utf8))
        o.write(b.chunks[0])
        o.finish(committed: b.list, read: Self.unreadable)
        #expect(Self.contents(target) == b.bytes)
    }

    @Test func partialFilesOfDeadProcessesAreRemovedWhenTheTargetIsWrittenAgain() throws {
        let dir = Self.tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        let dead = p.processIdentifier
        let stale = ".out.bin.gquic-partial-\(dead)-12345", live = ".out.bin.gquic-partial-\(getpid())-777"
        let other = ".other.bin.gquic-partial-\(dead)-1", odd = ".out.bin.gquic-partial-\(dead)-x"
        for name in [stale, live, other, odd] { FileManager.default.createFile(atPath: dir + "/" + name, contents: Data([1])) }
        let b = Self.blob([100])
        let o = try StreamedOutput(target: dir + "/out.bin", blob: Digest.of(b.bytes), chunks: b.list, sync: false, owner: nil)
        #expect(!Self.exists(dir + "/" + stale))
        for name in [live, other, odd] { #expect(Self.exists(dir + "/" + name)) }
        o.abandon("done")
    }

    @Test func theRegistryOpensFinishesAndClaims() throws {
        let dir = Self.tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = Self.blob([2000, 3000, 4000])
        let blob = Digest.of(b.bytes)
        let outputs = StreamedOutputs()
        #expect(outputs.claim(blob, target: dir + "/x", timeout: .milliseconds(10)) == nil)
        outputs.request(blob, .init(target: dir + "/x", sync: true, owner: getpid()))
        #expect(outputs.wants(blob) && outputs.writing(blob).isEmpty)
        #expect(outputs.open(blob, chunks: b.list).isEmpty)
        #expect(!outputs.wants(blob) && outputs.writing(blob).count == 1)
        outputs.writing(blob).forEach { o in b.chunks.forEach(o.write) }
        outputs.finish(blob, committed: b.list, read: Self.unreadable)
        #expect(outputs.claim(blob, target: dir + "/x", timeout: .seconds(10)) == .done)
        #expect(Self.contents(dir + "/x") == b.bytes)
        #expect(outputs.count == (0, 0))

        // A failed fetch drops its outputs; the claim says so (the caller then exports).
        outputs.request(blob, .init(target: dir + "/y", sync: false, owner: getpid()))
        outputs.open(blob, chunks: b.list)
        outputs.fail(blob, "no holder")
        guard case .dropped? = outputs.claim(blob, target: dir + "/y", timeout: .seconds(1)) else {
            Issue.record("a failed fetch must drop the output"); return
        }
        // A file that cannot be created is reported, and nothing is left waiting.
        outputs.request(blob, .init(target: dir + "/no/such/dir/z", sync: false, owner: getpid()))
        #expect(outputs.open(blob, chunks: b.list).count == 1)
        #expect(outputs.count == (0, 0))
        #expect(Self.partials(in: dir).isEmpty)
    }

    @Test func theSweepDropsWhatAnExitedGetAskedForAndAbandonRemovesThePartialFile() throws {
        let dir = Self.tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let b = Self.blob([2000, 3000])
        let blob = Digest.of(b.bytes)
        // A pid that is surely gone: a child that has exited and been reaped.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        let dead = p.processIdentifier
        let outputs = StreamedOutputs()
        outputs.request(blob, .init(target: dir + "/dead", sync: false, owner: dead))
        outputs.request(blob, .init(target: dir + "/alive", sync: false, owner: getpid()))
        outputs.open(blob, chunks: b.list)
        outputs.writing(blob).forEach { $0.write(b.chunks[0]) }
        #expect(Self.partials(in: dir).count == 2)
        outputs.sweep()
        #expect(outputs.count == (0, 1))
        #expect(Self.partials(in: dir).count == 1 && Self.partials(in: dir)[0].hasPrefix(".alive."))
        // A request whose get exited before the chunk list came is dropped too.
        outputs.request(blob, .init(target: dir + "/early", sync: false, owner: dead))
        outputs.sweep()
        #expect(!outputs.wants(blob))
        #expect(outputs.abandon(blob, target: dir + "/alive", "interrupted") == 1)
        #expect(Self.partials(in: dir).isEmpty && outputs.count == (0, 0))
    }

    @Test func theControlServerKnowsThePidOfTheProcessOnTheOtherEnd() throws {
        let dir = Self.tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = ControlServer { req in .json(["pid": req.peerPID.map { "\($0)" } ?? "none"]) }
        try server.listen(unixPath: dir + "/c.sock")
        defer { server.stop() }
        let r = try ControlClient(socketPath: dir + "/c.sock").request("GET", "/")
        #expect(r.status == 200)
        #expect(String(decoding: r.body, as: UTF8.self) == "{\"pid\":\"\(getpid())\"}")
    }
}
