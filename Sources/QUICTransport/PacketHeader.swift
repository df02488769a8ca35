import CNgtcp2

/// Stateless packet handling before a datagram reaches a connection: reading the version and
/// connection IDs, accepting a client Initial, Version Negotiation and stateless reset.
enum PacketHeader {
    enum Classification {
        /// A packet for connection `dcid` (long or short header).
        case packet(dcid: ConnectionID, scid: ConnectionID, version: UInt32, isLongHeader: Bool)
        /// A long header with a version we do not speak: answer with Version Negotiation.
        case unsupportedVersion(dcid: ConnectionID, scid: ConnectionID)
        /// Not a QUIC packet we can parse.
        case garbage
    }

    static func classify(_ d: UnsafeRawBufferPointer) -> Classification {
        guard d.count > 0, let base = d.bindMemory(to: UInt8.self).baseAddress else { return .garbage }
        var vc = ngtcp2_version_cid()
        let rc = ngtcp2_pkt_decode_version_cid(&vc, base, d.count, ConnectionID.localLength)
        let dcid = ConnectionID(pointer: vc.dcid, count: vc.dcidlen)
        let scid = ConnectionID(pointer: vc.scid, count: vc.scidlen)
        switch rc {
        case 0: return .packet(dcid: dcid, scid: scid, version: vc.version, isLongHeader: base[0] & 0x80 != 0)
        case NGTCP2_ERR_VERSION_NEGOTIATION: return .unsupportedVersion(dcid: dcid, scid: scid)
        default: return .garbage
        }
    }

    /// Decodes a client Initial that may start a new connection; nil if it cannot.
    static func acceptInitial(_ d: UnsafeRawBufferPointer) -> ngtcp2_pkt_hd? {
        guard let base = d.bindMemory(to: UInt8.self).baseAddress else { return nil }
        var hd = ngtcp2_pkt_hd()
        return ngtcp2_accept(&hd, base, d.count) == 0 ? hd : nil
    }

    /// A Version Negotiation packet answering a packet with IDs `dcid`/`scid` (they are swapped).
    static func versionNegotiation(dcid: ConnectionID, scid: ConnectionID) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 256)
        var versions: [UInt32] = [NGTCP2_PROTO_VER_V1]
        var unused: UInt8 = 0
        _ = gnutls_rnd(GNUTLS_RND_NONCE, &unused, 1)
        let n = scid.bytes.withUnsafeBufferPointer { s in
            dcid.bytes.withUnsafeBufferPointer { d in
                ngtcp2_pkt_write_version_negotiation(&out, out.count, unused & 0x7f, s.baseAddress, s.count,
                                                     d.baseAddress, d.count, &versions, versions.count)
            }
        }
        return n > 0 ? Array(out[0..<n]) : []
    }

    /// A stateless reset for an unknown short-header packet of `receivedLength` bytes to `dcid`,
    /// smaller than the trigger so resets cannot loop (RFC 9000 §10.3.3). Empty if too small to send.
    static func statelessReset(dcid: ConnectionID, secret: [UInt8], receivedLength: Int) -> [UInt8] {
        let length = min(receivedLength - 1, 43)
        guard length >= 21 else { return [] }
        var token = [UInt8](repeating: 0, count: Int(NGTCP2_STATELESS_RESET_TOKENLEN))
        var cid = dcid.ngtcp2
        let rc = secret.withUnsafeBufferPointer {
            ngtcp2_crypto_generate_stateless_reset_token(&token, $0.baseAddress, $0.count, &cid)
        }
        guard rc == 0 else { return [] }
        var rand = [UInt8](repeating: 0, count: length - token.count - 1)
        _ = gnutls_rnd(GNUTLS_RND_NONCE, &rand, rand.count)
        var out = [UInt8](repeating: 0, count: length)
        let n = ngtcp2_pkt_write_stateless_reset(&out, out.count, &token, &rand, rand.count)
        return n > 0 ? Array(out[0..<n]) : []
    }
}
