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

final class Flag: Sendable {
    let set = Atomic<Bool>(false)
    let count = Atomic<Int>(0)
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
