import MeshCore
import QUICTransport

/// One node's configuration. Sources, lowest priority first: built-in defaults, the config file,
/// environment variables (`GQUIC_<SECTION>_<KEY>`, e.g. `GQUIC_NODE_LISTEN`), then command-line flags.
public struct PeerConfig: Sendable, Equatable {
    /// UDP address the QUIC endpoint listens on.
    public var listen = PeerAddress(host: "0.0.0.0", port: 7400)
    /// Addresses advertised to other nodes (empty: derived from the listen address and interfaces).
    public var advertise: [PeerAddress] = []
    /// Name of the cluster; nodes of other clusters are ignored by discovery.
    public var cluster = "default"
    /// Region and zone labels (used to prefer near peers).
    public var region = ""
    public var zone = ""
    /// Seed addresses (`HOST:PORT`, host may be a DNS name) to join through.
    public var seeds: [PeerAddress] = []
    /// Announce and browse `_gquic._udp` with mDNS (Avahi).
    public var mdns = true
    /// Node IDs admitted to the cluster (empty: any node that presents a valid identity and the
    /// cluster's join token, if one is set).
    public var allow: [NodeID] = []
    /// The cluster's join token (`gqjoin1-…`, from `gquic-peer token`); empty for none. When set, a
    /// node is admitted only if it proves it holds the token, and this node presents it when dialling.
    public var joinToken = ""
    /// Bulk traffic (chunk transfers) backs off when it raises the path's queueing delay above
    /// `scavengerTarget` (LEDBAT-style scavenger), so control and game traffic on the same link keep
    /// their latency.
    public var scavenger = false
    /// The queueing delay the scavenger lets bulk add (default 1 ms).
    public var scavengerTarget: Duration = ScavengerSettings().target
    /// Cap on bulk bytes per second per link; 0: none.
    public var bulkRate: UInt64 = 0
    /// Mark packets with DSCP by class (EF for control, CS1 for bulk).
    public var dscp = false
    /// QUIC: acknowledge at once after this many ack-eliciting packets (`QUICSettings.ackThreshold`).
    /// 10 rather than ngtcp2's 2: a receiver of bulk at 100 Mbit/s sends a fifth of the ACKs, and the
    /// sender processes a fifth, which on a CPU-bound swarm is ~20% of the daemons' CPU per byte.
    public var ackThreshold = 10
    /// Store size limit in bytes; least recently used unpinned blobs are evicted above it. 0: no limit.
    public var storeCapacity: UInt64 = 0
    /// Control API Unix socket (relative paths are inside the data directory).
    public var controlSocket = "control.sock"
    /// Prometheus `/metrics` on TCP (`HOST:PORT`); empty to serve it on the control socket only.
    public var metricsListen: PeerAddress? = nil
    /// Log level: trace, debug, info, notice, warning, error, critical.
    public var logLevel = "info"

    public init() {}

    /// Every key, its default, and what it does — the single source for parsing, `init`'s skeleton
    /// and docs/operations.md.
    public struct Key: Sendable {
        public let name: String
        public let defaultText: String
        public let help: String
        let apply: @Sendable (inout PeerConfig, ConfigFile.Value) throws(KeyProblem) -> Void
    }

    struct KeyProblem: Error { let why: String }

