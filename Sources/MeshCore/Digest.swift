/// A SHA-256 content digest: the external, OCI-compatible ID of every blob and chunk.
///
/// Text form is the OCI digest grammar restricted to the registered `sha256` algorithm:
/// `sha256:` followed by exactly 64 lowercase hex digits.
public struct Digest: Hashable, Comparable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    /// The 32 raw bytes, as four big-endian words (no heap allocation, cheap to hash and compare).
    private var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    public static let byteCount = 32
    public static let prefix = "sha256:"

    /// Wraps 32 bytes that are already a SHA-256 output. Traps on any other length.
    public init(unchecked bytes: some Collection<UInt8>) {
        precondition(bytes.count == 32, "a SHA-256 digest is 32 bytes, got \(bytes.count)")
        // Contiguous bytes (arrays, slices): four unaligned big-endian loads instead of 32 steps.
        if let words = bytes.withContiguousStorageIfAvailable({ b in
            let raw = UnsafeRawBufferPointer(b)
            return (UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                    UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                    UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
                    UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
        }) {
            (w0, w1, w2, w3) = words
            return
        }
        var w: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        var i = 0
        for b in bytes {
            switch i >> 3 {
            case 0: w.0 = w.0 << 8 | UInt64(b)
            case 1: w.1 = w.1 << 8 | UInt64(b)
            case 2: w.2 = w.2 << 8 | UInt64(b)
            default: w.3 = w.3 << 8 | UInt64(b)
            }
            i += 1
        }
        (w0, w1, w2, w3) = w
    }

    /// Reads a digest from 32 raw bytes (for example off the wire).
    public init(rawBytes bytes: [UInt8]) throws(DigestError) {
        guard bytes.count == 32 else { throw .wrongLength(bytes.count) }
        self.init(unchecked: bytes)
    }

    /// Parses `sha256:<64 lowercase hex>`.
    public init(parsing text: some StringProtocol) throws(DigestError) {
        let utf8 = Array(text.utf8)
        let prefix = Array(Digest.prefix.utf8)
        guard utf8.count >= prefix.count, Array(utf8[0..<prefix.count]) == prefix else {
            if let colon = utf8.firstIndex(of: UInt8(ascii: ":")) {
                throw .unsupportedAlgorithm(String(decoding: utf8[..<colon], as: UTF8.self))
            }
            throw .malformed(String(text), "missing the \"sha256:\" prefix")
        }
        let hex = utf8[prefix.count...]
        guard hex.count == 64 else {
            throw .malformed(String(text), "expected 64 hex digits after \"sha256:\", found \(hex.count)")
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(32)
        var it = hex.makeIterator()
        while let hi = it.next(), let lo = it.next() {
            guard let h = Digest.lowerHexValue(hi), let l = Digest.lowerHexValue(lo) else {
                throw .malformed(String(text), "only lowercase hex digits 0-9a-f may follow \"sha256:\"")
            }
            bytes.append(h << 4 | l)
        }
        self.init(unchecked: bytes)
    }

    public init?(_ description: String) { try? self.init(parsing: description) }

    /// SHA-256 of `bytes`.
    public static func of<Bytes: Collection>(_ bytes: Bytes) -> Digest where Bytes.Element == UInt8 {
        var h = SHA256Hasher()
        h.update(bytes)
        return h.finalize()
    }

    /// SHA-256 of raw memory.
    public static func of(_ bytes: UnsafeRawBufferPointer) -> Digest {
        var h = SHA256Hasher()
        h.update(bytes)
        return h.finalize()
    }

    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w0 >> UInt64(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w1 >> UInt64(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w2 >> UInt64(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w3 >> UInt64(shift))) }
        return out
    }

    /// The 64 lowercase hex digits without the algorithm prefix (the file name under `blobs/sha256/`).
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xf)]) }
        return String(decoding: out, as: UTF8.self)
    }

    public var description: String { Digest.prefix + hex }

    /// `sha256:` and the first 12 hex digits, for logs and tables.
    public var short: String { Digest.prefix + hex.prefix(12) }

    public static func < (a: Digest, b: Digest) -> Bool { (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3) }

    private static func lowerHexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        default: return nil
        }
    }
}

extension Digest: WireCodable {
    // Four big-endian words: the same 32 bytes as `bytes`, without building an array (membership
    // messages carry a dozen node IDs each; this is on the simulator's hottest path).
    // Written in one append (four appends of 8 bytes were ~3% of a 10,000-node simulation).
    public func encode(to writer: inout WireWriter) {
        let words = (w0.bigEndian, w1.bigEndian, w2.bigEndian, w3.bigEndian)
        withUnsafeBytes(of: words) { writer.raw($0) }
    }
    public init(from reader: inout WireReader) throws(WireError) {
        w0 = try reader.fixed(UInt64.self)
        w1 = try reader.fixed(UInt64.self)
        w2 = try reader.fixed(UInt64.self)
        w3 = try reader.fixed(UInt64.self)
    }

    /// The all-zero digest (a placeholder value that costs nothing to make).
    public static let zero = Digest(words: 0, 0, 0, 0)
    private init(words w0: UInt64, _ w1: UInt64, _ w2: UInt64, _ w3: UInt64) {
        self.w0 = w0; self.w1 = w1; self.w2 = w2; self.w3 = w3
    }
}

/// Why a digest could not be read.
public struct DigestError: Error, Hashable, CustomStringConvertible {
    private enum Kind: Hashable {
        case malformed(text: String, reason: String)
        case unsupportedAlgorithm(String)
        case wrongLength(Int)
    }
    private let kind: Kind

    static func malformed(_ text: String, _ reason: String) -> DigestError { .init(kind: .malformed(text: text, reason: reason)) }
    static func unsupportedAlgorithm(_ name: String) -> DigestError { .init(kind: .unsupportedAlgorithm(name)) }
    static func wrongLength(_ n: Int) -> DigestError { .init(kind: .wrongLength(n)) }

    public var description: String {
        switch kind {
        case .malformed(let text, let reason):
            let shown = text.count > 80 ? String(text.prefix(80)) + "…" : text
            return "malformed digest \"\(shown)\": \(reason)"
        case .unsupportedAlgorithm(let a): return "unsupported digest algorithm \"\(a)\": only sha256 is supported"
        case .wrongLength(let n): return "a raw SHA-256 digest is 32 bytes, got \(n)"
        }
    }
}
