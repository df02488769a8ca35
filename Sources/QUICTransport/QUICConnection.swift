#if canImport(Glibc)
import Glibc
#endif
import CNgtcp2
import Logging
import MeshCore

/// One QUIC connection over ngtcp2 0.12, sans-IO: datagrams and `now` in, datagrams and the next
/// timer out. Not thread-safe: its owner (an endpoint thread, a test, the simulator) calls it from
/// one thread at a time.
public final class QUICConnection {
    public enum Role: Sendable { case client, server }

    enum State { case handshaking, established, closing(until: Instant), draining(until: Instant), closed }

    /// Things the owner must act on, collected during `receive`/`handleTimeout`/`pollTransmit`.
    enum Event {
        case handshakeCompleted
        /// The server confirmed the handshake (client side): the server accepted our certificate too.
        case handshakeConfirmed
        case newConnectionID(ConnectionID)
        case retiredConnectionID(ConnectionID)
        /// A client received a session ticket: what it needs to resume (and send 0-RTT) later.
        case sessionTicket(ResumptionTicket)
        /// Server: a resumed peer's 0-RTT data started the application before the handshake completed.
        case applicationStartedEarly
        case closed(QUICError?)
    }

    public let role: Role
    public let remote: SocketAddress
    public let local: SocketAddress
    let settings: QUICSettings
    /// The ngtcp2 connection; owned (deleted in deinit).
    private(set) var conn: OpaquePointer?
    private(set) var tls: TLSSession!
    private let pathStorage: UnsafeMutablePointer<ngtcp2_path_storage>
    private let resetSecret: [UInt8]
    private(set) var state: State = .handshaking
    var events: [Event] = []
    /// False for connections driven by `SansIOQUIC`, which reads state instead of events.
    var keepsEvents = true
    func emit(_ e: Event) { if keepsEvents { events.append(e) } }

    /// The mesh link on this connection (ALPN `gquic/1`), once the handshake created it.
    public var link: QUICLink? { (application as? MeshStreams)?.link }
    var application: QUICApplication?
    /// Called at handshake completion (server side) to pick the application for the negotiated ALPN.
    var applicationFactory: ((QUICConnection) throws(QUICError) -> QUICApplication)?
    let logger: Logger

    /// The node the peer proved to be (mesh links), once its certificate was checked.
    public private(set) var peerNodeID: NodeID?
    /// For a client dialling a known node: the NodeID the server must prove.
    let expectedPeer: NodeID?
    private var closeError: QUICError?
    /// Why the connection is closing or closed, once known.
    public var closeReason: QUICError? { closeError }
    private var closePacket: [UInt8] = []
    private var pendingDatagrams: [[UInt8]] = []
    /// Our own source connection IDs (the endpoint routes these to us).
    private(set) var localIDs: Set<ConnectionID> = []
    /// The client's original destination ID (server side), also routed to us until the handshake ends.
    let originalDestinationID: ConnectionID?

    /// Client: we offered a resumption ticket and may send 0-RTT stream data before the handshake ends.
    private(set) var earlyDataAttempted = false
    /// The application's `start` ran (at handshake completion, or earlier for 0-RTT / 0.5-RTT).
    private var applicationStarted = false
    /// Server: stream data that arrived as 0-RTT before the handshake completed.
    private var earlyStreamData: [(Int64, [UInt8], Bool)] = []
    /// True when this connection resumed an earlier session instead of a full handshake.
    public private(set) var isResumed = false
    /// Client: the server accepted our 0-RTT data. Server: we accepted the client's.
    public private(set) var earlyDataAccepted = false
    /// Client: the server's transport parameters, encoded, kept for a later resumption ticket.
    private var remoteParametersForResumption: [UInt8]?

    /// Streams ngtcp2 holds, for the loss count (ngtcp2 0.12 counts lost packets per stream only).
    private var liveStreams: Set<Int64> = []
    /// Lost packets that carried data of streams already closed.
    private var lostOnClosedStreams: UInt64 = 0

    /// The latest `now` an input brought (for application timers set inside callbacks).
    private(set) var lastNow = Instant.zero

    private(set) var bytesSent: UInt64 = 0, bytesReceived: UInt64 = 0
    private(set) var packetsSent: UInt64 = 0, packetsReceived: UInt64 = 0

