#if canImport(Glibc)
import Glibc
#endif
import CNgtcp2
import Foundation
import MeshCore
import Synchronization

/// What a client keeps to resume a mesh link to a peer it has already met (TLS 1.3 PSK resumption
/// with 0-RTT): GnuTLS's session data, which holds the server's session ticket and the peer
/// certificate seen on the first handshake, and the server's transport parameters from that
/// handshake, which bound what the client may send as early data.
///
/// Opaque to callers. A ticket only resumes with the endpoint that issued it: the ticket is sealed
/// with that endpoint's ticket key, which never leaves the process. Any other server (another
/// identity, another cluster, the same node after a restart) cannot open it and the handshake falls
/// back to full mutual authentication.
public struct ResumptionTicket: Sendable, Hashable, WireFields {
    /// GnuTLS session data (`gnutls_session_get_data2`).
    var session: [UInt8]
    /// The server's transport parameters, encoded as ngtcp2 encodes EncryptedExtensions.
    var transportParameters: [UInt8]
    /// Seconds since 1970 when the ticket arrived.
    public var issued: UInt64

    static let maxSessionLength = 16 << 10
    static let maxParametersLength = 4 << 10

    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.bytes(&session, max: ResumptionTicket.maxSessionLength)
        try c.bytes(&transportParameters, max: ResumptionTicket.maxParametersLength)
        try c.varint(&issued)
    }

    public init() { session = []; transportParameters = []; issued = 0 }
    init(session: [UInt8], transportParameters: [UInt8], issued: UInt64) {
        self.session = session; self.transportParameters = transportParameters; self.issued = issued
    }
}

/// Resumption tickets per peer NodeID, kept by a client (`ConnectionPool` owns one). In memory, and
/// optionally also as one file per peer in a directory the caller names, so a restarted process still
/// resumes. A ticket is taken (removed) when a dial uses it: the new connection brings a fresh one.
public final class TicketStore: Sendable {
    /// Tickets older than this are not used (GnuTLS servers issue them for 6 hours by default).
    public let maxAge: Duration
    public let directory: String?
    private let tickets = Mutex<[NodeID: ResumptionTicket]>([:])

    /// `directory`, if given, must exist; files in it are named `<node id>.ticket`.
    public init(directory: String? = nil, maxAge: Duration = .seconds(6 * 3600)) {
        self.directory = directory
        self.maxAge = maxAge
    }

    /// Takes the ticket for `peer`, if a fresh one is known.
    public func take(for peer: NodeID) -> ResumptionTicket? {
        var t = tickets.withLock { $0.removeValue(forKey: peer) }
        if t == nil, let path = path(for: peer), let data = FileManager.default.contents(atPath: path),
           data.count <= ResumptionTicket.maxSessionLength + ResumptionTicket.maxParametersLength + 64 {
            t = try? ResumptionTicket(wireBytes: [UInt8](data))
        }
        if let path = path(for: peer) { unlink(path) }
        guard let t, UInt64(time(nil)) < t.issued + UInt64(maxAge.components.seconds) else { return nil }
        return t
    }

    /// True if a ticket for `peer` is held (without taking it).
    public func has(_ peer: NodeID) -> Bool {
        if tickets.withLock({ $0[peer] != nil }) { return true }
        guard let path = path(for: peer) else { return false }
        return access(path, F_OK) == 0
    }

    func store(_ ticket: ResumptionTicket, for peer: NodeID) {
        tickets.withLock { $0[peer] = ticket }
        guard let path = path(for: peer) else { return }
        // Write-then-rename so a reader never sees half a ticket; a failure only costs a full handshake.
        let tmp = path + ".tmp"
        if FileManager.default.createFile(atPath: tmp, contents: Data(ticket.wireBytes()),
                                          attributes: [.posixPermissions: 0o600]) {
            rename(tmp, path)
        }
    }

    /// Drops what is known about `peer` (memory and file).
    public func forget(_ peer: NodeID) {
        tickets.withLock { _ = $0.removeValue(forKey: peer) }
        if let path = path(for: peer) { unlink(path) }
    }

    private func path(for peer: NodeID) -> String? {
        directory.map { "\($0)/\(peer).ticket" }
    }
}

/// The server half of resumption for one endpoint: a session-ticket key (random per endpoint, never
/// stored, so tickets die with the process and never open on another node) and GnuTLS anti-replay
/// with a bounded in-memory database of ClientHellos seen within the replay window, so a captured
/// 0-RTT flight replayed at this endpoint has its early data refused.
final class ServerTickets: @unchecked Sendable {
    // Immutable after init except `seen`, which a Mutex guards.
    private var key = gnutls_datum_t()
    let antiReplay: gnutls_anti_replay_t
    private let seen = Mutex<[[UInt8]: Int]>([:])
    /// Most ClientHellos remembered; beyond it (after dropping expired ones) early data is refused.
    static let maxRemembered = 65536

    init() throws(QUICError) {
        var rc = gnutls_session_ticket_key_generate(&key)
        guard rc == 0 else { throw .tls("generating the session ticket key", rc) }
        var ar: gnutls_anti_replay_t?
        rc = gnutls_anti_replay_init(&ar)
        guard rc == 0, let ar else { gq_gnutls_free(key.data); throw .tls("creating the anti-replay context", rc) }
        antiReplay = ar
        gnutls_anti_replay_set_add_function(ar, antiReplayAdd)
        gnutls_anti_replay_set_ptr(ar, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        gnutls_anti_replay_deinit(antiReplay)
        gq_gnutls_free(key.data)
    }

    /// Enables tickets, anti-replay and 0-RTT on a server session.
    func configure(_ session: gnutls_session_t) throws(QUICError) {
        let rc = gnutls_session_ticket_enable_server(session, &key)
        guard rc == 0 else { throw .tls("enabling session tickets", rc) }
        gnutls_anti_replay_enable(session, antiReplay)
        _ = gnutls_record_set_max_early_data_size(session, 0xffff_ffff)
    }

    /// Records a ClientHello; false if it was already seen (a replay) or the database is full.
    fileprivate func add(key: [UInt8], expires: Int) -> Bool {
        let now = Int(time(nil))
        return seen.withLock { seen in
            if let e = seen[key], e >= now { return false }
            if seen.count >= ServerTickets.maxRemembered {
                seen = seen.filter { $0.value >= now }
                if seen.count >= ServerTickets.maxRemembered { return false }
            }
            seen[key] = expires
            return true
        }
    }
}

private let antiReplayAdd: @convention(c) (UnsafeMutableRawPointer?, time_t, UnsafePointer<gnutls_datum_t>?,
                                            UnsafePointer<gnutls_datum_t>?) -> Int32 = { ptr, expires, key, _ in
    guard let ptr, let key, let data = key.pointee.data, key.pointee.size <= 1024 else { return GNUTLS_E_DB_ENTRY_EXISTS }
    let tickets = Unmanaged<ServerTickets>.fromOpaque(ptr).takeUnretainedValue()
    let k = Array(UnsafeBufferPointer(start: data, count: Int(key.pointee.size)))
    return tickets.add(key: k, expires: Int(expires)) ? 0 : GNUTLS_E_DB_ENTRY_EXISTS
}
