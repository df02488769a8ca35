import CNgtcp2
import MeshCore

/// Stateless address validation with Retry (RFC 9000 §8.1.2), through ngtcp2_crypto's token
/// functions: a Retry token is AEAD-sealed (AES-128-GCM under a key derived from this endpoint's
/// random 32-byte secret) over the client's address, the original destination connection ID and a
/// timestamp. A client Initial without a token draws a Retry; the client's second Initial must carry a
/// token that opens with our key, names the same address and is younger than `lifetime`.
struct AddressValidation {
    enum Check {
        /// No Retry token: answer with a Retry.
        case noToken
        /// A valid token: the connection's original destination ID (for the transport parameters).
        case valid(originalDestinationID: ConnectionID)
        /// A Retry token that does not open, names another address, or expired: refuse.
        case invalid
    }

    private let secret: [UInt8]
    let lifetime: Duration

    init(lifetime: Duration) {
        var s = [UInt8](repeating: 0, count: 32)
        _ = gnutls_rnd(GNUTLS_RND_KEY, &s, s.count)
        secret = s
        self.lifetime = lifetime
    }

    func check(_ hd: ngtcp2_pkt_hd, from remote: SocketAddress, now: Instant) -> Check {
        guard hd.token.len > 0, let base = hd.token.base, base[0] == UInt8(NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) else { return .noToken }
        var odcid = ngtcp2_cid()
        var dcid = hd.dcid
        var r = remote
        let rc = secret.withUnsafeBufferPointer { s in
            withUnsafePointer(to: &r.storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    ngtcp2_crypto_verify_retry_token(&odcid, base, hd.token.len, s.baseAddress, s.count, hd.version, sa, r.length,
                                                     &dcid, UInt64(lifetime.nanosecondsClamped), now.nanoseconds)
                }
            }
        }
        return rc == 0 ? .valid(originalDestinationID: ConnectionID(odcid)) : .invalid
    }

    /// A Retry packet answering `hd` (empty if it cannot be built).
    func retry(for hd: ngtcp2_pkt_hd, from remote: SocketAddress, now: Instant) -> [UInt8] {
        var token = [UInt8](repeating: 0, count: 1 + 1 + Int(NGTCP2_MAX_CIDLEN) + 8 + 16 + Int(NGTCP2_CRYPTO_TOKEN_RAND_DATALEN))
        var retryID = ConnectionID.random().ngtcp2
        var odcid = hd.dcid, clientID = hd.scid
        var r = remote
        let tokenLength = secret.withUnsafeBufferPointer { s in
            withUnsafePointer(to: &r.storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    ngtcp2_crypto_generate_retry_token(&token, s.baseAddress, s.count, hd.version, sa, r.length,
                                                       &retryID, &odcid, now.nanoseconds)
                }
            }
        }
        guard tokenLength > 0 else { return [] }
        var out = [UInt8](repeating: 0, count: 256)
        let n = ngtcp2_crypto_write_retry(&out, out.count, hd.version, &clientID, &retryID, &odcid, &token, tokenLength)
        return n > 0 ? Array(out[0..<n]) : []
    }

    /// A CONNECTION_CLOSE with INVALID_TOKEN in an Initial packet the client can read.
    static func invalidTokenClose(for hd: ngtcp2_pkt_hd) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 256)
        var clientID = hd.scid, ourID = hd.dcid
        let n = ngtcp2_crypto_write_connection_close(&out, out.count, hd.version, &clientID, &ourID,
                                                     UInt64(NGTCP2_INVALID_TOKEN), nil, 0)
        return n > 0 ? Array(out[0..<n]) : []
    }
}
