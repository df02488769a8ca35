import Foundation
import MeshCore
import Testing
@testable import QUICTransport

/// Two real endpoints on loopback, real ngtcp2 and GnuTLS: the link every mesh module rides on.
@Suite(.serialized) struct MeshLinkTests {
    static let loopback = PeerAddress(host: "127.0.0.1", port: 0)

    static func endpoint(_ id: NodeIdentity, admission: AdmissionPolicy = .anyNode) throws -> QUICEndpoint {
        try QUICEndpoint(bind: loopback, configuration: .forTests(tls: .mesh(identity: id, admission: admission)))
    }

    @Test func mutualAuthenticationNamesBothPeers() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try Self.endpoint(a), client = try Self.endpoint(b)
        defer { client.shutdown(); server.shutdown() }
        let link = try await client.connect(to: server.localAddress, expecting: a.nodeID)
        #expect(link.peer == a.nodeID)
        var it = server.incomingLinks.makeAsyncIterator()
        let accepted = try #require(await it.next())
        #expect(accepted.peer == b.nodeID)

        // A request/response on the control class.
        let s = try await link.openStream(.control)
        try await s.finish(Array("ping".utf8))
        var streams = accepted.incomingStreams.makeAsyncIterator()
        let incoming = try #require(await streams.next())
        #expect(incoming.trafficClass == .control)
        #expect(try await incoming.readAll(limit: 100) == Array("ping".utf8))
        try await incoming.finish(Array("pong".utf8))
        #expect(try await s.readAll(limit: 100) == Array("pong".utf8))
        let stats = try #require(await link.stats())
        #expect(stats.smoothedRTT > .zero)
        #expect(stats.bytesSent > 0)
    }

    @Test func dialingTheWrongIdentityFails() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate(), c = try NodeIdentity.generate()
        let server = try Self.endpoint(a), client = try Self.endpoint(b)
        defer { client.shutdown(); server.shutdown() }
        await #expect(throws: QUICError.self) {
            _ = try await client.connect(to: server.localAddress, expecting: c.nodeID)
        }
        do {
            _ = try await client.connect(to: server.localAddress, expecting: c.nodeID)
        } catch {
            #expect(error.isAuthenticationFailure)
            #expect(error.description.contains(c.nodeID.description))
        }
    }

    @Test func peerNotAdmittedIsRefused() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate(), friend = try NodeIdentity.generate()
        let refusedBefore = QUICMetrics.shared.peersRefused.current
        let server = try Self.endpoint(a, admission: .allowList([friend.nodeID]))
        let client = try Self.endpoint(b)
        defer { client.shutdown(); server.shutdown() }
        await #expect(throws: QUICError.self) {
            _ = try await client.connect(to: server.localAddress, expecting: a.nodeID)
        }
        #expect(QUICMetrics.shared.peersRefused.current > refusedBefore)
        // The admitted friend gets in.
        let friendly = try Self.endpoint(friend)
        defer { friendly.shutdown() }
        let link = try await friendly.connect(to: server.localAddress, expecting: a.nodeID)
        #expect(link.peer == a.nodeID)
    }

    /// An idle link closes after the idle timeout unless keep-alive PINGs hold it open.
    @Test func keepAliveHoldsAnIdleLinkOpen() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        var settings = QUICSettings()
        settings.idleTimeout = .milliseconds(600)
        var quiet = QUICEndpoint.Configuration(tls: try .mesh(identity: a)); quiet.settings = settings
        settings.keepAlive = .milliseconds(150)
        var alive = QUICEndpoint.Configuration(tls: try .mesh(identity: b)); alive.settings = settings
        let server = try QUICEndpoint(bind: Self.loopback, configuration: quiet)
        let client = try QUICEndpoint(bind: Self.loopback, configuration: alive)
        var plain = QUICEndpoint.Configuration(tls: try .mesh(identity: b)); plain.settings.idleTimeout = .milliseconds(600)
        let idle = try QUICEndpoint(bind: Self.loopback, configuration: plain)
        defer { idle.shutdown(); client.shutdown(); server.shutdown() }
        let kept = try await client.connect(to: server.localAddress)
        let dropped = try await idle.connect(to: server.localAddress)
        try await Task.sleep(for: .milliseconds(1500))
        #expect(!kept.isClosed)
        #expect(dropped.isClosed)
    }

    @Test func qlogIsWrittenWhenAsked() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gquic-qlog-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        var config = QUICEndpoint.Configuration.forTests(tls: try .mesh(identity: b))
        config.settings.qlogDirectory = dir
        let server = try Self.endpoint(a), client = try QUICEndpoint(bind: Self.loopback, configuration: config)
        let link = try await client.connect(to: server.localAddress)
        link.close()
        _ = await link.waitClosed()
        client.shutdown(); server.shutdown()
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(files.count == 1)
        let text = try String(contentsOfFile: dir + "/" + files[0], encoding: .utf8)
        #expect(text.contains("qlog_version"))
        #expect(text.contains("packet_sent"))
    }

    /// Admission by cluster CA: a node whose certificate the CA issued gets in; a self-signed node and
    /// a node certified by another CA are refused.
    @Test func clusterCAAdmitsOnlyItsNodes() async throws {
        let ca = try NodeIdentity.generate(), otherCA = try NodeIdentity.generate()
        let caPEM = try NodeCertificate.clusterCA(ca), otherPEM = try NodeCertificate.clusterCA(otherCA)
        let a = try NodeIdentity.generate(), member = try NodeIdentity.generate(), stranger = try NodeIdentity.generate()
        let policy = try AdmissionPolicy.clusterCA(certificatePEM: caPEM)
        let server = try QUICEndpoint(bind: Self.loopback, configuration: .forTests(tls: .mesh(
            identity: a, certificatePEM: NodeCertificate.issued(for: a, by: ca, caCertificatePEM: caPEM), admission: policy)))
        let good = try QUICEndpoint(bind: Self.loopback, configuration: .forTests(tls: .mesh(
            identity: member, certificatePEM: NodeCertificate.issued(for: member, by: ca, caCertificatePEM: caPEM), admission: policy)))
        let selfSigned = try QUICEndpoint(bind: Self.loopback, configuration: .forTests(tls: .mesh(identity: stranger, admission: policy)))
        let foreign = try QUICEndpoint(bind: Self.loopback, configuration: .forTests(tls: .mesh(
            identity: stranger, certificatePEM: NodeCertificate.issued(for: stranger, by: otherCA, caCertificatePEM: otherPEM))))
        defer { foreign.shutdown(); selfSigned.shutdown(); good.shutdown(); server.shutdown() }
        let link = try await good.connect(to: server.localAddress, expecting: a.nodeID)
        #expect(link.peer == a.nodeID)
        await #expect(throws: QUICError.self) { _ = try await selfSigned.connect(to: server.localAddress) }
        await #expect(throws: QUICError.self) { _ = try await foreign.connect(to: server.localAddress) }
    }

    /// A client linked to a server: the client's link and the server's side of it.
    static func linkedPair() async throws -> (server: QUICEndpoint, client: QUICEndpoint, link: QUICLink, accepted: QUICLink) {
        let server = try endpoint(try NodeIdentity.generate()), client = try endpoint(try NodeIdentity.generate())
        let link = try await client.connect(to: server.localAddress)
        var it = server.incomingLinks.makeAsyncIterator()
        let accepted = try #require(await it.next())
        return (server, client, link, accepted)
    }

    @Test func datagramsArrive() async throws {
        let (server, client, link, accepted) = try await Self.linkedPair()
        defer { client.shutdown(); server.shutdown() }
        var got = accepted.datagrams.makeAsyncIterator()
        // DATAGRAM frames may be lost; loopback does not lose, but send a few to be safe.
        for i in 0..<5 { link.sendDatagram([UInt8(i), 42]) }
        let first = try #require(await got.next())
        #expect(first.last == 42)
    }

    @Test("read(minimum:) hands over at least that many bytes at once, and what is left at the end")
    func readMinimumWaitsForWholeFrames() async throws {
        let (server, client, link, accepted) = try await Self.linkedPair()
        defer { client.shutdown(); server.shutdown() }
        let s = try await link.openStream(.bulk, bidirectional: false)
        let payload = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        // Many small writes: the reader would otherwise be woken for each packet's worth.
        for k in stride(from: 0, to: 150_000, by: 1000) { try await s.write(Array(payload[k..<k + 1000])) }
        var streams = accepted.incomingStreams.makeAsyncIterator()
        let incoming = try #require(await streams.next())
        var got: [UInt8] = []
        let first = try #require(try await incoming.read(minimum: 100_000))
        #expect(first.count >= 100_000)
        got += first
        while got.count < 150_000, let more = try await incoming.read(minimum: 150_000 - got.count) {
            #expect(more.count >= 150_000 - got.count)
            got += more
        }
        // A minimum above what ever comes: the end of the stream hands over the rest.
        try await s.finish(Array(payload[150_000...]))
        var rest: [UInt8] = []
        while let more = try await incoming.read(minimum: QUICStream.maxReadMinimum) { rest += more }
        #expect(got + rest == payload)
    }
}

extension QUICEndpoint.Configuration {
    /// Test endpoints send keep-alive PINGs from their I/O thread, so a link survives while the test
    /// process's task pool is stalled by other suites' CPU-bound tests (seen: 30–70 s on a loaded
    /// 2-core host), which would otherwise let the 30 s idle timeout close it mid-test.
    static func forTests(tls: TLSConfiguration) -> Self {
        var c = Self(tls: tls)
        c.settings.keepAlive = .seconds(2)
        return c
    }
}
