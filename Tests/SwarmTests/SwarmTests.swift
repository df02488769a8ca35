import Testing
@testable import Swarm
import MeshCore

/// A small deterministic network for driving real SwarmCores: per-node uplink capacity (messages
/// serialise on the sender's uplink), a fixed one-way latency, and an in-memory chunk store per node.
final class TestSwarmNet {
    struct Node {
        var core: SwarmCore
        var store: [Digest: [Int: [UInt8]]] = [:]
        var uplinkFreeAt = Instant.zero
        var alive = true
        /// Corrupts every piece it serves (a lying peer).
        var liar = false
        var completedAt: Instant?
        var wakeAt: Instant?
    }
    enum Event { case deliver(PeerMessage, to: Int), tick(Int), sent(Int, bytes: Int) }

    var nodes: [Node] = []
    var ids: [NodeID] = []
    var queue = EventHeap()
    var seq = 0
    var now = Instant.zero
    let uplinkBytesPerSecond: Double
    let latency: Duration

    init(count: Int, uplinkBytesPerSecond: Double = 12_500_000, latency: Duration = .milliseconds(2), settings: SwarmSettings = SwarmSettings()) {
        self.uplinkBytesPerSecond = uplinkBytesPerSecond
        self.latency = latency
        for i in 0..<count {
            let id = NodeID(digest: Digest.of(Array("node-\(i)".utf8)))
            ids.append(id)
            nodes.append(Node(core: SwarmCore(me: id, settings: settings, seed: UInt64(i + 1))))
        }
        for i in 0..<count {
            for j in 0..<count where i != j {
                apply(i, nodes[i].core.linkChanged(.up(peer: ids[j], address: PeerAddress(host: "n\(j)", port: 1)), now: now))
            }
        }
    }

    func index(of id: NodeID) -> Int { ids.firstIndex(of: id)! }

    func schedule(_ t: Instant, _ e: Event) {
        seq += 1
        queue.push((t, seq, e))
    }

    var sentByType: [UInt64: (count: Int, bytes: Int)] = [:]
    /// Every delivery in order (time, sender, receiver, frame type, payload; pieces by length only).
    var trace = WireWriter()
    var traceDigest: Digest { Digest.of(trace.bytes) }

    /// Messages sent, by sender, receiver and frame type.
    var sentBetween: [[Int]: Int] = [:]
    /// When each sender first sent each receiver each frame type.
    var firstSent: [[Int]: Instant] = [:]

    func apply(_ i: Int, _ out: Outbox) {
        for m in out.messages {
            sentBetween[[i, index(of: m.peer), Int(m.frame.type)], default: 0] += 1
            if firstSent[[i, index(of: m.peer), Int(m.frame.type)]] == nil { firstSent[[i, index(of: m.peer), Int(m.frame.type)]] = now }
            sentByType[m.frame.type, default: (0, 0)].count += 1
            sentByType[m.frame.type, default: (0, 0)].bytes += m.frame.payload.count
            let j = index(of: m.peer)
            let bytes = Double(m.frame.payload.count + 40)
            // Like the transport's scheduler, small higher-class messages go ahead of bulk pieces.
            let done: Instant
            if m.traffic == .bulk {
                done = max(now, nodes[i].uplinkFreeAt) + .seconds(bytes / uplinkBytesPerSecond)
                nodes[i].uplinkFreeAt = done
                // The host reports each piece once it has left (for a holder-side upload queue).
                if m.frame.type == 0x56, let msg = try? SwarmMessage(frame: m.frame), case .piece(_, _, let data) = msg {
                    schedule(done, .sent(i, bytes: data.count))
                }
            } else {
                done = now + .seconds(bytes / uplinkBytesPerSecond)
                nodes[i].uplinkFreeAt = max(nodes[i].uplinkFreeAt, now) + .seconds(bytes / uplinkBytesPerSecond)
            }
            schedule(done + latency, .deliver(PeerMessage(peer: ids[i], traffic: m.traffic, frame: m.frame), to: j))
        }
        if let w = out.wakeAt, nodes[i].wakeAt.map({ w < $0 }) ?? true {
            nodes[i].wakeAt = w
            schedule(w, .tick(i))
        }
        handleEffects(i)
    }

