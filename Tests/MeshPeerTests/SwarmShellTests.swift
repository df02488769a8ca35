import ContentStore
import Foundation
import MeshCore
import Swarm
import Synchronization
import Testing
@testable import MeshPeer

/// Two real swarm shells over real content stores in temporary directories: one holds a blob, the
/// other fetches it. The test plays the host: one lock around the shells (as `CoreHost` has), their
/// outboxes passed to the other shell by hand, ticks when asked for, and `reenter` on another thread.
final class ShellPair: @unchecked Sendable {
    let dir: String
    let ids: [NodeID]
    let stores: [ContentStore]
    let shells: [SwarmShell]
    /// The host's lock: every call into a shell holds it.
    let hostLock = NSLock()
    private let queue = Mutex<[(to: Int, PeerMessage)]>([])
    final class EventLog: Sendable { let list = Mutex<[SwarmShellEvent]>([]) }
    let events: EventLog

    init(maxWritingBytes: Int = 64 << 20) throws {
        dir = NSTemporaryDirectory() + "swarm-shell-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        ids = (0..<2).map(ShellPair.id)
        let dir = dir
        let stores = try (0..<2).map { try ContentStore.open(path: "\(dir)/store\($0)") }
        self.stores = stores
        let events = EventLog()
        self.events = events
        shells = (0..<2).map { i in
            SwarmShell(swarm: SwarmCore(me: ShellPair.id(i), seed: UInt64(i + 1)), store: stores[i], maxWritingBytes: maxWritingBytes) { e in
                if i == 1 { events.list.withLock { $0.append(e) } }
            }
        }
        for i in 0..<2 {
            let shell = shells[i]
            shell.reenter = { [self] body in
                DispatchQueue.global().async { self.carryOut(i, self.locked { body(shell, SystemClock().now()) }) }
            }
        }
        for i in 0..<2 {
            carryOut(i, locked { shells[i].linkChanged(.up(peer: ids[1 - i], address: PeerAddress(host: "n\(1 - i)", port: 1)), now: SystemClock().now()) })
        }
    }

    static func id(_ i: Int) -> NodeID { NodeID(digest: Digest.of(Array("shell-\(i)".utf8))) }

    deinit {
        stores.forEach { $0.close() }
        try? FileManager.default.removeItem(atPath: dir)
    }

    func locked<T>(_ body: () -> T) -> T { hostLock.lock(); defer { hostLock.unlock() }; return body() }

    func carryOut(_ from: Int, _ out: Outbox) {
        queue.withLock { q in
            for m in out.messages { q.append((1 - from, PeerMessage(peer: ids[from], traffic: m.traffic, frame: m.frame))) }
        }
    }

    /// Delivers queued messages and ticks both shells until `done` or `seconds` pass; false on timeout.
    func pump(seconds: Double, until done: () -> Bool) -> Bool {
        let end = Date(timeIntervalSinceNow: seconds)
        while Date() < end {
            if done() { return true }
            let batch = queue.withLock { q in defer { q = [] }; return q }
            for (to, m) in batch { carryOut(to, locked { shells[to].receive(m, now: SystemClock().now()) }) }
            for i in 0..<2 { carryOut(i, locked { shells[i].tick(now: SystemClock().now()) }) }
            if batch.isEmpty { Thread.sleep(forTimeInterval: 0.002) }
        }
        return done()
    }

    /// Node 0 holds `size` random bytes as a blob; `stall` (a queue of one of the shells) is stuck
    /// until the returned gate is signalled; then node 1 starts fetching.
    func start(size: Int, seed: UInt64, stall: DispatchQueue) throws -> (BlobManifest, [UInt8], DispatchSemaphore) {
        let bytes = SwarmShellTests.randomBytes(size, seed: seed)
        let m = try stores[0].importBytes(bytes)
        carryOut(0, locked { shells[0].hold(m, now: SystemClock().now()) })
        let gate = DispatchSemaphore(value: 0)
        stall.async { gate.wait() }
        carryOut(1, locked { shells[1].fetch(m.digest, now: SystemClock().now()) })
        return (m, bytes, gate)
    }

    var completed: Bool { events.list.withLock { $0.contains { if case .completed = $0 { true } else { false } } } }
    var failures: [String] { events.list.withLock { $0.compactMap { if case .failed(_, let why) = $0 { why } else { nil } } } }
}

