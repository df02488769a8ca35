/// GQUIC's binary wire codec.
///
/// - Integers are QUIC variable-length integers (RFC 9000 §16): 1, 2, 4 or 8 bytes, up to 2^62−1.
/// - Byte strings, strings and arrays carry a varint length or count first.
/// - The decoder checks every length against the field's limit *and* against the bytes that remain
///   before it allocates anything, so a hostile length costs nothing; every failure is a `WireError`.
/// - A message declares its fields once (`WireFields.wireFields`), and that one declaration both
///   encodes and decodes it.

public enum VarInt {
    /// The largest value a QUIC varint can carry: 2^62 − 1.
    public static let max: UInt64 = (1 << 62) - 1

    /// How many bytes `value` takes on the wire.
    @inline(__always)
    public static func encodedLength(_ value: UInt64) -> Int {
        switch value {
        case ..<(1 << 6): return 1
        case ..<(1 << 14): return 2
        case ..<(1 << 30): return 4
        default: return 8
        }
    }
}

/// Appends wire-format data to a growing byte buffer. Encoding cannot fail.
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(reservingCapacity capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public var count: Int { bytes.count }

    /// Makes room for at least `n` more bytes (a message that knows its size avoids regrowing).
    public mutating func reserveCapacity(_ n: Int) { bytes.reserveCapacity(bytes.count + n) }

    /// Appends a QUIC varint. Values above `VarInt.max` are a programming error and trap.
    @inline(__always)
    public mutating func varint(_ value: UInt64) {
        precondition(value <= VarInt.max, "varint value \(value) exceeds 2^62-1")
        switch VarInt.encodedLength(value) {
        case 1: bytes.append(UInt8(value))
        case 2:
            bytes.append(0x40 | UInt8(value >> 8)); bytes.append(UInt8(truncatingIfNeeded: value))
        case 4:
            fixed(UInt32(truncatingIfNeeded: value) | 0x8000_0000)
        default:
            fixed(value | 0xC000_0000_0000_0000)
        }
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }

    /// A fixed-width big-endian integer.
    public mutating func fixed<T: FixedWidthInteger>(_ v: T) {
        var be = v.bigEndian
        withUnsafeBytes(of: &be) { bytes.append(contentsOf: $0) }
    }

    /// Bytes with no length prefix (for fields whose size the format fixes, such as digests).
    public mutating func raw(_ data: some Collection<UInt8>) { bytes.append(contentsOf: data) }

    /// A varint length, then the bytes.
    public mutating func lengthPrefixed(_ data: some Collection<UInt8>) {
        varint(UInt64(data.count))
        bytes.append(contentsOf: data)
    }

    public mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in varint(UInt64(utf8.count)); bytes.append(contentsOf: utf8) }
    }

    public mutating func value<T: WireCodable>(_ v: T) { v.encode(to: &self) }
}

/// Reads wire-format data from a byte buffer. Every read is bounds-checked and throws `WireError`.
public struct WireReader: Sendable {
    private let buffer: [UInt8]
    public private(set) var offset: Int
    private let end: Int

    public init(_ bytes: [UInt8]) {
        buffer = bytes
        offset = 0
        end = bytes.count
    }

