import CNgtcp2
import Foundation
import MeshCore

/// A join token: a shared secret a cluster hands to nodes allowed to join (the third admission
/// policy, next to an allow-list and a cluster CA). Written as `gqjoin1-<16 hex id>-<64 hex secret>`.
///
/// The secret never crosses the wire. After the TLS handshake (both sides proved a node identity),
/// the dialling node sends, on a stream of its own, the token's id and
/// `HMAC-SHA256(secret, "gquic join v1" || exporter || joiner NodeID)`, where `exporter` is 32 bytes of
/// the TLS exporter (RFC 5705/8446 §7.5, label `EXPORTER-gquic-join`) of this very connection. The
/// proof is thus bound to the session and to the joiner's identity: it cannot be replayed on another
/// connection or claimed by another node, and a peer that does not hold the secret cannot compute it.
public struct JoinToken: Sendable, Hashable, CustomStringConvertible {
    /// Names the token, so a cluster can hold several and revoke one.
    public let id: [UInt8]
    let secret: [UInt8]

    static let idLength = 8, secretLength = 32, proofLength = 32
    static let exporterLabel = "EXPORTER-gquic-join"

    /// A new random token.
    public static func generate() -> JoinToken {
        var id = [UInt8](repeating: 0, count: idLength), secret = [UInt8](repeating: 0, count: secretLength)
        _ = gnutls_rnd(GNUTLS_RND_NONCE, &id, id.count)
        _ = gnutls_rnd(GNUTLS_RND_KEY, &secret, secret.count)
        return JoinToken(id: id, secret: secret)
    }

    init(id: [UInt8], secret: [UInt8]) { self.id = id; self.secret = secret }

    /// Parses the `gqjoin1-…` form.
    public init(parsing text: String) throws(QUICError) {
        let parts = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "-")
        guard parts.count == 3, parts[0] == "gqjoin1", let id = Self.hex(parts[1]), id.count == Self.idLength,
              let secret = Self.hex(parts[2]), secret.count == Self.secretLength else {
            throw .invalidArgument("not a join token: expected gqjoin1-<16 hex digits>-<64 hex digits> (make one with JoinToken.generate())")
        }
        self.init(id: id, secret: secret)
    }

    public var description: String { "gqjoin1-\(Self.hexString(id))-\(Self.hexString(secret))" }

    /// The proof a joiner sends on a connection whose TLS exporter is `exporter`.
    func proof(exporter: [UInt8], joiner: NodeID) -> [UInt8] {
        let message = Array("gquic join v1".utf8) + exporter + joiner.bytes
        var out = [UInt8](repeating: 0, count: Self.proofLength)
        _ = secret.withUnsafeBytes { k in
            message.withUnsafeBytes { m in
                gnutls_hmac_fast(GNUTLS_MAC_SHA256, k.baseAddress, k.count, m.baseAddress, m.count, &out)
            }
        }
        return out
    }

    /// Checks a proof in constant time.
    func verify(_ proof: [UInt8], exporter: [UInt8], joiner: NodeID) -> Bool {
        let expected = self.proof(exporter: exporter, joiner: joiner)
        guard proof.count == expected.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<proof.count { diff |= proof[i] ^ expected[i] }
        return diff == 0
    }

    /// The admission message: version, token id, proof.
    struct Presentation: WireFields {
        var version: UInt64 = 1
        var tokenID: [UInt8] = []
        var proof: [UInt8] = []
        mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
            try c.varint(&version)
            try c.bytes(&tokenID, max: 32)
            try c.bytes(&proof, max: 64)
        }
        static let maxLength = 128
    }

    private static func hex(_ s: Substring) -> [UInt8]? {
        let chars = Array(s.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        for i in stride(from: 0, to: chars.count, by: 2) {
            guard let b = UInt8(String(decoding: chars[i..<i + 2], as: UTF8.self), radix: 16) else { return nil }
            out.append(b)
        }
        return out
    }

    private static func hexString(_ b: [UInt8]) -> String { b.map { String($0, radix: 16).leftPadded(2) }.joined() }
}
