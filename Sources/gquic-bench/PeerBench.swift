import ArgumentParser
import ContentStore
import Foundation
import MeshCore

/// The product (issue 9): real `gquic-peer` processes on loopback. Start-up with a big store, the
/// idle cost of a peer in a 50-member cluster, memory while serving a large blob to four peers, and
/// `gquic-fetch get` end to end against ngtcp2's `gtlsserver` → `gtlsclient --download` in the same run.
struct PeerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer",
        abstract: "gquic-peer start-up, idle cost, serving memory, and gquic-fetch get vs gtlsclient.",
        discussion: """
        Needs release builds of gquic-peer and gquic-fetch next to gquic-bench (`make bench-peer` builds
        them) and ngtcp2's gtlsserver/gtlsclient (Debian ngtcp2-server, ngtcp2-client). Every daemon runs
        in a temporary data directory on loopback and is stopped at the end.
        """)

    @Option(help: "Blobs in the store for the start-up measurement.") var blobs = 10_000
    @Option(help: "Members of the cluster for the idle measurement.") var members = 50
    @Option(help: "Seconds over which idle CPU is measured.") var idleSeconds = 30.0
    @Option(help: "Size of the large blob in MiB (served to 4 peers; fetched by gquic-fetch get).") var mib = 1024
    @Option(help: "Run only these parts (startup, idle, serve, get); repeatable.") var only: [String] = []

    func run() throws {
        var report = BenchReport(area: "peer")
        report.header()
        let work = NSTemporaryDirectory() + "gquic-bench-peer-\(getpid())"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let fleet = Fleet(work: work)
        defer { fleet.stopAll(); try? FileManager.default.removeItem(atPath: work) }
        let parts = only.isEmpty ? ["startup", "idle", "serve", "get"] : only
        if parts.contains("startup") { try startup(&report, fleet) }
        if parts.contains("idle") { try idle(&report, fleet) }
        if parts.contains("serve") || parts.contains("get") { try serveAndGet(&report, fleet, parts: parts) }
        try report.write()
    }

    func progress(_ s: String) { FileHandle.standardError.write(Data("… \(s)\n".utf8)) }

    // MARK: Parts

    /// Imports `blobs` distinct 4 KiB blobs (the store is closed again when this returns).
    func fill(store path: String, scratch: String) throws {
        var options = ContentStore.Options()
        options.durable = false // setup only; the daemon opens it with its defaults
        let store = try ContentStore.open(path: path, options: options)
        var rng = SeededRandom(seed: 9)
        for i in 0..<blobs {
            var bytes = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) }
            bytes.append(contentsOf: Array("blob \(i)".utf8))
            FileManager.default.createFile(atPath: scratch, contents: Data(bytes))
            _ = try store.importFile(at: scratch)
        }
    }

    /// From `gquic-peer run` to the control socket accepting connections (the daemon opens it last,
    /// after the QUIC endpoint listens and every core has started), with `blobs` blobs in the store.
    func startup(_ report: inout BenchReport, _ fleet: Fleet) throws {
        let empty = try fleet.node("empty")
        let emptyTimes = try (0..<3).map { _ in try empty.timedStart() }
        let big = try fleet.node("startup")
        progress("filling a store with \(blobs) blobs")
        try fill(store: big.data + "/store", scratch: fleet.work + "/one.bin")
        let first = try big.timedStart()
        let again = try (0..<3).map { _ in try big.timedStart() }
        report.add(BenchRow("start-up, empty store (p50 of 3)", median(emptyTimes) * 1000, "ms"))
        report.add(BenchRow("start-up, \(blobs) blobs, first start", first * 1000, "ms",
                            note: "goal < 1000 ms; also records the \(blobs) holdings in cluster state"))
        report.add(BenchRow("start-up, \(blobs) blobs, restart (p50 of 3)", median(again) * 1000, "ms", note: "goal < 1000 ms"))
    }

    /// Resident memory and CPU of idle peers once `members` of them have formed a cluster.
    func idle(_ report: inout BenchReport, _ fleet: Fleet) throws {
        progress("starting \(members) peers")
        var nodes: [Node] = []
        for i in 0..<members {
            let n = try fleet.node("m\(i)")
            try n.start(seeds: nodes.isEmpty ? [] : [nodes[0].address])
            nodes.append(n)
        }
        for n in nodes { try n.waitReady() }
        progress("waiting for \(members) live members in every view")
        let formed = Date()
        while Date().timeIntervalSince(formed) < 180 {
            if nodes.allSatisfy({ $0.liveMembers() == members }) { break }
            Thread.sleep(forTimeInterval: 1)
        }
        let views = nodes.map { $0.liveMembers() }
        progress("views: min \(views.min() ?? 0) of \(members) after \(Int(Date().timeIntervalSince(formed))) s; settling 10 s")
        Thread.sleep(forTimeInterval: 10)
        let before = nodes.map { $0.cpuSeconds() }
        let t0 = Date()
        Thread.sleep(forTimeInterval: idleSeconds)
        let secs = Date().timeIntervalSince(t0)
        let cpu = zip(nodes, before).map { ($0.cpuSeconds() - $1) / secs * 100 }
        let rss = nodes.map { $0.rssMiB() }
        report.add(BenchRow("idle, \(members) members: RSS median", median(rss), "MiB", note: "max \(BenchReport.number(rss.max() ?? 0)) MiB; goal < 64 MiB"))
        report.add(BenchRow("idle, \(members) members: CPU median", median(cpu), "% of a core",
                            note: "max \(BenchReport.number(cpu.max() ?? 0))%, over \(Int(secs)) s; goal < 1%; views min \(views.min() ?? 0)/\(members)"))
        for n in nodes { n.stop() }
    }

    /// A seed serves a `mib` MiB blob to four peers at once (its peak RSS while serving), then
    /// `gquic-fetch get` of the same blob from that one peer, against gtlsserver → gtlsclient --download.
    func serveAndGet(_ report: inout BenchReport, _ fleet: Fleet, parts: [String]) throws {
        let file = fleet.work + "/big.bin"
        progress("writing a \(mib) MiB random file")
        _ = try shell("head -c \(mib << 20) /dev/urandom > \(file)")
        let bytes = Double(mib << 20)
        let seed = try fleet.node("seed")
        try seed.start(seeds: [])
        try seed.waitReady()
        progress("adding it on the seed (import through the daemon)")
        let (digestLine, importSecs) = try timed { try shell("\(fleet.bin)/gquic-fetch add --data \(seed.data) \(file)") }
        let digest = digestLine.trimmingCharacters(in: .whitespacesAndNewlines)
        guard digest.hasPrefix("sha256:") else { throw ValidationError("add printed \(digestLine)") }
        report.add(BenchRow("gquic-fetch add, \(mib) MiB file", bytes / importSecs / 1e6, "MB/s"))

        if parts.contains("serve") {
            var peers: [Node] = []
            for i in 0..<4 {
                let n = try fleet.node("p\(i)")
                try n.start(seeds: [seed.address])
                peers.append(n)
            }
            for n in peers { try n.waitReady() }
            Thread.sleep(forTimeInterval: 2)
            seed.resetPeakRSS()
            progress("4 peers fetch it at once")
            let start = Date()
            let gets = try peers.map { n in
                let p = Process()
                p.executableURL = URL(fileURLWithPath: fleet.bin + "/gquic-fetch")
                p.arguments = ["get", "--data", n.data, digest, "-o", n.data + "/out.bin", "--json"]
                p.standardOutput = FileHandle.nullDevice
                try p.run()
                return p
            }
            var peak = 0.0
            while gets.contains(where: \.isRunning) {
                peak = max(peak, seed.rssMiB())
                Thread.sleep(forTimeInterval: 0.05)
            }
            let wall = Date().timeIntervalSince(start)
            peak = max(peak, seed.peakRSSMiB())
            let ok = gets.allSatisfy { $0.terminationStatus == 0 }
            let exact = peers.allSatisfy { (try? shell("cmp -s \(file) \($0.data)/out.bin && echo same")) == "same\n" }
            report.add(BenchRow("seed peak RSS serving \(mib) MiB to 4", peak, "MiB",
                                note: "goal < 256 MiB; all 4 done in \(String(format: "%.1f", wall)) s, \(ok && exact ? "byte-exact" : "FAILED")"))
            for n in peers { n.stop() }
            for n in peers { try? FileManager.default.removeItem(atPath: n.data) }
        }

        if parts.contains("get") {
            let client = try fleet.node("getter")
            try client.start(seeds: [seed.address])
            try client.waitReady()
            for _ in 0..<100 where client.liveMembers() < 2 { Thread.sleep(forTimeInterval: 0.1) }
            progress("gquic-fetch get from one peer")
            let out = client.data + "/got.bin"
            let (_, ours) = try timed { try shell("\(fleet.bin)/gquic-fetch get --data \(client.data) \(digest) -o \(out) --json") }
            let exact = (try? shell("cmp -s \(file) \(out) && echo same")) == "same\n"
            client.stop()
            seed.stop()

            progress("anchor: gtlsserver → gtlsclient --download")
            let www = fleet.work + "/www", dl = fleet.work + "/dl"
            try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: dl, withIntermediateDirectories: true)
            _ = try shell("ln \(file) \(www)/big.bin && openssl req -x509 -newkey ed25519 -nodes -keyout \(fleet.work)/key.pem "
                + "-out \(fleet.work)/cert.pem -days 2 -subj /CN=localhost 2>/dev/null")
            let port = freePort()
            let gtlsserver = FileManager.default.isExecutableFile(atPath: "/usr/sbin/gtlsserver") ? "/usr/sbin/gtlsserver" : "gtlsserver"
            let quiet = ["-q", "--no-quic-dump", "--no-http-dump"]
            let server = Process()
            server.executableURL = URL(fileURLWithPath: gtlsserver)
            server.arguments = quiet + ["-d", www, "127.0.0.1", "\(port)", fleet.work + "/key.pem", fleet.work + "/cert.pem"]
            server.standardOutput = FileHandle.nullDevice
            server.standardError = FileHandle.nullDevice
            try server.run()
            defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() } // gtlsserver ignores SIGTERM
            Thread.sleep(forTimeInterval: 0.3)
            let (_, anchor) = try timed {
                try shell("gtlsclient \(quiet.joined(separator: " ")) --exit-on-all-streams-close --download \(dl) "
                    + "127.0.0.1 \(port) https://127.0.0.1:\(port)/big.bin")
            }
            let anchorOK = (try? shell("cmp -s \(file) \(dl)/big.bin && echo same")) == "same\n"
            report.add(BenchRow("gquic-fetch get \(mib) MiB, 1 peer, to file", bytes / ours / 1e6, "MB/s",
                                anchor: "gtlsclient --download", anchorValue: bytes / anchor / 1e6,
                                note: "end to end; ours \(exact ? "byte-exact" : "MISMATCH"), anchor \(anchorOK ? "byte-exact" : "MISMATCH")"))
        }
    }

    func timed<T>(_ body: () throws -> T) throws -> (T, Double) {
        let start = ContinuousClock.now
        let r = try body()
        return (r, (ContinuousClock.now - start).seconds)
    }
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    guard !s.isEmpty else { return 0 }
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// A free UDP port on loopback (bound and released; the daemon binds it right after).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    defer { close(fd) }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: a.sin_port))
}