    /// Reads from `bytes[range]` (no copy of the array is made).
    public init(_ bytes: [UInt8], range: Range<Int>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= bytes.count)
        buffer = bytes
        offset = range.lowerBound
        end = range.upperBound
    }

    public var remaining: Int { end - offset }
    public var isAtEnd: Bool { offset == end }

    @inline(__always)
    private mutating func need(_ n: Int) throws(WireError) {
        guard n <= remaining else { throw .truncated(needed: n, available: remaining, at: offset) }
    }

    public mutating func u8() throws(WireError) -> UInt8 {
        try need(1)
        defer { offset += 1 }
        return buffer[offset]
    }

    public mutating func varint() throws(WireError) -> UInt64 {
        try need(1)
        let first = buffer[offset]
        let length = 1 << Int(first >> 6)
        try need(length)
        var value = UInt64(first & 0x3F)
        for i in 1..<length { value = value << 8 | UInt64(buffer[offset + i]) }
        offset += length
        return value
    }

    /// A varint that must fit `T` and be at most `max`. (Inlinable so callers get it specialised for
    /// their `T`: unspecialised, its generic conversions were ~10% of a 10,000-node simulation.)
    @inlinable
    public mutating func varint<T: FixedWidthInteger & UnsignedInteger>(as: T.Type, max: T = .max) throws(WireError) -> T {
        let at = offset
        let v = try varint()
        guard v <= UInt64(max) else { throw .valueOutOfRange(v, limit: UInt64(max), at: at) }
        return T(v)
    }

    public mutating func fixed<T: FixedWidthInteger>(_: T.Type) throws(WireError) -> T {
        let size = MemoryLayout<T>.size
        try need(size)
        let at = offset
        let raw = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: T.self) }
        offset += size
        return T(bigEndian: raw)
    }

    public mutating func raw(count: Int) throws(WireError) -> [UInt8] {
        try need(count)
        defer { offset += count }
        return Array(buffer[offset..<offset + count])
    }

    /// Reads a varint length, refuses it if it is above `maxLength` or beyond the input, and only
    /// then copies the bytes.
    public mutating func lengthPrefixed(maxLength: Int) throws(WireError) -> [UInt8] {
        let n = try length(max: maxLength, unitSize: 1)
        return try raw(count: n)
    }

    /// Like `lengthPrefixed` but returns the range in the underlying buffer without copying.
    public mutating func lengthPrefixedRange(maxLength: Int) throws(WireError) -> Range<Int> {
        let n = try length(max: maxLength, unitSize: 1)
        defer { offset += n }
        return offset..<offset + n
    }

    public mutating func string(maxLength: Int) throws(WireError) -> String {
        let at = offset
        let range = try lengthPrefixedRange(maxLength: maxLength)
        // ASCII (host names, addresses, IDs: nearly every string on the wire) is valid UTF-8 as it
        // is and takes `String(decoding:)`'s direct path; the generic validation of a slice was a
        // tenth of decoding a membership record. Anything else is validated.
        let s: String? = buffer.withUnsafeBufferPointer { all in
            let bytes = UnsafeBufferPointer(rebasing: all[range])
            var high: UInt8 = 0
            for b in bytes { high |= b }
            return high < 0x80 ? String(decoding: bytes, as: UTF8.self) : String(validating: bytes, as: UTF8.self)
        }
        guard let s else { throw .malformed("string is not valid UTF-8", at: at) }
        return s
    }

    /// Reads a length or count and checks it before anything is allocated: it must be at most `max`,
    /// and `count × unitSize` must fit in what remains of the input.
    public mutating func length(max: Int, unitSize: Int) throws(WireError) -> Int {
        let at = offset
        let raw = try varint()
        guard raw <= UInt64(max) else { throw .lengthOverLimit(raw, limit: max, at: at) }
        let n = Int(raw)
        guard n.multipliedReportingOverflow(by: Swift.max(unitSize, 1)).partialValue <= remaining,
              n <= remaining / Swift.max(unitSize, 1)
        else { throw .truncated(needed: n * Swift.max(unitSize, 1), available: remaining, at: at) }
        return n
    }

    public mutating func value<T: WireCodable>(_: T.Type = T.self) throws(WireError) -> T {
        try T(from: &self)
    }

    /// Throws unless every byte was consumed (a message must not carry trailing garbage).
    public func expectEnd() throws(WireError) {
        guard isAtEnd else { throw .trailingBytes(remaining, at: offset) }
    }

    /// The byte offset where the next read starts (for error messages).
    public var position: Int { offset }
}

/// A value with a binary wire form.
public protocol WireCodable {
    func encode(to writer: inout WireWriter)
    init(from reader: inout WireReader) throws(WireError)
}

extension WireCodable {
    /// This value's wire bytes.
    public func wireBytes() -> [UInt8] {
        var w = WireWriter()
        encode(to: &w)
        return w.bytes
    }

    /// Decodes a value that must occupy `bytes` exactly.
    public init(wireBytes bytes: [UInt8]) throws(WireError) {
        var r = WireReader(bytes)
        self = try Self(from: &r)
        try r.expectEnd()
    }
}

/// A message whose fields are declared once, in `wireFields`, for both directions.
///
/// ```swift
/// struct Hello: WireFields {
///     var node = NodeID.zero
///     var port: UInt16 = 0
///     var name = ""
///     var chunks: [Digest] = []
///     mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
///         try c.value(&node)
///         try c.uint(&port)
///         try c.string(&name, max: 255)
///         try c.array(&chunks, max: 4096)
///     }
/// }
/// ```
public protocol WireFields: WireCodable {
    /// An empty value that decoding overwrites field by field.
    init()
    mutating func wireFields(_ coder: inout some WireCoder) throws(WireError)
}