    func handleEffects(_ i: Int) {
        for e in nodes[i].core.drainEffects() {
            switch e {
            case .serve(let peer, let blob, let index):
                if var data = nodes[i].store[blob]?[Int(index)] {
                    if nodes[i].liar { data[0] ^= 0xff }
                    apply(i, nodes[i].core.servePiece(to: peer, blob: blob, index: index, data: data, now: now))
                } else {
                    apply(i, nodes[i].core.cannotServe(peer, blob: blob, index: index))
                }
            case .store(let blob, let index, let data):
                nodes[i].store[blob, default: [:]][Int(index)] = data.bytes
            case .completed:
                nodes[i].completedAt = now
            case .checkLocal(let blob, let m):
                var have = Bitfield(count: m.chunks.count)
                for k in (nodes[i].store[blob] ?? [:]).keys { have.insert(k) }
                apply(i, nodes[i].core.localChunks(blob, have: have, now: now))
            case .progress, .penalize:
                break
            }
        }
    }

    func crash(_ i: Int) {
        nodes[i].alive = false
        for j in nodes.indices where j != i && nodes[j].alive {
            apply(j, nodes[j].core.linkChanged(.down(peer: ids[i]), now: now))
        }
    }

    /// Runs until the queue empties or `until` passes.
    func run(until limit: Instant, stopWhen done: () -> Bool = { false }) {
        while !queue.isEmpty && !done() {
            let (t, n, e) = queue.pop()!
            if t > limit { queue.push((t, n, e)); return }   // left for the next run
            now = max(now, t)
            switch e {
            case .deliver(let m, let j):
                guard nodes[j].alive else { continue }
                trace.fixed(now.nanoseconds)
                trace.fixed(UInt32(index(of: m.peer)))
                trace.fixed(UInt32(j))
                trace.fixed(m.frame.type)
                if m.frame.type == 0x56 { trace.fixed(UInt32(m.frame.payload.count)) } else { trace.raw(m.frame.payload) }
                apply(j, nodes[j].core.receive(m, now: now))
            case .sent(let i, let bytes):
                guard nodes[i].alive else { continue }
                apply(i, nodes[i].core.pieceSent(bytes: bytes, now: now))
            case .tick(let i):
                guard nodes[i].alive, nodes[i].wakeAt == t else { continue }
                nodes[i].wakeAt = nil
                apply(i, nodes[i].core.tick(now: now))
            }
        }
    }
}

/// A binary min-heap ordered by (time, sequence), so equal times keep insertion order.
struct EventHeap {
    var items: [(Instant, Int, TestSwarmNet.Event)] = []
    var isEmpty: Bool { items.isEmpty }
    static func less(_ a: (Instant, Int, TestSwarmNet.Event), _ b: (Instant, Int, TestSwarmNet.Event)) -> Bool {
        a.0 != b.0 ? a.0 < b.0 : a.1 < b.1
    }
    mutating func push(_ e: (Instant, Int, TestSwarmNet.Event)) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard Self.less(items[i], items[p]) else { break }
            items.swapAt(i, p); i = p
        }
    }
    mutating func pop() -> (Instant, Int, TestSwarmNet.Event)? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < items.count && Self.less(items[l], items[m]) { m = l }
            if r < items.count && Self.less(items[r], items[m]) { m = r }
            if m == i { break }
            items.swapAt(i, m); i = m
        }
        return top
    }
}

func makeBlob(size: Int, seed: UInt64) -> (SwarmManifest, [[UInt8]], [UInt8]) {
    var rng = SeededRandom(seed: seed)
    var data = [UInt8](repeating: 0, count: (size + 7) & ~7)
    data.withUnsafeMutableBytes { raw in
        for k in 0..<raw.count / 8 { raw.storeBytes(of: rng.next(), toByteOffset: k * 8, as: UInt64.self) }
    }
    data.removeLast(data.count - size)
    var chunks: [[UInt8]] = []
    var i = 0
    while i < size {
        let n = min(Int.random(in: 32_000...96_000, using: &rng), size - i)
        chunks.append(Array(data[i..<i + n]))
        i += n
    }
    let manifest = SwarmManifest(blob: Digest.of(data), chunks: chunks.map { .init(digest: Digest.of($0), size: UInt32($0.count)) })
    return (manifest, chunks, data)
}

@Suite struct SwarmTests {
    func seedNode(_ net: TestSwarmNet, _ i: Int, _ m: SwarmManifest, _ chunks: [[UInt8]]) {
        net.nodes[i].store[m.blob] = Dictionary(uniqueKeysWithValues: chunks.enumerated().map { ($0, $1) })
        net.apply(i, net.nodes[i].core.hold(m, now: net.now))
    }

    func assembled(_ net: TestSwarmNet, _ i: Int, _ m: SwarmManifest) -> [UInt8]? {
        guard let s = net.nodes[i].store[m.blob], s.count == m.chunks.count else { return nil }
        return (0..<m.chunks.count).flatMap { s[$0]! }
    }

