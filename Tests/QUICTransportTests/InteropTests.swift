import Foundation
import MeshCore
import Testing
@testable import QUICTransport

/// HTTP/3 interop with ngtcp2's own sample peers (Debian ngtcp2-server / ngtcp2-client), 64 MiB each
/// way. Slow and multi-process: run by `make test` through mk/quic.mk (GQUIC_QUIC_INTEGRATION=1).
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["GQUIC_QUIC_INTEGRATION"] == "1"))
struct InteropTests {
    static let size = 64 << 20

    /// A temp directory with `big.bin` (64 MiB of seeded pseudo-random bytes), a self-signed Ed25519
    /// certificate made by our own generator, and its key.
    struct Fixture {
        let dir: String
        let digest: Digest
        init() throws {
            dir = NSTemporaryDirectory() + "gquic-interop-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            try FileManager.default.createDirectory(atPath: dir + "/www", withIntermediateDirectories: true)
            var rng = SeededRandom(seed: 42)
            var bytes = [UInt8](repeating: 0, count: InteropTests.size)
            bytes.withUnsafeMutableBytes { raw in
                let words = raw.bindMemory(to: UInt64.self)
                for i in words.indices { words[i] = rng.next() }
            }
            digest = Digest.of(bytes)
            FileManager.default.createFile(atPath: dir + "/www/big.bin", contents: Data(bytes))
            let id = try NodeIdentity.generate()
            try NodeCertificate.selfSigned(for: id).write(toFile: dir + "/cert.pem", atomically: true, encoding: .utf8)
            try id.privateKeyPEM().write(toFile: dir + "/key.pem", atomically: true, encoding: .utf8)
        }
        func cleanup() { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// ngtcp2's samples: Debian installs them in /usr/sbin (server) and /usr/bin (client).
    static func tool(_ name: String) -> String {
        for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        return name
    }

    static func freePort() -> UInt16 { UInt16.random(in: 20000...60000) }

    static func spawn(_ path: String, _ args: [String], cwd: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    func downloadFromGtlsserver(extra: [String]) async throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let port = Self.freePort()
        let server = try Self.spawn(Self.tool("gtlsserver"), ["-q", "--no-quic-dump", "--no-http-dump", "-d", f.dir + "/www"]
                                    + extra + ["127.0.0.1", String(port), f.dir + "/key.pem", f.dir + "/cert.pem"], cwd: f.dir)
        // gtlsserver ignores SIGTERM; SIGKILL is the only way to stop it.
        defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
        try await Task.sleep(for: .milliseconds(300))
        let out = f.dir + "/got.bin"
        let d = try await HTTP3Client.download(url: "https://127.0.0.1:\(port)/big.bin", to: out, insecure: true)
        #expect(d.status == 200)
        #expect(d.bytes == Self.size)
        #expect(d.digest == f.digest)
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: out))
        #expect(Digest.of(onDisk) == f.digest)
    }

    @Test func ourClientDownloadsFromGtlsserver() async throws {
        try await downloadFromGtlsserver(extra: [])
    }

    @Test func ourClientDownloadsFromGtlsserverWithTwoPercentLoss() async throws {
        try await downloadFromGtlsserver(extra: ["--tx-loss=0.02"])
    }

    @Test func gtlsclientDownloadsFromOurServer() async throws {
        let f = try Fixture()
        defer { f.cleanup() }
        let server = try HTTP3Server(root: f.dir + "/www", listen: PeerAddress(host: "127.0.0.1", port: 0),
                                     certificatePath: f.dir + "/cert.pem", keyPath: f.dir + "/key.pem")
        defer { server.shutdown() }
        let port = server.localAddress.port
        try FileManager.default.createDirectory(atPath: f.dir + "/dl", withIntermediateDirectories: true)
        let client = try Self.spawn(Self.tool("gtlsclient"), ["-q", "--no-quic-dump", "--no-http-dump", "--exit-on-all-streams-close",
                                                             "--download", f.dir + "/dl", "127.0.0.1", String(port),
                                                             "https://127.0.0.1:\(port)/big.bin"], cwd: f.dir)
        let deadline = Date().addingTimeInterval(300)
        while client.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        if client.isRunning { kill(client.processIdentifier, SIGKILL) }
        client.waitUntilExit()
        #expect(client.terminationStatus == 0)
        let got = try Data(contentsOf: URL(fileURLWithPath: f.dir + "/dl/big.bin"))
        #expect(got.count == Self.size)
        #expect(Digest.of(got) == f.digest)
    }
}
