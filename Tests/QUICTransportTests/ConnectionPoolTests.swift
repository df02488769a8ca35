import MeshCore
import Testing
@testable import QUICTransport

@Suite(.serialized) struct ConnectionPoolTests {
    @Test func concurrentRequestsShareOneConnection() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try MeshLinkTests.endpoint(a), client = try MeshLinkTests.endpoint(b)
        defer { client.shutdown(); server.shutdown() }
        let pool = ConnectionPool(endpoint: client)
        let links = try await withThrowingTaskGroup(of: QUICLink.self) { group in
            for _ in 0..<20 { group.addTask { try await pool.link(to: a.nodeID, at: server.localAddress) } }
            var out: [QUICLink] = []
            for try await l in group { out.append(l) }
            return out
        }
        #expect(Set(links.map { ObjectIdentifier($0) }).count == 1)
        #expect(await server.connectionCount() == 1)
        // A closed link is replaced on the next request.
        links[0].close()
        _ = await links[0].waitClosed()
        let again = try await pool.link(to: a.nodeID, at: server.localAddress)
        #expect(again !== links[0])
        #expect(!again.isClosed)
    }

    @Test func failedDialsBackOff() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate(), wrong = try NodeIdentity.generate()
        let server = try MeshLinkTests.endpoint(a), client = try MeshLinkTests.endpoint(b)
        defer { client.shutdown(); server.shutdown() }
        let pool = ConnectionPool(endpoint: client, initialBackoff: .seconds(60))
        await #expect(throws: QUICError.self) { _ = try await pool.link(to: wrong.nodeID, at: server.localAddress) }
        // Within the back-off window the pool refuses at once instead of dialling again.
        do {
            _ = try await pool.link(to: wrong.nodeID, at: server.localAddress)
            Issue.record("expected a back-off refusal")
        } catch {
            #expect("\(error)".contains("backing off"))
        }
    }

    /// A reconnect through the pool resumes the session and carries the request as 0-RTT data.
    @Test func reconnectResumesWithEarlyData() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try MeshLinkTests.endpoint(a), client = try MeshLinkTests.endpoint(b)
        let echo = ResumptionTests.echo(server)
        defer { client.shutdown(); server.shutdown() }
        let pool = ConnectionPool(endpoint: client)
        let s1 = try await pool.request(Array("one".utf8), to: a.nodeID, at: server.localAddress)
        #expect(try await s1.readAll(limit: 100) == Array("re:one".utf8))
        let first = try await pool.link(to: a.nodeID, at: server.localAddress)
        #expect(!first.isResumed)
        try await ResumptionTests.waitForTicket(pool.tickets, a.nodeID)
        first.close()
        _ = await first.waitClosed()
        let s2 = try await pool.request(Array("two".utf8), to: a.nodeID, at: server.localAddress)
        #expect(try await s2.readAll(limit: 100) == Array("re:two".utf8))
        let second = try await pool.link(to: a.nodeID, at: server.localAddress)
        #expect(second !== first)
        #expect(second.isResumed)
        #expect(second.earlyDataAccepted)
        _ = echo
    }
}
