import MeshCore

extension ContentStore {
    /// Stores many chunks received from elsewhere, each checked against its digest first, in one pack
    /// session: one pack `fdatasync` and one index append for the whole batch instead of one per
    /// chunk, which is what keeps a fast network transfer from waiting on the disk. Durable and
    /// visible when it returns; on any failure nothing of the batch stays. Returns how many were new.
    @discardableResult
    public func putChunks(_ chunks: [(digest: Digest, bytes: [UInt8])]) throws -> Int {
        var verified: [VerifiedChunk] = []
        verified.reserveCapacity(chunks.count)
        for c in chunks {
            try ContentStore.checkChunkSize(c.bytes.count)
            guard let v = VerifiedChunk(c.bytes, expected: c.digest) else {
                throw ContentStoreError.digestMismatch("chunk", expected: c.digest, actual: Digest.of(c.bytes))
            }
            verified.append(v)
        }
        return try putChunks(verified)
    }

    /// `putChunks` for chunks already hashed by whoever received them (the swarm verifies every chunk
    /// on arrival): the same batch write without a second SHA-256 pass. A `VerifiedChunk` can only be
    /// made by hashing its bytes, so nothing unverified goes in this way either.
    @discardableResult
    public func putChunks(_ chunks: [VerifiedChunk]) throws -> Int {
        for c in chunks { try ContentStore.checkChunkSize(c.bytes.count) }
        for c in chunks { markPut(c.digest) }   // safe from garbage collection until its blob commits
        let fresh = chunks.filter { !hasChunk($0.digest) }
        guard !fresh.isEmpty else { return 0 }
        let c = compressors.take()
        defer { compressors.give(c) }
        var scratch = [UInt8]()
        // Buffered, not O_DIRECT: these chunks are read back soon — served to other peers, hashed
        // at commit, exported — and then come from the page cache instead of the disk.
        let session = PackSession(store: self, direct: false)
        return try withSession(session) {
            var added = 0
            for chunk in fresh where try chunk.bytes.withUnsafeBytes({
                try storeChunk($0, digest: chunk.digest, compressor: c, scratch: &scratch, session: session)
            }) > 0 {
                added += 1
            }
            return added
        }
    }

    static func checkChunkSize(_ count: Int) throws {
        guard count > 0, count <= ChunkingParameters.largestAllowedChunk else {
            throw ContentStoreError.invalidArgument("a chunk must be 1…\(ChunkingParameters.largestAllowedChunk) bytes, got \(count)")
        }
    }
}
