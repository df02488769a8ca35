import Foundation
import MeshCore
import Synchronization
import Testing
@testable import QUICTransport

/// Bulk yields to control on a shared, rate-limited bottleneck (a relay with a deep drop-tail queue).
@Suite(.serialized) struct ScavengerTests {
    /// Median 64-byte control round trip while one bulk stream saturates a 2 MB/s path with a 512 KiB
    /// buffer, and the bulk bytes delivered meanwhile.
    static func controlLatencyUnderBulk(scavenger: ScavengerSettings?) async throws -> (median: Double, bulkBytes: Int) {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        var settings = QUICSettings()
        settings.congestionControl = .cubic // loss-based: fills the bottleneck buffer, the case to defend against
        settings.bulkScavenger = scavenger
        settings.keepAlive = .seconds(2)
        var sc = QUICEndpoint.Configuration.forTests(tls: try .mesh(identity: a)); sc.settings = settings
        var cc = QUICEndpoint.Configuration.forTests(tls: try .mesh(identity: b)); cc.settings = settings
        let server = try QUICEndpoint(bind: MeshLinkTests.loopback, configuration: sc)
        let client = try QUICEndpoint(bind: MeshLinkTests.loopback, configuration: cc)
        let path = try PathEmulator(to: server.localAddress, rate: 2e6, queueBytes: 512 << 10)
        defer { client.shutdown(); server.shutdown(); path.stop() }
        let received = Flag()
        let sink = Task {
            for await link in server.incomingLinks {
                Task {
                    for await s in link.incomingStreams {
                        Task {
                            if s.trafficClass == .bulk {
                                while let c = try? await s.read() { received.count.add(c.count, ordering: .relaxed) }
                            } else {
                                while let c = try? await s.read() { try? await s.write(c) }
                            }
                        }
                    }
                }
            }
        }
        defer { sink.cancel() }
        let link = try await client.connect(to: path.address, expecting: a.nodeID)
        let bulk = try await link.openStream(.bulk)
        let stop = Flag()
        let writer = Task {
            let chunk = [UInt8](repeating: 1, count: 64 << 10)
            while !stop.set.load(ordering: .relaxed) { try? await bulk.write(chunk) }
        }
        try await Task.sleep(for: .milliseconds(700)) // let the bulk flow fill the path
        let control = try await link.openStream(.control)
        var samples: [Double] = []
        let msg = [UInt8](repeating: 7, count: 64)
        for _ in 0..<15 {
            let t0 = ContinuousClock.now
            try await control.write(msg)
            var got = 0
            while got < 64, let c = try await control.read() { got += c.count }
            samples.append((ContinuousClock.now - t0).seconds * 1e3)
            try await Task.sleep(for: .milliseconds(20))
        }
        stop.set.store(true, ordering: .relaxed)
        bulk.reset()
        writer.cancel()
        samples.sort()
        return (samples[samples.count / 2], received.count.load(ordering: .relaxed))
    }

    @Test func scavengerKeepsControlLatencyLowOnASharedBottleneck() async throws {
        let plain = try await Self.controlLatencyUnderBulk(scavenger: nil)
        let scavenging = try await Self.controlLatencyUnderBulk(scavenger: ScavengerSettings())
        print("control RTT median under bulk: \(plain.median) ms without, \(scavenging.median) ms with scavenger; "
              + "bulk bytes \(plain.bulkBytes) vs \(scavenging.bulkBytes)")
        #expect(scavenging.median < plain.median * 0.6)
        // Bulk still moves (the scavenger yields, it does not stop).
        #expect(scavenging.bulkBytes > 256 << 10)
    }

    /// A per-class rate cap holds that class to its rate; other classes are not slowed.
    @Test func classRateLimitCapsBulk() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        var cc = QUICEndpoint.Configuration.forTests(tls: try .mesh(identity: b))
        cc.settings.classRateLimits = [.bulk: 4e6]
        let server = try MeshLinkTests.endpoint(a)
        let client = try QUICEndpoint(bind: MeshLinkTests.loopback, configuration: cc)
        defer { client.shutdown(); server.shutdown() }
        let sink = Task {
            for await link in server.incomingLinks {
                for await s in link.incomingStreams {
                    Task {
                        if s.trafficClass == .bulk { _ = try? await s.readAll(limit: 8 << 20); try? await s.finish([1]) }
                        else { while let c = try? await s.read() { try? await s.write(c) } }
                    }
                }
            }
        }
        defer { sink.cancel() }
        let link = try await client.connect(to: server.localAddress, expecting: a.nodeID)
        let t0 = ContinuousClock.now
        let bulk = try await link.openStream(.bulk)
        try await bulk.finish([UInt8](repeating: 1, count: 1 << 20))
        // Control is not capped: a round trip completes while bulk is being held back.
        let control = try await link.openStream(.control)
        try await control.write([1, 2, 3])
        _ = try await control.read()
        let controlDone = (ContinuousClock.now - t0).seconds
        _ = try await bulk.readAll(limit: 16)
        let bulkDone = (ContinuousClock.now - t0).seconds
        // 1 MiB at 4 MB/s with a 40 KB burst needs at least ~0.25 s.
        #expect(bulkDone >= 0.2, "bulk took \(bulkDone) s")
        #expect(controlDone < bulkDone)
    }
}

