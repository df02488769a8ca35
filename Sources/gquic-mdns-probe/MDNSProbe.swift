import ArgumentParser
import Dispatch
import Logging
import MDNSDiscovery
import MeshCore
#if canImport(Glibc)
import Glibc
#endif

/// `gquic-mdns-probe`: publish or browse GQUIC's mDNS announcements through the local avahi-daemon.
@main
struct MDNSProbe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gquic-mdns-probe",
        abstract: "Publish or browse GQUIC nodes on the LAN (mDNS `_gquic._udp` via avahi-daemon).",
        discussion: """
        A diagnostic for operators and the tool the network-namespace test drives. It talks to \
        the local avahi-daemon over the D-Bus system bus, exactly as gquic-peer does.

        Examples:
          gquic-mdns-probe browse --seconds 5
          gquic-mdns-probe publish --cluster lab --port 7400
          gquic-mdns-probe browse --cluster lab --expect 2 --seconds 10

        Output is one line per event, easy to grep:
          node <id>          publish: the identity announced
          published <name>   our records are on the network
          found <id> <address>:<port> cluster=<c> v=<n> service=<name>
          lost <id|?> service=<name>   goodbye received, or TTL expired

        Exit codes: 0 success; 1 failure; 2 no avahi-daemon reachable (start dbus and \
        avahi-daemon; gquic-peer then works from its seeds); 3 --expect not met in time.

        """,
        subcommands: [Publish.self, Browse.self]
    )
}

func line(_ s: String) {
    print(s)
    fflush(nil)
}

func fail(_ error: MDNSError) -> Never {
    FileHandleStderr.write("gquic-mdns-probe: \(error)\n")
    Glibc.exit(error.isDaemonUnreachable ? 2 : 1)
}

enum FileHandleStderr {
    static func write(_ s: String) {
        var bytes = Array(s.utf8)
        _ = Glibc.write(2, &bytes, bytes.count)
    }
}

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Announce a node (`_gquic._udp` with TXT id, cluster, port, v) until stopped.",
        discussion: "SIGINT/SIGTERM withdraw the announcement (avahi sends a goodbye); SIGKILL leaves avahi-daemon to withdraw it when our D-Bus connection drops.")

    @Option(help: "The node's identity key (PEM). Without it (and without --node-id) a fresh identity is generated.")
    var identity: String?
    @Option(help: "Announce this node ID (gq1-…) instead of one derived from a key.")
    var nodeId: String?
    @Option(help: "Cluster ID announced in the cluster= TXT record.")
    var cluster = "gquic"
    @Option(help: "The QUIC (UDP) port announced.")
    var port: UInt16 = 7400
    @Option(help: "Stop after this many seconds (default: run until a signal).")
    var seconds: Double?

    func run() async throws {
        let id: NodeID
        if let text = nodeId {
            do { id = try NodeID(parsing: text) } catch { throw ValidationError("--node-id: \(error)") }
        } else if let path = identity {
            id = try NodeIdentity.load(path: path).nodeID
        } else {
            id = try NodeIdentity.generate().nodeID
        }
        let announcement = MDNSAnnouncement(nodeID: id, clusterID: cluster, port: port)
        line("node \(id)")
        let mdns: MDNSDiscovery
        do { mdns = try MDNSDiscovery(announce: announcement, browse: false) } catch { fail(error) }
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let signals = [SIGINT, SIGTERM].map { DispatchSource.makeSignalSource(signal: $0, queue: .main) }
        for s in signals {
            s.setEventHandler { mdns.stop(); line("withdrawn"); Glibc.exit(0) }
            s.resume()
        }
        if let seconds {
            Task { try await Task.sleep(for: .seconds(seconds)); mdns.stop(); line("withdrawn"); Glibc.exit(0) }
        }
        for await event in mdns.events {
            switch event {
            case .published(let name): line("published \(name)")
            case .failed(let e): fail(e)
            default: break
            }
        }
    }
}

struct Browse: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Browse and resolve `_gquic._udp`, printing found and lost nodes.")

    @Option(help: "Only report nodes of this cluster.")
    var cluster: String?
    @Option(help: "Stop after this many seconds.")
    var seconds: Double = 10
    @Option(help: "Exit 0 as soon as this many distinct node IDs were found (exit 3 if time runs out first).")
    var expect: Int?
    @Option(help: "Do not count this node ID (e.g. the local node's own announcement).")
    var ignore: [String] = []

    func run() async throws {
        let mdns: MDNSDiscovery
        do { mdns = try MDNSDiscovery(announce: nil, browse: true) } catch { fail(error) }
        let ignored = Set(ignore.compactMap { try? NodeID(parsing: $0) })
        let expect = self.expect
        Task {
            try await Task.sleep(for: .seconds(seconds))
            mdns.stop()
        }
        var seen: Set<NodeID> = []
        for await event in mdns.events {
            switch event {
            case .found(let p):
                if let cluster, p.clusterID != cluster { continue }
                line("found \(p.nodeID) \(p.address) cluster=\(p.clusterID) v=\(p.protocolVersion) service=\(p.serviceName)")
                if !ignored.contains(p.nodeID) { seen.insert(p.nodeID) }
                if let expect, seen.count >= expect { mdns.stop(); return }
            case .lost(let name, let id):
                line("lost \(id.map { "\($0)" } ?? "?") service=\(name)")
            case .failed(let e):
                fail(e)
            case .published:
                break
            }
        }
        if let expect, seen.count < expect {
            FileHandleStderr.write("gquic-mdns-probe: found \(seen.count) of \(expect) expected nodes in \(seconds) s\n")
            throw ExitCode(3)
        }
    }
}