    /// A client connection to `remote`. `expectedPeer` makes the handshake fail unless the server
    /// proves that node identity.
    /// `resumption` (with `expectedPeer`) resumes an earlier session with that peer and enables 0-RTT.
    init(clientTo remote: SocketAddress, local: SocketAddress, credentials: TLSCredentials, alpn: [String],
         serverName: String?, expectedPeer: NodeID?, resumption: ResumptionTicket? = nil, settings: QUICSettings,
         resetSecret: [UInt8], now: Instant, logger: Logger) throws(QUICError) {
        role = .client
        self.remote = remote; self.local = local; self.settings = settings
        self.resetSecret = resetSecret; self.expectedPeer = expectedPeer; self.logger = logger
        originalDestinationID = nil
        pathStorage = QUICConnection.makePath(local: local, remote: remote)
        let dcid = ConnectionID.random(length: 18), scid = ConnectionID.random()
        localIDs.insert(scid)
        let owner = Unmanaged.passUnretained(self).toOpaque()
        let resume = expectedPeer == nil ? nil : resumption
        tls = try TLSSession(isServer: false, credentials: credentials, alpn: alpn, serverName: serverName,
                             resume: resume?.session, owner: owner)
        var s = makeSettings(now: now)
        openQlog(&s, odcid: dcid)
        var p = makeTransportParams()
        var callbacks = QUICConnection.callbacks(client: true)
        var d = dcid.ngtcp2, sc = scid.ngtcp2
        var c: OpaquePointer?
        var token = settings.initialToken ?? []
        let rc = token.withUnsafeMutableBufferPointer { t in
            // ngtcp2 copies the token during conn_client_new.
            if let base = t.baseAddress, !t.isEmpty { s.token = ngtcp2_vec(base: base, len: t.count) }
            return gq_ngtcp2_conn_client_new(&c, &d, &sc, &pathStorage.pointee.path, NGTCP2_PROTO_VER_V1,
                                             &callbacks, &s, &p, nil, owner)
        }
        guard rc == 0, let c else { pathStorage.deallocate(); throw .ngtcp2("creating a client connection", rc) }
        conn = c
        ngtcp2_conn_set_tls_native_handle(c, UnsafeMutableRawPointer(tls.raw))
        if let ka = settings.keepAlive { ngtcp2_conn_set_keep_alive_timeout(c, UInt64(ka.nanosecondsClamped)) }
        if let resume, !resume.transportParameters.isEmpty {
            var params = ngtcp2_transport_params()
            let rc = resume.transportParameters.withUnsafeBufferPointer {
                gq_ngtcp2_decode_transport_params(&params, NGTCP2_TRANSPORT_PARAMS_TYPE_ENCRYPTED_EXTENSIONS, $0.baseAddress, $0.count)
            }
            if rc == 0 {
                gq_ngtcp2_conn_set_early_remote_transport_params(c, &params)
                earlyDataAttempted = true
            }
        }
    }

    /// A server connection for a client Initial whose header is `header`. `retriedFrom`: the original
    /// destination ID from a valid Retry token (the client's second Initial after our Retry).
    init(serverFor header: ngtcp2_pkt_hd, remote: SocketAddress, local: SocketAddress, credentials: TLSCredentials,
         alpn: [String], retriedFrom: ConnectionID? = nil, settings: QUICSettings, resetSecret: [UInt8], now: Instant,
         logger: Logger) throws(QUICError) {
        role = .server
        self.remote = remote; self.local = local; self.settings = settings
        self.resetSecret = resetSecret; self.logger = logger
        expectedPeer = nil
        originalDestinationID = ConnectionID(header.dcid)
        pathStorage = QUICConnection.makePath(local: local, remote: remote)
        let scid = ConnectionID.random()
        localIDs.insert(scid)
        let owner = Unmanaged.passUnretained(self).toOpaque()
        tls = try TLSSession(isServer: true, credentials: credentials, alpn: alpn, serverName: nil, owner: owner)
        var s = makeSettings(now: now)
        openQlog(&s, odcid: ConnectionID(header.dcid))
        s.token = header.token
        var p = makeTransportParams()
        if let retriedFrom {
            p.original_dcid = retriedFrom.ngtcp2
            p.retry_scid = header.dcid
            p.retry_scid_present = 1
        } else {
            p.original_dcid = header.dcid
        }
        p.stateless_reset_token_present = 1
        withUnsafeMutableBytes(of: &p.stateless_reset_token) { tok in
            var cid = scid.ngtcp2
            _ = resetSecret.withUnsafeBufferPointer {
                ngtcp2_crypto_generate_stateless_reset_token(tok.baseAddress!.assumingMemoryBound(to: UInt8.self), $0.baseAddress, $0.count, &cid)
            }
        }
        var callbacks = QUICConnection.callbacks(client: false)
        var d = header.scid, sc = scid.ngtcp2
        var c: OpaquePointer?
        let rc = gq_ngtcp2_conn_server_new(&c, &d, &sc, &pathStorage.pointee.path, header.version,
                                           &callbacks, &s, &p, nil, owner)
        guard rc == 0, let c else { pathStorage.deallocate(); throw .ngtcp2("creating a server connection", rc) }
        conn = c
        ngtcp2_conn_set_tls_native_handle(c, UnsafeMutableRawPointer(tls.raw))
        if let ka = settings.keepAlive { ngtcp2_conn_set_keep_alive_timeout(c, UInt64(ka.nanosecondsClamped)) }
    }

    deinit {
        if let conn { ngtcp2_conn_del(conn) }
        pathStorage.deallocate()
        if let qlog { fclose(qlog) }
    }

    /// qlog output (draft-ietf-quic-qlog, JSON-SEQ), one file per connection, when asked for.
    private var qlog: UnsafeMutablePointer<FILE>?

    private func openQlog(_ s: inout ngtcp2_settings, odcid: ConnectionID) {
        guard let dir = settings.qlogDirectory else { return }
        let path = "\(dir)/\(role == .client ? "client" : "server")-\(odcid).sqlog"
        guard let f = fopen(path, "w") else {
            logger.warning("cannot write qlog \(path): \(errnoName(errno))")
            return
        }
        qlog = f
        s.qlog.odcid = odcid.ngtcp2
        s.qlog.write = { ud, _, data, len in
            guard let f = QUICConnection.from(ud).qlog else { return }
            fwrite(data, 1, len, f)
        }
    }

