#if canImport(Glibc)
import Glibc
#endif
import CNgtcp2
import MeshCore

/// X.509 through GnuTLS: the self-signed certificate that carries a node's Ed25519 identity key, and
/// reading the identity back out of a certificate a peer presented.
///
/// The certificate's signature is not what authenticates a peer: TLS 1.3's CertificateVerify proves the
/// peer holds the private key of the certificate's public key, and the NodeID is that key's SHA-256.
public enum NodeCertificate {
    /// A self-signed certificate (PEM) for `identity`, valid from an hour ago for `validDays`, with the
    /// node ID as its common name.
    public static func selfSigned(for identity: NodeIdentity, validDays: Int = 3650) throws -> String {
        try make(for: identity, validDays: validDays, isCA: false, issuer: nil)
    }

    /// A cluster CA certificate (PEM) for the CA's own Ed25519 key. Nodes whose certificates it issued
    /// are admitted by `AdmissionPolicy.clusterCA(certificatePEM:)`.
    public static func clusterCA(_ ca: NodeIdentity, validDays: Int = 3650) throws -> String {
        try make(for: ca, validDays: validDays, isCA: true, issuer: nil)
    }

    /// A node certificate for `identity` issued (signed) by the cluster CA `ca`, whose certificate is
    /// `caCertificatePEM`.
    public static func issued(for identity: NodeIdentity, by ca: NodeIdentity, caCertificatePEM: String,
                              validDays: Int = 365) throws -> String {
        try make(for: identity, validDays: validDays, isCA: false, issuer: (ca, caCertificatePEM))
    }

    static func importKey(_ identity: NodeIdentity) throws -> gnutls_x509_privkey_t? {
        let keyPEM = Array(try identity.privateKeyPEM().utf8)
        var key: gnutls_x509_privkey_t?
        try check(gnutls_x509_privkey_init(&key), "allocating a private key")
        do {
            try keyPEM.withUnsafeBytes { raw in
                var d = gnutls_datum_t(data: UnsafeMutablePointer(mutating: raw.bindMemory(to: UInt8.self).baseAddress), size: UInt32(raw.count))
                try check(gnutls_x509_privkey_import2(key, &d, GNUTLS_X509_FMT_PEM, nil, 0), "importing the node key")
            }
        } catch { gnutls_x509_privkey_deinit(key); throw error }
        return key
    }

    static func importCertificate(pem: String) throws(QUICError) -> gnutls_x509_crt_t? {
        var crt: gnutls_x509_crt_t?
        try check(gnutls_x509_crt_init(&crt), "allocating a certificate")
        let rc = TLSCredentials.withDatum(pem) { gnutls_x509_crt_import(crt, $0, GNUTLS_X509_FMT_PEM) }
        guard rc >= 0 else { gnutls_x509_crt_deinit(crt); throw .tls("reading a PEM certificate", rc) }
        return crt
    }

