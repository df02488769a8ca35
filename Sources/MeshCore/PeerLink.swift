/// The seam between the sans-IO cores and the world.
///
/// A core (Membership, ClusterState, Swarm) never touches a socket or a clock. It is handed inputs
/// and `now`, and it answers with an `Outbox`: messages to send to peers on a traffic class, and the
/// instant it next wants to be woken. The daemon carries messages over QUIC (one connection per peer
/// pair, a stream scheduler per class); the simulator carries them over virtual links. Both drive
/// the very same core code.

/// Priority classes, highest first. Within a class, round-robin; bulk never starves control.
public enum TrafficClass: UInt8, CaseIterable, Comparable, Sendable, CustomStringConvertible {
    /// Container start/stop, membership. Marked DSCP EF when marking is on.
    case control = 0
    /// RPCs and small reads.
    case interactive = 1
    /// Stats and logs; loss-tolerant, may ride DATAGRAM frames.
    case telemetry = 2
    /// Chunk transfers. Marked DSCP CS1 when marking is on.
    case bulk = 3

    public static func < (a: TrafficClass, b: TrafficClass) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .control: "control"
        case .interactive: "interactive"
        case .telemetry: "telemetry"
        case .bulk: "bulk"
        }
    }
}

/// Frame type numbers, one block per core, so every message on a link can be routed by its type.
public enum FrameTypeRange {
    public static let membership: ClosedRange<UInt64> = 0x10...0x2f
    public static let clusterState: ClosedRange<UInt64> = 0x30...0x4f
    public static let swarm: ClosedRange<UInt64> = 0x50...0x6f
    public static let control: ClosedRange<UInt64> = 0x70...0x8f
}

/// A message to or from a peer. `peer` is the destination when sending and the sender when received.
public struct PeerMessage: Hashable, Sendable {
    public var peer: NodeID
    public var traffic: TrafficClass
    public var frame: Frame
    /// True if the message may be dropped rather than retransmitted (QUIC DATAGRAM; telemetry, probes).
    public var unreliable: Bool

    public init(peer: NodeID, traffic: TrafficClass, frame: Frame, unreliable: Bool = false) {
        self.peer = peer
        self.traffic = traffic
        self.frame = frame
        self.unreliable = unreliable
    }
}

/// What a core asks of its shell after handling an input.
public struct Outbox: Sendable {
    public var messages: [PeerMessage] = []
    /// Addresses the shell should open a link to (seeds, mDNS finds). Once the link is up and the
    /// peer has proved its identity, the shell reports `LinkEvent.up` with the peer's `NodeID`.
    public var dials: [PeerAddress] = []
    /// The earliest instant the core wants `tick(now:)` called; nil for "no timer".
    public private(set) var wakeAt: Instant?

    public init() {}

    public mutating func send(_ message: PeerMessage) { messages.append(message) }

    public mutating func send(to peer: NodeID, _ traffic: TrafficClass, _ frame: Frame, unreliable: Bool = false) {
        messages.append(PeerMessage(peer: peer, traffic: traffic, frame: frame, unreliable: unreliable))
    }

    /// Asks to be woken at `instant`; keeps the earliest of all requests.
    public mutating func wake(at instant: Instant) {
        if let current = wakeAt, current <= instant { return }
        wakeAt = instant
    }

    public mutating func dial(_ address: PeerAddress) { dials.append(address) }

    /// Appends another outbox (messages in order, earliest wake-up).
    public mutating func merge(_ other: Outbox) {
        messages.append(contentsOf: other.messages)
        dials.append(contentsOf: other.dials)
        if let w = other.wakeAt { wake(at: w) }
    }
}

/// What the shell tells a core about its links.
public enum LinkEvent: Hashable, Sendable {
    /// An authenticated link to `peer` at `address` is up (dialled by us or accepted). `rtt` is the
    /// round trip the transport measured during the handshake, if it has a sample (the daemon: the
    /// QUIC connection's minimum RTT; the simulator: the path's round trip); a core may use it as
    /// its first estimate of how long the peer takes to answer.
    case up(peer: NodeID, address: PeerAddress, rtt: Duration? = nil)
    /// The link to `peer` is gone (closed, timed out, or the peer failed authentication).
    case down(peer: NodeID)
    /// A dial to `address` failed before any identity was learned.
    case dialFailed(address: PeerAddress)
}

/// The shape every sans-IO protocol core has, so one shell (the daemon's `MeshPeer` or the
/// simulator's virtual host) can drive any of them. A core never reads a clock, a socket or a file.
public protocol MeshProtocolCore {
    /// The node (re)starts. Returns what to send first and when to wake.
    mutating func start(now: Instant) -> Outbox
    /// A message arrived from `message.peer`.
    mutating func receive(_ message: PeerMessage, now: Instant) -> Outbox
    /// A link changed state.
    mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox
    /// The wake-up the core asked for is due (or later: shells may call late, never early).
    mutating func tick(now: Instant) -> Outbox
    /// True if this core handles frames of `type` (its `FrameTypeRange` block).
    func handles(frameType type: UInt64) -> Bool
}

/// A network address as the cores see it: a host (IP literal or DNS name) and a UDP port.
public struct PeerAddress: Hashable, Comparable, Sendable, CustomStringConvertible, WireFields {
    public var host: String
    public var port: UInt16

    public init() { host = ""; port = 0 }
    public init(host: String, port: UInt16) { self.host = host; self.port = port }

    /// Parses `HOST:PORT` or `[IPv6]:PORT`.
    public init?(parsing text: String) {
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            let after = text[text.index(after: close)...]
            guard after.hasPrefix(":"), let p = UInt16(after.dropFirst()) else { return nil }
            self.init(host: String(text[text.index(after: text.startIndex)..<close]), port: p)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let p = UInt16(text[text.index(after: colon)...]),
              !text[..<colon].isEmpty, !text[..<colon].contains(":") else { return nil }
        self.init(host: String(text[..<colon]), port: p)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    public static func < (a: PeerAddress, b: PeerAddress) -> Bool { (a.host, a.port) < (b.host, b.port) }

    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.string(&host, max: 255)
        try c.uint(&port)
    }
}
