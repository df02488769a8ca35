#if canImport(Glibc)
import Glibc
#endif
import CNgtcp2
import MeshCore

/// Which peer identities a mesh endpoint admits.
public struct AdmissionPolicy: Sendable, CustomStringConvertible {
    private enum Rule: Sendable {
        case anyNode
        case allowList(Set<NodeID>)
        case clusterCA(ClusterCA)
        case joinTokens([JoinToken])
    }

    /// A parsed CA certificate, shared read-only by every verification.
    final class ClusterCA: @unchecked Sendable {
        let crt: gnutls_x509_crt_t?
        init(pem: String) throws(QUICError) { crt = try NodeCertificate.importCertificate(pem: pem) }
        deinit { gnutls_x509_crt_deinit(crt) }
    }
    private let rule: Rule

    /// Any peer that proves some node identity (a valid Ed25519 node certificate).
    public static let anyNode = AdmissionPolicy(rule: .anyNode)
    /// Only these node IDs.
    public static func allowList(_ ids: some Sequence<NodeID>) -> AdmissionPolicy {
        AdmissionPolicy(rule: .allowList(Set(ids)))
    }

    /// Nodes whose certificate was issued by this cluster CA (see `NodeCertificate.clusterCA` and
    /// `NodeCertificate.issued(for:by:caCertificatePEM:)`).
    public static func clusterCA(certificatePEM: String) throws(QUICError) -> AdmissionPolicy {
        AdmissionPolicy(rule: .clusterCA(try ClusterCA(pem: certificatePEM)))
    }

    /// Nodes that present one of these join tokens (see `JoinToken`): any node identity passes the
    /// TLS handshake, but the link is handed to the application only after the dialler proved it holds
    /// a token, within the handshake timeout; otherwise it is closed with `joinRefusedErrorCode`.
    public static func joinTokens(_ tokens: [JoinToken]) -> AdmissionPolicy {
        AdmissionPolicy(rule: .joinTokens(tokens))
    }

    /// Application error code a server closes with when a join token is missing or wrong.
    public static let joinRefusedErrorCode: UInt64 = 0x4a01

    public func admits(_ id: NodeID) -> Bool {
        switch rule {
        case .anyNode: true
        case .allowList(let ids): ids.contains(id)
        case .clusterCA: false // needs the certificate: see admits(_:certificate:)
        case .joinTokens: false // needs a proof: see admitsJoin
        }
    }

    /// True when links must present a join token before they are admitted.
    var requiresJoinToken: Bool { if case .joinTokens = rule { true } else { false } }

    /// Checks a join proof from `node` on a connection whose TLS exporter is `exporter`.
    func admitsJoin(_ p: JoinToken.Presentation, exporter: [UInt8], node: NodeID) -> Bool {
        guard case .joinTokens(let tokens) = rule, p.version == 1,
              let token = tokens.first(where: { $0.id == p.tokenID }) else { return false }
        return token.verify(p.proof, exporter: exporter, joiner: node)
    }

    /// The check the handshake runs: the NodeID and the DER certificate it came from.
    func admits(_ id: NodeID, certificate der: UnsafeRawBufferPointer) -> Bool {
        switch rule {
        case .clusterCA(let ca): NodeCertificate.isIssued(der: der, by: ca.crt)
        case .joinTokens: true // the identity is proved; the join proof follows on a stream
        default: admits(id)
        }
    }

    public var description: String {
        switch rule {
        case .anyNode: "any node"
        case .allowList(let ids): "allow-list of \(ids.count) node(s)"
        case .clusterCA: "certificates issued by the cluster CA"
        case .joinTokens(let t): "holders of \(t.count) join token(s)"
        }
    }
}

/// How a TLS endpoint proves itself and checks its peer.
public struct TLSConfiguration: Sendable {
    enum Verification: Sendable {
        /// Mesh links: both sides present Ed25519 node certificates; the peer's NodeID is checked
        /// against the admission policy (and the dialled NodeID, if any).
        case nodeIdentity(AdmissionPolicy)
        /// HTTP/3 client: verify the server's certificate chain and name against the system trust store.
        case systemTrust
        /// HTTP/3 client with --insecure, or an HTTP/3 server that does not ask for client certificates.
        case none
    }
    let certificatePEM: String?
    let keyPEM: String?
    let verification: Verification
    /// What this node presents when it dials a peer whose policy is `AdmissionPolicy.joinTokens`.
    var joinToken: JoinToken? = nil
    /// This node's identity (mesh endpoints).
    var localNodeID: NodeID? = nil

