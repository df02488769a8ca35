import Foundation
import MeshCore
import Testing
@testable import QUICTransport

/// Session resumption and 0-RTT between two real endpoints on loopback.
@Suite(.serialized) struct ResumptionTests {
    /// Waits (bounded) until the client has received a session ticket from `peer`.
    static func waitForTicket(_ store: TicketStore, _ peer: NodeID) async throws {
        for _ in 0..<200 where !store.has(peer) { try await Task.sleep(for: .milliseconds(10)) }
        try #require(store.has(peer), "no session ticket arrived")
    }

    /// The server answers each incoming stream with "re:" + what it read.
    static func echo(_ server: QUICEndpoint) -> Task<[NodeID], Never> {
        Task {
            var peers: [NodeID] = []
            for await link in server.incomingLinks {
                peers.append(link.peer)
                Task {
                    for await s in link.incomingStreams {
                        guard let m = try? await s.readAll(limit: 1000) else { continue }
                        try? await s.finish(Array("re:".utf8) + m)
                    }
                }
            }
            return peers
        }
    }

    @Test func reconnectResumesAndSendsTheFirstMessageAsEarlyData() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try MeshLinkTests.endpoint(a), client = try MeshLinkTests.endpoint(b)
        let echo = Self.echo(server)
        let store = TicketStore()
        let acceptedBefore = QUICMetrics.shared.earlyDataAccepted.current

        let first = try await client.connect(to: server.localAddress, expecting: a.nodeID, tickets: store,
                                             firstMessage: Array("hello".utf8))
        #expect(!first.isResumed)
        #expect(!first.earlyDataAccepted)
        let s1 = try #require(first.firstStream)
        #expect(try await s1.readAll(limit: 100) == Array("re:hello".utf8))
        try await Self.waitForTicket(store, a.nodeID)
        first.close()
        _ = await first.waitClosed()

        let second = try await client.connect(to: server.localAddress, expecting: a.nodeID, tickets: store,
                                              firstMessage: Array("again".utf8))
        #expect(second.isResumed)
        #expect(second.earlyDataAccepted)
        #expect(second.peer == a.nodeID)
        let s2 = try #require(second.firstStream)
        #expect(try await s2.readAll(limit: 100) == Array("re:again".utf8))
        #expect(QUICMetrics.shared.earlyDataAccepted.current > acceptedBefore)
        // The new connection brought a fresh ticket, so a third reconnect resumes as well.
        try await Self.waitForTicket(store, a.nodeID)