    public static let keys: [Key] = [
        Key(name: "node.listen", defaultText: "\"0.0.0.0:7400\"", help: "UDP address the QUIC endpoint listens on.") { c, v throws(KeyProblem) in
            c.listen = try address(v)
        },
        Key(name: "node.advertise", defaultText: "[]", help: "Addresses other nodes should use to reach this one (empty: detected).") { c, v throws(KeyProblem) in
            c.advertise = try addresses(v)
        },
        Key(name: "node.cluster", defaultText: "\"default\"", help: "Cluster name; discovery ignores nodes of other clusters.") { c, v throws(KeyProblem) in
            c.cluster = try string(v, nonEmpty: true)
        },
        Key(name: "node.region", defaultText: "\"\"", help: "Region label, used to prefer near peers.") { c, v throws(KeyProblem) in
            c.region = try string(v)
        },
        Key(name: "node.zone", defaultText: "\"\"", help: "Zone label, used to prefer near peers.") { c, v throws(KeyProblem) in
            c.zone = try string(v)
        },
        Key(name: "discovery.seeds", defaultText: "[]", help: "Seed addresses (HOST:PORT; DNS names allowed) to join through.") { c, v throws(KeyProblem) in
            c.seeds = try addresses(v)
        },
        Key(name: "discovery.mdns", defaultText: "true", help: "Announce and browse _gquic._udp on the LAN with mDNS (needs avahi-daemon).") { c, v throws(KeyProblem) in
            c.mdns = try bool(v)
        },
        Key(name: "security.allow", defaultText: "[]", help: "Node IDs admitted to the cluster (empty: any node with a valid identity).") { c, v throws(KeyProblem) in
            guard case .strings(let items) = v else { throw KeyProblem(why: "expected an array of node IDs") }
            c.allow = try items.map { s throws(KeyProblem) in
                do throws(NodeIDError) { return try NodeID(parsing: s) } catch { throw KeyProblem(why: error.description) }
            }
        },
        Key(name: "security.join_token", defaultText: "\"\"", help: "Cluster join token (gqjoin1-…, make one with `gquic-peer token`); when set only nodes holding it are admitted. Keep it secret.") { c, v throws(KeyProblem) in
            let s = try string(v)
            if !s.isEmpty {
                do throws(QUICError) { _ = try JoinToken(parsing: s) } catch { throw KeyProblem(why: error.description) }
            }
            c.joinToken = s
        },
        Key(name: "transfer.scavenger", defaultText: "false", help: "Bulk transfers yield when they add more than transfer.scavenger_target of queueing delay (LEDBAT-style); turn on where games share the link.") { c, v throws(KeyProblem) in
            c.scavenger = try bool(v)
        },
        Key(name: "transfer.scavenger_target", defaultText: "\"1ms\"", help: "Queueing delay the scavenger lets bulk add at the bottleneck (e.g. \"1ms\", \"500us\"; 100us…100ms). Lower keeps control latency lower; higher keeps more throughput on a jittery path.") { c, v throws(KeyProblem) in
            c.scavengerTarget = try duration(v, in: .microseconds(100)...(.milliseconds(100)))
        },
        Key(name: "transfer.bulk_rate", defaultText: "\"0\"", help: "Cap on bulk bytes per second per link (e.g. \"40MiB\"); 0 means no cap.") { c, v throws(KeyProblem) in
            c.bulkRate = try byteSize(v)
        },
        Key(name: "transfer.dscp", defaultText: "false", help: "Mark packets with DSCP by traffic class: EF for control, CS1 for bulk.") { c, v throws(KeyProblem) in
            c.dscp = try bool(v)
        },
        Key(name: "transfer.ack_threshold", defaultText: "10", help: "QUIC: acknowledge at once after this many packets (1…64; otherwise within 25 ms). Fewer ACKs cost less CPU on both ends; 2 is the QUIC default.") { c, v throws(KeyProblem) in
            guard case .integer(let n) = v, (1...64).contains(n) else { throw KeyProblem(why: "expected a whole number 1…64, got \(v)") }
            c.ackThreshold = Int(n)
        },
        Key(name: "store.capacity", defaultText: "\"0\"", help: "Store size limit (e.g. \"50GiB\"); 0 means no limit. LRU eviction of unpinned blobs above it.") { c, v throws(KeyProblem) in
            c.storeCapacity = try byteSize(v)
        },
        Key(name: "control.socket", defaultText: "\"control.sock\"", help: "Control API Unix socket; relative to the data directory.") { c, v throws(KeyProblem) in
            c.controlSocket = try string(v, nonEmpty: true)
        },
        Key(name: "control.metrics", defaultText: "\"\"", help: "Serve Prometheus /metrics on this TCP HOST:PORT too (empty: control socket only).") { c, v throws(KeyProblem) in
            let s = try string(v)
            c.metricsListen = s.isEmpty ? nil : try address(.string(s))
        },
        Key(name: "log.level", defaultText: "\"info\"", help: "trace, debug, info, notice, warning, error or critical.") { c, v throws(KeyProblem) in
            let s = try string(v)
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(s) else {
                throw KeyProblem(why: "\"\(s)\" is not a log level (trace, debug, info, notice, warning, error, critical)")
            }
            c.logLevel = s
        },
    ]

    /// Applies a parsed file on top of this configuration.
    public mutating func apply(_ file: ConfigFile) throws(ConfigError) {
        for entry in file.entries {
            guard let key = PeerConfig.keys.first(where: { $0.name == entry.key }) else {
                throw .unknownKey(file.path, entry.line, entry.key, suggestion: PeerConfig.suggest(entry.key))
            }
            do { try key.apply(&self, entry.value) } catch { throw .badValue(file.path, entry.line, entry.key, error.why) }
        }
    }

