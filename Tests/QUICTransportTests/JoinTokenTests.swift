import MeshCore
import Testing
@testable import QUICTransport

/// Admission by join token: the dialler proves it holds the cluster's token, bound to the session.
@Suite(.serialized) struct JoinTokenTests {
    static func server(_ id: NodeIdentity, tokens: [JoinToken]) throws -> QUICEndpoint {
        var config = QUICEndpoint.Configuration.forTests(tls: try .mesh(identity: id, admission: .joinTokens(tokens)))
        config.settings.handshakeTimeout = .milliseconds(800)
        return try QUICEndpoint(bind: MeshLinkTests.loopback, configuration: config)
    }

    static func client(_ id: NodeIdentity, token: JoinToken?) throws -> QUICEndpoint {
        try QUICEndpoint(bind: MeshLinkTests.loopback, configuration: .forTests(tls: .mesh(identity: id, joinToken: token)))
    }

    @Test func tokenTextRoundTrips() throws {
        let t = JoinToken.generate()
        #expect(try JoinToken(parsing: t.description) == t)
        #expect(t.description.hasPrefix("gqjoin1-"))
        #expect(throws: QUICError.self) { try JoinToken(parsing: "gqjoin1-zz-00") }
    }

    @Test func aHolderOfTheTokenIsAdmitted() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let token = JoinToken.generate()
        let server = try Self.server(a, tokens: [JoinToken.generate(), token]), client = try Self.client(b, token: token)
        defer { client.shutdown(); server.shutdown() }
        let echo = ResumptionTests.echo(server)
        // The first message is held by the server until the proof arrives, then answered.
        let link = try await client.connect(to: server.localAddress, expecting: a.nodeID, firstMessage: Array("hi".utf8))
        let s = try #require(link.firstStream)
        #expect(try await s.readAll(limit: 10) == Array("re:hi".utf8))
        #expect(!link.isClosed)
        client.shutdown(); server.shutdown()
        #expect(await echo.value == [b.nodeID])
    }

    @Test func aWrongOrMissingTokenIsRefused() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate(), c = try NodeIdentity.generate()
        let server = try Self.server(a, tokens: [JoinToken.generate()])
        let wrong = try Self.client(b, token: JoinToken.generate()), none = try Self.client(c, token: nil)
        defer { none.shutdown(); wrong.shutdown(); server.shutdown() }
        let echo = ResumptionTests.echo(server)
        let refusedBefore = QUICMetrics.shared.joinRefused.current

        // The refusal may overtake the end of the handshake (connect throws) or follow it (the link closes).
        func outcome(_ ep: QUICEndpoint) async -> QUICError? {
            do {
                let l = try await ep.connect(to: server.localAddress, expecting: a.nodeID, firstMessage: Array("x".utf8))
                return await l.waitClosed()
            } catch { return error }
        }
        let e1 = await outcome(wrong)
        #expect(e1?.description.contains("join token proof is invalid") == true, "\(String(describing: e1))")
        #expect(e1?.isAuthenticationFailure == true)
        let e2 = await outcome(none)
        #expect(e2?.description.contains("no join token presented") == true, "\(String(describing: e2))")

        #expect(QUICMetrics.shared.joinRefused.current >= refusedBefore + 2)
        server.shutdown()
        #expect(await echo.value.isEmpty) // neither link reached the application
    }
}
