#if canImport(Glibc)
import Glibc
#endif
import Foundation
import MeshCore
import Testing
@testable import QUICTransport

/// Untrusted input at a listening endpoint: random and mutated datagrams are dropped (or answered
/// statelessly) without a crash, and a legitimate link on the same endpoint keeps working.
@Suite(.serialized) struct RobustnessTests {
    static var count: Int {
        ProcessInfo.processInfo.environment["GQUIC_QUIC_INTEGRATION"] == "1" ? 100_000 : 5_000
    }

    @Test func garbageDatagramsAreDroppedWhileALinkKeepsWorking() async throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try MeshLinkTests.endpoint(a), client = try MeshLinkTests.endpoint(b)
        defer { client.shutdown(); server.shutdown() }
        let link = try await client.connect(to: server.localAddress, expecting: a.nodeID)
        var it = server.incomingLinks.makeAsyncIterator()
        let accepted = try #require(await it.next())
        let echo = Task {
            for await s in accepted.incomingStreams {
                let body = try await s.readAll(limit: 1 << 20)
                try await s.finish(body)
            }
        }
        defer { echo.cancel() }

        // A real client Initial to mutate: capture what a fresh connection sends first.
        let probe = try QUICConnection(clientTo: SocketAddress(ip: "127.0.0.1", port: server.localAddress.port)!,
                                       local: SocketAddress(ip: "127.0.0.1", port: 1)!,
                                       credentials: TLSCredentials(.mesh(identity: b)), alpn: ["gquic/1"], serverName: nil,
                                       expectedPeer: nil, settings: QUICSettings(), resetSecret: [UInt8](repeating: 1, count: 32),
                                       now: SystemClock().now(), logger: .init(label: "probe"))
        let initial = try #require(probe.pollTransmit(now: SystemClock().now()).first)
        #expect(initial.count >= 1200)

        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        let target = SocketAddress(ip: "127.0.0.1", port: server.localAddress.port)!
        let seed = SeededRandom(seed: 7)
        let fuzz = Task.detached { [count = Self.count, initial, fd, target, seed] in
            var rng = seed
            var dest = target
            for i in 0..<count {
                var d: [UInt8]
                switch i % 4 {
                case 0: // random bytes, random length
                    d = (0..<Int(rng.next() % 1500 + 1)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                case 1: // a client Initial with a few flipped bytes
                    d = initial
                    for _ in 0..<3 { d[Int(rng.next() % UInt64(d.count))] ^= UInt8(truncatingIfNeeded: rng.next() | 1) }
                case 2: // a long header with an unknown version
                    d = initial
                    d[1] = 0x1a; d[2] = 0x2a; d[3] = 0x3a; d[4] = 0x4a
                default: // a short header to an unknown connection
                    d = [0x40 | UInt8(truncatingIfNeeded: rng.next() & 0x3f)] + (0..<60).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                }
                _ = d.withUnsafeBytes { p in
                    withUnsafePointer(to: &dest.storage) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, p.baseAddress, p.count, 0, $0, dest.length) }
                    }
                }
                if i % 2000 == 0 { try? await Task.sleep(for: .milliseconds(1)) }
            }
        }
        // Meanwhile the real link carries requests.
        var rounds = 0
        while !fuzz.isCancelled {
            let s = try await link.openStream(.interactive)
            let msg = Array("round \(rounds)".utf8)
            try await s.finish(msg)
            #expect(try await s.readAll(limit: 100) == msg)
            rounds += 1
            if rounds > 5, await fuzzDone(fuzz) { break }
        }
        await fuzz.value
        // And still after.
        let s = try await link.openStream(.control)
        try await s.finish([1, 2, 3])
        #expect(try await s.readAll(limit: 100) == [1, 2, 3])
        #expect(!link.isClosed)
        // No state was kept for the garbage: only the real connection remains.
        #expect(await server.connectionCount() == 1)
        #expect(QUICMetrics.shared.datagramsDropped.current > 0)
    }

    private func fuzzDone(_ t: Task<Void, Never>) async -> Bool {
        await withTaskGroup(of: Bool.self) { g in
            g.addTask { await t.value; return true }
            g.addTask { try? await Task.sleep(for: .milliseconds(20)); return false }
            let first = await g.next()!
            g.cancelAll()
            return first
        }
    }
}
