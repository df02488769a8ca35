import CSHA256NI
import MeshCore

/// SHA-256 with the x86 SHA extensions, one message or two interleaved (the one file that calls
/// CSHA256NI; no C type leaves it).
///
/// Why: an import hashes every byte twice, once for the blob's digest and once for its chunk's.
/// One SHA-256 is a chain of dependent `sha256rnds2` instructions and runs at the unit's latency
/// (≈ 1.8 GB/s here, OpenSSL's own speed); two independent messages in one loop overlap their chains
/// (≈ 3.1 GB/s for both). So the chunk digests ride along with the blob digest, or two chunks go
/// together. On CPUs without the extensions `available` is false and callers use OpenSSL
/// (`Digest.of`, `SHA256Hasher`).
struct SHA256Lane {
    static let available = gq_sha256_ni_available() != 0

    /// The eight state words a…h.
    private var h: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19)
    /// Whole 64-byte blocks consumed.
    private(set) var blocks = 0

    /// Consumes `n` whole blocks at `p`.
    @inline(__always)
    mutating func update(_ p: UnsafeRawPointer, blocks n: Int) {
        guard n > 0 else { return }
        withUnsafeMutableBytes(of: &h) { s in
            gq_sha256_ni_blocks(s.baseAddress!.assumingMemoryBound(to: UInt32.self), p.assumingMemoryBound(to: UInt8.self), n)
        }
        blocks += n
    }

    /// Consumes `n` whole blocks on each of two lanes in one interleaved loop.
    @inline(__always)
    static func update2(_ a: inout SHA256Lane, _ pa: UnsafeRawPointer, _ b: inout SHA256Lane, _ pb: UnsafeRawPointer, blocks n: Int) {
        guard n > 0 else { return }
        withUnsafeMutableBytes(of: &a.h) { sa in
            withUnsafeMutableBytes(of: &b.h) { sb in
                gq_sha256_ni_blocks_x2(sa.baseAddress!.assumingMemoryBound(to: UInt32.self), pa.assumingMemoryBound(to: UInt8.self),
                                       sb.baseAddress!.assumingMemoryBound(to: UInt32.self), pb.assumingMemoryBound(to: UInt8.self), n)
            }
        }
        a.blocks += n
        b.blocks += n
    }

    /// The digest of the message whose whole blocks were consumed and whose last `tail.count < 64`
    /// bytes are `tail` (standard padding: 0x80, zeros, the bit length big-endian).
    func finish(tail: UnsafeRawBufferPointer) -> Digest {
        precondition(tail.count < 64)
        var copy = self
        var pad = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0),
                   UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let bitLength = UInt64(blocks * 64 + tail.count) &* 8
        withUnsafeMutableBytes(of: &pad) { p in
            if tail.count > 0 { p.baseAddress!.copyMemory(from: tail.baseAddress!, byteCount: tail.count) }
            p[tail.count] = 0x80
            let n = tail.count < 56 ? 1 : 2
            p.storeBytes(of: bitLength.bigEndian, toByteOffset: n * 64 - 8, as: UInt64.self)
            copy.update(p.baseAddress!, blocks: n)
        }
        var out = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &out) { o in
            withUnsafeBytes(of: copy.h) { s in
                for i in 0..<8 { o.storeBytes(of: s.load(fromByteOffset: 4 * i, as: UInt32.self).bigEndian, toByteOffset: 4 * i, as: UInt32.self) }
            }
        }
        return withUnsafeBytes(of: out) { Digest(unchecked: $0) }
    }

    /// The digest of a whole message.
    static func digest(_ m: UnsafeRawBufferPointer) -> Digest {
        var lane = SHA256Lane()
        let n = m.count / 64
        if n > 0 { lane.update(m.baseAddress!, blocks: n) }
        return lane.finish(tail: UnsafeRawBufferPointer(rebasing: m[(n * 64)...]))
    }

    /// The digests of two whole messages, hashed side by side.
    static func digests(_ x: UnsafeRawBufferPointer, _ y: UnsafeRawBufferPointer) -> (Digest, Digest) {
        var a = SHA256Lane(), b = SHA256Lane()
        let nx = x.count / 64, ny = y.count / 64, both = min(nx, ny)
        if both > 0 { update2(&a, x.baseAddress!, &b, y.baseAddress!, blocks: both) }
        if nx > both { a.update(x.baseAddress! + both * 64, blocks: nx - both) }
        if ny > both { b.update(y.baseAddress! + both * 64, blocks: ny - both) }
        return (a.finish(tail: UnsafeRawBufferPointer(rebasing: x[(nx * 64)...])),
                b.finish(tail: UnsafeRawBufferPointer(rebasing: y[(ny * 64)...])))
    }
}
