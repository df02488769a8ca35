import CNgtcp2
import MeshCore

/// One GnuTLS session configured for QUIC by ngtcp2_crypto_gnutls. Its user pointer is an
/// `ngtcp2_crypto_conn_ref` whose `get_conn` returns the owning connection's `ngtcp2_conn`.
final class TLSSession {
    let raw: gnutls_session_t
    let connRef: UnsafeMutablePointer<ngtcp2_crypto_conn_ref>
    let credentials: TLSCredentials

    /// TLS 1.3 only, the AEADs QUIC allows, no middlebox compatibility mode (QUIC forbids it).
    static let priority = "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
        + "+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:"
        + "+GROUP-SECP521R1:%DISABLE_TLS13_COMPAT_MODE"

    /// `resume`: a client's GnuTLS session data from an earlier connection to the same server.
    init(isServer: Bool, credentials: TLSCredentials, alpn: [String], serverName: String?,
         resume: [UInt8]? = nil, owner: UnsafeMutableRawPointer) throws(QUICError) {
        self.credentials = credentials
        var session: gnutls_session_t?
        // Servers send their session ticket themselves once the handshake completes (QUIC carries it
        // in 1-RTT CRYPTO frames), not automatically.
        let flags = (isServer ? GNUTLS_SERVER.rawValue | GNUTLS_NO_AUTO_SEND_TICKET.rawValue : GNUTLS_CLIENT.rawValue)
            | GNUTLS_ENABLE_EARLY_DATA.rawValue | GNUTLS_NO_END_OF_EARLY_DATA.rawValue
        var rc = gnutls_init(&session, flags)
        guard rc == 0, let session else { throw .tls("creating a TLS session", rc) }
        raw = session
        connRef = .allocate(capacity: 1)
        connRef.initialize(to: ngtcp2_crypto_conn_ref(get_conn: { ref in
            guard let ref, let owner = ref.pointee.user_data else { return nil }
            return Unmanaged<QUICConnection>.fromOpaque(owner).takeUnretainedValue().conn
        }, user_data: owner))
        do {
            rc = gnutls_priority_set_direct(session, TLSSession.priority, nil)
            guard rc == 0 else { throw QUICError.tls("setting the TLS priority string", rc) }
            rc = isServer ? ngtcp2_crypto_gnutls_configure_server_session(session)
                          : ngtcp2_crypto_gnutls_configure_client_session(session)
            guard rc == 0 else { throw QUICError.tls("configuring the session for QUIC", rc) }
            gnutls_session_set_ptr(session, connRef)
            if isServer {
                try credentials.tickets.configure(session)
            } else {
                gnutls_handshake_set_hook_function(session, UInt32(GNUTLS_HANDSHAKE_NEW_SESSION_TICKET.rawValue),
                                                   GNUTLS_HOOK_POST, newSessionTicketHook)
                if let resume {
                    rc = resume.withUnsafeBytes { gnutls_session_set_data(session, $0.baseAddress, $0.count) }
                    guard rc == 0 else { throw QUICError.tls("restoring the resumption ticket", rc) }
                }
            }
            rc = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(credentials.raw))
            guard rc == 0 else { throw QUICError.tls("attaching credentials", rc) }
            if isServer && credentials.configuration.isMesh {
                gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE)
            }
            var protos = alpn.map { Array($0.utf8) }
            rc = TLSSession.withDatums(&protos) { datums in
                gnutls_alpn_set_protocols(session, datums.baseAddress, UInt32(datums.count),
                                          isServer ? UInt32(GNUTLS_ALPN_SERVER_PRECEDENCE.rawValue) : UInt32(GNUTLS_ALPN_MANDATORY.rawValue))
            }
            guard rc == 0 else { throw QUICError.tls("setting ALPN", rc) }
            if !isServer, let name = serverName, !name.isEmpty {
                let isNumeric = SocketAddress(ip: name, port: 0) != nil
                let sni = isNumeric ? "localhost" : name
                rc = gnutls_server_name_set(session, GNUTLS_NAME_DNS, sni, sni.utf8.count)
                guard rc == 0 else { throw QUICError.tls("setting the server name", rc) }
                if case .systemTrust = credentials.configuration.verification {
                    gnutls_session_set_verify_cert(session, isNumeric ? nil : name, 0)
                }
            }
        } catch {
            gnutls_deinit(session)
            connRef.deallocate()
            throw error as! QUICError
        }
    }

    deinit {
        gnutls_deinit(raw)
        connRef.deallocate()
    }

    /// True when the handshake resumed an earlier session (PSK) instead of authenticating afresh.
    var isResumed: Bool { gnutls_session_is_resumed(raw) != 0 }

    /// True when the server accepted our early data (client) / we accepted the client's (server).
    var earlyDataAccepted: Bool { gnutls_session_get_flags(raw) & UInt32(GNUTLS_SFLAGS_EARLY_DATA.rawValue) != 0 }

    /// The peer's certificate (DER): sent in this handshake, or restored from the resumed session.
    var peerCertificate: [UInt8]? {
        var count: UInt32 = 0
        guard let certs = gnutls_certificate_get_peers(raw, &count), count > 0, let d = certs[0].data else { return nil }
        return Array(UnsafeBufferPointer(start: d, count: Int(certs[0].size)))
    }

    /// The session data a client keeps to resume later (it holds the newest ticket).
    func sessionData() -> [UInt8]? {
        var d = gnutls_datum_t()
        guard gnutls_session_get_data2(raw, &d) == 0, let p = d.data else { return nil }
        defer { gq_gnutls_free(p) }
        guard d.size <= UInt32(ResumptionTicket.maxSessionLength) else { return nil }
        return Array(UnsafeBufferPointer(start: p, count: Int(d.size)))
    }

    /// `length` bytes of the TLS exporter (RFC 8446 §7.5) for `label`, empty context; nil before the
    /// handshake completed.
    func exporter(label: String, length: Int) -> [UInt8]? {
        var out = [CChar](repeating: 0, count: length)
        let rc = gnutls_prf_rfc5705(raw, label.utf8.count, label, 0, nil, length, &out)
        return rc == 0 ? out.map { UInt8(bitPattern: $0) } : nil
    }

    /// Server: sends one session ticket (after the handshake completed).
    func sendTicket() -> Int32 { gnutls_session_ticket_send(raw, 1, 0) }

    /// The ALPN protocol both sides agreed on, once the handshake got that far.
    var negotiatedALPN: String? {
        var d = gnutls_datum_t()
        guard gnutls_alpn_get_selected_protocol(raw, &d) == 0, let p = d.data else { return nil }
        return String(decoding: UnsafeBufferPointer(start: p, count: Int(d.size)), as: UTF8.self)
    }

    static func withDatums<R>(_ items: inout [[UInt8]], _ body: (UnsafeBufferPointer<gnutls_datum_t>) -> R) -> R {
        var datums: [gnutls_datum_t] = []
        var pointers: [UnsafeMutablePointer<UInt8>] = []
        for item in items {
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(item.count, 1))
            p.initialize(from: item, count: item.count)
            pointers.append(p)
            datums.append(gnutls_datum_t(data: p, size: UInt32(item.count)))
        }
        defer { pointers.forEach { $0.deallocate() } }
        return datums.withUnsafeBufferPointer(body)
    }
}

/// GnuTLS calls this after a NewSessionTicket arrived (client): the owning connection saves the
/// session data for resumption.
private let newSessionTicketHook: @convention(c) (gnutls_session_t?, UInt32, UInt32, UInt32,
                                                   UnsafePointer<gnutls_datum_t>?) -> Int32 = { session, _, _, _, _ in
    guard let session, let ref = gnutls_session_get_ptr(session) else { return 0 }
    let connRef = ref.assumingMemoryBound(to: ngtcp2_crypto_conn_ref.self)
    guard let owner = connRef.pointee.user_data else { return 0 }
    Unmanaged<QUICConnection>.fromOpaque(owner).takeUnretainedValue().receivedSessionTicket()
    return 0
}
