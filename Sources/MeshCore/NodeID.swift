/// A node's identity on the mesh: the SHA-256 of its Ed25519 public key.
///
/// Text form: 52 Crockford base32 digits of the 32 bytes, then 2 check digits, lowercase, grouped
/// for reading (`gq1-` prefix, dashes every 6). Parsing ignores case and dashes, reads the Crockford
/// look-alikes (`o`→`0`, `i`/`l`→`1`), and rejects a mistyped ID by its check digits (every single
/// substitution and every adjacent transposition is caught).
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    /// The 32 bytes, reusing `Digest`'s compact storage.
    public let digest: Digest

    public static let textPrefix = "gq1"

    public init(publicKey: [UInt8]) { digest = Digest.of(publicKey) }

    /// Wraps 32 raw bytes (for example off the wire).
    public init(rawBytes: [UInt8]) throws(NodeIDError) {
        guard rawBytes.count == 32 else { throw .wrongLength(rawBytes.count) }
        digest = Digest(unchecked: rawBytes)
    }

    public init(digest: Digest) { self.digest = digest }

    public var bytes: [UInt8] { digest.bytes }

    public static func < (a: NodeID, b: NodeID) -> Bool { a.digest < b.digest }

    /// The full, checkable text form.
    public var description: String {
        let body = Base32.encode(bytes) + NodeID.checkDigits(bytes)
        var grouped = NodeID.textPrefix
        for (i, c) in body.enumerated() {
            if i % 6 == 0 { grouped.append("-") }
            grouped.append(c)
        }
        return grouped
    }

    /// The first 10 digits: enough to tell nodes apart in a table or a log line.
    public var short: String { String(Base32.encode(bytes).prefix(10)) }

    public init?(_ description: String) { try? self.init(parsing: description) }

    public init(parsing text: String) throws(NodeIDError) {
        var s = Substring(text.lowercased())
        if s.hasPrefix(NodeID.textPrefix) { s = s.dropFirst(NodeID.textPrefix.count) }
        let digits = s.filter { $0 != "-" && $0 != " " }
        guard digits.count == 54 else { throw .malformed(text, "expected 54 base32 digits, found \(digits.count)") }
        guard let bytes = Base32.decode(String(digits.prefix(52)), byteCount: 32) else {
            throw .malformed(text, "contains a character that is not a base32 digit")
        }
        let check = String(digits.suffix(2)).map { Base32.canonical($0) }
        guard String(check.compactMap { $0 }) == NodeID.checkDigits(bytes) else {
            throw .malformed(text, "check digits do not match (a typo?)")
        }
        digest = Digest(unchecked: bytes)
    }

    /// Two check digits: Σ (i+1)·dᵢ mod 1021 over the 52 base32 digits. 1021 is prime and larger than
    /// every weight and every digit difference, so any single mistyped digit and any swap of two adjacent different
    /// digits changes the sum: both are always caught.
    private static func checkDigits(_ bytes: [UInt8]) -> String {
        var sum = 0
        for (i, c) in Base32.encode(bytes).enumerated() { sum = (sum + (i + 1) * Base32.value(c)!) % 1021 }
        return String([Base32.alphabet[sum >> 5], Base32.alphabet[sum & 31]])
    }
}

extension NodeID: WireCodable {
    public func encode(to writer: inout WireWriter) { digest.encode(to: &writer) }
    public init(from reader: inout WireReader) throws(WireError) { digest = try Digest(from: &reader) }
}

/// Crockford base32 (lowercase), no padding.
enum Base32 {
    static let alphabet: [Character] = Array("0123456789abcdefghjkmnpqrstvwxyz")

    static func encode(_ bytes: [UInt8]) -> String {
        var out = ""
        var buffer = 0, bits = 0
        for b in bytes {
            buffer = buffer << 8 | Int(b); bits += 8
            while bits >= 5 { bits -= 5; out.append(alphabet[(buffer >> bits) & 31]) }
            buffer &= (1 << bits) - 1
        }
        if bits > 0 { out.append(alphabet[(buffer << (5 - bits)) & 31]) }
        return out
    }

    /// The value of a digit, folding look-alikes; nil for a non-digit.
    static func value(_ c: Character) -> Int? {
        switch c {
        case "o": return 0
        case "i", "l": return 1
        default: return alphabet.firstIndex(of: c)
        }
    }

    static func canonical(_ c: Character) -> Character? { value(c).map { alphabet[$0] } }

    static func decode(_ text: String, byteCount: Int) -> [UInt8]? {
        var out = [UInt8]()
        var buffer = 0, bits = 0
        for c in text {
            guard let v = value(c) else { return nil }
            buffer = buffer << 5 | v; bits += 5
            if bits >= 8 { bits -= 8; out.append(UInt8((buffer >> bits) & 0xff)); buffer &= (1 << bits) - 1 }
        }
        // Leftover padding bits must be zero, or two spellings would name the same bytes.
        return out.count == byteCount && buffer == 0 ? out : nil
    }
}

public struct NodeIDError: Error, Hashable, CustomStringConvertible {
    private enum Kind: Hashable { case malformed(String, String), wrongLength(Int) }
    private let kind: Kind
    static func malformed(_ text: String, _ why: String) -> NodeIDError { .init(kind: .malformed(text, why)) }
    static func wrongLength(_ n: Int) -> NodeIDError { .init(kind: .wrongLength(n)) }
    public var description: String {
        switch kind {
        case .malformed(let text, let why): "malformed node ID \"\(text.prefix(80))\": \(why)"
        case .wrongLength(let n): "a raw node ID is 32 bytes, got \(n)"
        }
    }
}