@Suite struct SwarmShellTests {
    static func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var rng = SeededRandom(seed: seed)
        var out = [UInt8](repeating: 0, count: n)
        out.withUnsafeMutableBytes { raw in for k in 0..<n / 8 { raw.storeBytes(of: rng.next(), toByteOffset: k * 8, as: UInt64.self) } }
        return out
    }

    /// Runs `body` on its own thread; false if it did not return within `seconds` (it is then left blocked).
    static func returns(within seconds: Double, _ body: @escaping @Sendable () -> Void) -> Bool {
        let done = DispatchSemaphore(value: 0)
        Thread { body(); done.signal() }.start()
        return done.wait(timeout: .now() + seconds) == .success
    }

    @Test("a commit behind a stalled disk holds no lock: the shell keeps answering, and the blob is committed once the disk is back")
    func commitBehindAStalledWriterBlocksNobody() throws {
        let pair = try ShellPair()
        // The fetcher's disk stalls: its writer thread is stuck until the gate opens.
        let (m, bytes, gate) = try pair.start(size: 3 << 20, seed: 11, stall: pair.shells[1].writer)
        // Every chunk arrives and verifies; the commit waits for the writer, off the host's lock.
        let arrived = SwarmShellTests.returns(within: 30) {
            _ = pair.pump(seconds: 25) { pair.locked { pair.shells[1].swarm.holds(m.digest)?.isComplete == true } }
        }
        #expect(arrived, "the shell blocked on its stalled writer")
        guard arrived else { gate.signal(); return }
        #expect(pair.locked { pair.shells[1].swarm.holds(m.digest)?.isComplete == true })
        #expect(!pair.completed && !pair.stores[1].hasBlob(m.digest), "committed before its chunks were on disk")
        // Meanwhile the shell answers at once (as a membership probe or a control round trip would).
        #expect(SwarmShellTests.returns(within: 2) { _ = pair.locked { pair.shells[1].tick(now: SystemClock().now()) } })
        gate.signal()
        #expect(pair.pump(seconds: 20) { pair.completed }, "the commit never came back")
        #expect(pair.failures.isEmpty, "\(pair.failures)")
        #expect(pair.stores[1].hasBlob(m.digest))
        let copy = try m.chunks.flatMap { try pair.stores[1].readChunk($0.digest) }
        #expect(copy == bytes)
    }

    @Test("a store that falls behind holds the swarm's requests, instead of blocking, until it catches up")
    func backloggedStoreHoldsRequests() throws {
        let pair = try ShellPair(maxWritingBytes: 1 << 20)
        let (m, bytes, gate) = try pair.start(size: 6 << 20, seed: 12, stall: pair.shells[1].writer)
        var held = false
        let pumped = SwarmShellTests.returns(within: 30) {
            _ = pair.pump(seconds: 25) { pair.locked { pair.shells[1].swarm.holdingRequests } }
        }
        #expect(pumped, "the shell blocked on its stalled writer")
        guard pumped else { gate.signal(); return }
        held = pair.locked { pair.shells[1].swarm.holdingRequests }
        #expect(held, "more than 1 MiB waits to be written, yet the swarm still requests")
        // Held: what arrives is what was already asked for; the transfer does not finish.
        _ = SwarmShellTests.returns(within: 5) { _ = pair.pump(seconds: 1) { false } }
        let got = pair.locked { pair.shells[1].swarm.holds(m.digest)?.setCount ?? 0 }
        #expect(got < m.chunks.count, "the whole blob arrived while requests were held")
        gate.signal()
        #expect(pair.pump(seconds: 30) { pair.completed }, "the transfer did not resume")
        #expect(pair.locked { !pair.shells[1].swarm.holdingRequests })
        #expect(pair.failures.isEmpty, "\(pair.failures)")
        let copy = try m.chunks.flatMap { try pair.stores[1].readChunk($0.digest) }
        #expect(copy == bytes)
    }
}

extension SwarmShellTests {
    @Test("a chunk served from disk is read off the host's lock: a holder whose disk stalls keeps answering, and serves once it is back")
    func servingFromAStalledDiskBlocksNobody() throws {
        let pair = try ShellPair()
        // The holder's disk stalls: its reader thread is stuck until the gate opens.
        let (m, bytes, gate) = try pair.start(size: 2 << 20, seed: 13, stall: pair.shells[0].reader)
        let pumped = SwarmShellTests.returns(within: 10) { _ = pair.pump(seconds: 2) { false } }
        #expect(pumped, "the holder blocked on its stalled reader")
        guard pumped else { gate.signal(); return }
        #expect(pair.locked { pair.shells[1].swarm.holds(m.digest)?.setCount ?? 0 } == 0, "a chunk was served while the holder's disk was stalled")
        #expect(SwarmShellTests.returns(within: 2) { _ = pair.locked { pair.shells[0].tick(now: SystemClock().now()) } })
        gate.signal()
        #expect(pair.pump(seconds: 30) { pair.completed }, "the transfer did not finish once the disk was back")
        #expect(pair.failures.isEmpty, "\(pair.failures)")
        let copy = try m.chunks.flatMap { try pair.stores[1].readChunk($0.digest) }
        #expect(copy == bytes)
    }
}