        client.shutdown(); server.shutdown()
        // The server learned the client's identity from the ticket, both times.
        #expect(await echo.value == [b.nodeID, b.nodeID])
    }

    /// A ticket only opens at the endpoint that sealed it. Another identity at the same place is
    /// refused (the full handshake exposes it); the same node after a restart cannot read the ticket,
    /// falls back to a full handshake, and the first message is sent again after the handshake.
    @Test func aTicketFromAnotherEndpointIsNotAccepted() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate(), other = try NodeIdentity.generate()
        let client = try MeshLinkTests.endpoint(b)
        defer { client.shutdown() }
        let store = TicketStore()
        let original = try MeshLinkTests.endpoint(a)
        let l = try await client.connect(to: original.localAddress, expecting: a.nodeID, tickets: store)
        try await Self.waitForTicket(store, a.nodeID)
        let ticket = try #require(store.take(for: a.nodeID))
        l.close(); _ = await l.waitClosed()
        original.shutdown()

        // Another identity: the ticket is not accepted and the identity check refuses the peer.
        let impostor = try MeshLinkTests.endpoint(other)
        let impostorEcho = Self.echo(impostor)
        store.store(ticket, for: a.nodeID)
        do {
            _ = try await client.connect(to: impostor.localAddress, expecting: a.nodeID, tickets: store,
                                         firstMessage: Array("secret".utf8))
            Issue.record("an impostor holding no ticket key completed the handshake")
        } catch {
            #expect(error.isAuthenticationFailure)
        }
        impostor.shutdown()
        #expect(await impostorEcho.value.isEmpty)

        // The same identity in a new process (new ticket key): full handshake, message re-sent in 1-RTT.
        let restarted = try MeshLinkTests.endpoint(a)
        let echo = Self.echo(restarted)
        store.store(ticket, for: a.nodeID)
        let rejectedBefore = QUICMetrics.shared.earlyDataRejected.current
        let link = try await client.connect(to: restarted.localAddress, expecting: a.nodeID, tickets: store,
                                            firstMessage: Array("hi".utf8))
        #expect(!link.isResumed)
        #expect(!link.earlyDataAccepted)
        #expect(QUICMetrics.shared.earlyDataRejected.current > rejectedBefore)
        let s = try #require(link.firstStream)
        #expect(try await s.readAll(limit: 100) == Array("re:hi".utf8))
        restarted.shutdown()
        #expect(await echo.value == [b.nodeID])
    }

    @Test func ticketsPersistInADirectory() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gquic-tickets-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try MeshLinkTests.endpoint(a), client = try MeshLinkTests.endpoint(b)
        defer { client.shutdown(); server.shutdown() }
        let l = try await client.connect(to: server.localAddress, expecting: a.nodeID, tickets: TicketStore(directory: dir))
        try await Self.waitForTicket(TicketStore(directory: dir), a.nodeID)
        l.close(); _ = await l.waitClosed()
        // A new store over the same directory (a restarted client) resumes.
        let again = try await client.connect(to: server.localAddress, expecting: a.nodeID, tickets: TicketStore(directory: dir))
        #expect(again.isResumed)
        try await Self.waitForTicket(TicketStore(directory: dir), a.nodeID)
        again.close(); _ = await again.waitClosed()
        // A corrupt file is ignored (full handshake), never trusted or crashed on.
        let path = "\(dir)/\(a.nodeID).ticket"
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: path))
        let fresh = try await client.connect(to: server.localAddress, expecting: a.nodeID, tickets: TicketStore(directory: dir))
        #expect(!fresh.isResumed)
    }

    /// A captured resumed first flight (ClientHello + 0-RTT request), replayed to the same server from
    /// another address, is not acted upon: GnuTLS anti-replay refuses its early data.
    @Test func aReplayedEarlyFlightIsNotServed() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try MeshLinkTests.endpoint(a), client = try MeshLinkTests.endpoint(b)
        let served = Flag()
        let sink = Task {
            for await link in server.incomingLinks {
                Task {
                    for await s in link.incomingStreams {
                        guard let m = try? await s.readAll(limit: 100) else { continue }
                        if m == Array("transfer".utf8) { served.count.add(1, ordering: .relaxed) }
                        try? await s.finish(Array("ok".utf8))
                    }
                }
            }
        }
        defer { sink.cancel(); client.shutdown(); server.shutdown() }
        let store = TicketStore()
        let first = try await client.connect(to: server.localAddress, expecting: a.nodeID, tickets: store)
        try await Self.waitForTicket(store, a.nodeID)
        first.close(); _ = await first.waitClosed()

        let path = try PathEmulator(to: server.localAddress)
        defer { path.stop() }
        let second = try await client.connect(to: path.address, expecting: a.nodeID, tickets: store,
                                              firstMessage: Array("transfer".utf8))
        #expect(second.earlyDataAccepted)
        _ = try await second.firstStream?.readAll(limit: 10)
        #expect(served.count.load(ordering: .relaxed) == 1)
        second.close(); _ = await second.waitClosed()
        for _ in 0..<100 where await server.connectionCount() > 0 { try await Task.sleep(for: .milliseconds(10)) }

        // The attacker replays what it captured from its own address.
        let flight = path.firstUpstream.withLock { $0 }
        let attacker = try UDPSocket(bind: SocketAddress(ip: "127.0.0.1", port: 0)!)
        let target = try SocketAddress.resolve(server.localAddress)
        for d in flight.prefix(4) { d.withUnsafeBytes { _ = attacker.send($0, segmentSize: $0.count, to: target) } }
        try await Task.sleep(for: .milliseconds(300))
        #expect(served.count.load(ordering: .relaxed) == 1, "the replayed 0-RTT request was served")
    }
}
