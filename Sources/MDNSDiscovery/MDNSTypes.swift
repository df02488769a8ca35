import MeshCore

/// What this node announces on the LAN: `_gquic._udp` with TXT records `id`, `cluster`, `port`, `v`.
public struct MDNSAnnouncement: Hashable, Sendable {
    public var nodeID: NodeID
    public var clusterID: String
    /// The node's QUIC (UDP) port.
    public var port: UInt16
    public var protocolVersion: Int

    public init(nodeID: NodeID, clusterID: String, port: UInt16, protocolVersion: Int = MDNSDiscovery.protocolVersion) {
        self.nodeID = nodeID; self.clusterID = clusterID; self.port = port; self.protocolVersion = protocolVersion
    }

    /// The mDNS service instance name: unique per node, at most 63 bytes.
    public var serviceName: String { "gquic-\(nodeID.short)" }

    /// TXT record strings, `key=value`.
    public var txtRecords: [String] {
        ["id=\(nodeID)", "cluster=\(clusterID)", "port=\(port)", "v=\(protocolVersion)"]
    }
}

/// A peer found by browsing and resolving: a join candidate for membership.
public struct DiscoveredPeer: Hashable, Sendable, CustomStringConvertible {
    public var nodeID: NodeID
    public var clusterID: String
    public var address: PeerAddress
    public var protocolVersion: Int
    public var serviceName: String

    public var description: String { "\(nodeID) at \(address) cluster=\(clusterID) v=\(protocolVersion)" }

    /// Parses the TXT records of a resolved service. Returns nil (and the reason) for records that
    /// are not a GQUIC announcement: everything on the LAN is untrusted input.
    public static func parse(txt: [String], host: String, servicePort: UInt16, serviceName: String) -> Result<DiscoveredPeer, MDNSError> {
        var fields: [String: String] = [:]
        for record in txt.prefix(32) {
            guard record.utf8.count <= 255, let eq = record.firstIndex(of: "=") else { continue }
            fields[String(record[..<eq]).lowercased()] = String(record[record.index(after: eq)...])
        }
        guard let idText = fields["id"], let id = try? NodeID(parsing: idText) else {
            return .failure(.badRecord(serviceName, "missing or invalid id= TXT record"))
        }
        guard let cluster = fields["cluster"], !cluster.isEmpty, cluster.utf8.count <= 255 else {
            return .failure(.badRecord(serviceName, "missing cluster= TXT record"))
        }
        let port = fields["port"].flatMap { UInt16($0) } ?? servicePort
        guard port != 0 else { return .failure(.badRecord(serviceName, "port 0")) }
        let version = fields["v"].flatMap { Int($0) } ?? 0
        return .success(DiscoveredPeer(nodeID: id, clusterID: cluster, address: PeerAddress(host: host, port: port),
                                       protocolVersion: version, serviceName: serviceName))
    }
}

/// What browsing reports.
public enum MDNSEvent: Hashable, Sendable {
    /// A service was resolved.
    case found(DiscoveredPeer)
    /// A service went away (its goodbye packet, or its TTL ran out). `nodeID` is known if we had
    /// resolved it before.
    case lost(serviceName: String, nodeID: NodeID?)
    /// Our own announcement is on the network (probing finished without conflict).
    case published(serviceName: String)
    /// The avahi-daemon connection failed; discovery has stopped (membership goes on from seeds).
    case failed(MDNSError)
}

/// Why mDNS could not do something. Carries avahi's error code where there is one.
public struct MDNSError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Kind: Hashable, Sendable {
        case noDaemon
        case avahi(String)
        case badRecord(String, String)
    }
    private let kind: Kind
    /// avahi's error code (`AVAHI_ERR_*`, negative), if the error came from avahi.
    public let avahiCode: Int32?
    private let avahiMessage: String?

    static func noDaemon(code: Int32, message: String) -> MDNSError { .init(kind: .noDaemon, avahiCode: code, avahiMessage: message) }
    static func avahi(_ what: String, code: Int32, message: String) -> MDNSError { .init(kind: .avahi(what), avahiCode: code, avahiMessage: message) }
    static func badRecord(_ name: String, _ why: String) -> MDNSError { .init(kind: .badRecord(name, why), avahiCode: nil, avahiMessage: nil) }

    /// True when no avahi-daemon (or no D-Bus system bus) could be reached.
    public var isDaemonUnreachable: Bool { if case .noDaemon = kind { true } else { false } }

    public var description: String {
        switch kind {
        case .noDaemon:
            "no avahi-daemon reachable over D-Bus (\(avahiMessage ?? "?")): LAN discovery is off, the node joins through its seeds only. Start avahi-daemon (and dbus) to find LAN peers automatically."
        case .avahi(let what):
            "avahi: \(what) failed: \(avahiMessage ?? "?") (code \(avahiCode ?? 0))"
        case .badRecord(let name, let why):
            "ignoring mDNS service '\(name)': \(why)"
        }
    }
}