    private static func makePath(local: SocketAddress, remote: SocketAddress) -> UnsafeMutablePointer<ngtcp2_path_storage> {
        let ps = UnsafeMutablePointer<ngtcp2_path_storage>.allocate(capacity: 1)
        ps.initialize(to: ngtcp2_path_storage())
        var l = local, r = remote
        withUnsafePointer(to: &l.storage) { lp in
            withUnsafePointer(to: &r.storage) { rp in
                lp.withMemoryRebound(to: sockaddr.self, capacity: 1) { lsa in
                    rp.withMemoryRebound(to: sockaddr.self, capacity: 1) { rsa in
                        ngtcp2_path_storage_init(ps, lsa, l.length, rsa, r.length, nil)
                    }
                }
            }
        }
        return ps
    }

    private func makeSettings(now: Instant) -> ngtcp2_settings {
        var s = ngtcp2_settings()
        gq_ngtcp2_settings_default(&s)
        s.initial_ts = now.nanoseconds
        lastNow = now
        s.cc_algo = settings.congestionControl.ngtcp2
        s.max_window = settings.maxWindow
        s.max_stream_window = settings.maxStreamWindow
        s.handshake_timeout = UInt64(settings.handshakeTimeout.nanosecondsClamped)
        s.max_tx_udp_payload_size = settings.maxUDPPayloadSize
        s.ack_thresh = max(1, settings.ackThreshold)
        return s
    }

    private func makeTransportParams() -> ngtcp2_transport_params {
        var p = ngtcp2_transport_params()
        gq_ngtcp2_transport_params_default(&p)
        p.initial_max_data = settings.initialMaxData
        p.initial_max_stream_data_bidi_local = settings.initialMaxStreamData
        p.initial_max_stream_data_bidi_remote = settings.initialMaxStreamData
        p.initial_max_stream_data_uni = settings.initialMaxStreamData
        p.initial_max_streams_bidi = settings.maxStreamsBidi
        p.initial_max_streams_uni = settings.maxStreamsUni
        p.max_idle_timeout = UInt64(settings.idleTimeout.nanosecondsClamped)
        p.max_datagram_frame_size = settings.maxDatagramFrameSize
        p.active_connection_id_limit = 4
        return p
    }

    // MARK: Inputs

    /// Feeds one received UDP datagram.
    /// `ecn`: the ECN codepoint (low two bits of the IP TOS byte) the datagram arrived with.
    public func receive(_ datagram: UnsafeRawBufferPointer, from: SocketAddress, now: Instant, ecn: UInt8 = 0) {
        switch state {
        case .closing:
            // Answer anything with our CONNECTION_CLOSE again (RFC 9000 §10.2.1); the owner sends it.
            resendClose = true
            return
        case .draining, .closed:
            return
        default: break
        }
        guard let conn else { return }
        lastNow = now
        bytesReceived += UInt64(datagram.count); packetsReceived += 1
        var pi = ngtcp2_pkt_info()
        if settings.ecn { pi.ecn = UInt32(ecn & 0x3) }
        let rc = gq_ngtcp2_conn_read_pkt(conn, &pathStorage.pointee.path, &pi,
                                         datagram.bindMemory(to: UInt8.self).baseAddress, datagram.count, now.nanoseconds)
        if rc != 0 { handleLibraryError(rc, while: "reading a packet", now: now) }
    }
    var resendClose = false

    /// Runs due timers (loss detection, idle, handshake timeout, closing period).
    public func handleTimeout(now: Instant) {
        switch state {
        case .closing(let until), .draining(let until):
            if now >= until { finish(closeError) }
            return
        case .closed: return
        default: break
        }
        guard let conn else { return }
        lastNow = now
        if let app = application, let d = app.deadline, d <= now { app.deadlineReached(self, now: now) }
        let rc = ngtcp2_conn_handle_expiry(conn, now.nanoseconds)
        if rc != 0 { handleLibraryError(rc, while: "handling a timer", now: now) }
    }

    /// When `handleTimeout` should next be called.
    public var nextTimeout: Instant {
        switch state {
        case .closing(let until), .draining(let until): return until
        case .closed: return .distantFuture
        default: break
        }
        guard let conn else { return .distantFuture }
        let e = ngtcp2_conn_get_expiry(conn)
        let expiry = e == UInt64.max ? Instant.distantFuture : Instant(nanoseconds: e)
        return min(expiry, application?.deadline ?? .distantFuture)
    }

    public var isClosed: Bool { if case .closed = state { true } else { false } }
    public var isEstablished: Bool { if case .established = state { true } else { false } }
    var isClosingOrDraining: Bool {
        switch state { case .closing, .draining, .closed: true; default: false }
    }

    /// Queues a DATAGRAM frame (RFC 9221). Dropped if the peer does not accept DATAGRAM or it is too big.
    public func sendDatagram(_ bytes: [UInt8]) {
        guard pendingDatagrams.count < 1024 else { return }
        pendingDatagrams.append(bytes)
    }

    // MARK: Output

