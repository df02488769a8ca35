import MeshCore
import Testing
@testable import QUICTransport

/// `QUICConnection` without sockets or a real clock: datagrams are handed across in memory and time
/// is virtual, as the simulator drives it.
@Suite struct SansIOConnectionTests {
    static let clientAddr = SocketAddress(ip: "10.0.0.1", port: 1111)!
    static let serverAddr = SocketAddress(ip: "10.0.0.2", port: 2222)!

    @Test func handshakeInVirtualTime() throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        var now = Instant(nanoseconds: 1_000_000_000)
        let secret = [UInt8](repeating: 7, count: 32)
        let client = try QUICConnection(clientTo: Self.serverAddr, local: Self.clientAddr, credentials: TLSCredentials(.mesh(identity: b)),
                                        alpn: ["gquic/1"], serverName: nil, expectedPeer: a.nodeID, settings: QUICSettings(),
                                        resetSecret: secret, now: now, logger: .init(label: "c"))
        var toServer = client.pollTransmit(now: now)
        let first = try #require(toServer.first)
        let header = try #require(first.withUnsafeBytes { PacketHeader.acceptInitial($0) })
        let server = try QUICConnection(serverFor: header, remote: Self.clientAddr, local: Self.serverAddr,
                                        credentials: TLSCredentials(.mesh(identity: a)), alpn: ["gquic/1"], settings: QUICSettings(),
                                        resetSecret: secret, now: now, logger: .init(label: "s"))
        // 5 ms one-way latency, shuttled by hand until both sides are established.
        for _ in 0..<10 {
            now = now + .milliseconds(5)
            for d in toServer { d.withUnsafeBytes { server.receive($0, from: Self.clientAddr, now: now) } }
            let toClient = server.pollTransmit(now: now)
            now = now + .milliseconds(5)
            for d in toClient { d.withUnsafeBytes { client.receive($0, from: Self.serverAddr, now: now) } }
            toServer = client.pollTransmit(now: now)
            if client.isEstablished && server.isEstablished && toServer.isEmpty { break }
        }
        #expect(client.isEstablished)
        #expect(server.isEstablished)
        #expect(client.peerNodeID == a.nodeID)
        #expect(server.peerNodeID == b.nodeID)
        // The RTT the client measured is the virtual one.
        let rtt = client.stats.smoothedRTT
        #expect(rtt >= .milliseconds(9) && rtt <= .milliseconds(40))
    }

    @Test func handshakeTimesOutInVirtualTime() throws {
        let b = try NodeIdentity.generate()
        var settings = QUICSettings()
        settings.handshakeTimeout = .seconds(3)
        var now = Instant(nanoseconds: 5_000_000_000)
        let client = try QUICConnection(clientTo: Self.serverAddr, local: Self.clientAddr, credentials: TLSCredentials(.mesh(identity: b)),
                                        alpn: ["gquic/1"], serverName: nil, expectedPeer: nil, settings: settings,
                                        resetSecret: [UInt8](repeating: 1, count: 32), now: now, logger: .init(label: "c"))
        _ = client.pollTransmit(now: now)
        var steps = 0
        while !client.isClosed && steps < 100 {
            now = max(now, client.nextTimeout)   // jump straight to each timer: no real waiting
            client.handleTimeout(now: now)
            _ = client.pollTransmit(now: now)
            steps += 1
        }
        #expect(client.isClosed)
        #expect(now <= Instant(nanoseconds: 5_000_000_000) + .seconds(4))
        #expect(client.events.contains { if case .closed(let e) = $0 { "\(e.map { "\($0)" } ?? "")".contains("timed out") } else { false } })
    }
}

/// The public sans-IO driver: real ngtcp2 packets, virtual time, streams through `QUICLink`.
@Suite struct SansIODriverTests {
    @Test func aStreamRoundTripInVirtualTime() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let serverSide = try SansIOQUIC(tls: .mesh(identity: a)), clientSide = try SansIOQUIC(tls: .mesh(identity: b))
        let ca = SansIOConnectionTests.clientAddr, sa = SansIOConnectionTests.serverAddr
        var now = Instant(nanoseconds: 1_000_000_000)
        let client = try clientSide.dial(sa, from: ca, expecting: a.nodeID, now: now)
        var server: QUICConnection?
        var toServer = client.pollTransmit(now: now), toClient: [[UInt8]] = []
        // A 10 ms round trip, one step per 5 ms of virtual time.
        func step() throws {
            now = now + .milliseconds(5)
            for d in toServer {
                if let server { d.withUnsafeBytes { server.receive($0, from: ca, now: now) } }
                else { server = try serverSide.accept(d, from: ca, at: sa, now: now) }
            }
            for d in toClient { d.withUnsafeBytes { client.receive($0, from: sa, now: now) } }
            for c in [client] + (server.map { [$0] } ?? []) where c.nextTimeout <= now { c.handleTimeout(now: now) }
            clientSide.runPending(); serverSide.runPending()
            toServer = client.pollTransmit(now: now)
            toClient = server?.pollTransmit(now: now) ?? []
        }
        for _ in 0..<20 where !(client.isEstablished && server?.isEstablished == true) { try step() }
        let clientLink = try #require(client.link), serverLink = try #require(server?.link)
        #expect(clientLink.peer == a.nodeID && serverLink.peer == b.nodeID)

        let done = Flag()
        let exchange = Task {
            defer { done.set.store(true, ordering: .relaxed) }
            let s = try await clientLink.openStream(.control)
            try await s.finish(Array("ping".utf8))
            return try await s.readAll(limit: 100)
        }
        let answer = Task {
            var it = serverLink.incomingStreams.makeAsyncIterator()
            guard let s = await it.next() else { return [UInt8]() }
            let m = try await s.readAll(limit: 100)
            try await s.finish(m + Array("/pong".utf8))
            return m
        }
        let start = now
        for _ in 0..<400 {
            try step()
            await Task.yield()
            try await Task.sleep(for: .milliseconds(1)) // real time only for the tasks to run
            if done.set.load(ordering: .relaxed) { break }
        }
        #expect(try await answer.value == Array("ping".utf8))
        #expect(try await exchange.value == Array("ping/pong".utf8))
        // The exchange took virtual round trips, not wall-clock ones.
        #expect(now - start >= .milliseconds(10))
        #expect(client.stats.smoothedRTT >= .milliseconds(9))
    }
}
