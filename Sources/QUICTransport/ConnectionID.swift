import CNgtcp2

/// A QUIC connection ID (up to 20 bytes). Our endpoints issue 8-byte IDs, so a short-header
/// packet's destination ID can be read without state. Every 1-RTT packet carries one: 8 random
/// bytes tell apart an endpoint's connections as well as 16 (no load balancer routes on them here),
/// and a bulk transfer's packets are 8 bytes shorter (0.55% of a 1,452-byte packet).
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]
    public static let localLength = 8

    public init(bytes: [UInt8]) { self.bytes = bytes }

    init(_ cid: ngtcp2_cid) {
        var c = cid
        bytes = withUnsafeBytes(of: &c.data) { Array($0.prefix(Int(cid.datalen))) }
    }

    init(pointer: UnsafePointer<UInt8>?, count: Int) {
        bytes = pointer.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? []
    }

    static func random(length: Int = localLength) -> ConnectionID {
        var b = [UInt8](repeating: 0, count: length)
        _ = gnutls_rnd(GNUTLS_RND_RANDOM, &b, length)
        return ConnectionID(bytes: b)
    }

    var ngtcp2: ngtcp2_cid {
        var cid = ngtcp2_cid()
        bytes.withUnsafeBufferPointer { ngtcp2_cid_init(&cid, $0.baseAddress, $0.count) }
        return cid
    }

    public var description: String { bytes.map { String($0, radix: 16).leftPadded(2) }.joined() }
}

extension String {
    func leftPadded(_ n: Int, with c: Character = "0") -> String {
        count >= n ? self : String(repeating: c, count: n - count) + self
    }
}