    /// Writes every packet that is ready (up to the congestion controller's send quantum), calling
    /// `emit` with each UDP payload and the IP TOS byte to send it with (DSCP of the highest traffic
    /// class it carries, when marking is on, and the ECN codepoint ngtcp2 chose). Returns the number
    /// of packets written.
    @discardableResult
    func writePackets(now: Instant, buffer: UnsafeMutableRawBufferPointer, maxPackets: Int = 64,
                      emit: (UnsafeRawBufferPointer, UInt8) -> Void) -> Int {
        if resendClose, case .closing = state, !closePacket.isEmpty {
            resendClose = false
            closePacket.withUnsafeBytes { emit($0, 0) }
            return 1
        }
        guard let conn, case .handshaking = state.orEstablished else { return 0 }
        lastNow = now
        let udp = min(buffer.count, ngtcp2_conn_get_max_tx_udp_payload_size(conn))
        let quantum = max(1, ngtcp2_conn_get_send_quantum(conn) / max(udp, 1))
        let limit = min(maxPackets, quantum)
        let dest = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var written = 0
        var pi = ngtcp2_pkt_info()
        var vecs = [ngtcp2_vec](repeating: ngtcp2_vec(), count: 16)
        var packetClass: TrafficClass?  // highest class with data in the packet being built
        let ts = now.nanoseconds
        outer: while written < limit {
            if !pendingDatagrams.isEmpty, case .established = state {
                let d = pendingDatagrams[0]
                var accepted: Int32 = 0
                let n: Int = d.withUnsafeBufferPointer { b in
                    var v = ngtcp2_vec(base: UnsafeMutablePointer(mutating: b.baseAddress), len: b.count)
                    return gq_ngtcp2_conn_writev_datagram(conn, &pathStorage.pointee.path, &pi, dest, udp, &accepted, 0, 0, &v, 1, ts)
                }
                if n < 0 {
                    pendingDatagrams.removeFirst() // too large or not negotiated: drop (loss-tolerant by contract)
                    continue
                }
                if accepted != 0 { pendingDatagrams.removeFirst() }
                if n == 0 { break }
                account(n); emit(UnsafeRawBufferPointer(start: dest, count: n), tos(pi, packetClass: .telemetry)); written += 1
                continue
            }
            var stream: Int64 = -1
            var count = 0
            var fin = false
            var flags = UInt32(NGTCP2_WRITE_STREAM_FLAG_MORE)
            if applicationStarted, let app = application,
               let next = vecs.withUnsafeMutableBufferPointer({ app.nextStreamData(self, vecs: $0) }) {
                (stream, count, fin) = next
                if settings.dscpMarking, let c = app.trafficClass(of: stream) { packetClass = min(packetClass ?? c, c) }
                if fin { flags |= UInt32(NGTCP2_WRITE_STREAM_FLAG_FIN) }
            }
            var ndatalen: Int = -1
            let n = vecs.withUnsafeBufferPointer { v in
                gq_ngtcp2_conn_writev_stream(conn, &pathStorage.pointee.path, &pi, dest, udp, &ndatalen, flags,
                                             stream, v.baseAddress, count, ts)
            }
            if n < 0 {
                switch Int32(n) {
                case NGTCP2_ERR_STREAM_DATA_BLOCKED:
                    application?.streamBlocked(self, stream: stream, permanently: false)
                    continue outer
                case NGTCP2_ERR_STREAM_SHUT_WR, NGTCP2_ERR_STREAM_NOT_FOUND:
                    application?.streamBlocked(self, stream: stream, permanently: true)
                    continue outer
                case NGTCP2_ERR_WRITE_MORE:
                    let total = vecs.prefix(count).reduce(0) { $0 + $1.len }
                    application?.wroteStreamData(self, stream: stream, count: ndatalen, fin: fin && ndatalen == total)
                    continue outer
                default:
                    handleLibraryError(Int32(n), while: "writing packets", now: now)
                    if case .closing = state, !closePacket.isEmpty {
                        closePacket.withUnsafeBytes { emit($0, 0) }
                        written += 1
                    }
                    break outer
                }
            }
            if ndatalen >= 0, stream >= 0 {
                let total = vecs.prefix(count).reduce(0) { $0 + $1.len }
                application?.wroteStreamData(self, stream: stream, count: ndatalen, fin: fin && ndatalen == total)
            }
            if n == 0 { break }
            account(n)
            emit(UnsafeRawBufferPointer(start: dest, count: n), tos(pi, packetClass: packetClass))
            packetClass = nil
            written += 1
        }
        ngtcp2_conn_update_pkt_tx_time(conn, ts)
        return written
    }

    private func tos(_ pi: ngtcp2_pkt_info, packetClass: TrafficClass?) -> UInt8 {
        let ecn: UInt8 = settings.ecn ? UInt8(pi.ecn & 0x3) : 0
        guard settings.dscpMarking, let c = packetClass else { return ecn }
        return c.dscp << 2 | ecn
    }

