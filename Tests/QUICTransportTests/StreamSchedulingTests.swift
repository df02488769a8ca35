import Foundation
import MeshCore
import Synchronization
import Testing
@testable import QUICTransport

@Suite(.serialized) struct StreamSchedulingTests {
    static func pair() async throws -> (QUICEndpoint, QUICEndpoint, QUICLink, QUICLink) {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let server = try MeshLinkTests.endpoint(a), client = try MeshLinkTests.endpoint(b)
        let link = try await client.connect(to: server.localAddress, expecting: a.nodeID)
        var it = server.incomingLinks.makeAsyncIterator()
        let accepted = try #require(await it.next())
        return (server, client, link, accepted)
    }

    @Test func thousandConcurrentStreamsAllComplete() async throws {
        let (server, client, link, accepted) = try await Self.pair()
        defer { client.shutdown(); server.shutdown() }
        // Echo server: every incoming stream gets its bytes back reversed.
        let echo = Task {
            await withTaskGroup(of: Void.self) { group in
                for await s in accepted.incomingStreams {
                    group.addTask {
                        guard let body = try? await s.readAll(limit: 1 << 16) else { return }
                        try? await s.finish(body.reversed())
                    }
                }
            }
        }
        defer { echo.cancel() }
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<1000 {
                group.addTask {
                    let s = try await link.openStream(TrafficClass.allCases[i % 4])
                    let body = Array("stream \(i) ".utf8) + [UInt8](repeating: UInt8(i & 0xff), count: i % 300)
                    try await s.finish(body)
                    return try await s.readAll(limit: 1 << 16) == body.reversed()
                }
            }
            var ok = 0
            for try await r in group where r { ok += 1 }
            return ok
        }
        #expect(results == 1000)
    }

    /// A control message queued behind a large bulk transfer on the same connection arrives before
    /// the bulk transfer ends: the scheduler serves the highest class first.
    @Test func controlOvertakesBulk() async throws {
        let bulkSize = Int(ProcessInfo.processInfo.environment["GQUIC_BULK_MIB"] ?? "16")! << 20
        let (server, client, link, accepted) = try await Self.pair()
        defer { client.shutdown(); server.shutdown() }
        final class Seen: Sendable {
            let order = Mutex<[String]>([])
            let bulkStarted = Atomic<Int>(0)
        }
        let seenBox = Seen()
        let receiver = Task {
            await withTaskGroup(of: Void.self) { group in
                for await s in accepted.incomingStreams {
                    group.addTask {
                        var total = 0
                        while let chunk = try? await s.read() {
                            total += chunk.count
                            if s.trafficClass == .bulk { seenBox.bulkStarted.store(total, ordering: .relaxed) }
                        }
                        seenBox.order.withLock { $0.append("\(s.trafficClass):\(total)") }
                    }
                }
            }
        }
        defer { receiver.cancel() }
        let bulk = try await link.openStream(.bulk)
        let writer = Task {
            let piece = [UInt8](repeating: 0xb, count: 1 << 20)
            for _ in 0..<(bulkSize >> 20) { try await bulk.write(piece) }
            try await bulk.finish()
        }
        while seenBox.bulkStarted.load(ordering: .relaxed) < 1 << 20 { try await Task.sleep(for: .milliseconds(1)) }
        let control = try await link.openStream(.control)
        try await control.finish(Array("stop container 7".utf8))
        try await writer.value
        while seenBox.order.withLock({ $0.count }) < 2 { try await Task.sleep(for: .milliseconds(5)) }
        let seen = seenBox.order.withLock { $0 }
        #expect(seen.first == "control:16")
        #expect(seen.last == "bulk:\(bulkSize)")
    }
}