    /// Applies `GQUIC_<SECTION>_<KEY>` environment variables (values in the file's syntax, or bare).
    public mutating func apply(environment: [String: String]) throws(ConfigError) {
        for key in PeerConfig.keys {
            let name = "GQUIC_" + key.name.uppercased().map { $0 == "." || $0 == "-" ? "_" : $0 }.map(String.init).joined()
            guard let raw = environment[name] else { continue }
            // Bare words are taken as strings so `GQUIC_NODE_LISTEN=0.0.0.0:7400` works.
            let text = raw.hasPrefix("\"") || raw.hasPrefix("[") || raw == "true" || raw == "false" || Int64(raw) != nil
                ? raw : "\"\(raw)\""
            let parts = key.name.split(separator: ".")
            let file = try ConfigFile(text: "[\(parts[0])]\n\(parts[1]) = \(text)", path: "$\(name)")
            do { try key.apply(&self, file.entries[0].value) } catch { throw .badValue("$\(name)", 0, key.name, error.why) }
        }
    }

    /// A commented configuration file with every key at its default.
    public static func skeleton() -> String {
        var out = "# gquic-peer configuration. Every key is shown at its default; uncomment to change.\n"
        out += "# Environment variables GQUIC_<SECTION>_<KEY> and command-line flags override this file.\n"
        var section = ""
        for key in keys {
            let parts = key.name.split(separator: ".")
            if String(parts[0]) != section {
                section = String(parts[0])
                out += "\n[\(section)]\n"
            }
            out += "# \(key.help)\n# \(parts[1]) = \(key.defaultText)\n"
        }
        return out
    }

    static func suggest(_ key: String) -> String? {
        let scored = keys.map { ($0.name, editDistance($0.name, key)) }.min { $0.1 < $1.1 }
        guard let (name, d) = scored, d <= 3 else { return nil }
        return name
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var prev = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var cur = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }

    // MARK: Value conversions

    static func string(_ v: ConfigFile.Value, nonEmpty: Bool = false) throws(KeyProblem) -> String {
        guard case .string(let s) = v else { throw KeyProblem(why: "expected a quoted string, got \(v)") }
        if nonEmpty && s.isEmpty { throw KeyProblem(why: "must not be empty") }
        return s
    }

    static func bool(_ v: ConfigFile.Value) throws(KeyProblem) -> Bool {
        guard case .bool(let b) = v else { throw KeyProblem(why: "expected true or false, got \(v)") }
        return b
    }

    static func address(_ v: ConfigFile.Value) throws(KeyProblem) -> PeerAddress {
        let s = try string(v)
        guard let a = PeerAddress(parsing: s) else { throw KeyProblem(why: "\"\(s)\" is not HOST:PORT (IPv6 as [ADDR]:PORT)") }
        return a
    }

    static func addresses(_ v: ConfigFile.Value) throws(KeyProblem) -> [PeerAddress] {
        guard case .strings(let items) = v else { throw KeyProblem(why: "expected an array of \"HOST:PORT\" strings") }
        return try items.map { s throws(KeyProblem) in try address(.string(s)) }
    }

    /// "1ms", "500us", "0.5s" within `range`.
    static func duration(_ v: ConfigFile.Value, in range: ClosedRange<Duration>) throws(KeyProblem) -> Duration {
        let s = try string(v).trimmingWhitespace()
        let units: [(String, Double)] = [("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1)]
        for (suffix, scale) in units where s.hasSuffix(suffix) {
            guard let n = Double(s.dropLast(suffix.count).trimmingWhitespace()), n.isFinite else { break }
            let d = Duration.nanoseconds(Int64((n * scale * 1e9).rounded()))
            guard range.contains(d) else { throw KeyProblem(why: "\"\(s)\" is outside \(range.lowerBound)…\(range.upperBound)") }
            return d
        }
        throw KeyProblem(why: "\"\(s)\" is not a duration like \"1ms\" or \"500us\"")
    }

    /// "50GiB", "512MiB", "1000000", "10G" (powers of 1024 for binary units, 1000 for SI).
    static func byteSize(_ v: ConfigFile.Value) throws(KeyProblem) -> UInt64 {
        switch v {
        case .integer(let i) where i >= 0: return UInt64(i)
        case .string(let s):
            let units: [(String, UInt64)] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10),
                                             ("TB", 1_000_000_000_000), ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1000),
                                             ("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("B", 1)]
            let t = s.trimmingWhitespace()
            for (suffix, mult) in units where t.hasSuffix(suffix) {
                if let n = UInt64(t.dropLast(suffix.count).trimmingWhitespace()) {
                    let (r, o) = n.multipliedReportingOverflow(by: mult)
                    if !o { return r }
                }
                throw KeyProblem(why: "\"\(s)\" is not a size like \"50GiB\"")
            }
            if let n = UInt64(t) { return n }
            throw KeyProblem(why: "\"\(s)\" is not a size like \"50GiB\"")
        default:
            throw KeyProblem(why: "expected a size like \"50GiB\", got \(v)")
        }
    }
}