    @Test func fiftyPeersFetchFromOneSeedByteExact() {
        let (m, chunks, data) = makeBlob(size: 4 << 20, seed: 1)
        let net = TestSwarmNet(count: 51)
        seedNode(net, 0, m, chunks)
        for i in 1...50 { net.apply(i, net.nodes[i].core.fetch(m.blob, now: net.now)) }
        net.run(until: Instant(nanoseconds: 120_000_000_000)) { (1...50).allSatisfy { net.nodes[$0].completedAt != nil } }
        for i in 1...50 {
            #expect(net.nodes[i].completedAt != nil, "peer \(i) did not finish")
            #expect(assembled(net, i, m) == data, "peer \(i) copy differs")
        }
        // Fluid bound: max(F/u_s, N·F/(u_s + Σu_i)) with equal uplinks = max(F/u, 50F/51u) ≈ F/u.
        let bound = Double(data.count) / 12_500_000
        let last = (1...50).compactMap { net.nodes[$0].completedAt }.max()!
        let ratio = (last - .zero).seconds / bound
        // A regression guard, not the goal (the goal is 1.25× at scale, measured in gquic-sim;
        // see docs/benchmarks.md#swarm). Virtual time, deterministic: measured 2.62× here (4.4× before
        // the seed's fresh-chunk rounds and two-deep pipelines to many sources). A 4 MiB blob is
        // 64 chunks, so the first round trips weigh heavily.
        #expect(ratio < 2.9, "last peer took \(ratio)× the fluid bound")
    }

    /// One seed and 50 peers, run twice in the same process: every message is sent at the same
    /// instant between the same nodes in both runs. (Swift's hashed collections are seeded per
    /// instance, so a planner that walked a Set or Dictionary would diverge between the runs.)
    @Test func sameSwarmRunTwiceGivesTheSameTrace() {
        let (m, chunks, _) = makeBlob(size: 2 << 20, seed: 6)
        var digests: [Digest] = []
        var finished: [Instant] = []
        for _ in 0..<2 {
            let net = TestSwarmNet(count: 51)
            seedNode(net, 0, m, chunks)
            for i in 1...50 { net.apply(i, net.nodes[i].core.fetch(m.blob, now: net.now)) }
            net.run(until: Instant(nanoseconds: 120_000_000_000)) { (1...50).allSatisfy { net.nodes[$0].completedAt != nil } }
            #expect((1...50).allSatisfy { net.nodes[$0].completedAt != nil })
            digests.append(net.traceDigest)
            finished.append((1...50).compactMap { net.nodes[$0].completedAt }.max() ?? .zero)
        }
        #expect(digests[0] == digests[1], "the two runs diverged")
        #expect(finished[0] == finished[1])
    }

