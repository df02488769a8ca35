import ArgumentParser
import Foundation
import Logging
import MeshCore
import MeshPeer
import QUICTransport
import ServiceLifecycle

@main
struct GQuicPeer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gquic-peer",
        abstract: "The GQUIC mesh daemon: one node of a peer-to-peer overlay for container clusters.",
        discussion: """
        A node keeps everything in one data directory: its identity key (node.key), its
        configuration (gquic.conf), its content store and its cluster state.

        Start a node:
          gquic-peer init --data /var/lib/gquic
          gquic-peer run  --data /var/lib/gquic --seed 10.0.0.5:7400
          gquic-peer status --data /var/lib/gquic

        Configuration comes from gquic.conf, then GQUIC_<SECTION>_<KEY> environment variables,
        then flags. `gquic-peer config` prints every key with its default.
        """,
        version: GQUICVersion.string,
        subcommands: [Init.self, Run.self, Status.self, Ping.self, Config.self, Token.self, Serve.self]
    )
}

struct DataOption: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The node's data directory.", valueName: "DIR"))
    var data: String = ProcessInfo.processInfo.environment["GQUIC_DATA"] ?? "/var/lib/gquic"
}

extension GQuicPeer {
    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a data directory with a new node identity and a commented config file.")
        @OptionGroup var data: DataOption

        func run() throws {
            let dir = DataDirectory(path: data.data)
            let id = try dir.initialise()
            print("initialised \(dir.path)")
            print("node id   \(id.nodeID)")
            print("identity  \(dir.keyPath) (mode 0600 — keep it secret)")
            print("config    \(dir.configPath)")
            print("next: gquic-peer run --data \(dir.path)")
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the node until SIGTERM or SIGINT.",
            discussion: "Flags override gquic.conf and GQUIC_* environment variables.")
        @OptionGroup var data: DataOption
        @Option(help: ArgumentHelp("Read configuration from FILE instead of DATA/gquic.conf.", valueName: "FILE"))
        var config: String?
        @Option(help: ArgumentHelp("UDP address to listen on (node.listen).", valueName: "ADDR:PORT"))
        var listen: String?
        @Option(name: .customLong("seed"), help: ArgumentHelp("A seed to join through; repeat for more (discovery.seeds).", valueName: "ADDR:PORT"))
        var seeds: [String] = []
        @Flag(name: .customLong("no-mdns"), help: "Do not use mDNS discovery (discovery.mdns = false).")
        var noMDNS = false
        @Option(help: ArgumentHelp("Serve Prometheus /metrics on this TCP address too (control.metrics).", valueName: "HOST:PORT"))
        var metrics: String?
        @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical (log.level).")
        var logLevel: String?

        func run() async throws {
            // A daemon never dies of a closed pipe or socket: writes report EPIPE instead.
            signal(SIGPIPE, SIG_IGN)
            ProcessTuning.keepFreedMemory()
            let dir = DataDirectory(path: data.data)
            var cfg = try dir.loadConfig(file: config, environment: ProcessInfo.processInfo.environment)
            if let listen {
                guard let a = PeerAddress(parsing: listen) else { throw ValidationError("--listen \(listen) is not ADDR:PORT") }
                cfg.listen = a
            }
            if !seeds.isEmpty {
                cfg.seeds = try seeds.map { s in
                    guard let a = PeerAddress(parsing: s) else { throw ValidationError("--seed \(s) is not ADDR:PORT") }
                    return a
                }
            }
            if noMDNS { cfg.mdns = false }
            if let metrics {
                guard let a = PeerAddress(parsing: metrics) else { throw ValidationError("--metrics \(metrics) is not HOST:PORT") }
                cfg.metricsListen = a
            }
            if let logLevel { cfg.logLevel = logLevel }
            let level = Logger.Level(rawValue: cfg.logLevel) ?? .info
            LoggingSystem.bootstrap { label in
                var h = StreamLogHandler.standardError(label: label)
                h.logLevel = level
                return h
            }
            let logger = Logger(label: "gquic-peer")
            let daemon = try PeerDaemon(data: dir, config: cfg, logger: logger)
            daemon.metrics.bootstrap()
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: daemon)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
            try await group.run()
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show members, links, transfers and store usage of a running node.")
        @OptionGroup var data: DataOption
        @Option(help: ArgumentHelp("The control socket (default: DATA/control.sock).", valueName: "PATH"))
        var control: String?
        @Flag(help: "Print JSON for scripts instead of tables.")
        var json = false

