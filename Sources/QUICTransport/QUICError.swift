import MeshCore

/// Why a QUIC operation failed. A public struct around a private enum, so new cases do not break
/// callers; carries the ngtcp2, GnuTLS or errno code where there is one.
public struct QUICError: Error, Hashable, CustomStringConvertible, Sendable {
    private enum Kind: Hashable, Sendable {
        case ngtcp2(String)
        case tls(String)
        case socket(String)
        case peerRejected(String)
        case identityMismatch(expected: NodeID, got: NodeID?)
        case closed(String)
        case streamReset(UInt64)
        case handshakeTimeout
        case invalidArgument(String)
        case http(String)
    }
    private let kind: Kind
    /// ngtcp2's `NGTCP2_ERR_*` code, when ngtcp2 reported the failure.
    public let ngtcp2Code: Int32?
    /// GnuTLS's `GNUTLS_E_*` code, when GnuTLS reported the failure.
    public let gnutlsCode: Int32?
    /// `errno` of a failed socket call.
    public let errnoCode: Int32?

    private init(_ kind: Kind, ngtcp2: Int32? = nil, gnutls: Int32? = nil, errno: Int32? = nil) {
        self.kind = kind; ngtcp2Code = ngtcp2; gnutlsCode = gnutls; errnoCode = errno
    }

    static func ngtcp2(_ what: String, _ code: Int32) -> QUICError { .init(.ngtcp2(what), ngtcp2: code) }
    static func tls(_ what: String, _ code: Int32) -> QUICError { .init(.tls(what), gnutls: code) }
    static func socket(_ what: String, _ err: Int32) -> QUICError { .init(.socket(what), errno: err) }
    static func peerRejected(_ why: String) -> QUICError { .init(.peerRejected(why)) }
    static func identityMismatch(expected: NodeID, got: NodeID?) -> QUICError { .init(.identityMismatch(expected: expected, got: got)) }
    static func closed(_ why: String) -> QUICError { .init(.closed(why)) }
    static func streamReset(_ code: UInt64) -> QUICError { .init(.streamReset(code)) }
    static let handshakeTimeout = QUICError(.handshakeTimeout)
    static func invalidArgument(_ why: String) -> QUICError { .init(.invalidArgument(why)) }
    static func http(_ why: String) -> QUICError { .init(.http(why)) }

    /// True when the peer was refused by (or refused) the admission policy or identity check.
    public var isAuthenticationFailure: Bool {
        switch kind {
        case .peerRejected, .identityMismatch: true
        case .closed(let why): why.contains("certificate") || why.contains("identity") || why.contains("join token")
        default: false
        }
    }

    /// True when the stream was reset by the peer.
    public var isStreamReset: Bool { if case .streamReset = kind { true } else { false } }

    public var description: String {
        switch kind {
        case .ngtcp2(let what):
            let name = ngtcp2Code.map { String(cString: ngtcp2ErrorName($0)) } ?? "?"
            return "QUIC error while \(what): \(name) (\(ngtcp2Code ?? 0))"
        case .tls(let what):
            let name = gnutlsCode.map { tlsErrorName($0) } ?? "?"
            return "TLS error while \(what): \(name) (\(gnutlsCode ?? 0))"
        case .socket(let what):
            return "socket error while \(what): \(errnoCode.map { errnoName($0) } ?? "?")"
        case .peerRejected(let why):
            return "peer refused: \(why)"
        case .identityMismatch(let expected, let got):
            return "peer did not prove identity \(expected): it presented \(got.map(\.description) ?? "no node certificate"); "
                + "check the address or the expected node ID"
        case .closed(let why):
            return "connection closed: \(why)"
        case .streamReset(let code):
            return "stream reset by the peer (application error \(code))"
        case .handshakeTimeout:
            return "QUIC handshake timed out; is a GQUIC/HTTP3 server listening on that UDP port?"
        case .invalidArgument(let why):
            return why
        case .http(let why):
            return "HTTP/3: \(why)"
        }
    }
}