extension WireFields {
    public func encode(to writer: inout WireWriter) {
        var copy = self
        var coder = WireEncodingCoder(writer: writer)
        writer = WireWriter() // hand the buffer over so appends do not copy it
        do { try copy.wireFields(&coder) } catch { preconditionFailure("encoding cannot fail: \(error)") }
        writer = coder.writer
    }

    public init(from reader: inout WireReader) throws(WireError) {
        self.init()
        var coder = WireDecodingCoder(reader: reader)
        try wireFields(&coder)
        reader = coder.reader
    }
}

/// One pass over a message's fields: writes them when encoding, reads them when decoding.
public protocol WireCoder {
    var isDecoding: Bool { get }
    mutating func varint(_ v: inout UInt64) throws(WireError)
    mutating func uint<T: FixedWidthInteger & UnsignedInteger>(_ v: inout T) throws(WireError)
    mutating func int<T: FixedWidthInteger & SignedInteger>(_ v: inout T) throws(WireError)
    mutating func bool(_ v: inout Bool) throws(WireError)
    mutating func double(_ v: inout Double) throws(WireError)
    mutating func bytes(_ v: inout [UInt8], max: Int) throws(WireError)
    mutating func string(_ v: inout String, max: Int) throws(WireError)
    mutating func value<T: WireCodable>(_ v: inout T) throws(WireError)
    mutating func optional<T: WireCodable>(_ v: inout T?) throws(WireError)
    mutating func array<T: WireCodable>(_ v: inout [T], max: Int) throws(WireError)
}

/// Zig-zag maps signed to unsigned so small negative numbers stay short.
@inline(__always) func zigzag(_ v: Int64) -> UInt64 { UInt64(bitPattern: (v << 1) ^ (v >> 63)) }
@inline(__always) func unzigzag(_ v: UInt64) -> Int64 { Int64(bitPattern: v >> 1) ^ -Int64(bitPattern: v & 1) }

public struct WireEncodingCoder: WireCoder {
    public var writer: WireWriter
    public var isDecoding: Bool { false }
    public init(writer: WireWriter) { self.writer = writer }

    public mutating func varint(_ v: inout UInt64) throws(WireError) { writer.varint(v) }
    public mutating func uint<T: FixedWidthInteger & UnsignedInteger>(_ v: inout T) throws(WireError) { writer.varint(UInt64(v)) }
    public mutating func int<T: FixedWidthInteger & SignedInteger>(_ v: inout T) throws(WireError) {
        let z = zigzag(Int64(v))
        precondition(z <= VarInt.max, "signed value \(v) does not fit a varint")
        writer.varint(z)
    }
    public mutating func bool(_ v: inout Bool) throws(WireError) { writer.u8(v ? 1 : 0) }
    public mutating func double(_ v: inout Double) throws(WireError) { writer.fixed(v.bitPattern) }
    public mutating func bytes(_ v: inout [UInt8], max: Int) throws(WireError) {
        precondition(v.count <= max, "encoding \(v.count) bytes into a field limited to \(max)")
        writer.lengthPrefixed(v)
    }
    public mutating func string(_ v: inout String, max: Int) throws(WireError) {
        precondition(v.utf8.count <= max, "encoding a \(v.utf8.count)-byte string into a field limited to \(max)")
        writer.string(v)
    }
    public mutating func value<T: WireCodable>(_ v: inout T) throws(WireError) { v.encode(to: &writer) }
    public mutating func optional<T: WireCodable>(_ v: inout T?) throws(WireError) {
        if let value = v { writer.u8(1); value.encode(to: &writer) } else { writer.u8(0) }
    }
    public mutating func array<T: WireCodable>(_ v: inout [T], max: Int) throws(WireError) {
        precondition(v.count <= max, "encoding \(v.count) elements into a field limited to \(max)")
        writer.varint(UInt64(v.count))
        for e in v { e.encode(to: &writer) }
    }
}

public struct WireDecodingCoder: WireCoder {
    public var reader: WireReader
    public var isDecoding: Bool { true }
    public init(reader: WireReader) { self.reader = reader }