        func run() throws {
            let dir = DataDirectory(path: data.data)
            let socket = control ?? dir.resolve((try? dir.loadConfig(environment: ProcessInfo.processInfo.environment))?.controlSocket ?? "control.sock")
            let r = try ControlClient(socketPath: socket).request("GET", "/v1/status")
            guard r.status == 200 else { throw PeerError.protocolError("status \(r.status): \(String(decoding: r.body, as: UTF8.self))") }
            if json {
                print(String(decoding: r.body, as: UTF8.self))
            } else {
                let report = try JSONDecoder().decode(StatusReport.self, from: Data(r.body))
                print(report.rendered(), terminator: "")
            }
        }
    }

    struct Ping: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure control-class round trips from a running node to another member.",
            discussion: """
            The node sends a SIZE-byte message on the mesh's control class every INTERVAL milliseconds
            over its QUIC link to PEER (the same connection that carries chunk transfers), the peer
            answers at once, and the round trips are reported (min, p50, p90, p99, max, lost).
            Use it to see how much a running transfer adds to control latency, e.g. with
            transfer.scavenger on and off.
              gquic-peer ping --data /var/lib/gquic 7KQ2M --count 500
            Scripts: POST /v1/ping?peer=ID&interval_ms=10&size=64 starts an open-ended run on the control
            socket, DELETE /v1/ping?samples=1 stops it and returns every sample.
            """)
        @OptionGroup var data: DataOption
        @Option(help: ArgumentHelp("The control socket (default: DATA/control.sock).", valueName: "PATH"))
        var control: String?
        @Argument(help: ArgumentHelp("The member to ping: its node id, or a unique prefix of its short id (gquic-peer status).", valueName: "PEER"))
        var peer: String
        @Option(help: "Round trips to measure.")
        var count = 100
        @Option(name: .customLong("interval-ms"), help: "Milliseconds between requests.")
        var intervalMs = 10.0
        @Option(help: "Message size in bytes, as framed on the control stream (16…1024).")
        var size = 64
        @Flag(help: "Print the JSON report (with every sample) instead of a summary.")
        var json = false

        func run() throws {
            let dir = DataDirectory(path: data.data)
            let socket = control ?? dir.resolve((try? dir.loadConfig(environment: ProcessInfo.processInfo.environment))?.controlSocket ?? "control.sock")
            let client = ControlClient(socketPath: socket)
            guard count > 0 else { throw ValidationError("--count must be positive") }
            let start = try client.request("POST", "/v1/ping?peer=\(peer)&interval_ms=\(intervalMs)&size=\(size)&count=\(count)")
            guard start.status == 200 else { throw PeerError.protocolError(String(decoding: start.body, as: UTF8.self)) }
            var report: PeerDaemon.PingReport
            repeat {
                Thread.sleep(forTimeInterval: min(1, max(0.05, intervalMs * Double(count) / 1000 / 10)))
                let r = try client.request("GET", "/v1/ping\(json ? "?samples=1" : "")")
                guard r.status == 200 else { throw PeerError.protocolError(String(decoding: r.body, as: UTF8.self)) }
                report = try JSONDecoder().decode(PeerDaemon.PingReport.self, from: Data(r.body))
                if !json { FileHandle.standardError.write(Data("\r\(report.received)/\(count) round trips".utf8)) }
            } while report.running
            if json {
                let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
                print(String(decoding: try enc.encode(report), as: UTF8.self))
                return
            }
            FileHandle.standardError.write(Data("\n".utf8))
            let f = { (k: String) in report.rtt_ms[k].map { String(format: "%.3f", $0) } ?? "-" }
            print("\(report.size)-byte control round trips to \(report.peer.prefix(16))…, every \(report.interval_ms) ms")
            print("sent \(report.sent)  received \(report.received)  lost \(report.lost)")
            print("rtt ms  min \(f("min"))  p50 \(f("p50"))  p90 \(f("p90"))  p99 \(f("p99"))  max \(f("max"))")
        }
    }

    struct Token: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new cluster join token.",
            discussion: """
            Prints a fresh random join token (gqjoin1-…). Put the same token in every node's gquic.conf
            as security.join_token (or GQUIC_SECURITY_JOIN_TOKEN): from then on a node is admitted only if
            it proves, over its TLS session, that it holds the token; the token itself never crosses the
            wire. Treat it like a password; rotate by rolling a new one out to every node.
            """)
        func run() { print(JoinToken.generate()) }
    }

    struct Config: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print every configuration key with its default and meaning (a valid gquic.conf).")
        func run() { print(PeerConfig.skeleton(), terminator: "") }
    }
}
