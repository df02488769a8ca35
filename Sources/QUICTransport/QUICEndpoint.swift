#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import MeshCore
import Synchronization

/// A UDP endpoint: owns one socket and an I/O thread that drives every connection on it — both the
/// ones it accepts and the ones it dials. Demultiplexes by connection ID, answers unknown versions
/// with Version Negotiation and stray short-header packets with stateless resets.
///
/// The thread is the only place connections are touched; the async API posts work to it.
public final class QUICEndpoint: LoopExecutor, @unchecked Sendable {
    public struct Configuration: Sendable {
        public var tls: TLSConfiguration
        public var settings = QUICSettings()
        /// Accept incoming connections (servers, mesh peers). Dial-only clients set false.
        public var acceptsConnections = true
        public var logger = Logger(label: "gquic.quic")
        /// Validate client addresses with Retry before creating any connection state (RFC 9000
        /// §8.1.2): every new client pays one extra round trip and must echo a sealed, address-bound
        /// token. Use it on endpoints reachable from untrusted networks (an HTTP/3 front door), where
        /// spoofed Initials could make us amplify or hold state. Default false: mesh peers are
        /// authenticated by TLS anyway and the extra round trip would slow every (re)connect.
        public var validatesAddresses = false
        /// How long a Retry token stays valid. Default 10 s (it only has to survive one round trip).
        public var retryTokenLifetime: Duration = .seconds(10)
        /// Server side: builds the application for an `h3` connection (set by `HTTP3Server`).
        var http3Factory: (@Sendable (QUICConnection, QUICEndpoint) throws(QUICError) -> QUICApplication)?

        public init(tls: TLSConfiguration) { self.tls = tls }
    }

    /// ALPN for mesh links.
    public static let meshALPN = "gquic/1"
    /// ALPN for HTTP/3.
    public static let http3ALPN = "h3"

    public let configuration: Configuration
    public let localAddress: PeerAddress
    /// Mesh links other nodes opened to us (after they proved an admitted identity).
    public let incomingLinks: AsyncStream<QUICLink>
    private let incomingContinuation: AsyncStream<QUICLink>.Continuation

    let credentials: TLSCredentials
    private let socket: UDPSocket
    private let wakeFD: Int32
    private let wakeWriteFD: Int32
    private let commands = Mutex<[@Sendable () -> Void]>([])
    private let running = Atomic<Bool>(true)
    private var thread: Thread?
    private let stopped = DispatchSemaphore(value: 0)
    let resetSecret: [UInt8]
    let clock = SystemClock()
    private let addressValidation: AddressValidation

