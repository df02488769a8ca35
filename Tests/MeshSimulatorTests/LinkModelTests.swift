import Testing
import MeshCore
@testable import MeshSimulator

/// Drives a link layer as the world does: each message is handed to `transmit` at its `notBefore`
/// (in the order given), and its arrival at the receiver's downlink is taken at its instant, in the
/// order of (instant, hand-over), interleaved with later sends.
extension MessageLevelLinks {
    /// Each message's fate, in the order given: delivered at an instant, or lost.
    mutating func run(_ ts: [SimTransmission], random: inout SeededRandom) -> [SimLinkVerdict] {
        var out = Array(repeating: SimLinkVerdict.lost(wireBytes: 0), count: ts.count)
        var pending: [(at: UInt64, seq: Int, arrival: SimArrival)] = []
        func drain(until t: UInt64) {
            pending.sort { ($0.at, $0.seq) < ($1.at, $1.seq) }
            while let first = pending.first, first.at <= t {
                pending.removeFirst()
                out[first.seq] = .deliver(at: arrive(first.arrival), wireBytes: Int(first.arrival.wireBytes))
            }
        }
        for (k, t) in ts.enumerated() {
            drain(until: t.notBefore)
            switch transmit(t, random: &random) {
            case .arrive(let a): pending.append((a.at, k, a))
            case let v: out[k] = v
            }
        }
        drain(until: .max)
        return out
    }

    /// One message alone: delivered at an instant, or lost.
    mutating func send(_ t: SimTransmission, random: inout SeededRandom) -> SimLinkVerdict {
        run([t], random: &random)[0]
    }
}

@Suite struct LinkModelTests {
    /// Two nodes in one region with latency L and capacity C.
    func links(up: Double, down: Double, latency: Duration, loss: Double = 0) -> MessageLevelLinks {
        var s = LinkSettings()
        s.up = up; s.down = down; s.loss = loss
        return MessageLevelLinks(settings: s, regionOf: [0, 0, 0], latency: [[latency]], capacity: [(nil, nil)])
    }

    @Test func loneTransferTakesLatencyPlusSizeOverCapacity() {
        let c = 12_500_000.0 // 100 Mbit/s
        let l = Duration.milliseconds(20)
        var model = links(up: c, down: c, latency: l)
        var rng = SeededRandom(seed: 1)
        let bytes = 1 << 20
        guard case .deliver(let at, let wire) = model.send(SimTransmission(from: 0, to: 1, bytes: bytes, unreliable: false, notBefore: 0), random: &rng) else {
            Issue.record("lost without loss"); return
        }
        let packets = (bytes + 1199) / 1200
        #expect(wire == bytes + packets * 48)
        let expected = 20e6 + Double(wire) / c * 1e9
        let onePacket = 1248 / c * 1e9
        #expect(abs(Double(at) - expected) <= onePacket, "took \(at) ns, model says \(expected) ns")
    }

    @Test func slowerSideIsTheBottleneck() {
        var model = links(up: 12_500_000, down: 1_250_000, latency: .milliseconds(5))
        var rng = SeededRandom(seed: 1)
        guard case .deliver(let at, let wire) = model.send(.init(from: 0, to: 1, bytes: 100_000, unreliable: false, notBefore: 0), random: &rng) else { return }
        let expected = 5e6 + Double(wire) / 1_250_000 * 1e9
        #expect(abs(Double(at) - expected) <= 1248 / 1_250_000 * 1e9)
    }

    @Test func messagesQueueOnTheSendersUplink() {
        let c = 1_000_000.0
        var model = links(up: c, down: 100 * c, latency: .milliseconds(10))
        var rng = SeededRandom(seed: 1)
        var last: UInt64 = 0, total = 0
        // One sender, two receivers: the uplink serialises all ten messages.
        let ts = (0..<10).map { k in SimTransmission(from: 0, to: 1 + k % 2, bytes: 10_000, unreliable: false, notBefore: 0) }
        for v in model.run(ts, random: &rng) {
            guard case .deliver(let at, let wire) = v else { Issue.record("lost"); return }
            last = max(last, at); total += wire
        }
        let expected = 10e6 + Double(total) / c * 1e9
        #expect(abs(Double(last) - expected) <= 1248 / c * 1e9 + Double(total) / (100 * c) * 1e9 / 10)
    }

    @Test func fanInSharesTheReceiversDownlink() {
        let c = 1_000_000.0
        var model = links(up: 100 * c, down: c, latency: .milliseconds(10))
        var rng = SeededRandom(seed: 1)
        let vs = model.run([.init(from: 0, to: 2, bytes: 50_000, unreliable: false, notBefore: 0),
                            .init(from: 1, to: 2, bytes: 50_000, unreliable: false, notBefore: 0)], random: &rng)
        guard case .deliver(let a, let wa) = vs[0], case .deliver(let b, let wb) = vs[1] else { Issue.record("lost"); return }
        #expect(max(a, b) >= UInt64(10e6 + Double(wa + wb) / c * 1e9) - 1)
        #expect(abs(Double(max(a, b)) - (10e6 + Double(wa + wb) / c * 1e9)) <= 1248 / c * 1e9)
    }

