import Testing
import Foundation
@testable import MeshPeer
import MeshCore

@Suite struct ConfigTests {
    @Test func defaultsAndAFullFile() throws {
        let text = """
        # a node in rack 3
        [node]
        listen = "127.0.0.1:7500"   # loopback only
        cluster = "lan-party"
        region = "eu"
        [discovery]
        seeds = ["10.0.0.5:7400", "seed.example:7400"]
        mdns = false
        [store]
        capacity = "50GiB"
        [transfer]
        ack_threshold = 4
        [log]
        level = "debug"
        """
        var c = PeerConfig()
        #expect(c.listen == PeerAddress(host: "0.0.0.0", port: 7400))
        try c.apply(ConfigFile(text: text, path: "gquic.conf"))
        #expect(c.listen == PeerAddress(host: "127.0.0.1", port: 7500))
        #expect(c.cluster == "lan-party")
        #expect(c.seeds.map(\.description) == ["10.0.0.5:7400", "seed.example:7400"])
        #expect(c.mdns == false)
        #expect(c.storeCapacity == 50 << 30)
        #expect(c.ackThreshold == 4)
        #expect(c.logLevel == "debug")
    }

    @Test func skeletonParsesToDefaults() throws {
        // Uncommenting every line of the skeleton must give back the defaults.
        let uncommented = PeerConfig.skeleton().split(separator: "\n").map { line -> String in
            line.hasPrefix("# ") && line.contains(" = ") ? String(line.dropFirst(2)) : String(line)
        }.joined(separator: "\n")
        var c = PeerConfig()
        try c.apply(ConfigFile(text: uncommented, path: "skeleton"))
        #expect(c == PeerConfig())
    }

    @Test func errorsNameTheKeyAndLine() {
        func problem(_ text: String) -> ConfigError? {
            var c = PeerConfig()
            do { try c.apply(ConfigFile(text: text, path: "gquic.conf")); return nil } catch { return error }
        }
        let unknown = problem("[node]\n\nlistn = \"1.2.3.4:5\"")
        #expect(unknown?.line == 3)
        #expect(unknown?.key == "node.listn")
        #expect(unknown?.description.contains("did you mean node.listen") == true)

        let badAddress = problem("[node]\nlisten = \"nowhere\"")
        #expect(badAddress?.line == 2)
        #expect(badAddress?.description.contains("gquic.conf:2") == true)
        #expect(badAddress?.description.contains("HOST:PORT") == true)

        #expect(problem("[transfer]\nack_threshold = 0")?.description.contains("1…64") == true)
        #expect(problem("[node\nlisten = \"a:1\"")?.line == 1)
        #expect(problem("[node]\nlisten \"a:1\"")?.line == 2)
        #expect(problem("[node]\ncluster = \"unterminated")?.description.contains("closing quote") == true)
        #expect(problem("[discovery]\nmdns = yes")?.key == "discovery.mdns")
        #expect(problem("[node]\ncluster = \"a\"\ncluster = \"b\"")?.description.contains("set twice") == true)
        #expect(problem("[store]\ncapacity = \"lots\"")?.key == "store.capacity")
        #expect(problem("[log]\nlevel = \"loud\"")?.description.contains("not a log level") == true)
        #expect(problem("[security]\nallow = [\"gq1-nope\"]")?.key == "security.allow")
    }

    @Test func environmentOverridesFile() throws {
        var c = PeerConfig()
        try c.apply(ConfigFile(text: "[node]\nlisten = \"127.0.0.1:1\"", path: "f"))
        try c.apply(environment: ["GQUIC_NODE_LISTEN": "127.0.0.1:9", "GQUIC_DISCOVERY_MDNS": "false",
                                  "GQUIC_DISCOVERY_SEEDS": "[\"h:1\"]", "UNRELATED": "x"])
        #expect(c.listen.port == 9)
        #expect(c.mdns == false)
        #expect(c.seeds == [PeerAddress(host: "h", port: 1)])
        #expect(throws: ConfigError.self) { try c.apply(environment: ["GQUIC_NODE_LISTEN": "bad"]) }
    }

    @Test func byteSizes() throws {
        #expect(try PeerConfig.byteSize(.string("512MiB")) == 512 << 20)
        #expect(try PeerConfig.byteSize(.string("2G")) == 2 << 30)
        #expect(try PeerConfig.byteSize(.string("10GB")) == 10_000_000_000)
        #expect(try PeerConfig.byteSize(.integer(42)) == 42)
        #expect(throws: PeerConfig.KeyProblem.self) { try PeerConfig.byteSize(.string("-1GiB")) }
    }
}

@Suite struct DataDirectoryTests {
    func tempDir() -> String {
        var template = Array("/tmp/gquic-peer-test-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    @Test func initCreatesIdentityAndConfigOnce() throws {
        let root = tempDir()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let d = DataDirectory(path: root + "/node")
        let id = try d.initialise()
        #expect(try d.loadIdentity().nodeID == id.nodeID)
        #expect(FileManager.default.fileExists(atPath: d.configPath))
        #expect(try d.loadConfig(environment: [:]) == PeerConfig())
        do { try d.initialise(); Issue.record("initialised twice") } catch {
            #expect(error.description.contains("already initialised"))
        }
    }

    @Test func secondLockIsRefusedWithThePid() throws {
        let root = tempDir()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let d = DataDirectory(path: root)
        try d.initialise()
        let held = try d.lock()
        #expect(d.runningPid() == getpid())
        // flock locks belong to open file descriptions, so a second open in this process conflicts too.
        do { _ = try d.lock(); Issue.record("locked twice") } catch {
            #expect(error.isLocked)
            #expect(error.description.contains("pid \(getpid())"))
        }
        _ = held
    }

    @Test func missingIdentityTellsWhatToRun() {
        let root = tempDir()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let d = DataDirectory(path: root + "/empty")
        do { _ = try d.loadIdentity(); Issue.record("loaded nothing") } catch {
            #expect(error.description.contains("gquic-peer init --data"))
        }
    }
}

@Suite struct ControlAPITests {
    @Test func requestResponseOverUnixSocket() throws {
        let dir = DataDirectoryTests().tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = ControlServer { req in
            if req.path == "/v1/echo" { return ControlResponse(body: req.body + Array((req.query["x"] ?? "").utf8)) }
            return .error(404, "no route \(req.path)")
        }
        try server.listen(unixPath: dir + "/c.sock")
        defer { server.stop() }
        let client = ControlClient(socketPath: dir + "/c.sock")
        let r = try client.request("POST", "/v1/echo?x=%21", body: Array("hi".utf8))
        #expect(r.status == 200)
        #expect(String(decoding: r.body, as: UTF8.self) == "hi!")
        #expect(try client.request("GET", "/nope").status == 404)
    }

    @Test func stoppedDaemonIsReportedClearly() {
        let dir = DataDirectoryTests().tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let client = ControlClient(socketPath: dir + "/none.sock")
        do { _ = try client.request("GET", "/v1/status"); Issue.record("reached nothing") } catch {
            #expect(error.isDaemonUnreachable)
            #expect(error.description.contains("gquic-peer run"))
        }
    }
}