    // Loop-thread state.
    final class Record {
        let connection: QUICConnection
        var dirty = true
        var onHandshake: ((Result<QUICConnection, QUICError>) -> Void)?
        /// Client: where session tickets for this peer go.
        var tickets: TicketStore?
        /// Key of this connection's snapshot in `QUICMetrics`, and the loss count already added there.
        let metricsID = QUICEndpoint.nextMetricsID.add(1, ordering: .relaxed).newValue
        var lostReported: UInt64 = 0
        init(_ c: QUICConnection) { connection = c }
    }
    private static let nextMetricsID = Atomic<UInt64>(0)
    private var nextStatsPublish = Instant.zero
    private var byID: [ConnectionID: Record] = [:]
    private var records: [ObjectIdentifier: Record] = [:]
    private let rxBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
    private let txBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536 * 2, alignment: 16)

    /// Binds `address` (use port 0 for an ephemeral port) and starts the I/O thread, which runs (and
    /// keeps this endpoint alive) until `shutdown()`.
    public init(bind address: PeerAddress, configuration: Configuration) throws(QUICError) {
        self.configuration = configuration
        credentials = try TLSCredentials(configuration.tls)
        guard let sa = SocketAddress(ip: address.host, port: address.port) else {
            throw .invalidArgument("cannot listen on \(address): the host must be an IP address such as 0.0.0.0 or ::")
        }
        socket = try UDPSocket(bind: sa)
        localAddress = socket.localAddress.peerAddress
        var pfd: [Int32] = [0, 0]
        guard pipe(&pfd) == 0 else { throw .socket("creating the wake-up pipe", errno) }
        for f in pfd { _ = fcntl(f, F_SETFL, fcntl(f, F_GETFL) | O_NONBLOCK); _ = fcntl(f, F_SETFD, FD_CLOEXEC) }
        wakeFD = pfd[0]
        wakeWriteFD = pfd[1]
        var secret = [UInt8](repeating: 0, count: 32)
        for i in secret.indices { secret[i] = UInt8.random(in: 0...255) }
        resetSecret = secret
        addressValidation = AddressValidation(lifetime: configuration.retryTokenLifetime)
        (incomingLinks, incomingContinuation) = AsyncStream.makeStream(of: QUICLink.self)
        // The I/O thread keeps the endpoint alive until `shutdown()` ends it: call shutdown() when done.
        let t = Thread { self.run() }
        t.name = "quic-endpoint \(localAddress)"
        thread = t
        t.start()
    }

    deinit {
        rxBuffer.deallocate()
        txBuffer.deallocate()
        close(wakeFD)
        close(wakeWriteFD)
    }

    /// Closes every connection and stops the I/O thread.
    public func shutdown() {
        guard running.load(ordering: .acquiring) else { return }
        post { [self] in
            let now = clock.now()
            for r in records.values { r.connection.close(errorCode: 0, reason: "shutdown", now: now); flush(r, now: now) }
            running.store(false, ordering: .releasing)
        }
        stopped.wait()
        incomingContinuation.finish()
    }

    func post(_ work: @escaping @Sendable () -> Void) {
        commands.withLock { $0.append(work) }
        var one: UInt8 = 1
        _ = write(wakeWriteFD, &one, 1)
    }

    // MARK: Dialling

    /// Opens an authenticated mesh link to `address`. If `expecting` is given, the handshake fails
    /// unless the peer proves that node identity.
    ///
    /// `tickets`: where session tickets from this peer are kept; with `expecting`, a ticket held for
    /// that node resumes the earlier session (fewer round trips, no certificate exchange).
    /// `firstMessage`: sent on a new control stream (bidirectional, finished) that the returned link
    /// exposes as `firstStream`. When resuming it travels as 0-RTT data, in the first flight, and the
    /// server acts on it at once. Servers refuse early data they have seen before, but only per
    /// process: keep the message idempotent (a hello, a query), as with any TLS 1.3 0-RTT.
    public func connect(to address: PeerAddress, expecting: NodeID? = nil, tickets: TicketStore? = nil,
                        firstMessage: [UInt8]? = nil) async throws(QUICError) -> QUICLink {
        guard configuration.tls.isMesh else { throw .invalidArgument("mesh links need a TLSConfiguration.mesh endpoint") }
        let remote = try SocketAddress.resolve(address)
        let result = await withCheckedContinuation { (cont: CheckedContinuation<Result<QUICLink, QUICError>, Never>) in
            post { [self] in
                var link: QUICLink?
                let resumption = expecting.flatMap { tickets?.take(for: $0) }
                startDial(remote: remote, alpn: [QUICEndpoint.meshALPN], serverName: nil, expecting: expecting,
                          resumption: resumption, tickets: tickets,
                          makeApplication: { conn in
                              let l = QUICLink(peer: conn.peerNodeID!, remoteAddress: address, handshakeRTT: conn.sampledMinRTT, executor: self)
                              link = l
                              let app = self.makeMesh(conn, link: l)
                              if let firstMessage { app.queueFirstMessage(firstMessage) }
                              return app
                          }) { r in
                    cont.resume(returning: r.map { _ in link! })
                }
            }
        }
        let link = try result.get()
        QUICMetrics.shared.connectionsDialled.add(1)
        return link
    }

    /// Dials with an application chosen when the handshake completes (HTTP/3 client).
    func dial(to remote: SocketAddress, alpn: [String], serverName: String?,
              makeApplication: @escaping @Sendable (QUICConnection) -> QUICApplication) async throws(QUICError) -> Void {
        let result = await withCheckedContinuation { (cont: CheckedContinuation<Result<Void, QUICError>, Never>) in
            post { [self] in
                startDial(remote: remote, alpn: alpn, serverName: serverName, expecting: nil,
                          makeApplication: makeApplication) { r in cont.resume(returning: r.map { _ in () }) }
            }
        }
        try result.get()
    }

    private func startDial(remote: SocketAddress, alpn: [String], serverName: String?, expecting: NodeID?,
                           resumption: ResumptionTicket? = nil, tickets: TicketStore? = nil,
                           makeApplication: @escaping (QUICConnection) -> QUICApplication,
                           done: @escaping (Result<QUICConnection, QUICError>) -> Void) {
        do {
            var local = socket.localAddress
            if local.family != remote.family, let any = SocketAddress(ip: remote.isIPv6 ? "::" : "0.0.0.0", port: local.port) { local = any }
            let conn = try QUICConnection(clientTo: remote, local: local, credentials: credentials, alpn: alpn,
                                          serverName: serverName, expectedPeer: expecting, resumption: resumption,
                                          settings: configuration.settings,
                                          resetSecret: resetSecret, now: clock.now(), logger: configuration.logger)
            conn.applicationFactory = { c in makeApplication(c) }
            // Resuming: the application starts now, so its first stream rides in the 0-RTT flight.
            if conn.earlyDataAttempted { _ = conn.startEarlyApplication() }
            let r = Record(conn)
            r.tickets = tickets
            r.onHandshake = done
            register(r)
            flush(r, now: clock.now())
            processEvents(r)
        } catch {
            done(.failure(error))
        }
    }

    /// Asks the loop to run `connection`'s write loop (loop thread only).
    func markDirty(_ connection: QUICConnection) {
        records[ObjectIdentifier(connection)]?.dirty = true
    }

    private func makeMesh(_ conn: QUICConnection, link: QUICLink) -> MeshStreams {
        let rec = LoopBound(conn)
        let app = MeshStreams.attach(conn, link: link, executor: self, wake: { [unowned self] in
            self.records[ObjectIdentifier(rec.value)]?.dirty = true
        })
        app.onAdmitted = { [unowned self, unowned app] in announce(app) }
        return app
    }

    // MARK: The loop

    private func register(_ r: Record) {
        records[ObjectIdentifier(r.connection)] = r
        for id in r.connection.localIDs { byID[id] = r }
        if let o = r.connection.originalDestinationID { byID[o] = r }
    }

    private func run() {
        var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
        while running.load(ordering: .acquiring) {
            var now = clock.now()
            var deadline = Instant.distantFuture
            var anyDirty = false
            for r in records.values {
                deadline = min(deadline, r.connection.nextTimeout)
                if r.dirty { anyDirty = true }
            }
            if !records.isEmpty { deadline = min(deadline, nextStatsPublish) }
            var timeoutMS: Int32 = -1
            var shortWaitNS: UInt64 = 0
            if anyDirty { timeoutMS = 0 }
            else if deadline != .distantFuture {
                let ns = deadline > now ? deadline.nanoseconds - now.nanoseconds : 0
                timeoutMS = ns < 1_000_000 ? 0 : Int32(min(ns / 1_000_000, 60_000))
                if ns < 1_000_000 { shortWaitNS = ns }
            }
            fds[0].revents = 0; fds[1].revents = 0
            let ready = poll(&fds, 2, timeoutMS)
            if ready == 0 && shortWaitNS > 20_000 {
                // poll() counts whole milliseconds; for a sub-millisecond timer (pacing, mostly) nap in
                // slices of at most 200 µs instead of spinning, which would starve the other threads.
                var ts = timespec(tv_sec: 0, tv_nsec: Int(min(shortWaitNS, 200_000)))
                nanosleep(&ts, nil)
            }
            if fds[1].revents != 0 {
                var v = [UInt8](repeating: 0, count: 256)
                while read(wakeFD, &v, 256) > 0 {}
            }
            let work = commands.withLock { c -> [@Sendable () -> Void] in defer { c.removeAll() }; return c }
            for w in work { w() }
            if fds[0].revents != 0 { receiveBatch() }
            now = clock.now()
            for r in Array(records.values) {
                if r.connection.nextTimeout <= now {
                    r.connection.handleTimeout(now: now)
                    r.dirty = true
                }
                if r.dirty || r.connection.resendClose { flush(r, now: now) }
                processEvents(r)
            }
            if now >= nextStatsPublish {
                nextStatsPublish = now + .milliseconds(250)
                for r in records.values { publishStats(r) }
            }
        }
        for r in records.values {
            r.onHandshake?(.failure(.closed("endpoint shut down"))); r.onHandshake = nil
            publishStats(r, remove: true)
        }
        records.removeAll()
        byID.removeAll()
        stopped.signal()
    }

    private func receiveBatch() {
        var touched: [Record] = []
        for _ in 0..<256 {
            guard let (n, from, tos, segment) = socket.receive(into: rxBuffer) else { break }
            // One read may hold several datagrams coalesced by GRO, `segment` bytes each.
            let step = segment > 0 ? segment : n
            var off = 0
            while off < n {
                let d = UnsafeRawBufferPointer(rebasing: rxBuffer[off..<min(n, off + step)])
                off += step
                if let r = route(d, from: from, ecn: tos & 0x3) { if !r.dirty { touched.append(r) }; r.dirty = true }
            }
        }
    }

    /// Finds (or creates) the connection for a datagram; answers what needs a stateless answer.
    private func route(_ d: UnsafeRawBufferPointer, from: SocketAddress, ecn: UInt8) -> Record? {
        let now = clock.now()
        switch PacketHeader.classify(d) {
        case .garbage:
            QUICMetrics.shared.datagramsDropped.add(1)
            return nil
        case .unsupportedVersion(let dcid, let scid):
            guard configuration.acceptsConnections, d.count >= 1200 else { QUICMetrics.shared.datagramsDropped.add(1); return nil }
            let vn = PacketHeader.versionNegotiation(dcid: dcid, scid: scid)
            vn.withUnsafeBytes { _ = socket.send($0, segmentSize: $0.count, to: from) }
            QUICMetrics.shared.versionNegotiationsSent.add(1)
            return nil
        case .packet(let dcid, _, _, let isLong):
            if let r = byID[dcid] {
                r.connection.receive(d, from: from, now: now, ecn: ecn)
                processEvents(r)
                return r
            }
            if !isLong {
                let reset = PacketHeader.statelessReset(dcid: dcid, secret: resetSecret, receivedLength: d.count)
                if !reset.isEmpty {
                    reset.withUnsafeBytes { _ = socket.send($0, segmentSize: $0.count, to: from) }
                    QUICMetrics.shared.statelessResetsSent.add(1)
                } else {
                    QUICMetrics.shared.datagramsDropped.add(1)
                }
                return nil
            }
            guard configuration.acceptsConnections, let hd = PacketHeader.acceptInitial(d) else {
                QUICMetrics.shared.datagramsDropped.add(1)
                return nil
            }
            var retried: ConnectionID?
            if configuration.validatesAddresses {
                switch addressValidation.check(hd, from: from, now: now) {
                case .noToken:
                    let retry = addressValidation.retry(for: hd, from: from, now: now)
                    retry.withUnsafeBytes { _ = socket.send($0, segmentSize: $0.count, to: from) }
                    QUICMetrics.shared.retriesSent.add(1)
                    return nil
                case .invalid:
                    configuration.logger.warning(
                        "refusing a connection from \(from): its address-validation (Retry) token is forged, expired or for another address",
                        metadata: ["event": "invalid-token"])
                    QUICMetrics.shared.invalidTokens.add(1)
                    let close = AddressValidation.invalidTokenClose(for: hd)
                    close.withUnsafeBytes { _ = socket.send($0, segmentSize: $0.count, to: from) }
                    return nil
                case .valid(let odcid):
                    retried = odcid
                }
            }
            var alpn: [String] = []
            if configuration.tls.isMesh { alpn.append(QUICEndpoint.meshALPN) }
            if configuration.http3Factory != nil { alpn.append(QUICEndpoint.http3ALPN) }
            do {
                let conn = try QUICConnection(serverFor: hd, remote: from, local: socket.localAddress, credentials: credentials,
                                              alpn: alpn, retriedFrom: retried, settings: configuration.settings,
                                              resetSecret: resetSecret, now: now, logger: configuration.logger)
                let factory = configuration.http3Factory
                conn.applicationFactory = { [unowned self] (c: QUICConnection) throws(QUICError) -> QUICApplication in
                    switch c.negotiatedALPN {
                    case QUICEndpoint.meshALPN?:
                        let link = QUICLink(peer: c.peerNodeID!, remoteAddress: c.remote.peerAddress, handshakeRTT: c.sampledMinRTT, executor: self)
                        return self.makeMesh(c, link: link)
                    case QUICEndpoint.http3ALPN?:
                        guard let factory else { throw QUICError.invalidArgument("h3 not served here") }
                        return try factory(c, self)
                    default:
                        throw QUICError.invalidArgument("unsupported ALPN \(c.negotiatedALPN ?? "none")")
                    }
                }
                let r = Record(conn)
                register(r)
                conn.receive(d, from: from, now: now, ecn: ecn)
                processEvents(r)
                // A genuine Initial always draws a reply (the server's Initial/Handshake flight). One that
                // failed to decrypt draws nothing: forget it now instead of holding state until timeout.
                if flush(r, now: now) == 0 && !conn.isEstablished {
                    forget(r)
                    QUICMetrics.shared.datagramsDropped.add(1)
                    return nil
                }
                return r
            } catch {
                configuration.logger.debug("cannot accept from \(from): \(error)")
                return nil
            }
        }
    }

    /// Runs the connection's write loop and sends what it produces, batching equal-sized packets
    /// into one GSO send.
    @discardableResult
    private func flush(_ r: Record, now: Instant) -> Int {
        r.dirty = false
        var total = 0
        let conn = r.connection
        let maxSeg = configuration.settings.maxUDPPayloadSize
        var batchLen = 0
        var segSize = 0
        var count = 0
        var batchTOS: UInt8 = 0
        func send() {
            if batchLen > 0 {
                _ = socket.send(UnsafeRawBufferPointer(rebasing: txBuffer[0..<batchLen]), segmentSize: segSize, to: conn.remote, tos: batchTOS)
            }
            batchLen = 0; segSize = 0; count = 0
        }
        for _ in 0..<4 {
            let scratch = UnsafeMutableRawBufferPointer(rebasing: txBuffer[65536..<(65536 + maxSeg)])
            let n = conn.writePackets(now: now, buffer: scratch, maxPackets: 64) { pkt, tos in
                // One GSO batch shares one TOS byte: a change of class or ECN mark starts a new batch.
                if segSize != 0 && (pkt.count > segSize || count >= 64 || batchLen + pkt.count > 65000 || tos != batchTOS) { send() }
                batchTOS = tos
                txBuffer.baseAddress!.advanced(by: batchLen).copyMemory(from: pkt.baseAddress!, byteCount: pkt.count)
                batchLen += pkt.count
                count += 1
                if segSize == 0 { segSize = pkt.count }
                else if pkt.count < segSize { send() } // a short packet ends a GSO batch
            }
            send()
            total += n
            if n == 0 { return total }
        }
        r.dirty = true // more to send: come back after reading ACKs
        return total
    }

    /// Refreshes the connection's snapshot in `QUICMetrics` (nil removes it) and adds new losses.
    private func publishStats(_ r: Record, remove: Bool = false) {
        let conn = r.connection
        let lost = conn.lostPackets
        if lost > r.lostReported { QUICMetrics.shared.packetsLost.add(Int(lost - r.lostReported)); r.lostReported = lost }
        guard !remove, conn.isEstablished else { QUICMetrics.shared.publish(r.metricsID, nil); return }
        QUICMetrics.shared.publish(r.metricsID, .init(peer: conn.peerNodeID, remote: conn.remote.peerAddress, alpn: conn.negotiatedALPN,
                                                       isServer: conn.role == .server, stats: conn.stats))
    }

    /// Hands an accepted mesh link to `incomingLinks`, once, when it is admitted.
    private func announce(_ mesh: MeshStreams) {
        guard !mesh.announced, !mesh.awaitingAdmission, let conn = mesh.connection, conn.role == .server else { return }
        mesh.announced = true
        configuration.logger.debug("link up: \(mesh.link.peer) at \(conn.remote)")
        incomingContinuation.yield(mesh.link)
    }

    private func forget(_ r: Record) {
        publishStats(r, remove: true)
        let conn = r.connection
        for id in conn.localIDs { byID[id] = nil }
        if let o = conn.originalDestinationID { byID[o] = nil }
        records[ObjectIdentifier(conn)] = nil
    }

    /// Connections this endpoint holds (for tests and stats).
    public func connectionCount() async -> Int {
        await withCheckedContinuation { (cont: CheckedContinuation<Int, Never>) in
            post { [self] in cont.resume(returning: records.count) }
        }
    }

    private func processEvents(_ r: Record) {
        let conn = r.connection
        if conn.events.isEmpty {
            if conn.isClosingOrDraining, let cb = r.onHandshake {
                r.onHandshake = nil
                cb(.failure(conn.closeReason ?? .closed("handshake failed")))
            }
            return
        }
        let events = conn.events
        conn.events.removeAll()
        for e in events {
            switch e {
            case .handshakeConfirmed:
                // A client reports success only now: in TLS 1.3 the server checks our certificate after
                // our handshake completes, and HANDSHAKE_DONE says it accepted it.
                if let cb = r.onHandshake { r.onHandshake = nil; cb(.success(conn)) }
            case .applicationStartedEarly:
                if let mesh = conn.application as? MeshStreams { announce(mesh) }
            case .sessionTicket(let ticket):
                if let store = r.tickets, let peer = conn.peerNodeID { store.store(ticket, for: peer) }
            case .handshakeCompleted:
                if let mesh = conn.application as? MeshStreams {
                    mesh.link.setHandshake(resumed: conn.isResumed, earlyDataAccepted: conn.earlyDataAccepted)
                }
                if conn.role == .server {
                    QUICMetrics.shared.connectionsAccepted.add(1)
                    if let mesh = conn.application as? MeshStreams { announce(mesh) }
                }
            case .newConnectionID(let id): byID[id] = r
            case .retiredConnectionID(let id): byID[id] = nil
            case .closed(let error):
                forget(r)
                if let cb = r.onHandshake { r.onHandshake = nil; cb(.failure(error ?? .closed("closed during handshake"))) }
            }
        }
        if conn.isClosingOrDraining, let cb = r.onHandshake {
            r.onHandshake = nil
            cb(.failure(conn.closeReason ?? .closed("handshake failed")))
        }
    }
}
