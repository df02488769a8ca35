import Testing
@testable import MeshCore

@Suite struct ClockTests {
    @Test func manualClockMovesOnlyForward() {
        let c = ManualClock()
        #expect(c.now() == .zero)
        c.advance(by: .milliseconds(250))
        #expect(c.now().nanoseconds == 250_000_000)
        c.advance(by: .milliseconds(-100))
        #expect(c.now().nanoseconds == 250_000_000)
        c.advance(to: Instant(nanoseconds: 1))
        #expect(c.now().nanoseconds == 250_000_000)
        #expect(c.wallNow().nanosecondsSinceEpoch == 1_767_225_600 * 1_000_000_000 + 250_000_000)
    }

    @Test func instantArithmeticSaturates() {
        #expect(Instant.distantFuture + .seconds(1) == .distantFuture)
        #expect(Instant(nanoseconds: 5) - .seconds(1) == .zero)
        #expect(Instant(nanoseconds: 3_000_000_000) - Instant(nanoseconds: 1_000_000_000) == .seconds(2))
        #expect(Instant(nanoseconds: 1) - Instant(nanoseconds: 3) == .nanoseconds(-2))
        #expect(Duration.milliseconds(1500).nanosecondsClamped == 1_500_000_000)
    }

    @Test func systemClockIsMonotonic() {
        let c = SystemClock()
        var last = c.now()
        for _ in 0..<10_000 {
            let t = c.now()
            #expect(t >= last)
            last = t
        }
        #expect(c.wallNow().nanosecondsSinceEpoch > 1_700_000_000 * 1_000_000_000)
    }

    @Test func seededRandomIsReproducible() {
        var a = SeededRandom(seed: 99), b = SeededRandom(seed: 99), c = SeededRandom(seed: 100)
        let xs = (0..<100).map { _ in a.next() }
        #expect(xs == (0..<100).map { _ in b.next() })
        #expect(xs != (0..<100).map { _ in c.next() })
    }
}

@Suite struct PeerLinkTests {
    @Test func outboxKeepsEarliestWake() {
        var o = Outbox()
        #expect(o.wakeAt == nil)
        o.wake(at: Instant(nanoseconds: 50))
        o.wake(at: Instant(nanoseconds: 80))
        #expect(o.wakeAt == Instant(nanoseconds: 50))
        var p = Outbox()
        p.wake(at: Instant(nanoseconds: 10))
        o.merge(p)
        #expect(o.wakeAt == Instant(nanoseconds: 10))
    }

    @Test func addressesParse() throws {
        #expect(PeerAddress(parsing: "127.0.0.1:7400") == PeerAddress(host: "127.0.0.1", port: 7400))
        #expect(PeerAddress(parsing: "[::1]:7400") == PeerAddress(host: "::1", port: 7400))
        #expect(PeerAddress(parsing: "seed.example:1")?.description == "seed.example:1")
        #expect(PeerAddress(parsing: "[::1]:7400")?.description == "[::1]:7400")
        for bad in ["", "host", ":80", "h:99999", "::1:80", "[::1]"] { #expect(PeerAddress(parsing: bad) == nil, "\(bad)") }
        let a = PeerAddress(host: "10.1.2.3", port: 9)
        #expect(try PeerAddress(wireBytes: a.wireBytes()) == a)
    }
}
