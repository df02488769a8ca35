import MeshCore
import Synchronization

/// Process-wide counters for the transport (exported by MeshPeer's metrics endpoint).
public final class QUICMetrics: Sendable {
    public static let shared = QUICMetrics()

    public final class Counter: Sendable {
        private let value = Atomic<Int>(0)
        func add(_ n: Int) { value.add(n, ordering: .relaxed) }
        public var current: Int { value.load(ordering: .relaxed) }
    }

    /// Peers refused during the handshake: no certificate, not a node certificate, wrong identity,
    /// or not admitted by the policy.
    public let peersRefused = Counter()
    /// Of those, links closed because no valid join token was presented (policy `joinTokens`).
    public let joinRefused = Counter()
    /// Datagrams that matched no connection and could not start one (garbage, stray short headers).
    public let datagramsDropped = Counter()
    /// Version Negotiation packets sent.
    public let versionNegotiationsSent = Counter()
    /// Stateless resets sent.
    public let statelessResetsSent = Counter()
    /// Connections accepted (server side) and dialled (client side).
    public let connectionsAccepted = Counter()
    public let connectionsDialled = Counter()
    /// Server side: handshakes that resumed a session from a ticket, and 0-RTT flights accepted.
    public let sessionsResumed = Counter()
    public let earlyDataAccepted = Counter()
    /// Client side: 0-RTT flights the server refused (the data was sent again after the handshake).
    public let earlyDataRejected = Counter()
    /// Retry packets sent (address validation on), and client Initials refused for a bad token.
    public let retriesSent = Counter()
    public let invalidTokens = Counter()
    /// Packets declared lost (that carried stream data), summed over every connection, closed or open.
    public let packetsLost = Counter()

    /// One open connection as the metrics see it, refreshed by its endpoint about every 250 ms.
    public struct ConnectionSnapshot: Sendable {
        /// The authenticated peer (mesh links; nil for HTTP/3).
        public var peer: NodeID?
        public var remote: PeerAddress
        public var alpn: String?
        public var isServer: Bool
        public var stats: ConnectionStats
    }
    private let live = Mutex<[UInt64: ConnectionSnapshot]>([:])

    /// Every open connection of every endpoint in this process, with its latest stats.
    public var connections: [ConnectionSnapshot] { live.withLock { Array($0.values) } }

    func publish(_ id: UInt64, _ snapshot: ConnectionSnapshot?) {
        live.withLock { $0[id] = snapshot }
    }
}