/// The scavenger's controller alone, against a drop-tail bottleneck in virtual time: bulk fills the
/// link but keeps the queue it builds (what a control packet waits behind) near the target.
@Suite struct ScavengerControllerTests {
    /// One bulk flow, window-limited by the scavenger, through a FIFO bottleneck of `rate` bytes/s
    /// with `base` seconds of round trip beyond it. Returns the queue a control packet would have met
    /// at each acknowledgement (seconds) after the first second, and the link's utilisation then.
    static func run(target: Duration, rate: Double = 12.5e6, base: Double = 0.0005, seconds: Double = 4) -> (queue: [Double], utilisation: Double) {
        var settings = ScavengerSettings()
        settings.target = target
        var limiter = ClassLimiter(rates: [:], scavenger: settings, now: .zero)
        let mss = 1452.0
        var t = 0.0, linkFree = 0.0, minRTT = Double.infinity, srtt = 0.0
        var flight: [(sent: Double, ack: Double)] = [], head = 0
        var queue: [Double] = []
        var delivered = 0.0
        let instant = { (s: Double) in Instant(nanoseconds: UInt64(s * 1e9)) }
        while t < seconds {
            while limiter.allows(.bulk, now: instant(t)) {
                limiter.sent(.bulk, count: Int(mss))
                linkFree = max(t, linkFree) + mss / rate
                flight.append((t, linkFree + base))
            }
            let p = flight[head]; head += 1
            t = p.ack
            let rtt = p.ack - p.sent
            minRTT = min(minRTT, rtt)
            srtt = srtt == 0 ? rtt : srtt * 7 / 8 + rtt / 8
            limiter.bulkAcked(Int(mss), latestRTT: .nanoseconds(Int64(rtt * 1e9)), minRTT: .nanoseconds(Int64(minRTT * 1e9)),
                              smoothedRTT: .nanoseconds(Int64(srtt * 1e9)), now: instant(t))
            if t > 1 {
                queue.append(max(0, linkFree - t))
                delivered += mss
            }
        }
        return (queue.sorted(), delivered / (rate * (seconds - 1)))
    }

    @Test func keepsTheBottleneckQueueNearTheTargetAndTheLinkBusy() {
        let q = Self.run(target: .milliseconds(1))
        let p50 = q.queue[q.queue.count / 2], p99 = q.queue[q.queue.count * 99 / 100]
        #expect(p99 < 0.0025, "queue p99 \(p99 * 1e3) ms with a 1 ms target")
        #expect(q.utilisation > 0.95, "utilisation \(q.utilisation)")
        // The target is what sets the queue: five times the target, about five times the queue.
        let loose = Self.run(target: .milliseconds(5))
        #expect(loose.queue[loose.queue.count / 2] > 3 * p50, "5 ms target p50 \(loose.queue[loose.queue.count / 2] * 1e3) ms vs \(p50 * 1e3) ms")
        #expect(loose.utilisation > 0.95)
    }

    /// A path that got longer for good (a new route): after the base history the longer RTT is the
    /// new base, and bulk grows again instead of sitting at its minimum window for ever.
    @Test func aLongerPathBecomesTheNewBaseAfterTheHistory() {
        var settings = ScavengerSettings()
        settings.target = .milliseconds(1)
        settings.baseHistory = .seconds(10)
        var limiter = ClassLimiter(rates: [:], scavenger: settings, now: .zero)
        var t = Instant(nanoseconds: 1_000_000)
        func ack(_ rttMs: Double, minMs: Double) {
            limiter.sent(.bulk, count: 1452)
            limiter.bulkAcked(1452, latestRTT: .microseconds(Int64(rttMs * 1000)), minRTT: .microseconds(Int64(minMs * 1000)),
                              smoothedRTT: .microseconds(Int64(rttMs * 1000)), now: t)
            t = t + .milliseconds(25)
        }
        for _ in 0..<40 { ack(0.5, minMs: 0.5) }   // 1 s on the short path
        // The route changes: 20 ms. ngtcp2's min RTT stays 0.5 ms for the rest of the connection.
        for _ in 0..<200 { ack(20, minMs: 0.5) }   // 5 s: looks like 19.5 ms of queue, bulk backs off
        #expect(limiter.bulkWindow == settings.minWindow)
        for _ in 0..<600 { ack(20, minMs: 0.5) }   // 15 s more: the short path left the history
        #expect(limiter.bulkWindow > 8 * settings.minWindow, "window \(limiter.bulkWindow)")
    }

    @Test func oneLateAcknowledgementIsNotAQueue() {
        var settings = ScavengerSettings()
        settings.target = .milliseconds(1)
        var limiter = ClassLimiter(rates: [:], scavenger: settings, now: .zero)
        let window = limiter.bulkWindow
        // A descheduled receiver: one sample 20 ms late among prompt ones does not cut the window.
        for (i, rtt) in [0.5, 0.5, 20.5, 0.5].enumerated() {
            limiter.sent(.bulk, count: 1452)
            limiter.bulkAcked(1452, latestRTT: .microseconds(Int64(rtt * 1000)), minRTT: .microseconds(500),
                              smoothedRTT: .microseconds(600), now: Instant(nanoseconds: UInt64(i + 1) * 1_000_000))
        }
        #expect(limiter.bulkWindow >= window)
        // A standing queue (every sample late) does.
        for i in 0..<8 {
            limiter.sent(.bulk, count: 1452)
            limiter.bulkAcked(1452, latestRTT: .microseconds(4500), minRTT: .microseconds(500),
                              smoothedRTT: .microseconds(600), now: Instant(nanoseconds: UInt64(i + 10) * 1_000_000))
        }
        #expect(limiter.bulkWindow < window)
    }
}

final class Flag: Sendable {
    let set = Atomic<Bool>(false)
    let count = Atomic<Int>(0)
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
