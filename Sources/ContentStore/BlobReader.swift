import MeshCore

/// Streams any byte range of a stored blob, one verified chunk at a time: memory use is one chunk,
/// whatever the blob's size. For a tree blob the bytes are its files' contents, concatenated in entry
/// order.
///
/// ```swift
/// let reader = try store.reader(for: digest)
/// try reader.read(range: 1_000_000..<2_000_000) { piece in out.append(contentsOf: piece) }
/// ```
public struct BlobReader: Sendable {
    public let manifest: BlobManifest
    private let store: ContentStore
    private let offsets: [UInt64]

    init(store: ContentStore, manifest: BlobManifest) {
        self.store = store
        self.manifest = manifest
        self.offsets = manifest.chunkOffsets
    }

    public var size: UInt64 { manifest.size }

    /// Calls `body` with consecutive pieces of `range` (clamped to the blob). Each piece comes from a
    /// chunk that was read and verified just before; a corrupt chunk throws `.corruptChunk` and nothing
    /// of it is passed on.
    public func read(range: Range<UInt64>, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try read(range: range, hashingChunks: true, body)
    }

    /// `read`, optionally without hashing each chunk: only for a caller that hashes the whole range
    /// and checks it against a digest it trusts before anything it wrote is used (export).
    func read(range: Range<UInt64>, hashingChunks: Bool, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let lower = min(range.lowerBound, size), upper = min(range.upperBound, size)
        guard lower < upper else { return }
        // The chunk holding `lower`: the last start offset ≤ lower.
        var lo = 0, hi = manifest.chunks.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if offsets[mid] <= lower { lo = mid } else { hi = mid - 1 }
        }
        var i = lo
        while i < manifest.chunks.count && offsets[i] < upper {
            let c = manifest.chunks[i]
            let raw = hashingChunks ? try store.readChunk(c.digest) : try store.readChunkUnhashed(c.digest)
            guard raw.count == Int(c.length) else {
                throw ContentStoreError.corruptChunk(c.digest, "it holds \(raw.count) bytes, the manifest says \(c.length)")
            }
            let from = Int(max(lower, offsets[i]) - offsets[i])
            let to = Int(min(upper, offsets[i + 1]) - offsets[i])
            try raw.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[from..<to])) }
            i += 1
        }
    }

    /// The bytes of `range` in one array (for small ranges).
    public func bytes(_ range: Range<UInt64>) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Int(min(range.upperBound, size) - min(range.lowerBound, size)))
        try read(range: range) { out.append(contentsOf: $0) }
        return out
    }
}

extension ContentStore {
    /// A range reader for a stored blob (marks the blob as used for LRU).
    public func reader(for digest: Digest) throws -> BlobReader {
        let m = try manifest(for: digest)
        touch(digest)
        return BlobReader(store: self, manifest: m)
    }
}
