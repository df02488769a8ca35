import Glibc
import MeshCore

/// Why a content-store operation failed. A public struct over a private enum, so cases can grow
/// without breaking callers; switch on `code`, show `description` to people.
public struct ContentStoreError: Error, CustomStringConvertible, Sendable {
    public enum Code: Hashable, Sendable {
        /// A system call failed (see `errnoCode`).
        case io
        /// The file system is full (ENOSPC / EDQUOT).
        case noSpace
        case blobNotFound
        case chunkNotFound
        /// A stored chunk does not hash to its name, or its frame is damaged.
        case corruptChunk
        /// Data does not hash to the digest it was announced with.
        case digestMismatch
        case sizeMismatch
        /// A manifest lists a chunk the store does not hold.
        case missingChunk
        /// A manifest (or delta) could not be decoded or is inconsistent.
        case badManifest
        /// An OCI image layout is malformed (a bad descriptor, missing blob, bad JSON).
        case badOCILayout
        /// A path would escape the directory it belongs in.
        case pathTraversal
        case compression
        /// The blob alone is larger than the store's capacity.
        case capacityExceeded
        case storeLocked
        case notAStore
        case invalidArgument
    }

    private enum Kind: Sendable {
        case io(operation: String, path: String, errno: Int32)
        case blobNotFound(Digest)
        case chunkNotFound(Digest)
        case corruptChunk(Digest, reason: String)
        case digestMismatch(what: String, expected: Digest, actual: Digest)
        case sizeMismatch(what: String, expected: UInt64, actual: UInt64)
        case missingChunk(blob: Digest, chunk: Digest)
        case badManifest(what: String, reason: String)
        case badOCILayout(what: String, reason: String)
        case pathTraversal(path: String, reason: String)
        case compression(operation: String, zstdError: String)
        case capacityExceeded(needed: UInt64, capacity: UInt64)
        case storeLocked(path: String)
        case notAStore(path: String, reason: String)
        case invalidArgument(String)
    }

    private let kind: Kind

    public var code: Code {
        switch kind {
        case .io(_, _, let e): (e == ENOSPC || e == EDQUOT) ? .noSpace : .io
        case .blobNotFound: .blobNotFound
        case .chunkNotFound: .chunkNotFound
        case .corruptChunk: .corruptChunk
        case .digestMismatch: .digestMismatch
        case .sizeMismatch: .sizeMismatch
        case .missingChunk: .missingChunk
        case .badManifest: .badManifest
        case .badOCILayout: .badOCILayout
        case .pathTraversal: .pathTraversal
        case .compression: .compression
        case .capacityExceeded: .capacityExceeded
        case .storeLocked: .storeLocked
        case .notAStore: .notAStore
        case .invalidArgument: .invalidArgument
        }
    }

    /// The errno of a failed system call, if that is what went wrong.
    public var errnoCode: Int32? {
        if case .io(_, _, let e) = kind { return e }
        return nil
    }

    /// The digest the error is about (the corrupt or missing chunk, the blob not found), if any.
    public var digest: Digest? {
        switch kind {
        case .blobNotFound(let d), .chunkNotFound(let d), .corruptChunk(let d, _): d
        case .missingChunk(_, let c): c
        case .digestMismatch(_, let expected, _): expected
        default: nil
        }
    }

    public var description: String {
        switch kind {
        case .io(let op, let path, let e):
            let text = String(cString: strerror(e))
            if e == ENOSPC || e == EDQUOT {
                return "no space left on the device holding \(path) (\(op)): free space or lower the store's capacity; nothing partial was kept"
            }
            return "\(op) \(path): \(text) (errno \(e))"
        case .blobNotFound(let d): return "blob \(d) is not in the store (add it first, or fetch it from a peer)"
        case .chunkNotFound(let d): return "chunk \(d) is not in the store"
        case .corruptChunk(let d, let why): return "chunk \(d) is corrupt: \(why); it was not served (run verify, then re-fetch the blob)"
        case .digestMismatch(let what, let expected, let actual): return "\(what) does not match its digest: expected \(expected), got \(actual)"
        case .sizeMismatch(let what, let expected, let actual): return "\(what) has the wrong size: expected \(expected) bytes, got \(actual)"
        case .missingChunk(let blob, let chunk): return "manifest of \(blob) lists chunk \(chunk), which the store does not hold"
        case .badManifest(let what, let why): return "bad manifest \(what): \(why)"
        case .badOCILayout(let what, let why): return "bad OCI image layout (\(what)): \(why)"
        case .pathTraversal(let path, let why): return "refused path \"\(path)\": \(why)"
        case .compression(let op, let z): return "zstd \(op) failed: \(z)"
        case .capacityExceeded(let needed, let cap): return "blob needs \(needed) bytes but the store's capacity is \(cap) bytes: raise --capacity"
        case .storeLocked(let path): return "store \(path) is in use by another process (lock held on \(path)/lock)"
        case .notAStore(let path, let why): return "\(path) is not a GQUIC content store: \(why)"
        case .invalidArgument(let why): return why
        }
    }

    static func io(_ operation: String, _ path: String, errno e: Int32 = Glibc.errno) -> Self { .init(kind: .io(operation: operation, path: path, errno: e)) }
    static func blobNotFound(_ d: Digest) -> Self { .init(kind: .blobNotFound(d)) }
    static func chunkNotFound(_ d: Digest) -> Self { .init(kind: .chunkNotFound(d)) }
    static func corruptChunk(_ d: Digest, _ why: String) -> Self { .init(kind: .corruptChunk(d, reason: why)) }
    static func digestMismatch(_ what: String, expected: Digest, actual: Digest) -> Self { .init(kind: .digestMismatch(what: what, expected: expected, actual: actual)) }
    static func sizeMismatch(_ what: String, expected: UInt64, actual: UInt64) -> Self { .init(kind: .sizeMismatch(what: what, expected: expected, actual: actual)) }
    static func missingChunk(blob: Digest, chunk: Digest) -> Self { .init(kind: .missingChunk(blob: blob, chunk: chunk)) }
    static func badManifest(_ what: String, _ why: String) -> Self { .init(kind: .badManifest(what: what, reason: why)) }
    static func badOCILayout(_ what: String, _ why: String) -> Self { .init(kind: .badOCILayout(what: what, reason: why)) }
    static func pathTraversal(_ path: String, _ why: String) -> Self { .init(kind: .pathTraversal(path: path, reason: why)) }
    static func compression(_ op: String, _ z: String) -> Self { .init(kind: .compression(operation: op, zstdError: z)) }
    static func capacityExceeded(needed: UInt64, capacity: UInt64) -> Self { .init(kind: .capacityExceeded(needed: needed, capacity: capacity)) }
    static func storeLocked(_ path: String) -> Self { .init(kind: .storeLocked(path: path)) }
    static func notAStore(_ path: String, _ why: String) -> Self { .init(kind: .notAStore(path: path, reason: why)) }
    static func invalidArgument(_ why: String) -> Self { .init(kind: .invalidArgument(why)) }
}
