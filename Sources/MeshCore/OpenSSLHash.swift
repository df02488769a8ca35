import COpenSSLCrypto

/// The one place MeshCore touches OpenSSL's EVP digest API.
///
/// The SHA-256 implementation is fetched once (`EVP_MD_fetch`) and reused: OpenSSL 3 otherwise looks
/// it up in the provider table on every init, which costs more than hashing a small chunk.
/// An `EVP_MD` is immutable once fetched and OpenSSL documents it as safe to share between threads.
nonisolated(unsafe) private let sha256Implementation: OpaquePointer = {
    guard let md = EVP_MD_fetch(nil, "SHA256", nil) else {
        fatalError("OpenSSL has no SHA256 implementation: libcrypto is broken (\(OpenSSLError.drain()))")
    }
    return md
}()

/// Streaming SHA-256. Feed any number of pieces with `update`, then `finalize` once.
///
/// ```swift
/// var h = SHA256Hasher()
/// h.update(firstPiece); h.update(secondPiece)
/// let digest = h.finalize()
/// ```
public struct SHA256Hasher: ~Copyable {
    private let ctx: OpaquePointer

    public init() {
        guard let ctx = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed: out of memory") }
        self.ctx = ctx
        guard EVP_DigestInit_ex(ctx, sha256Implementation, nil) == 1 else {
            fatalError("EVP_DigestInit_ex(SHA256) failed: \(OpenSSLError.drain())")
        }
    }

    deinit { EVP_MD_CTX_free(ctx) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        EVP_DigestUpdate(ctx, base, bytes.count)
    }

    public mutating func update<Bytes: Collection>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        let done: Void? = bytes.withContiguousStorageIfAvailable { update(UnsafeRawBufferPointer($0)) }
        if done == nil { Array(bytes).withUnsafeBytes { update($0) } }
    }

    /// Finishes the hash and resets the hasher so it can be reused for a new input.
    public mutating func finalize() -> Digest {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &out, &len)
        EVP_DigestInit_ex(ctx, sha256Implementation, nil)
        return Digest(unchecked: out)
    }
}

/// Errors reported by OpenSSL, with its packed error code (`ERR_get_error`).
enum OpenSSLError {
    /// Drains OpenSSL's thread-local error queue into one readable line.
    static func drain() -> String {
        var parts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buf = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buf, buf.count)
            parts.append(String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return parts.isEmpty ? "no OpenSSL error queued" : parts.joined(separator: "; ")
    }

    /// The most recent packed error code, leaving the queue empty.
    static func lastCode() -> UInt {
        var last: UInt = 0
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            last = code
        }
        return last
    }
}
