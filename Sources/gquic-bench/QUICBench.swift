import ArgumentParser
import Foundation
import MeshCore
import QUICTransport
import Synchronization

/// QUICTransport: bulk throughput, handshake time and request/response latency on loopback, next to
/// ngtcp2's own gtlsserver → gtlsclient measured in the same run.
struct QUICBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quic",
        abstract: "QUIC throughput, handshakes and round trips vs ngtcp2's gtlsserver/gtlsclient.")

    @Option(help: "MiB per bulk transfer.") var mib = 256
    @Option(help: "Fresh connections for the handshake percentiles.") var handshakes = 200
    @Option(help: "Round trips per latency measurement.") var roundTrips = 5000

    func run() async throws {
        var report = BenchReport(area: "quic")
        report.header()
        let dir = NSTemporaryDirectory() + "gquic-bench-quic-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir + "/www", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try shell("head -c \(mib << 20) /dev/urandom > \(dir)/www/big.bin && "
            + "openssl req -x509 -newkey ed25519 -nodes -keyout \(dir)/key.pem -out \(dir)/cert.pem -days 2 -subj /CN=localhost 2>/dev/null")
        let bytes = Double(mib << 20)
        let gtlsserver = FileManager.default.isExecutableFile(atPath: "/usr/sbin/gtlsserver") ? "/usr/sbin/gtlsserver" : "gtlsserver"
        let quiet = "-q --no-quic-dump --no-http-dump"

        progress("anchor: gtlsserver → gtlsclient")
        // Anchor: gtlsserver → gtlsclient, body discarded (two processes).
        let anchorPort = 24000 + Int(getpid() % 1000)
        let anchorServer = try Self.spawn(gtlsserver, quiet.split(separator: " ").map(String.init)
            + ["-d", dir + "/www", "127.0.0.1", String(anchorPort), dir + "/key.pem", dir + "/cert.pem"])
        try await Task.sleep(for: .milliseconds(300))
        let anchorSeconds = try Self.timed {
            _ = try shell("gtlsclient \(quiet) --exit-on-all-streams-close 127.0.0.1 \(anchorPort) https://127.0.0.1:\(anchorPort)/big.bin")
        }
        kill(anchorServer.processIdentifier, SIGKILL)
        anchorServer.waitUntilExit()
        let anchorRate = bytes / anchorSeconds / 1e6

        progress("ours: gquic-peer serve → HTTP3Client")
        // Ours: gquic-peer serve (another process) → HTTP3Client in this process, body discarded.
        let ourPort = anchorPort + 1
        let peer = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("gquic-peer").path
        let server = try Self.spawn(peer, ["serve", "--root", dir + "/www", "--listen", "127.0.0.1:\(ourPort)",
                                           "--cert", dir + "/cert.pem", "--key", dir + "/key.pem"])
        defer { server.terminate(); server.waitUntilExit() }
        try await Task.sleep(for: .milliseconds(500))
        let ours = try await HTTP3Client.download(url: "https://127.0.0.1:\(ourPort)/big.bin", to: "/dev/null", insecure: true)
        report.add(BenchRow("HTTP/3 \(mib) MiB, our server → our client", bytes / ours.seconds / 1e6, "MB/s",
                            anchor: "gtlsserver→gtlsclient", anchorValue: anchorRate, note: "body discarded, 2 processes"))
        progress("cross pairs")
        // Cross pairs.
        let crossPort = anchorPort + 2
        let crossServer = try Self.spawn(gtlsserver, quiet.split(separator: " ").map(String.init)
            + ["-d", dir + "/www", "127.0.0.1", String(crossPort), dir + "/key.pem", dir + "/cert.pem"])
        try await Task.sleep(for: .milliseconds(300))
        let fromGtls = try await HTTP3Client.download(url: "https://127.0.0.1:\(crossPort)/big.bin", to: "/dev/null", insecure: true)
        kill(crossServer.processIdentifier, SIGKILL) // gtlsserver ignores SIGTERM
        crossServer.waitUntilExit()
        report.add(BenchRow("HTTP/3 \(mib) MiB, gtlsserver → our client", bytes / fromGtls.seconds / 1e6, "MB/s",
                            anchor: "gtlsserver→gtlsclient", anchorValue: anchorRate))
        let toGtls = try Self.timed {
            _ = try shell("gtlsclient \(quiet) --exit-on-all-streams-close 127.0.0.1 \(ourPort) https://127.0.0.1:\(ourPort)/big.bin")
        }
        report.add(BenchRow("HTTP/3 \(mib) MiB, our server → gtlsclient", bytes / toGtls / 1e6, "MB/s",
                            anchor: "gtlsserver→gtlsclient", anchorValue: anchorRate))

        progress("mesh links")
        // Mesh links: two endpoints in this process (one I/O thread each).
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let meshServer = try QUICEndpoint(bind: PeerAddress(host: "127.0.0.1", port: 0), configuration: .init(tls: .mesh(identity: a)))
        let meshClient = try QUICEndpoint(bind: PeerAddress(host: "127.0.0.1", port: 0), configuration: .init(tls: .mesh(identity: b)))
        defer { meshClient.shutdown(); meshServer.shutdown() }
        let sink = Task {
            await withTaskGroup(of: Void.self) { group in
                for await link in meshServer.incomingLinks {
                    group.addTask {
                        await withTaskGroup(of: Void.self) { streams in
                            for await s in link.incomingStreams {
                                streams.addTask {
                                    if s.trafficClass == .bulk {
                                        while let _ = try? await s.read() {}
                                        try? await s.finish([1])
                                    } else {
                                        // Echo 64-byte messages until the stream ends.
                                        var pending: [UInt8] = []
                                        while let chunk = try? await s.read() {
                                            pending += chunk
                                            while pending.count >= 64 {
                                                try? await s.write(Array(pending.prefix(64)))
                                                pending.removeFirst(64)
                                            }
                                        }
                                        try? await s.finish()
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        defer { sink.cancel() }

        progress("handshakes")
        // Handshakes: fresh mesh connections (mutual TLS with node certificates).
        // Each also sends a 64-byte first request and times its echo (connect + first answer).
        let hello = [UInt8](repeating: 0x42, count: 64)
        var hs: [Double] = [], firstReply: [Double] = []
        for _ in 0..<handshakes {
            let t0 = ContinuousClock.now
            let link = try await meshClient.connect(to: meshServer.localAddress, expecting: a.nodeID, firstMessage: hello)
            hs.append((ContinuousClock.now - t0).seconds * 1e3)
            _ = try await link.firstStream?.readAll(limit: 64)
            firstReply.append((ContinuousClock.now - t0).seconds * 1e3)
            link.close()
        }
        hs.sort(); firstReply.sort()
        report.add(BenchRow("mesh handshake p50 (\(handshakes) fresh, mutual TLS)", Self.pct(hs, 0.50), "ms"))
        report.add(BenchRow("mesh handshake p99", Self.pct(hs, 0.99), "ms"))

        progress("resumed handshakes")
        // Resumed: each connection uses the ticket the previous one brought (TLS 1.3 PSK, 0-RTT request).
        let tickets = TicketStore()
        var rhs: [Double] = [], rFirstReply: [Double] = []
        var resumed = 0, early = 0
        let prime = try await meshClient.connect(to: meshServer.localAddress, expecting: a.nodeID, tickets: tickets)
        var previous = prime
        for _ in 0..<handshakes {
            for _ in 0..<200 where !tickets.has(a.nodeID) { try await Task.sleep(for: .milliseconds(1)) }
            previous.close()
            let t0 = ContinuousClock.now
            let link = try await meshClient.connect(to: meshServer.localAddress, expecting: a.nodeID, tickets: tickets, firstMessage: hello)
            rhs.append((ContinuousClock.now - t0).seconds * 1e3)
            _ = try await link.firstStream?.readAll(limit: 64)
            rFirstReply.append((ContinuousClock.now - t0).seconds * 1e3)
            if link.isResumed { resumed += 1 }
            if link.earlyDataAccepted { early += 1 }
            previous = link
        }
        previous.close()
        rhs.sort(); rFirstReply.sort()
        let note = "\(resumed)/\(handshakes) resumed, \(early) with 0-RTT accepted"
        report.add(BenchRow("mesh handshake p50 (\(handshakes) resumed, 0-RTT)", Self.pct(rhs, 0.50), "ms", note: note))
        report.add(BenchRow("mesh handshake p99 (resumed)", Self.pct(rhs, 0.99), "ms"))
        report.add(BenchRow("dial + first 64 B answer p50, fresh", Self.pct(firstReply, 0.50), "ms"))
        report.add(BenchRow("dial + first 64 B answer p99, fresh", Self.pct(firstReply, 0.99), "ms"))
        report.add(BenchRow("dial + first 64 B answer p50, 0-RTT", Self.pct(rFirstReply, 0.50), "ms"))
        report.add(BenchRow("dial + first 64 B answer p99, 0-RTT", Self.pct(rFirstReply, 0.99), "ms"))

        let link = try await meshClient.connect(to: meshServer.localAddress, expecting: a.nodeID)
        progress("mesh bulk")
        // Bulk: one stream.
        let bulkSeconds = try await Self.bulk(link, mib: mib)
        report.add(BenchRow("mesh link \(mib) MiB, one bulk stream", bytes / bulkSeconds / 1e6, "MB/s",
                            anchor: "gtlsserver→gtlsclient", anchorValue: anchorRate, note: "1 process, 2 I/O threads"))

        progress("round trips idle")
        // Round trips, idle.
        var idle = try await Self.roundTrips(link, .control, count: roundTrips)
        idle.sort()
        report.add(BenchRow("64 B round trip p50, idle", Self.pct(idle, 0.5), "µs"))
        report.add(BenchRow("64 B round trip p99, idle", Self.pct(idle, 0.99), "µs"))
        report.add(BenchRow("64 B round trip p999, idle", Self.pct(idle, 0.999), "µs"))
        progress("round trips under bulk")
        // Round trips on the control class while a bulk stream saturates the same connection.
        let bulkTask = Task { try await Self.bulk(link, mib: mib) }
        try await Task.sleep(for: .milliseconds(100))
        var loaded = try await Self.roundTrips(link, .control, count: roundTrips)
        _ = try? await bulkTask.value
        loaded.sort()
        report.add(BenchRow("64 B control round trip p50, bulk saturating", Self.pct(loaded, 0.5), "µs"))
        report.add(BenchRow("64 B control round trip p99, bulk saturating", Self.pct(loaded, 0.99), "µs",
                            anchor: "idle p99 + 1 ms (goal)", anchorValue: Self.pct(idle, 0.99) + 1000))
        report.add(BenchRow("64 B control round trip p999, bulk saturating", Self.pct(loaded, 0.999), "µs"))
        try report.write()
    }

    func progress(_ what: String) {
        FileHandle.standardError.write(Data("quic bench: \(what)…\n".utf8))
    }

    static func spawn(_ path: String, _ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    static func timed(_ body: () throws -> Void) rethrows -> Double {
        let t0 = ContinuousClock.now
        try body()
        return (ContinuousClock.now - t0).seconds
    }

    static func pct(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }

    static func bulk(_ link: QUICLink, mib: Int) async throws -> Double {
        let s = try await link.openStream(.bulk)
        let piece = [UInt8](repeating: 0x5a, count: 1 << 20)
        let t0 = ContinuousClock.now
        for _ in 0..<mib { try await s.write(piece) }
        try await s.finish()
        _ = try await s.readAll(limit: 16) // the receiver answers after reading everything
        return (ContinuousClock.now - t0).seconds
    }

    static func roundTrips(_ link: QUICLink, _ cls: TrafficClass, count: Int) async throws -> [Double] {
        let s = try await link.openStream(cls)
        let msg = [UInt8](repeating: 0x42, count: 64)
        var out: [Double] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            let t0 = ContinuousClock.now
            try await s.write(msg)
            var got = 0
            while got < 64, let chunk = try await s.read() { got += chunk.count }
            out.append((ContinuousClock.now - t0).seconds * 1e6)
        }
        try await s.finish()
        return out
    }
}