    @Test func lyingPeerIsDroppedAndNoBadChunkIsStored() {
        let (m, chunks, data) = makeBlob(size: 2 << 20, seed: 2)
        let net = TestSwarmNet(count: 12)
        seedNode(net, 0, m, chunks)
        seedNode(net, 1, m, chunks)
        net.nodes[1].liar = true
        for i in 2..<12 { net.apply(i, net.nodes[i].core.fetch(m.blob, now: net.now)) }
        net.run(until: Instant(nanoseconds: 120_000_000_000)) { (2..<12).allSatisfy { net.nodes[$0].completedAt != nil } }
        for i in 2..<12 {
            #expect(assembled(net, i, m) == data, "peer \(i)")
            for (idx, chunk) in net.nodes[i].store[m.blob] ?? [:] { #expect(Digest.of(chunk) == m.chunks[idx].digest) }
        }
        let penalised = (2..<12).filter { net.nodes[$0].core.penalties[net.ids[1]] ?? 0 > 0 }.count
        #expect(penalised > 0, "nobody noticed the liar")
        #expect((2..<12).allSatisfy { net.nodes[$0].core.penalties[net.ids[0]] == nil }, "the honest seed was penalised")
    }

    @Test func peerCrashingMidTransferDoesNotStopTheRest() {
        let (m, chunks, data) = makeBlob(size: 3 << 20, seed: 3)
        let net = TestSwarmNet(count: 10)
        seedNode(net, 0, m, chunks)
        for i in 1..<10 { net.apply(i, net.nodes[i].core.fetch(m.blob, now: net.now)) }
        net.run(until: Instant(nanoseconds: 150_000_000)) // 150 ms in: mid-transfer
        #expect(net.nodes[5].completedAt == nil)
        net.crash(5)
        net.run(until: Instant(nanoseconds: 120_000_000_000)) { (1..<10).filter { $0 != 5 }.allSatisfy { net.nodes[$0].completedAt != nil } }
        for i in 1..<10 where i != 5 { #expect(assembled(net, i, m) == data, "peer \(i)") }
    }

    @Test func resumeFetchesOnlyMissingChunks() {
        let (m, chunks, data) = makeBlob(size: 1 << 20, seed: 4)
        let net = TestSwarmNet(count: 2)
        seedNode(net, 0, m, chunks)
        var have = Bitfield(count: m.chunks.count)
        for i in 0..<m.chunks.count where i % 3 != 0 {
            have.insert(i)
            net.nodes[1].store[m.blob, default: [:]][i] = chunks[i]
        }
        net.apply(1, net.nodes[1].core.fetch(m.blob, manifest: m, have: have, now: net.now))
        var requested = 0
        net.run(until: Instant(nanoseconds: 60_000_000_000)) { net.nodes[1].completedAt != nil }
        _ = requested
        #expect(assembled(net, 1, m) == data)
        requested = net.nodes[1].store[m.blob]!.count
        #expect(requested == m.chunks.count)
    }

    /// A shell whose store falls behind holds the swarm's requests: the requests already out still
    /// land, no new one leaves until it resumes, and then the transfer finishes byte-exact.
    @Test func heldRequestsStopUntilResumed() {
        let (m, chunks, data) = makeBlob(size: 2 << 20, seed: 7)
        let net = TestSwarmNet(count: 2)
        seedNode(net, 0, m, chunks)
        net.apply(1, net.nodes[1].core.fetch(m.blob, now: net.now))
        net.run(until: Instant(nanoseconds: 60_000_000))
        let requestsBefore = net.sentBetween[[1, 0, 0x55]] ?? 0
        let storedBefore = net.nodes[1].store[m.blob]?.count ?? 0
        #expect(requestsBefore > 0 && storedBefore < m.chunks.count, "the transfer should be under way at 60 ms")
        net.nodes[1].core.holdRequests()
        net.run(until: Instant(nanoseconds: 5_300_000_000))
        #expect(net.sentBetween[[1, 0, 0x55]] ?? 0 == requestsBefore, "a request left while held")
        let storedHeld = net.nodes[1].store[m.blob]?.count ?? 0
        #expect(storedHeld > storedBefore, "the requests in flight should still land")
        #expect(storedHeld < m.chunks.count && net.nodes[1].completedAt == nil)
        net.apply(1, net.nodes[1].core.resumeRequests(now: net.now))
        #expect(net.sentBetween[[1, 0, 0x55]] ?? 0 > requestsBefore, "resuming should request at once")
        net.run(until: Instant(nanoseconds: 60_000_000_000)) { net.nodes[1].completedAt != nil }
        #expect(assembled(net, 1, m) == data)
    }

    @Test func messagesRoundTripAndGarbageIsRefused() throws {
        let (m, _, _) = makeBlob(size: 300_000, seed: 5)
        let msgs: [SwarmMessage] = [
            .interested(blob: m.blob), .have(blob: m.blob, chunkCount: 9, bits: [0xff, 1]),
            .haveMore(blob: m.blob, indices: [1, 7, 300]), .manifestRequest(blob: m.blob), .manifest(m),
            .request(blob: m.blob, index: 4), .piece(blob: m.blob, index: 4, data: [1, 2, 3]),
            .cancel(blob: m.blob, index: 4), .reject(blob: m.blob, index: 5, busy: true),
        ]
        for msg in msgs { #expect(try SwarmMessage(frame: msg.frame) == msg) }
        #expect(throws: WireError.self) { try SwarmMessage(frame: Frame(type: 0x51, payload: m.blob.bytes + [9, 5, 0])) }
        #expect(throws: WireError.self) { try SwarmMessage(frame: Frame(type: 0x5f, payload: [])) }
        var rng = SeededRandom(seed: 9)
        var core = SwarmCore(me: NodeID(digest: Digest.of([1])), seed: 1)
        for _ in 0..<5_000 {
            let payload = (0..<Int.random(in: 0...80, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let f = Frame(type: UInt64.random(in: 0x50...0x58, using: &rng), payload: payload)
            _ = core.receive(PeerMessage(peer: NodeID(digest: Digest.of([2])), traffic: .bulk, frame: f), now: .zero)
        }
        #expect(core.drainEffects().isEmpty)
    }
}
