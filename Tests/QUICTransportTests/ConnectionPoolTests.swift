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
}
