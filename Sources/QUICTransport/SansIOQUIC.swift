import Logging
import MeshCore
import Synchronization

/// Mesh QUIC connections without sockets, threads or a clock, for drivers that own the wire and the
/// time — the simulator carrying real ngtcp2 packets in virtual time, or a test. The driver:
///
/// 1. makes connections with `dial` (client) and `accept` (server, from a client's first datagram);
/// 2. hands every datagram to `connection.receive(_:from:now:)`, calls
///    `connection.handleTimeout(now:)` at `connection.nextTimeout`, and after every input (and after
///    `runPending()`) sends what `connection.pollTransmit(now:)` returns;
/// 3. uses `connection.link` (a `QUICLink`) once `connection.isEstablished`: its async stream API
///    posts work here, which runs when the driver calls `runPending()` (before polling).
///
/// One driver thread at a time; the connections are not thread-safe.
public final class SansIOQUIC: LoopExecutor, @unchecked Sendable {
    public let settings: QUICSettings
    let credentials: TLSCredentials
    private let resetSecret: [UInt8]
    private let logger: Logger
    private let work = Mutex<[@Sendable () -> Void]>([])

    /// `tls` must be a mesh configuration (`TLSConfiguration.mesh`). `resetSecret` (32 bytes) keys
    /// stateless-reset tokens; a simulator passes a fixed one per node for reproducible runs.
    public init(tls: TLSConfiguration, settings: QUICSettings = QUICSettings(), resetSecret: [UInt8]? = nil,
                logger: Logger = Logger(label: "gquic.quic.sansio")) throws(QUICError) {
        guard tls.isMesh else { throw .invalidArgument("SansIOQUIC drives mesh links: use TLSConfiguration.mesh") }
        credentials = try TLSCredentials(tls)
        self.settings = settings
        self.resetSecret = resetSecret ?? (0..<32).map { _ in UInt8.random(in: 0...255) }
        self.logger = logger
    }

    /// A client connection from `local` to `remote`; the handshake fails unless the peer proves
    /// `expecting` (if given). Its first datagrams come from `pollTransmit(now:)`.
    public func dial(_ remote: SocketAddress, from local: SocketAddress, expecting: NodeID?, now: Instant) throws(QUICError) -> QUICConnection {
        let conn = try QUICConnection(clientTo: remote, local: local, credentials: credentials, alpn: [QUICEndpoint.meshALPN],
                                      serverName: nil, expectedPeer: expecting, settings: settings, resetSecret: resetSecret,
                                      now: now, logger: logger)
        prepare(conn, remote: remote)
        return conn
    }

    /// A server connection for `datagram` if it is a client Initial that can start one (nil
    /// otherwise: drop it). The datagram is already consumed; poll for the answer.
    public func accept(_ datagram: [UInt8], from remote: SocketAddress, at local: SocketAddress, now: Instant) throws(QUICError) -> QUICConnection? {
        guard let hd = datagram.withUnsafeBytes({ PacketHeader.acceptInitial($0) }) else { return nil }
        let conn = try QUICConnection(serverFor: hd, remote: remote, local: local, credentials: credentials,
                                      alpn: [QUICEndpoint.meshALPN], settings: settings, resetSecret: resetSecret,
                                      now: now, logger: logger)
        prepare(conn, remote: remote)
        datagram.withUnsafeBytes { conn.receive($0, from: remote, now: now) }
        return conn
    }

    private func prepare(_ conn: QUICConnection, remote: SocketAddress) {
        conn.keepsEvents = false
        conn.applicationFactory = { [unowned self] c in
            let link = QUICLink(peer: c.peerNodeID!, remoteAddress: remote.peerAddress, handshakeRTT: c.sampledMinRTT, executor: self)
            return MeshStreams.attach(c, link: link, executor: self, wake: {})
        }
    }

    /// Runs the work that link and stream calls posted (opening streams, writes, reads' flow control).
    /// Returns how many items ran.
    @discardableResult
    public func runPending() -> Int {
        var n = 0
        while true {
            let batch = work.withLock { w -> [@Sendable () -> Void] in defer { w.removeAll() }; return w }
            if batch.isEmpty { return n }
            for w in batch { w() }
            n += batch.count
        }
    }

    func post(_ work: @escaping @Sendable () -> Void) { self.work.withLock { $0.append(work) } }
}
