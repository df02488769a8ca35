import MeshCore
import Synchronization

/// An authenticated mesh connection to one peer (ALPN `gquic/1`). Open streams on a traffic class,
/// accept the peer's streams, send and receive DATAGRAM frames. Safe to use from any task.
public final class QUICLink: Sendable {
    /// The node the peer proved to be.
    public let peer: NodeID
    public let remoteAddress: PeerAddress
    /// The connection's smallest RTT sample when the link was set up (nil if the handshake gave none).
    public let handshakeRTT: Duration?
    /// Streams the peer opened, in order of their first byte arriving.
    public let incomingStreams: AsyncStream<QUICStream>
    /// DATAGRAM frames from the peer (the newest 1024 are kept if nobody reads).
    public let datagrams: AsyncStream<[UInt8]>

    private let incomingContinuation: AsyncStream<QUICStream>.Continuation
    private let datagramContinuation: AsyncStream<[UInt8]>.Continuation
    private let executor: LoopExecutor
    private let state = Mutex<(streams: LoopBound<MeshStreams>?, connection: LoopBound<QUICConnection>?,
                               closed: Bool, error: QUICError?, waiters: [CheckedContinuation<QUICError?, Never>])>(
        (nil, nil, false, nil, []))
    private let handshake = Mutex<(resumed: Bool, earlyDataAccepted: Bool, firstStream: QUICStream?)>((false, false, nil))

    /// True when the handshake resumed an earlier session from a ticket (no certificates exchanged;
    /// the identities are the ones proved when the ticket was issued).
    public var isResumed: Bool { handshake.withLock { $0.resumed } }
    /// True when the first message went out as 0-RTT data and the peer accepted it.
    public var earlyDataAccepted: Bool { handshake.withLock { $0.earlyDataAccepted } }
    /// The control stream that carried `connect`'s `firstMessage` (already finished): read the reply here.
    public var firstStream: QUICStream? { handshake.withLock { $0.firstStream } }

    init(peer: NodeID, remoteAddress: PeerAddress, handshakeRTT: Duration? = nil, executor: LoopExecutor) {
        self.peer = peer
        self.remoteAddress = remoteAddress
        self.handshakeRTT = handshakeRTT
        self.executor = executor
        (incomingStreams, incomingContinuation) = AsyncStream.makeStream(of: QUICStream.self)
        (datagrams, datagramContinuation) = AsyncStream.makeStream(of: [UInt8].self, bufferingPolicy: .bufferingNewest(1024))
    }

    func attach(_ streams: MeshStreams, _ connection: QUICConnection) {
        state.withLock { $0.streams = LoopBound(streams); $0.connection = LoopBound(connection) }
    }

    /// Opens a stream on `trafficClass`. Waits if the peer's stream limit is reached.
    public func openStream(_ trafficClass: TrafficClass, bidirectional: Bool = true) async throws(QUICError) -> QUICStream {
        guard let streams = state.withLock({ $0.streams }) else { throw QUICError.closed("link not ready") }
        let result = await withCheckedContinuation { (cont: CheckedContinuation<Result<QUICStream, QUICError>, Never>) in
            executor.post { streams.value.open(trafficClass, bidirectional: bidirectional) { cont.resume(returning: $0) } }
        }
        return try result.get()
    }

    /// Sends a DATAGRAM frame: unreliable, unordered, at most `QUICSettings.maxDatagramFrameSize` bytes.
    public func sendDatagram(_ bytes: [UInt8]) {
        guard let streams = state.withLock({ $0.streams }) else { return }
        executor.post {
            streams.value.connection?.sendDatagram(bytes)
            streams.value.wake()
        }
    }

    /// Per-connection numbers (RTT, cwnd, bytes, streams by class).
    public func stats() async -> ConnectionStats? {
        guard let conn = state.withLock({ $0.connection }) else { return nil }
        return await withCheckedContinuation { (cont: CheckedContinuation<ConnectionStats?, Never>) in
            executor.post { cont.resume(returning: conn.value.stats) }
        }
    }

    /// Closes the connection with an application error code (0: no error).
    public func close(errorCode: UInt64 = 0, reason: String = "") {
        guard let streams = state.withLock({ $0.streams }) else { return }
        executor.post {
            streams.value.connection?.close(errorCode: errorCode, reason: reason, now: SystemClock().now())
            streams.value.wake()
        }
    }

    /// True once the connection is closed.
    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Waits until the connection closes; returns why (nil for a clean close).
    public func waitClosed() async -> QUICError? {
        await withCheckedContinuation { (cont: CheckedContinuation<QUICError?, Never>) in
            let done = state.withLock { s -> (Bool, QUICError?) in
                if s.closed { return (true, s.error) }
                s.waiters.append(cont)
                return (false, nil)
            }
            if done.0 { cont.resume(returning: done.1) }
        }
    }

    // MARK: From the loop thread

    func accept(_ stream: QUICStream) { incomingContinuation.yield(stream) }
    func setFirstStream(_ stream: QUICStream) { handshake.withLock { $0.firstStream = stream } }
    func setHandshake(resumed: Bool, earlyDataAccepted: Bool) {
        handshake.withLock { $0.resumed = resumed; $0.earlyDataAccepted = earlyDataAccepted }
    }
    func deliverDatagram(_ bytes: [UInt8]) { datagramContinuation.yield(bytes) }

    func markClosed(_ error: QUICError?) {
        let waiters = state.withLock { s -> [CheckedContinuation<QUICError?, Never>] in
            if s.closed { return [] }
            s.closed = true
            s.error = error
            defer { s.waiters = [] }
            return s.waiters
        }
        incomingContinuation.finish()
        datagramContinuation.finish()
        for w in waiters { w.resume(returning: error) }
    }
}