    /// A mesh node: its identity certificate (generated from the key) and mutual authentication.
    /// `certificatePEM` defaults to a fresh self-signed node certificate; pass one issued by the
    /// cluster CA when peers admit by `AdmissionPolicy.clusterCA`.
    /// `joinToken`: presented on every link this node dials (needed by peers that admit by join token).
    public static func mesh(identity: NodeIdentity, certificatePEM: String? = nil,
                            admission: AdmissionPolicy = .anyNode, joinToken: JoinToken? = nil) throws -> TLSConfiguration {
        TLSConfiguration(certificatePEM: try certificatePEM ?? NodeCertificate.selfSigned(for: identity),
                         keyPEM: try identity.privateKeyPEM(), verification: .nodeIdentity(admission), joinToken: joinToken,
                         localNodeID: identity.nodeID)
    }

    /// An HTTP/3 server with the given certificate and key (PEM). Clients are not asked for certificates.
    public static func server(certificatePEM: String, keyPEM: String) -> TLSConfiguration {
        TLSConfiguration(certificatePEM: certificatePEM, keyPEM: keyPEM, verification: .none)
    }

    /// An HTTP/3 client. `insecure` skips verifying the server's certificate (self-signed test servers).
    public static func client(insecure: Bool) -> TLSConfiguration {
        TLSConfiguration(certificatePEM: nil, keyPEM: nil, verification: insecure ? .none : .systemTrust)
    }

    var isMesh: Bool { if case .nodeIdentity = verification { true } else { false } }
    var admission: AdmissionPolicy? { if case .nodeIdentity(let p) = verification { p } else { nil } }
}

/// A GnuTLS certificate-credentials object, built once per endpoint and shared by its sessions.
final class TLSCredentials: @unchecked Sendable {
    // Immutable after init; GnuTLS credentials may be shared between sessions.
    let raw: gnutls_certificate_credentials_t
    let configuration: TLSConfiguration
    /// Session-ticket key and anti-replay state for the sessions this endpoint serves.
    let tickets: ServerTickets

    init(_ configuration: TLSConfiguration) throws(QUICError) {
        try GnuTLSLibrary.ensureInitialized()
        var cred: gnutls_certificate_credentials_t?
        var rc = gnutls_certificate_allocate_credentials(&cred)
        guard rc == 0, let cred else { throw .tls("allocating certificate credentials", rc) }
        do { tickets = try ServerTickets() } catch { gnutls_certificate_free_credentials(cred); throw error }
        raw = cred
        self.configuration = configuration
        if let cert = configuration.certificatePEM, let key = configuration.keyPEM {
            rc = TLSCredentials.withDatum(cert) { c in
                TLSCredentials.withDatum(key) { k in
                    gnutls_certificate_set_x509_key_mem2(cred, c, k, GNUTLS_X509_FMT_PEM, nil, 0)
                }
            }
            guard rc >= 0 else {
                gnutls_certificate_free_credentials(cred)
                throw .tls("loading the certificate and key (are they PEM, and do they match?)", rc)
            }
        }
        switch configuration.verification {
        case .nodeIdentity:
            gnutls_certificate_set_verify_function(cred, nodeIdentityVerifyCallback)
        case .systemTrust:
            rc = gnutls_certificate_set_x509_system_trust(cred)
            guard rc >= 0 else {
                gnutls_certificate_free_credentials(cred)
                throw .tls("loading the system trust store", rc)
            }
        case .none:
            break
        }
    }

    deinit { gnutls_certificate_free_credentials(raw) }

    static func withDatum<R>(_ s: String, _ body: (UnsafePointer<gnutls_datum_t>) -> R) -> R {
        var bytes = Array(s.utf8)
        return bytes.withUnsafeMutableBufferPointer { buf in
            var d = gnutls_datum_t(data: buf.baseAddress, size: UInt32(buf.count))
            return body(&d)
        }
    }

    /// Reads a PEM file, bounded (certificates and keys are small).
    static func readPEM(path: String) throws(QUICError) -> String {
        guard let f = fopen(path, "r") else { throw .socket("opening \(path)", errno) }
        defer { fclose(f) }
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n == 0 { break }
            data += buf[0..<n]
            guard data.count < 1 << 20 else { throw .invalidArgument("\(path) is larger than 1 MiB; is it really a PEM file?") }
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// GnuTLS calls this when the peer's certificate arrives (both roles): the session's pointer leads to
/// the `QUICConnection`, which checks the node identity. Non-zero aborts the handshake.
private let nodeIdentityVerifyCallback: @convention(c) (gnutls_session_t?) -> Int32 = { session in
    guard let session, let ref = gnutls_session_get_ptr(session) else { return -1 }
    let connRef = ref.assumingMemoryBound(to: ngtcp2_crypto_conn_ref.self)
    guard let owner = connRef.pointee.user_data else { return -1 }
    let connection = Unmanaged<QUICConnection>.fromOpaque(owner).takeUnretainedValue()
    var count: UInt32 = 0
    guard let certs = gnutls_certificate_get_peers(session, &count), count > 0 else {
        return connection.peerCertificateChecked(nil)
    }
    let der = UnsafeRawBufferPointer(start: certs[0].data, count: Int(certs[0].size))
    return connection.peerCertificateChecked(der)
}
