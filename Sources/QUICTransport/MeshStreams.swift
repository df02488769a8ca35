import CNgtcp2
import MeshCore

/// The mesh application on a `gquic/1` connection: our own stream scheduler (ngtcp2 has none).
///
/// Every stream starts with one byte, its `TrafficClass`, written by the opener. When ngtcp2 asks
/// what to send next, the highest class with sendable data wins, and within a class streams take
/// turns (round-robin, one packet's worth each), so a bulk transfer delays a control message by at
/// most the packet being built.
final class MeshStreams: QUICApplication {
    /// Bytes handed to ngtcp2 stay valid until the peer acknowledges them.
    final class SendChunk {
        let base: UnsafeMutableRawPointer
        let count: Int
        init(_ bytes: [UInt8]) {
            count = bytes.count
            base = .allocate(byteCount: max(count, 1), alignment: 1)
            bytes.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: count) }
        }
        deinit { base.deallocate() }
    }

    final class StreamState {
        let id: Int64
        var handle: QUICStream?
        var trafficClass: TrafficClass
        var chunks: [SendChunk] = []
        var chunkHead = 0
        /// Stream offset where chunks[chunkHead] starts.
        var chunkStart: UInt64 = 0
        var queuedEnd: UInt64 = 0
        var sent: UInt64 = 0
        var ackedEnd: UInt64 = 0
        /// Bytes at the start of the stream that are ours (the class byte), not the user's.
        var headerLength: UInt64 = 0
        var finQueued = false, finSent = false
        var blocked = false, inReady = false
        init(id: Int64, trafficClass: TrafficClass) { self.id = id; self.trafficClass = trafficClass }
        var hasSendable: Bool { !blocked && (sent < queuedEnd || (finQueued && !finSent)) }
    }

    let executor: LoopExecutor
    let link: QUICLink
    weak var connection: QUICConnection?
    /// Asks the owner to run the connection's write loop soon.
    let wake: () -> Void
    private var streams: [Int64: StreamState] = [:]
    private var ready: [[Int64]] = Array(repeating: [], count: TrafficClass.allCases.count)
    private var pendingOpens: [(TrafficClass, Bool, (Result<QUICStream, QUICError>) -> Void)] = []
    private var closedError: QUICError??
    /// Client: the first control message given to `connect`, sent as 0-RTT data when resuming.
    private var firstMessage: [UInt8]?
    private var firstStreamID: Int64?

    // Admission by join token (see `JoinToken`). Server: the link is held back (its streams queued,
    // datagrams dropped) until the dialler's proof checks out. Client: sends the proof.
    /// First byte of the stream that carries a join proof (not a `TrafficClass`).
    static let admissionMarker: UInt8 = 0xA0
    private(set) var awaitingAdmission = false
    private var admissionDeadline: Instant?
    private var pendingAccepts: [QUICStream] = []
    private var admissionStreams: [Int64: [UInt8]] = [:]
    /// Called once when a held-back link is admitted.
    var onAdmitted: (() -> Void)?
    /// The endpoint handed this (accepted) link to its owner.
    var announced = false
    /// Per-class rate caps and the bulk scavenger (nil when neither is configured).
    private var limiter: ClassLimiter?
    /// When a rate-capped class may send again.
    private var refillAt: Instant?

    /// The mesh application for `conn`, tied to `link`.
    static func attach(_ conn: QUICConnection, link: QUICLink, executor: LoopExecutor, wake: @escaping () -> Void) -> MeshStreams {
        let app = MeshStreams(executor: executor, link: link, wake: wake)
        link.attach(app, conn)
        return app
    }

    init(executor: LoopExecutor, link: QUICLink, wake: @escaping () -> Void) {
        self.executor = executor
        self.link = link
        self.wake = wake
    }

    var openStreamsByClass: [TrafficClass: Int] {
        var out: [TrafficClass: Int] = [:]
        for s in streams.values where s.handle != nil { out[s.trafficClass, default: 0] += 1 }
        return out
    }

    // MARK: Requests from handles (on the loop thread)

    func open(_ cls: TrafficClass, bidirectional: Bool, _ done: @escaping (Result<QUICStream, QUICError>) -> Void) {
        if let e = closedError { done(.failure(e ?? .closed("link closed"))); return }
        guard let conn = connection, let id = conn.openStream(bidirectional: bidirectional) else {
            if connection == nil || connection!.isClosingOrDraining {
                done(.failure(.closed("link closed")))
            } else {
                pendingOpens.append((cls, bidirectional, done)) // stream limit: wait for MAX_STREAMS
            }
            return
        }
        let st = StreamState(id: id, trafficClass: cls)
        let handle = QUICStream(id: id, trafficClass: cls, writable: true, executor: executor, streams: self)
        st.handle = handle
        st.headerLength = 1
        streams[id] = st
        append(st, bytes: [cls.rawValue], fin: false)
        done(.success(handle))
    }

    func enqueue(stream id: Int64, bytes: [UInt8], fin: Bool) {
        guard let st = streams[id] else {
            // The stream is gone (reset or connection closed); the handle was already failed.
            return
        }
        append(st, bytes: bytes, fin: fin)
    }

    private func append(_ st: StreamState, bytes: [UInt8], fin: Bool) {
        if !bytes.isEmpty {
            st.chunks.append(SendChunk(bytes))
            st.queuedEnd += UInt64(bytes.count)
        }
        if fin { st.finQueued = true }
        schedule(st)
        wake()
    }

    private func schedule(_ st: StreamState) {
        guard st.hasSendable, !st.inReady else { return }
        st.inReady = true
        ready[Int(st.trafficClass.rawValue)].append(st.id)
    }

    func consumed(stream id: Int64, count: Int) {
        connection?.consumed(stream: id, count: count)
        wake()
    }

    func reset(stream id: Int64, errorCode: UInt64) {
        connection?.shutdownStream(id, errorCode: errorCode)
        if let st = streams[id] { st.chunks.removeAll(); st.finQueued = false; st.queuedEnd = st.sent }
        wake()
    }

    func stopSending(stream id: Int64, errorCode: UInt64) {
        connection?.shutdownStreamRead(id, errorCode: errorCode)
        wake()
    }

    // MARK: QUICApplication

    func start(_ connection: QUICConnection) throws(QUICError) {
        self.connection = connection
        let l = ClassLimiter(rates: connection.settings.classRateLimits, scavenger: connection.settings.bulkScavenger,
                             now: connection.lastNow)
        limiter = l.isActive ? l : nil
        if connection.role == .server, connection.tlsConfiguration.admission?.requiresJoinToken == true {
            awaitingAdmission = true
            admissionDeadline = connection.lastNow + connection.settings.handshakeTimeout
        }
        if firstMessage != nil { openFirstStream() }
    }

    func trafficClass(of stream: Int64) -> TrafficClass? { streams[stream]?.trafficClass }

    var deadline: Instant? {
        let a = awaitingAdmission ? admissionDeadline : nil
        guard let r = refillAt else { return a }
        return min(a ?? r, r)
    }

    func deadlineReached(_ connection: QUICConnection, now: Instant) {
        if let r = refillAt, r <= now { refillAt = nil; wake() }
        if awaitingAdmission, let d = admissionDeadline, d <= now {
            refuseJoin(connection, "no join token presented within \(connection.settings.handshakeTimeout)")
        }
    }

    /// Client: proves we hold the join token, on a unidirectional stream of its own.
    private func presentJoinToken(_ connection: QUICConnection) {
        let config = connection.tlsConfiguration
        guard let token = config.joinToken, let me = config.localNodeID,
              let exporter = connection.tlsExporter(label: JoinToken.exporterLabel, length: 32),
              let id = connection.openStream(bidirectional: false) else { return }
        let st = StreamState(id: id, trafficClass: .control)
        st.headerLength = 1
        streams[id] = st
        let p = JoinToken.Presentation(version: 1, tokenID: token.id, proof: token.proof(exporter: exporter, joiner: me))
        append(st, bytes: [MeshStreams.admissionMarker] + p.wireBytes(), fin: true)
    }

    private func receivedAdmission(_ connection: QUICConnection, stream id: Int64, data: UnsafeRawBufferPointer, fin: Bool) {
        var buf = admissionStreams[id] ?? []
        buf += data
        connection.consumed(stream: id, count: data.count)
        guard buf.count <= 1 + JoinToken.Presentation.maxLength else {
            admissionStreams[id] = nil
            refuseJoin(connection, "oversized join presentation")
            return
        }
        guard fin else { admissionStreams[id] = buf; return }
        admissionStreams[id] = nil
        guard awaitingAdmission else { return } // this endpoint does not ask for tokens
        guard let peer = connection.peerNodeID, let policy = connection.tlsConfiguration.admission,
              let exporter = connection.tlsExporter(label: JoinToken.exporterLabel, length: 32),
              let p = try? JoinToken.Presentation(wireBytes: Array(buf.dropFirst())),
              policy.admitsJoin(p, exporter: exporter, node: peer) else {
            refuseJoin(connection, "join token proof is invalid (unknown token, or not made with its secret for this connection)")
            return
        }
        awaitingAdmission = false
        admissionDeadline = nil
        let held = pendingAccepts
        pendingAccepts = []
        for h in held { link.accept(h) }
        onAdmitted?()
    }

    private func refuseJoin(_ connection: QUICConnection, _ why: String) {
        guard awaitingAdmission else { return }
        awaitingAdmission = false
        connection.logger.warning("refusing peer \(connection.peerNodeID.map(\.description) ?? "?") at \(connection.remote): \(why)",
                                  metadata: ["event": "peer-refused"])
        QUICMetrics.shared.peersRefused.add(1)
        QUICMetrics.shared.joinRefused.add(1)
        connection.close(errorCode: AdmissionPolicy.joinRefusedErrorCode, reason: "join token required: \(why)", now: connection.lastNow)
        wake()
    }

    /// Queues `message` as the first control stream (bidirectional, finished). Before `start`, so a
    /// resuming client sends it as 0-RTT data; the handle appears on the link once the handshake
    /// settled whether the server took it.
    func queueFirstMessage(_ message: [UInt8]) { firstMessage = message }

    private func openFirstStream() {
        guard let message = firstMessage, let conn = connection, let id = conn.openStream(bidirectional: true) else { return }
        let st = StreamState(id: id, trafficClass: .control)
        st.headerLength = 1
        streams[id] = st
        firstStreamID = id
        append(st, bytes: [TrafficClass.control.rawValue] + message, fin: true)
    }

    func earlyDataRejected(_ connection: QUICConnection) {
        // ngtcp2 dropped every stream; only the first message can exist this early. Send it again.
        if let id = firstStreamID { streams[id] = nil; firstStreamID = nil }
        for c in ready.indices { ready[c].removeAll() }
        openFirstStream()
    }

    func handshakeCompleted(_ connection: QUICConnection) {
        if connection.role == .client { presentJoinToken(connection) }
        guard let id = firstStreamID, let st = streams[id], st.handle == nil else { return }
        let handle = QUICStream(id: id, trafficClass: .control, writable: true, executor: executor, streams: self)
        st.handle = handle
        handle.markFinished()
        link.setFirstStream(handle)
        firstMessage = nil
    }

    func receivedStreamData(_ connection: QUICConnection, stream id: Int64, data: UnsafeRawBufferPointer, fin: Bool) throws(QUICError) {
        if admissionStreams[id] != nil {
            receivedAdmission(connection, stream: id, data: data, fin: fin)
            return
        }
        var data = data
        let st: StreamState
        if let existing = streams[id] {
            st = existing
        } else {
            st = StreamState(id: id, trafficClass: .bulk)
            streams[id] = st
        }
        if st.handle == nil {
            // A stream the peer opened: its first byte names the class.
            guard let first = data.first else {
                if fin { connection.shutdownStream(id, errorCode: MeshStreams.errorMalformed) }
                return
            }
            if first == MeshStreams.admissionMarker && id & 0x1 != (connection.role == .server ? 1 : 0) {
                streams[id] = nil
                admissionStreams[id] = []
                receivedAdmission(connection, stream: id, data: data, fin: fin)
                return
            }
            guard let cls = TrafficClass(rawValue: first) else {
                connection.shutdownStream(id, errorCode: MeshStreams.errorMalformed)
                streams[id] = nil
                return
            }
            st.trafficClass = cls
            let bidi = id & 0x2 == 0
            let handle = QUICStream(id: id, trafficClass: cls, writable: bidi, executor: executor, streams: self)
            st.handle = handle
            connection.consumed(stream: id, count: 1)
            data = UnsafeRawBufferPointer(rebasing: data[1...])
            if awaitingAdmission {
                guard pendingAccepts.count < 256 else {
                    refuseJoin(connection, "opened too many streams before presenting a join token")
                    return
                }
                pendingAccepts.append(handle)
            } else {
                link.accept(handle)
            }
        }
        st.handle?.deliver(data, fin: fin)
    }

    func streamOpened(_ connection: QUICConnection, stream id: Int64) {}

    func streamClosed(_ connection: QUICConnection, stream id: Int64, errorCode: UInt64?) {
        guard let st = streams.removeValue(forKey: id) else { return }
        let why: QUICError = errorCode.map { $0 == 0 ? .closed("stream closed") : .streamReset($0) } ?? .closed("stream closed")
        st.handle?.failReads(why)
        st.handle?.failWrites(why)
    }

    func streamReset(_ connection: QUICConnection, stream id: Int64, errorCode: UInt64) {
        streams[id]?.handle?.failReads(.streamReset(errorCode))
    }

    func stopSending(_ connection: QUICConnection, stream id: Int64, errorCode: UInt64) {
        guard let st = streams[id] else { return }
        st.handle?.failWrites(.streamReset(errorCode))
        connection.shutdownStreamWrite(id, errorCode: errorCode)
        st.chunks.removeAll(); st.chunkHead = 0; st.finQueued = false; st.queuedEnd = st.sent
    }

    func ackedStreamData(_ connection: QUICConnection, stream id: Int64, offset: UInt64, length: UInt64) {
        guard let st = streams[id] else { return }
        if st.trafficClass == .bulk, limiter != nil {
            let rtt = connection.rtt
            limiter!.bulkAcked(Int(length), latestRTT: rtt.latest, minRTT: rtt.min, smoothedRTT: rtt.smoothed, now: connection.lastNow)
        }
        let end = offset + length
        let userNew = end > max(st.ackedEnd, st.headerLength) ? end - max(st.ackedEnd, st.headerLength) : 0
        st.ackedEnd = max(st.ackedEnd, end)
        while st.chunkHead < st.chunks.count {
            let c = st.chunks[st.chunkHead]
            guard st.chunkStart + UInt64(c.count) <= st.ackedEnd, st.chunkStart + UInt64(c.count) <= st.sent else { break }
            st.chunkStart += UInt64(c.count)
            st.chunkHead += 1
        }
        if st.chunkHead > 64 && st.chunkHead * 2 > st.chunks.count {
            st.chunks.removeFirst(st.chunkHead)
            st.chunkHead = 0
        }
        if userNew > 0 { st.handle?.acked(Int(userNew)) }
    }

    func streamUnblocked(_ connection: QUICConnection, stream id: Int64) {
        guard let st = streams[id], st.blocked else { return }
        st.blocked = false
        schedule(st)
    }

    func moreStreamsAllowed(_ connection: QUICConnection) {
        let waiting = pendingOpens
        pendingOpens.removeAll()
        for (cls, bidi, done) in waiting { open(cls, bidirectional: bidi, done) }
        if !waiting.isEmpty { wake() }
    }

    func receivedDatagram(_ connection: QUICConnection, data: UnsafeRawBufferPointer) {
        if awaitingAdmission { return }
        link.deliverDatagram(Array(data))
    }

    func nextStreamData(_ connection: QUICConnection, vecs: UnsafeMutableBufferPointer<ngtcp2_vec>) -> (stream: Int64, count: Int, fin: Bool)? {
        for c in 0..<ready.count {
            if limiter != nil, !ready[c].isEmpty, !limiter!.allows(TrafficClass(rawValue: UInt8(c))!, now: connection.lastNow) {
                if let t = limiter!.nextRefill(after: connection.lastNow) { refillAt = min(refillAt ?? t, t) }
                continue
            }
            while let id = ready[c].first {
                guard let st = streams[id], st.hasSendable else {
                    ready[c].removeFirst()
                    streams[id]?.inReady = false
                    continue
                }
                // Vecs from the first unsent byte.
                var n = 0
                var offset = st.chunkStart
                var i = st.chunkHead
                while i < st.chunks.count && n < vecs.count {
                    let ch = st.chunks[i]
                    let end = offset + UInt64(ch.count)
                    if end > st.sent {
                        let skip = st.sent > offset ? Int(st.sent - offset) : 0
                        vecs[n] = ngtcp2_vec(base: ch.base.assumingMemoryBound(to: UInt8.self) + skip, len: ch.count - skip)
                        n += 1
                    }
                    offset = end
                    i += 1
                }
                let allQueued = i == st.chunks.count
                return (id, n, st.finQueued && allQueued)
            }
        }
        return nil
    }

    func wroteStreamData(_ connection: QUICConnection, stream id: Int64, count: Int, fin: Bool) {
        guard let st = streams[id] else { return }
        st.sent += UInt64(count)
        if limiter != nil { limiter!.sent(st.trafficClass, count: count) }
        if fin { st.finSent = true }
        // Round-robin within the class: the stream goes to the back of its queue.
        let c = Int(st.trafficClass.rawValue)
        if let first = ready[c].first, first == id {
            ready[c].removeFirst()
            if st.hasSendable { ready[c].append(id) } else { st.inReady = false }
        }
    }

    func streamBlocked(_ connection: QUICConnection, stream id: Int64, permanently: Bool) {
        guard let st = streams[id] else { return }
        st.blocked = true
    }

    func connectionClosed(_ connection: QUICConnection, error: QUICError?) {
        closedError = .some(error)
        let why = error ?? .closed("link closed")
        for st in streams.values {
            st.handle?.failReads(why)
            st.handle?.failWrites(why)
        }
        streams.removeAll()
        for (_, _, done) in pendingOpens { done(.failure(why)) }
        pendingOpens.removeAll()
        link.markClosed(error)
    }

    /// Application error code for a stream whose class byte is invalid.
    static let errorMalformed: UInt64 = 0x1
}
