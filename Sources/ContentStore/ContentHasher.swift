import MeshCore

/// The SHA-256 of a file blob's content, taken while its chunks arrive instead of by reading the whole
/// blob back from the store at commit, when every peer of a broadcast finishes at once and the
/// machine's CPU is the scarcest.
///
/// SHA-256 runs front to back, so it hashes the longest run from the start whose bytes are at hand:
/// `advance` feeds chunk `next`, then `next + 1`, … taking each from the caller's memory (chunks it
/// has just received and verified) or else from the store, and stops at the first chunk that is in
/// neither. A transfer calls it after each batch it writes. In a broadcast the seed sends its chunks
/// roughly in order (`SwarmCore`'s unique-first serving walks a cursor), so the hashed run follows
/// the transfer and only the last chunks are left for the commit.
///
/// `ContentStore.commitBlob(_:hashed:)` uses the result when it covers exactly the blob's chunk list
/// and equals the blob's digest, and hashes the blob itself otherwise: a partial or wrong result
/// costs time, never correctness.
///
/// Not thread-safe: one thread (or serial queue) advances it at a time.
public final class BlobContentHasher: @unchecked Sendable {
    public let blob: Digest
    let chunks: [ChunkRef]
    private var hasher = SHA256Hasher()
    /// Index of the next chunk to hash; `chunks.count` when done.
    public private(set) var next = 0
    /// The content's SHA-256, once every chunk has been hashed.
    public private(set) var result: Digest?
    /// Bytes hashed from the caller's memory, and read back from the store.
    public private(set) var bytesFromMemory = 0
    public private(set) var bytesFromStore = 0
    public var bytesHashed: Int { bytesFromMemory + bytesFromStore }

    public init(_ manifest: BlobManifest) {
        blob = manifest.digest
        chunks = manifest.chunks
    }

    /// Hashes chunks from `next` on while their bytes are in `memory` or in `store`. Returns true when
    /// the whole content is hashed.
    @discardableResult
    public func advance(store: ContentStore, memory: (Digest) -> [UInt8]?) -> Bool {
        while next < chunks.count {
            let ref = chunks[next]
            // Memory holds verified chunks by digest (the caller's); a wrong one only makes the result
            // differ from the blob's digest, and the commit then hashes the blob itself.
            if let bytes = memory(ref.digest), bytes.count == Int(ref.length) {
                bytes.withUnsafeBytes { hasher.update($0) }
                bytesFromMemory += bytes.count
            } else if store.hasChunk(ref.digest), let raw = try? store.readChunkUnhashed(ref.digest), raw.count == Int(ref.length) {
                // Unhashed, as `hashOfChunks` reads at commit: the whole-content digest is the check.
                raw.withUnsafeBytes { hasher.update($0) }
                bytesFromStore += raw.count
            } else {
                break
            }
            next += 1
        }
        if next == chunks.count, result == nil { result = hasher.finalize() }
        return result != nil
    }

    /// The content digest if this hasher covered exactly `manifest`'s chunks and finished.
    func digest(for manifest: BlobManifest) -> Digest? {
        guard let result, blob == manifest.digest, chunks == manifest.chunks else { return nil }
        return result
    }
}