    /// Sans-IO convenience: every ready datagram as arrays.
    public func pollTransmit(now: Instant) -> [[UInt8]] {
        var out: [[UInt8]] = []
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = writePackets(now: now, buffer: buf) { p, _ in out.append(Array(p)) }
            if n == 0 { break }
        }
        return out
    }

    private func account(_ n: Int) { bytesSent += UInt64(n); packetsSent += 1 }

    // MARK: Streams (for applications)

    func openStream(bidirectional: Bool) -> Int64? {
        guard let conn, applicationStarted, !isClosingOrDraining else { return nil }
        var id: Int64 = -1
        let rc = bidirectional ? ngtcp2_conn_open_bidi_stream(conn, &id, nil) : ngtcp2_conn_open_uni_stream(conn, &id, nil)
        guard rc == 0 else { return nil }
        liveStreams.insert(id)
        return id
    }

    /// The application consumed `count` bytes of `stream`: open the flow-control windows by that much.
    func consumed(stream: Int64, count: Int) {
        guard let conn, count > 0 else { return }
        _ = ngtcp2_conn_extend_max_stream_offset(conn, stream, UInt64(count))
        ngtcp2_conn_extend_max_offset(conn, UInt64(count))
    }

    func shutdownStream(_ stream: Int64, errorCode: UInt64) {
        guard let conn else { return }
        _ = ngtcp2_conn_shutdown_stream(conn, stream, errorCode)
    }

    func shutdownStreamRead(_ stream: Int64, errorCode: UInt64) {
        guard let conn else { return }
        _ = ngtcp2_conn_shutdown_stream_read(conn, stream, errorCode)
    }

    func shutdownStreamWrite(_ stream: Int64, errorCode: UInt64) {
        guard let conn else { return }
        _ = ngtcp2_conn_shutdown_stream_write(conn, stream, errorCode)
    }

    var negotiatedALPN: String? { tls.negotiatedALPN }

    /// The TLS exporter of this connection (after the handshake completed).
    func tlsExporter(label: String, length: Int) -> [UInt8]? { tls.exporter(label: label, length: length) }

    /// This endpoint's TLS configuration (admission policy, join token).
    var tlsConfiguration: TLSConfiguration { tls.credentials.configuration }

    /// Packets declared lost that carried stream data (ngtcp2 0.12 exposes no connection-wide loss
    /// count; a packet with frames of two streams counts twice, packets with only ACK/control frames
    /// or DATAGRAMs are not counted).
    var lostPackets: UInt64 {
        guard let conn else { return lostOnClosedStreams }
        return liveStreams.reduce(lostOnClosedStreams) { $0 + UInt64(ngtcp2_conn_get_stream_loss_count(conn, $1)) }
    }

    /// The smallest RTT sampled so far, nil before the first sample (ngtcp2 starts `smoothed_rtt`
    /// at its 333 ms initial guess, which is no measurement).
    var sampledMinRTT: Duration? {
        let m = rtt.min
        return m > .zero ? m : nil
    }

    /// The RTT figures alone (cheap; the scheduler reads them on every bulk acknowledgement).
    var rtt: (latest: Duration, min: Duration, smoothed: Duration) {
        var st = ngtcp2_conn_stat()
        if let conn { gq_ngtcp2_conn_get_conn_stat(conn, &st) }
        return (.nanoseconds(Int64(clamping: st.latest_rtt)), .nanoseconds(Int64(clamping: st.min_rtt == UInt64.max ? 0 : st.min_rtt)),
                .nanoseconds(Int64(clamping: st.smoothed_rtt)))
    }

    public var stats: ConnectionStats {
        var st = ngtcp2_conn_stat()
        if let conn { gq_ngtcp2_conn_get_conn_stat(conn, &st) }
        var extra = ConnectionStats.Extra()
        extra.lostPackets = lostPackets
        extra.probeTimeouts = UInt64(st.pto_count)
        extra.slowStartThreshold = st.ssthresh
        extra.pacingRate = st.pacing_rate > 0 ? st.pacing_rate * 1e9 : 0
        extra.deliveryRate = st.delivery_rate_sec
        extra.resumed = isResumed
        return ConnectionStats(smoothedRTT: .nanoseconds(Int64(clamping: st.smoothed_rtt)),
                               rttVariance: .nanoseconds(Int64(clamping: st.rttvar)),
                               minRTT: .nanoseconds(Int64(clamping: st.min_rtt == UInt64.max ? 0 : st.min_rtt)),
                               latestRTT: .nanoseconds(Int64(clamping: st.latest_rtt)),
                               congestionWindow: st.cwnd, bytesInFlight: st.bytes_in_flight,
                               bytesSent: bytesSent, bytesReceived: bytesReceived,
                               packetsSent: packetsSent, packetsReceived: packetsReceived,
                               streamsByClass: (application as? MeshStreams)?.openStreamsByClass ?? [:], extra: extra)
    }

    // MARK: Closing

    /// Closes with an application error code; the CONNECTION_CLOSE goes out on the next `writePackets`.
    public func close(errorCode: UInt64 = 0, reason: String = "", now: Instant) {
        guard let conn, !isClosingOrDraining else { return }
        var ccerr = ngtcp2_connection_close_error()
        var r = Array(reason.utf8.prefix(200))
        r.withUnsafeMutableBufferPointer {
            ngtcp2_connection_close_error_set_application_error(&ccerr, errorCode, $0.baseAddress, $0.count)
        }
        enterClosing(conn, &ccerr, now: now, error: errorCode == 0 ? nil : .closed("closed locally with code \(errorCode) \(reason)"))
        resendClose = true
    }

    private func enterClosing(_ conn: OpaquePointer, _ ccerr: inout ngtcp2_connection_close_error, now: Instant, error: QUICError?) {
        var buf = [UInt8](repeating: 0, count: 1500)
        var pi = ngtcp2_pkt_info()
        let n = buf.withUnsafeMutableBufferPointer {
            gq_ngtcp2_conn_write_connection_close(conn, &pathStorage.pointee.path, &pi, $0.baseAddress, $0.count, &ccerr, now.nanoseconds)
        }
        closePacket = n > 0 ? Array(buf[0..<n]) : []
        closeError = closeError ?? error
        state = .closing(until: now + .nanoseconds(Int64(clamping: 3 * ngtcp2_conn_get_pto(conn))))
        resendClose = !closePacket.isEmpty
        application?.connectionClosed(self, error: closeError)
        application = nil
    }

    private func handleLibraryError(_ rc: Int32, while what: String, now: Instant) {
        guard let conn else { return }
        switch rc {
        case NGTCP2_ERR_DRAINING:
            var cc = ngtcp2_connection_close_error()
            ngtcp2_conn_get_connection_close_error(conn, &cc)
            let reason = cc.reason.map { String(decoding: UnsafeBufferPointer(start: $0, count: cc.reasonlen), as: UTF8.self) } ?? ""
            var err: QUICError? = nil
            if cc.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT && cc.error_code & 0xff00 == 0x100 {
                let alert = cc.error_code & 0xff
                err = .closed("peer aborted the TLS handshake with alert \(alert)"
                    + (alert == 42 || alert == 46 || alert == 116 ? " (certificate or identity not accepted)" : "") + " \(reason)")
            } else if cc.error_code != 0 {
                err = .closed("peer closed with error \(cc.error_code) \(reason)")
            }
            closeError = closeError ?? err
            state = .draining(until: now + .nanoseconds(Int64(clamping: 3 * ngtcp2_conn_get_pto(conn))))
            application?.connectionClosed(self, error: closeError)
            application = nil
        case NGTCP2_ERR_IDLE_CLOSE:
            finish(closeError ?? (isEstablished ? .closed("idle timeout") : .handshakeTimeout))
        case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
            finish(.handshakeTimeout)
        case NGTCP2_ERR_DROP_CONN:
            finish(closeError ?? .ngtcp2(what, rc))
        case NGTCP2_ERR_CLOSING:
            break
        case NGTCP2_ERR_CRYPTO:
            var ccerr = ngtcp2_connection_close_error()
            ngtcp2_connection_close_error_set_transport_error_tls_alert(&ccerr, ngtcp2_conn_get_tls_alert(conn), nil, 0)
            closeError = closeError ?? .closed("TLS handshake failed (alert \(ngtcp2_conn_get_tls_alert(conn)))")
            enterClosing(conn, &ccerr, now: now, error: closeError)
        default:
            var ccerr = ngtcp2_connection_close_error()
            ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, rc, nil, 0)
            enterClosing(conn, &ccerr, now: now, error: .ngtcp2(what, rc))
        }
    }

    private func finish(_ error: QUICError?) {
        if case .closed = state { return }
        state = .closed
        application?.connectionClosed(self, error: error)
        application = nil
        emit(.closed(error))
    }

    /// Hands closing/draining completion to the owner: true once the connection can be forgotten.
    func takeFinished() -> Bool { isClosed }

    // MARK: Called from TLS and ngtcp2 callbacks

    /// Checks the peer's certificate (GnuTLS verify callback). Returns 0 to accept.
    func peerCertificateChecked(_ der: UnsafeRawBufferPointer?) -> Int32 {
        let fail = { (e: QUICError) -> Int32 in
            self.closeError = e
            self.logger.warning("refusing peer \(self.remote): \(e)", metadata: ["event": "peer-refused"])
            QUICMetrics.shared.peersRefused.add(1)
            return -1
        }
        guard let der else { return fail(.peerRejected("no certificate presented")) }
        guard let id = NodeCertificate.nodeID(fromDER: der) else {
            return fail(.peerRejected("certificate does not carry an Ed25519 node identity key"))
        }
        if let expectedPeer, expectedPeer != id { return fail(.identityMismatch(expected: expectedPeer, got: id)) }
        if let policy = tls.credentials.configuration.admission, !policy.admits(id, certificate: der) {
            return fail(.peerRejected("node \(id) is not admitted by the policy (\(policy))"))
        }
        peerNodeID = id
        return 0
    }

    fileprivate func onHandshakeCompleted() -> Int32 {
        state = .established
        isResumed = tls.isResumed
        if isResumed && peerNodeID == nil && negotiatedALPN == QUICEndpoint.meshALPN {
            // No certificate crossed the wire: the identity is the one proved when the ticket was issued.
            guard authenticateResumedPeer() else { return NGTCP2_ERR_CALLBACK_FAILURE }
        }
        if role == .client {
            if earlyDataAttempted {
                earlyDataAccepted = tls.earlyDataAccepted
                if !earlyDataAccepted, let conn {
                    QUICMetrics.shared.earlyDataRejected.add(1)
                    guard ngtcp2_conn_early_data_rejected(conn) == 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
                }
            }
            if let conn, let params = ngtcp2_conn_get_remote_transport_params(conn) {
                var buf = [UInt8](repeating: 0, count: ResumptionTicket.maxParametersLength)
                let n = buf.withUnsafeMutableBufferPointer {
                    gq_ngtcp2_encode_transport_params($0.baseAddress, $0.count, NGTCP2_TRANSPORT_PARAMS_TYPE_ENCRYPTED_EXTENSIONS, params)
                }
                if n > 0 { remoteParametersForResumption = Array(buf[0..<n]) }
            }
        } else {
            earlyDataAccepted = tls.earlyDataAccepted
            if isResumed { QUICMetrics.shared.sessionsResumed.add(1) }
            if earlyDataAccepted { QUICMetrics.shared.earlyDataAccepted.add(1) }
            let rc = tls.sendTicket()
            if rc != 0 { logger.debug("cannot send a session ticket to \(remote): \(tlsErrorName(rc))") }
        }
        guard startApplication() else { return NGTCP2_ERR_CALLBACK_FAILURE }
        application?.handshakeCompleted(self)
        emit(.handshakeCompleted)
        return 0
    }

    /// Builds (if needed) and starts the application. False (with `closeError` set) on failure.
    private func startApplication() -> Bool {
        if applicationStarted { return true }
        if application == nil, let factory = applicationFactory {
            do { application = try factory(self) } catch {
                closeError = error
                logger.warning("no application for ALPN \(negotiatedALPN ?? "-") from \(remote): \(error)")
                return false
            }
        }
        guard let application else { return true }
        applicationStarted = true
        do throws(QUICError) {
            try application.start(self)
            let early = earlyStreamData
            earlyStreamData = []
            for (stream, bytes, fin) in early {
                var failure: QUICError?
                bytes.withUnsafeBytes { b in
                    do throws(QUICError) { try application.receivedStreamData(self, stream: stream, data: b, fin: fin) } catch { failure = error }
                }
                if let failure { throw failure }
            }
        } catch {
            applicationStarted = false
            closeError = error
            return false
        }
        return true
    }

    /// Client about to send 0-RTT: starts the application before the handshake (owner calls it once
    /// `applicationFactory` is set).
    func startEarlyApplication() -> Bool {
        guard role == .client, earlyDataAttempted, expectedPeer != nil else { return false }
        peerNodeID = expectedPeer
        return startApplication()
    }

    /// Runs the identity and admission checks on a resumed session, whose peer certificate GnuTLS
    /// restored from the ticket (server) or the saved session (client).
    private func authenticateResumedPeer() -> Bool {
        if let der = tls.peerCertificate {
            return der.withUnsafeBytes { peerCertificateChecked($0) } == 0
        }
        if role == .client, let expectedPeer {
            // The ticket was sealed by the server that proved `expectedPeer` when it issued it.
            peerNodeID = expectedPeer
            return true
        }
        return peerCertificateChecked(nil) == 0
    }

    /// GnuTLS handed the client a NewSessionTicket.
    func receivedSessionTicket() {
        guard role == .client, let params = remoteParametersForResumption, let data = tls.sessionData() else { return }
        emit(.sessionTicket(ResumptionTicket(session: data, transportParameters: params, issued: UInt64(time(nil)))))
    }

    fileprivate func onNewConnectionID(_ cid: UnsafeMutablePointer<ngtcp2_cid>, token: UnsafeMutablePointer<UInt8>, length: Int) -> Int32 {
        let id = ConnectionID.random(length: length)
        _ = id.bytes.withUnsafeBufferPointer { ngtcp2_cid_init(cid, $0.baseAddress, $0.count) }
        let rc = resetSecret.withUnsafeBufferPointer {
            ngtcp2_crypto_generate_stateless_reset_token(token, $0.baseAddress, $0.count, cid)
        }
        guard rc == 0 else { return NGTCP2_ERR_CALLBACK_FAILURE }
        localIDs.insert(id)
        emit(.newConnectionID(id))
        return 0
    }

    fileprivate func onRemoveConnectionID(_ cid: ConnectionID) {
        localIDs.remove(cid)
        emit(.retiredConnectionID(cid))
    }

    fileprivate func onStreamData(_ stream: Int64, _ data: UnsafeRawBufferPointer, fin: Bool) -> Int32 {
        if !applicationStarted, role == .server, case .handshaking = state {
            // 0-RTT data on a resumed mesh session. GnuTLS has restored the client's certificate from
            // the ticket by now (and anti-replay passed, or there would be no 0-RTT key): check the
            // identity and start the application, so the request is served at once (the answer goes
            // out as 0.5-RTT data, readable only by the ticket's holder). Otherwise hold the bytes
            // until the handshake completes; ngtcp2's flow control bounds how much can arrive.
            if tls.isResumed, negotiatedALPN == QUICEndpoint.meshALPN, tls.peerCertificate != nil {
                guard peerNodeID != nil || authenticateResumedPeer(), startApplication() else { return NGTCP2_ERR_CALLBACK_FAILURE }
                emit(.applicationStartedEarly)
            } else {
                earlyStreamData.append((stream, Array(data), fin))
                return 0
            }
        }
        guard let app = application else {
            consumed(stream: stream, count: data.count)
            return 0
        }
        do { try app.receivedStreamData(self, stream: stream, data: data, fin: fin) } catch {
            closeError = error
            logger.warning("closing connection to \(remote): \(error)")
            return NGTCP2_ERR_CALLBACK_FAILURE
        }
        return 0
    }

    // MARK: ngtcp2 callbacks

    static func from(_ p: UnsafeMutableRawPointer?) -> QUICConnection {
        Unmanaged<QUICConnection>.fromOpaque(p!).takeUnretainedValue()
    }

    private static func callbacks(client: Bool) -> ngtcp2_callbacks {
        var cb = ngtcp2_callbacks()
        if client {
            cb.client_initial = ngtcp2_crypto_client_initial_cb
            cb.recv_retry = ngtcp2_crypto_recv_retry_cb
        } else {
            cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb
        }
        cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb
        cb.encrypt = ngtcp2_crypto_encrypt_cb
        cb.decrypt = ngtcp2_crypto_decrypt_cb
        cb.hp_mask = ngtcp2_crypto_hp_mask_cb
        cb.update_key = ngtcp2_crypto_update_key_cb
        cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb
        cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb
        cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb
        cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb
        cb.rand = { dest, len, _ in _ = gnutls_rnd(GNUTLS_RND_RANDOM, dest, len) }
        cb.handshake_completed = { _, ud in QUICConnection.from(ud).onHandshakeCompleted() }
        cb.handshake_confirmed = { _, ud in QUICConnection.from(ud).emit(.handshakeConfirmed); return 0 }
        cb.get_new_connection_id = { _, cid, token, len, ud in QUICConnection.from(ud).onNewConnectionID(cid!, token: token!, length: len) }
        cb.remove_connection_id = { _, cid, ud in
            QUICConnection.from(ud).onRemoveConnectionID(ConnectionID(cid!.pointee)); return 0
        }
        cb.recv_stream_data = { _, flags, stream, _, data, len, ud, _ in
            QUICConnection.from(ud).onStreamData(stream, UnsafeRawBufferPointer(start: data, count: len),
                                  fin: flags & UInt32(NGTCP2_STREAM_DATA_FLAG_FIN) != 0)
        }
        cb.stream_open = { _, stream, ud in
            let c = QUICConnection.from(ud); c.liveStreams.insert(stream); c.application?.streamOpened(c, stream: stream); return 0
        }
        cb.stream_close = { conn, flags, stream, code, ud, _ in
            let c = QUICConnection.from(ud)
            if c.liveStreams.remove(stream) != nil, let conn {
                c.lostOnClosedStreams += UInt64(ngtcp2_conn_get_stream_loss_count(conn, stream))
            }
            let set = flags & UInt32(NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET) != 0
            c.application?.streamClosed(c, stream: stream, errorCode: set ? code : nil)
            // ngtcp2 0.12 leaves MAX_STREAMS to us: a closed peer stream frees one slot for the peer.
            if let conn = c.conn, ngtcp2_conn_is_local_stream(conn, stream) == 0 {
                if ngtcp2_is_bidi_stream(stream) != 0 { ngtcp2_conn_extend_max_streams_bidi(conn, 1) }
                else { ngtcp2_conn_extend_max_streams_uni(conn, 1) }
            }
            return 0
        }
        cb.stream_reset = { _, stream, _, code, ud, _ in
            let c = QUICConnection.from(ud); c.application?.streamReset(c, stream: stream, errorCode: code); return 0
        }
        cb.stream_stop_sending = { _, stream, code, ud, _ in
            let c = QUICConnection.from(ud); c.application?.stopSending(c, stream: stream, errorCode: code); return 0
        }
        cb.acked_stream_data_offset = { _, stream, offset, len, ud, _ in
            let c = QUICConnection.from(ud); c.application?.ackedStreamData(c, stream: stream, offset: offset, length: len); return 0
        }
        cb.extend_max_stream_data = { _, stream, _, ud, _ in
            let c = QUICConnection.from(ud); c.application?.streamUnblocked(c, stream: stream); return 0
        }
        cb.extend_max_local_streams_bidi = { _, _, ud in
            let c = QUICConnection.from(ud); c.application?.moreStreamsAllowed(c); return 0
        }
        cb.extend_max_local_streams_uni = { _, _, ud in
            let c = QUICConnection.from(ud); c.application?.moreStreamsAllowed(c); return 0
        }
        cb.early_data_rejected = { _, ud in
            let c = QUICConnection.from(ud); c.application?.earlyDataRejected(c); return 0
        }
        cb.recv_datagram = { _, _, data, len, ud in
            let c = QUICConnection.from(ud); c.application?.receivedDatagram(c, data: UnsafeRawBufferPointer(start: data, count: len)); return 0
        }
        return cb
    }
}

private extension QUICConnection.State {
    /// `.handshaking` for both live states, so one pattern admits writing.
    var orEstablished: QUICConnection.State {
        switch self {
        case .established: .handshaking
        default: self
        }
    }
}

func ngtcp2ErrorName(_ code: Int32) -> UnsafePointer<CChar> { ngtcp2_strerror(code) }
