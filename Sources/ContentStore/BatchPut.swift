import MeshCore

extension ContentStore {
    /// Stores many chunks received from elsewhere, each checked against its digest first. Durable
    /// when it returns. Meant for network receives, where one flush per batch instead of one per
    /// chunk is what keeps a fast transfer from waiting on the disk. Returns how many were new.
    @discardableResult
    public func putChunks(_ chunks: [(digest: Digest, bytes: [UInt8])]) throws -> Int {
        var added = 0
        for c in chunks where try putChunk(c.bytes, digest: c.digest) { added += 1 }
        return added
    }
}
