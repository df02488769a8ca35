import MeshCore
import Testing
@testable import QUICTransport

/// Per-connection stats on a lossy path, and their export through `QUICMetrics`.
@Suite(.serialized) struct StatsTests {
    @Test func lossIsCountedAndExported() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try MeshLinkTests.endpoint(a), client = try MeshLinkTests.endpoint(b)
        let path = try PathEmulator(to: server.localAddress, dropEvery: 40)
        defer { client.shutdown(); server.shutdown(); path.stop() }
        let lostBefore = QUICMetrics.shared.packetsLost.current
        let sink = Task {
            var it = server.incomingLinks.makeAsyncIterator()
            guard let link = await it.next() else { return 0 }
            var streams = link.incomingStreams.makeAsyncIterator()
            guard let s = await streams.next() else { return 0 }
            var n = 0
            while let chunk = try? await s.read() { n += chunk.count }
            try? await s.finish([1])
            return n
        }
        let link = try await client.connect(to: path.address, expecting: a.nodeID)
        let s = try await link.openStream(.bulk)
        let mib = 2
        try await s.finish([UInt8](repeating: 7, count: mib << 20))
        _ = try await s.readAll(limit: 16)
        #expect(await sink.value == mib << 20)
        let stats = try #require(await link.stats())
        #expect(stats.lostPackets > 0, "\(stats)")
        #expect(stats.smoothedRTT > .zero && stats.congestionWindow > 0 && stats.bytesSent > UInt64(mib << 20))
        #expect(path.dropped.load(ordering: .relaxed) > 0)
        // The endpoint publishes its connections and the losses (about every 250 ms).
        var exported: QUICMetrics.ConnectionSnapshot?
        for _ in 0..<100 {
            exported = QUICMetrics.shared.connections.first { $0.peer == a.nodeID }
            if exported != nil && QUICMetrics.shared.packetsLost.current > lostBefore { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(exported?.stats.bytesSent ?? 0 > 0)
        #expect(exported?.isServer == false)
        #expect(QUICMetrics.shared.packetsLost.current > lostBefore)
        link.close()
        _ = await link.waitClosed()
    }
}

/// DSCP per traffic class and ECN codepoints on the wire, seen by a relay between the endpoints.
@Suite(.serialized) struct MarkingTests {
    @Test func packetsCarryTheirClassDSCPAndECN() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        var cc = QUICEndpoint.Configuration.forTests(tls: try .mesh(identity: b))
        cc.settings.dscpMarking = true
        let server = try MeshLinkTests.endpoint(a)
        let client = try QUICEndpoint(bind: MeshLinkTests.loopback, configuration: cc)
        let path = try PathEmulator(to: server.localAddress)
        defer { client.shutdown(); server.shutdown(); path.stop() }
        let echo = ResumptionTests.echo(server)
        let link = try await client.connect(to: path.address, expecting: a.nodeID)
        let bulk = try await link.openStream(.bulk)
        try await bulk.finish([UInt8](repeating: 1, count: 900))
        _ = try await bulk.readAll(limit: 1 << 20)
        let control = try await link.openStream(.control)
        try await control.finish([2])
        _ = try await control.readAll(limit: 10)
        let marks = path.upstreamTOS.withLock { $0 }
        let dscps = Set(marks.keys.map { $0 >> 2 })
        #expect(dscps.contains(46), "no EF-marked packet: \(marks)")  // control
        #expect(dscps.contains(8), "no CS1-marked packet: \(marks)")   // bulk
        // ngtcp2 validates ECN with ECT(0) marks; the relay passes them on and the server echoes counts.
        #expect(marks.keys.contains { $0 & 0x3 == 0x2 }, "no ECT(0) packet: \(marks)")
        let stats = try #require(await link.stats())
        #expect(stats.bytesSent > 900)
        _ = echo
    }
}
