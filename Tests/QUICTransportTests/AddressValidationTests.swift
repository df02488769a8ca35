import MeshCore
import Testing
@testable import QUICTransport

/// Retry-based address validation, on when an endpoint asks for it.
@Suite(.serialized) struct AddressValidationTests {
    static func validatingServer(_ id: NodeIdentity) throws -> QUICEndpoint {
        var config = QUICEndpoint.Configuration.forTests(tls: try .mesh(identity: id))
        config.validatesAddresses = true
        return try QUICEndpoint(bind: MeshLinkTests.loopback, configuration: config)
    }

    @Test func aClientCompletesThroughRetry() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try Self.validatingServer(a), client = try MeshLinkTests.endpoint(b)
        defer { client.shutdown(); server.shutdown() }
        let retriesBefore = QUICMetrics.shared.retriesSent.current
        let link = try await client.connect(to: server.localAddress, expecting: a.nodeID)
        #expect(link.peer == a.nodeID)
        #expect(QUICMetrics.shared.retriesSent.current > retriesBefore)
        // The link works after the Retry round trip.
        let echo = ResumptionTests.echo(server)
        let s = try await link.openStream(.control)
        try await s.finish(Array("x".utf8))
        #expect(try await s.readAll(limit: 10) == Array("re:x".utf8))
        _ = echo
    }

    @Test func aForgedTokenIsRefused() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try Self.validatingServer(a)
        var forged = [UInt8](repeating: 0, count: 90)
        for i in forged.indices { forged[i] = UInt8.random(in: 0...255) }
        forged[0] = 0xb6 // looks like a Retry token, but was not sealed with the server's key
        var config = QUICEndpoint.Configuration.forTests(tls: try .mesh(identity: b))
        config.settings.initialToken = forged
        config.settings.handshakeTimeout = .seconds(2)
        let client = try QUICEndpoint(bind: MeshLinkTests.loopback, configuration: config)
        defer { client.shutdown(); server.shutdown() }
        let invalidBefore = QUICMetrics.shared.invalidTokens.current
        await #expect(throws: QUICError.self) { _ = try await client.connect(to: server.localAddress, expecting: a.nodeID) }
        #expect(QUICMetrics.shared.invalidTokens.current > invalidBefore)
        #expect(await server.connectionCount() == 0)
    }
}