    private static func make(for identity: NodeIdentity, validDays: Int, isCA: Bool,
                             issuer: (NodeIdentity, String)?) throws -> String {
        try GnuTLSLibrary.ensureInitialized()
        let key = try importKey(identity)
        defer { gnutls_x509_privkey_deinit(key) }
        var crt: gnutls_x509_crt_t?
        try check(gnutls_x509_crt_init(&crt), "allocating a certificate")
        defer { gnutls_x509_crt_deinit(crt) }
        let now = time(nil)
        try check(gnutls_x509_crt_set_version(crt, 3), "setting the version")
        var serial = [UInt8](repeating: 0, count: 16)
        _ = gnutls_rnd(GNUTLS_RND_NONCE, &serial, serial.count)
        serial[0] &= 0x7f
        try check(gnutls_x509_crt_set_serial(crt, serial, serial.count), "setting the serial")
        try check(gnutls_x509_crt_set_activation_time(crt, now - 3600), "setting notBefore")
        try check(gnutls_x509_crt_set_expiration_time(crt, now + time_t(validDays) * 86400), "setting notAfter")
        let cn = identity.nodeID.description
        try check(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, UInt32(cn.utf8.count)), "setting the subject")
        try check(gnutls_x509_crt_set_key(crt, key), "setting the public key")
        try check(gnutls_x509_crt_set_basic_constraints(crt, isCA ? 1 : 0, -1), "setting basic constraints")
        let usage = isCA ? GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_DIGITAL_SIGNATURE : GNUTLS_KEY_DIGITAL_SIGNATURE
        try check(gnutls_x509_crt_set_key_usage(crt, UInt32(usage)), "setting key usage")
        try check(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, cn.lowercased(), UInt32(cn.utf8.count), UInt32(GNUTLS_FSAN_SET)), "setting the SAN")
        if let (ca, caPEM) = issuer {
            let caKey = try importKey(ca)
            defer { gnutls_x509_privkey_deinit(caKey) }
            let caCrt = try importCertificate(pem: caPEM)
            defer { gnutls_x509_crt_deinit(caCrt) }
            try check(gnutls_x509_crt_sign2(crt, caCrt, caKey, GNUTLS_DIG_UNKNOWN, 0), "signing with the cluster CA")
        } else {
            try check(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_UNKNOWN, 0), "self-signing")
        }
        var out = gnutls_datum_t()
        try check(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out), "exporting PEM")
        defer { gq_gnutls_free(out.data) }
        return String(decoding: UnsafeRawBufferPointer(start: out.data, count: Int(out.size)), as: UTF8.self)
    }

    /// The node ID a DER certificate names: SHA-256 of its raw Ed25519 public key. Nil if the
    /// certificate is not an Ed25519 certificate.
    static func nodeID(fromDER der: UnsafeRawBufferPointer) -> NodeID? {
        guard let raw = ed25519PublicKey(fromDER: der) else { return nil }
        return NodeID(publicKey: raw)
    }

    static func ed25519PublicKey(fromDER der: UnsafeRawBufferPointer) -> [UInt8]? {
        var crt: gnutls_x509_crt_t?
        guard gnutls_x509_crt_init(&crt) == 0 else { return nil }
        defer { gnutls_x509_crt_deinit(crt) }
        var d = gnutls_datum_t(data: UnsafeMutablePointer(mutating: der.bindMemory(to: UInt8.self).baseAddress), size: UInt32(der.count))
        guard gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) == 0 else { return nil }
        guard gnutls_x509_crt_get_pk_algorithm(crt, nil) == Int32(GNUTLS_PK_EDDSA_ED25519.rawValue) else { return nil }
        var curve = gnutls_ecc_curve_t(0)
        var x = gnutls_datum_t(), y = gnutls_datum_t()
        guard gnutls_x509_crt_get_pk_ecc_raw(crt, &curve, &x, &y) == 0 else { return nil }
        defer { gq_gnutls_free(x.data); gq_gnutls_free(y.data) }
        guard curve == GNUTLS_ECC_CURVE_ED25519, x.size == 32 else { return nil }
        return Array(UnsafeBufferPointer(start: x.data, count: 32))
    }

    /// True if the DER certificate was issued and correctly signed by the CA certificate `ca`, and is
    /// within its validity period.
    static func isIssued(der: UnsafeRawBufferPointer, by ca: gnutls_x509_crt_t?) -> Bool {
        var crt: gnutls_x509_crt_t?
        guard gnutls_x509_crt_init(&crt) == 0 else { return false }
        defer { gnutls_x509_crt_deinit(crt) }
        var d = gnutls_datum_t(data: UnsafeMutablePointer(mutating: der.bindMemory(to: UInt8.self).baseAddress), size: UInt32(der.count))
        guard gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) == 0 else { return false }
        var cas: [gnutls_x509_crt_t?] = [ca]
        var status: UInt32 = 0
        guard gnutls_x509_crt_verify(crt, &cas, 1, 0, &status) == 0 else { return false }
        return status == 0
    }

    static func check(_ rc: Int32, _ what: String) throws(QUICError) {
        guard rc >= 0 else { throw QUICError.tls(what, rc) }
    }
}

enum GnuTLSLibrary {
    private static let initResult: Int32 = gnutls_global_init()
    static func ensureInitialized() throws(QUICError) {
        let rc = initResult
        guard rc >= 0 else { throw .tls("initialising GnuTLS", rc) }
    }
}

func tlsErrorName(_ code: Int32) -> String { String(cString: gnutls_strerror(code)) }
