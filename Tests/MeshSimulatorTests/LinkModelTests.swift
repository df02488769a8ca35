import Testing
import MeshCore
@testable import MeshSimulator

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
        guard case .deliver(let at, let wire) = model.transmit(SimTransmission(from: 0, to: 1, bytes: bytes, unreliable: false, notBefore: 0), random: &rng) else {
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
        guard case .deliver(let at, let wire) = model.transmit(.init(from: 0, to: 1, bytes: 100_000, unreliable: false, notBefore: 0), random: &rng) else { return }
        let expected = 5e6 + Double(wire) / 1_250_000 * 1e9
        #expect(abs(Double(at) - expected) <= 1248 / 1_250_000 * 1e9)
    }

    @Test func messagesQueueOnTheSendersUplink() {
        let c = 1_000_000.0
        var model = links(up: c, down: 100 * c, latency: .milliseconds(10))
        var rng = SeededRandom(seed: 1)
        var last: UInt64 = 0, total = 0
        // One sender, two receivers: the uplink serialises all ten messages.
        for k in 0..<10 {
            guard case .deliver(let at, let wire) = model.transmit(.init(from: 0, to: 1 + k % 2, bytes: 10_000, unreliable: false, notBefore: 0), random: &rng) else { return }
            last = max(last, at); total += wire
        }
        let expected = 10e6 + Double(total) / c * 1e9
        #expect(abs(Double(last) - expected) <= 1248 / c * 1e9 + Double(total) / (100 * c) * 1e9 / 10)
    }

    @Test func fanInSharesTheReceiversDownlink() {
        let c = 1_000_000.0
        var model = links(up: 100 * c, down: c, latency: .milliseconds(10))
        var rng = SeededRandom(seed: 1)
        guard case .deliver(let a, let wa) = model.transmit(.init(from: 0, to: 2, bytes: 50_000, unreliable: false, notBefore: 0), random: &rng),
              case .deliver(let b, let wb) = model.transmit(.init(from: 1, to: 2, bytes: 50_000, unreliable: false, notBefore: 0), random: &rng) else { return }
        #expect(max(a, b) >= UInt64(10e6 + Double(wa + wb) / c * 1e9) - 1)
        #expect(abs(Double(max(a, b)) - (10e6 + Double(wa + wb) / c * 1e9)) <= 1248 / c * 1e9)
    }

    @Test func lossDropsUnreliableAndDelaysReliable() {
        var model = links(up: 1e9, down: 1e9, latency: .milliseconds(10), loss: 0.1)
        var rng = SeededRandom(seed: 42)
        var dropped = 0, late = 0
        let n = 20_000
        for k in 0..<n {
            let t = SimTransmission(from: 0, to: 1, bytes: 100, unreliable: true, notBefore: UInt64(k) * 1_000_000)
            if case .lost = model.transmit(t, random: &rng) { dropped += 1 }
        }
        // One packet each: 10% lost, give or take a few standard deviations (σ ≈ 0.2%).
        #expect(Double(dropped) / Double(n) > 0.09 && Double(dropped) / Double(n) < 0.11)
        for k in 0..<n {
            let sent = UInt64(n + k) * 1_000_000
            let t = SimTransmission(from: 0, to: 1, bytes: 100, unreliable: false, notBefore: sent)
            switch model.transmit(t, random: &rng) {
            case .lost: Issue.record("a reliable message was dropped at 10% loss")
            case .deliver(let at, _): if at - sent > 15_000_000 { late += 1 }
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