/// The daemons of one benchmark run, all stopped at the end.
final class Fleet {
    let work: String
    let bin: String
    private(set) var nodes: [Node] = []

    init(work: String) {
        self.work = work
        bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    }

    func node(_ name: String) throws -> Node {
        let n = Node(data: work + "/" + name, port: freePort(), bin: bin)
        _ = try shell("\(bin)/gquic-peer init --data \(n.data)")
        nodes.append(n)
        return n
    }

    func stopAll() { for n in nodes { n.stop() } }
}

/// One `gquic-peer run` process.
final class Node {
    let data: String
    let port: Int
    let bin: String
    private var process: Process?

    init(data: String, port: Int, bin: String) { self.data = data; self.port = port; self.bin = bin }

    var address: String { "127.0.0.1:\(port)" }
    var pid: pid_t { process?.processIdentifier ?? 0 }

    func start(seeds: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin + "/gquic-peer")
        p.arguments = ["run", "--data", data, "--listen", address, "--no-mdns"] + seeds.flatMap { ["--seed", $0] }
        FileManager.default.createFile(atPath: data + "/daemon.log", contents: nil)
        p.standardError = FileHandle(forWritingAtPath: data + "/daemon.log")
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        process = p
    }

    /// Waits until the control socket accepts a connection.
    func waitReady(timeout: Double = 60) throws {
        let start = Date()
        while !controlAccepts() {
            guard process?.isRunning == true else { throw ValidationError("gquic-peer in \(data) exited; see \(data)/daemon.log") }
            guard Date().timeIntervalSince(start) < timeout else { throw ValidationError("gquic-peer in \(data) not ready after \(timeout) s") }
            usleep(1000)
        }
    }

    /// Seconds from spawning `gquic-peer run` to its control socket accepting; then stops it.
    func timedStart() throws -> Double {
        let start = ContinuousClock.now
        try self.start(seeds: [])
        try waitReady()
        let secs = (ContinuousClock.now - start).seconds
        stop()
        return secs
    }

    func controlAccepts() -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        let path = Array((data + "/control.sock").utf8CString)
        guard path.count <= MemoryLayout.size(ofValue: a.sun_path) else { return false }
        withUnsafeMutableBytes(of: &a.sun_path) { dst in path.withUnsafeBytes { dst.copyMemory(from: $0) } }
        return withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
    }

    func liveMembers() -> Int {
        guard let json = try? shell("\(bin)/gquic-peer status --data \(data) --json"),
              let obj = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let members = obj["members"] as? [[String: Any]] else { return 0 }
        return members.filter { ($0["state"] as? String)?.hasPrefix("alive") == true }.count
    }

    func stop() {
        guard let p = process, p.isRunning else { process = nil; return }
        p.terminate()
        p.waitUntilExit()
        process = nil
    }

    /// User + system CPU seconds of the process so far.
    func cpuSeconds() -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state(0) ppid … utime is field 14 overall, i.e. index 11 here.
        guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    func rssMiB() -> Double { statusKiB("VmRSS") / 1024 }
    func peakRSSMiB() -> Double { statusKiB("VmHWM") / 1024 }

    /// Resets the kernel's peak-RSS mark (VmHWM), so it measures from now.
    func resetPeakRSS() { try? "5".write(toFile: "/proc/\(pid)/clear_refs", atomically: false, encoding: .utf8) }

    private func statusKiB(_ key: String) -> Double {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix(key + ":") {
            return Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
        }
        return 0
    }
}