    public mutating func varint(_ v: inout UInt64) throws(WireError) { v = try reader.varint() }
    public mutating func uint<T: FixedWidthInteger & UnsignedInteger>(_ v: inout T) throws(WireError) {
        v = try reader.varint(as: T.self)
    }
    public mutating func int<T: FixedWidthInteger & SignedInteger>(_ v: inout T) throws(WireError) {
        let at = reader.position
        let wide = unzigzag(try reader.varint())
        guard let narrow = T(exactly: wide) else { throw .valueOutOfRange(UInt64(bitPattern: wide), limit: UInt64(T.max), at: at) }
        v = narrow
    }
    public mutating func bool(_ v: inout Bool) throws(WireError) {
        let at = reader.position
        switch try reader.u8() {
        case 0: v = false
        case 1: v = true
        case let b: throw .malformed("boolean byte must be 0 or 1, got \(b)", at: at)
        }
    }
    public mutating func double(_ v: inout Double) throws(WireError) { v = Double(bitPattern: try reader.fixed(UInt64.self)) }
    public mutating func bytes(_ v: inout [UInt8], max: Int) throws(WireError) { v = try reader.lengthPrefixed(maxLength: max) }
    public mutating func string(_ v: inout String, max: Int) throws(WireError) { v = try reader.string(maxLength: max) }
    public mutating func value<T: WireCodable>(_ v: inout T) throws(WireError) { v = try T(from: &reader) }
    public mutating func optional<T: WireCodable>(_ v: inout T?) throws(WireError) {
        let at = reader.position
        switch try reader.u8() {
        case 0: v = nil
        case 1: v = try T(from: &reader)
        case let b: throw .malformed("optional tag must be 0 or 1, got \(b)", at: at)
        }
    }
    public mutating func array<T: WireCodable>(_ v: inout [T], max: Int) throws(WireError) {
        // Every element takes at least one byte, so the count is also bounded by what remains.
        let n = try reader.length(max: max, unitSize: 1)
        var out: [T] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try T(from: &reader)) }
        v = out
    }
}

// Integers and strings as standalone values, so arrays of them work.
extension UInt64: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.varint(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.varint() }
}
extension UInt32: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.varint(UInt64(self)) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.varint(as: UInt32.self) }
}
extension String: WireCodable {
    /// Standalone strings (in arrays) are limited to 64 KiB.
    public static let wireMaxLength = 65_536
    public func encode(to writer: inout WireWriter) { writer.string(self) }
    public init(from reader: inout WireReader) throws(WireError) { self = try reader.string(maxLength: String.wireMaxLength) }
}

/// Why bytes could not be decoded. Carries the byte offset where decoding stopped.
public struct WireError: Error, Hashable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        case truncated, lengthOverLimit, valueOutOfRange, malformed, trailingBytes, unknownType
    }
    private enum Kind: Hashable {
        case truncated(needed: Int, available: Int)
        case lengthOverLimit(UInt64, limit: Int)
        case valueOutOfRange(UInt64, limit: UInt64)
        case malformed(String)
        case trailingBytes(Int)
        case unknownType(UInt64)
    }
    private let kind: Kind
    /// Byte offset in the input where the problem was found.
    public let offset: Int

    public var code: Code {
        switch kind {
        case .truncated: .truncated
        case .lengthOverLimit: .lengthOverLimit
        case .valueOutOfRange: .valueOutOfRange
        case .malformed: .malformed
        case .trailingBytes: .trailingBytes
        case .unknownType: .unknownType
        }
    }

    public static func truncated(needed: Int, available: Int, at: Int) -> WireError { .init(kind: .truncated(needed: needed, available: available), offset: at) }
    public static func lengthOverLimit(_ n: UInt64, limit: Int, at: Int) -> WireError { .init(kind: .lengthOverLimit(n, limit: limit), offset: at) }
    public static func valueOutOfRange(_ v: UInt64, limit: UInt64, at: Int) -> WireError { .init(kind: .valueOutOfRange(v, limit: limit), offset: at) }
    public static func malformed(_ reason: String, at: Int) -> WireError { .init(kind: .malformed(reason), offset: at) }
    public static func trailingBytes(_ n: Int, at: Int) -> WireError { .init(kind: .trailingBytes(n), offset: at) }
    public static func unknownType(_ t: UInt64, at: Int) -> WireError { .init(kind: .unknownType(t), offset: at) }

    public var description: String {
        switch kind {
        case .truncated(let needed, let available): "truncated input at byte \(offset): needed \(needed) bytes, \(available) left"
        case .lengthOverLimit(let n, let limit): "length \(n) at byte \(offset) exceeds the limit of \(limit)"
        case .valueOutOfRange(let v, let limit): "value \(v) at byte \(offset) exceeds the limit of \(limit)"
        case .malformed(let why): "malformed input at byte \(offset): \(why)"
        case .trailingBytes(let n): "\(n) unexpected trailing bytes at byte \(offset)"
        case .unknownType(let t): "unknown message type \(t) at byte \(offset)"
        }
    }
}