    /// The receiver's downlink is taken in the order messages arrive, not the order they were sent:
    /// a piece handed to a busy uplink (queued behind 100 ms of other traffic) does not hold back a
    /// piece another holder sends later that gets there first. Fails on a model that books the
    /// downlink at send time for when the message will arrive.
    @Test func theDownlinkTakesMessagesInArrivalOrder() {
        let c = 12_500_000.0 // 100 Mbit/s up
        var s = LinkSettings()
        s.up = c; s.down = c / 2 // a downlink slow enough that a booking would show
        var model = MessageLevelLinks(settings: s, regionOf: [0, 0, 0, 0], latency: [[.milliseconds(2)]], capacity: [(nil, nil)])
        var rng = SeededRandom(seed: 1)
        let piece = 256 << 10
        let ts = [
            // Holder 0's uplink is busy: 100 ms of pieces to node 3 go first...
            SimTransmission(from: 0, to: 3, bytes: 1_250_000, unreliable: false, notBefore: 0),
            // ...then a piece to node 2, which leaves at ~100 ms.
            SimTransmission(from: 0, to: 2, bytes: piece, unreliable: false, notBefore: 0),
            // Holder 1 sends node 2 a piece 1 ms later, on an idle uplink: it arrives first.
            SimTransmission(from: 1, to: 2, bytes: piece, unreliable: false, notBefore: 1_000_000),
        ]
        let vs = model.run(ts, random: &rng)
        guard case .deliver(let late, let wLate) = vs[1], case .deliver(let early, let wEarly) = vs[2] else {
            Issue.record("lost without loss"); return
        }
        // Alone on node 2's downlink: 1 ms + latency + its bytes at the downlink's rate.
        let alone = 1e6 + 2e6 + Double(wEarly) / (c / 2) * 1e9
        #expect(early < late, "the piece that arrived first was delivered at \(early) ns, after the other (\(late) ns)")
        #expect(abs(Double(early) - alone) <= 1248 / (c / 2) * 1e9, "delivered at \(early) ns, alone it takes \(alone) ns")
        // The later one waits only for what is really ahead of it on the downlink.
        let leaves = 2e6 + Double(model.wireBytes(1_250_000)) / c * 1e9 // its first bit reaches node 2
        #expect(Double(late) <= max(Double(early), leaves) + Double(wLate) / (c / 2) * 1e9 + 1248 / (c / 2) * 1e9)
    }

    /// The downlink still bounds what a node receives: two holders whose uplinks together are four
    /// times the receiver's downlink take at least their bytes over its rate, and no more.
    @Test func theDownlinkBoundsWhatANodeReceives() {
        let c = 1_000_000.0
        var model = links(up: 2 * c, down: c, latency: .milliseconds(3))
        var rng = SeededRandom(seed: 7)
        // Nodes 0 and 1 each send node 2 five 20 kB messages, node 1 starting 5 ms later.
        var ts: [SimTransmission] = []
        for k in 0..<5 {
            ts.append(.init(from: 0, to: 2, bytes: 20_000, unreliable: false, notBefore: UInt64(k)))
            ts.append(.init(from: 1, to: 2, bytes: 20_000, unreliable: false, notBefore: 5_000_000 + UInt64(k)))
        }
        var last: UInt64 = 0, total = 0
        for v in model.run(ts, random: &rng) {
            guard case .deliver(let at, let wire) = v else { Issue.record("lost"); return }
            last = max(last, at); total += wire
        }
        // The uplinks alone would be done by ~5 + 3 + 52 ms; the downlink needs 3 ms + 208 ms.
        let downlinkBound = 3e6 + Double(total) / c * 1e9
        #expect(Double(last) >= downlinkBound - 1, "all in by \(last) ns, the downlink alone needs \(downlinkBound) ns")
        #expect(Double(last) <= downlinkBound + 1248 / c * 1e9, "all in by \(last) ns, the downlink was idle on the way")
    }

    @Test func lossDropsUnreliableAndDelaysReliable() {
        var model = links(up: 1e9, down: 1e9, latency: .milliseconds(10), loss: 0.1)
        var rng = SeededRandom(seed: 42)
        var dropped = 0, late = 0
        let n = 20_000
        let unreliable = (0..<n).map { k in SimTransmission(from: 0, to: 1, bytes: 100, unreliable: true, notBefore: UInt64(k) * 1_000_000) }
        for v in model.run(unreliable, random: &rng) { if case .lost = v { dropped += 1 } }
        // One packet each: 10% lost, give or take a few standard deviations (σ ≈ 0.2%).
        #expect(Double(dropped) / Double(n) > 0.09 && Double(dropped) / Double(n) < 0.11)
        let reliable = (0..<n).map { k in SimTransmission(from: 0, to: 1, bytes: 100, unreliable: false, notBefore: UInt64(n + k) * 1_000_000) }
        for (t, v) in zip(reliable, model.run(reliable, random: &rng)) {
            switch v {
            case .deliver(let at, _): if at - t.notBefore > 15_000_000 { late += 1 }
            default: Issue.record("a reliable message was dropped at 10% loss")
            }
        }
        // Reliable ones arrive, about 10% a probe timeout (2 × 10 ms + 1 ms) late.
        #expect(Double(late) / Double(n) > 0.09 && Double(late) / Double(n) < 0.11)
    }

    @Test func eventQueueOrdersByTimeThenInsertion() {
        var q = EventQueue<Int>()
        var rng = SeededRandom(seed: 3)
        var expected: [(UInt64, Int)] = []
        for k in 0..<5000 {
            let t = rng.next() % 100
            q.push(at: t, k)
            expected.append((t, k))
        }
        expected.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
        var got: [(UInt64, Int)] = []
        while let e = q.pop() { got.append((e.time, e.payload)) }
        #expect(got.map(\.0) == expected.map(\.0))
        #expect(got.map(\.1) == expected.map(\.1))
    }

    @Test func unitsParse() {
        #expect(Units.duration("250ms") == .milliseconds(250))
        #expect(Units.duration("1.5s") == .milliseconds(1500))
        #expect(Units.duration("10m") == .seconds(600))
        #expect(Units.duration("ten") == nil)
        #expect(Units.bytes("64KiB") == 65536)
        #expect(Units.rate("100mbit") == 12_500_000)
        #expect(Units.fraction("1%") == 0.01)
    }
}
