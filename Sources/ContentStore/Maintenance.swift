import Glibc
import MeshCore

/// What `verify` found. `isHealthy` is false when anything is corrupt or missing; orphaned chunks
/// (left by an interrupted import, reclaimable by `collectGarbage`) are reported but are not damage.
public struct VerifyReport: Sendable, CustomStringConvertible {
    public struct Problem: Sendable, CustomStringConvertible {
        public let digest: Digest
        public let reason: String
        /// Blobs that list this chunk (for a corrupt or missing chunk).
        public let affectedBlobs: [Digest]
        public var description: String {
            affectedBlobs.isEmpty ? "\(digest): \(reason)" : "\(digest): \(reason) (used by \(affectedBlobs.map(\.short).joined(separator: ", ")))"
        }
    }
    public var chunksChecked = 0
    public var blobsChecked = 0
    public var corruptChunks: [Problem] = []
    public var missingChunks: [Problem] = []
    public var badManifests: [Problem] = []
    public var orphanedChunks: [Digest] = []
    /// Pack index records found damaged when the store was opened (their chunks are lost).
    public var damagedIndexes: [String] = []
    /// What `repair` deleted (corrupt chunks, orphans, unreadable manifests).
    public var removed: [String] = []

    public var isHealthy: Bool { corruptChunks.isEmpty && missingChunks.isEmpty && badManifests.isEmpty && damagedIndexes.isEmpty }

    public var description: String {
        var lines = ["checked \(blobsChecked) blobs, \(chunksChecked) chunks"]
        for p in corruptChunks { lines.append("CORRUPT chunk \(p)") }
        for p in missingChunks { lines.append("MISSING chunk \(p)") }
        for p in badManifests { lines.append("BAD manifest \(p)") }
        for d in damagedIndexes { lines.append("DAMAGED index: \(d)") }
        if !orphanedChunks.isEmpty { lines.append("\(orphanedChunks.count) orphaned chunks (not referenced by any blob; reclaimable)") }
        for r in removed { lines.append("removed \(r)") }
        lines.append(isHealthy ? "store is healthy" : "store has damage: re-fetch or re-add the blobs named above")
        return lines.joined(separator: "\n")
    }
}

extension ContentStore {
    /// Every stored chunk digest.
    public func chunkDigests() throws -> [Digest] {
        state.withLock { Array(index.keys) }.sorted()
    }

    /// fsck: decodes and re-hashes every chunk, decodes every manifest and checks its chunks are
    /// present, and lists chunks no manifest references. With `repair`, deletes corrupt chunks (so the
    /// blobs using them can be re-fetched), orphaned chunks and undecodable manifests.
    public func verify(repair: Bool = false, progress: ProgressHandler? = nil) throws -> VerifyReport {
        var report = VerifyReport()
        report.damagedIndexes = packDamage
        var users: [Digest: [Digest]] = [:]
        var manifests: [Digest: BlobManifest] = [:]
        for b in try blobs() {
            report.blobsChecked += 1
            do {
                let m = try manifest(for: b)
                manifests[b] = m
                for c in m.distinctChunks { users[c.digest, default: []].append(b) }
            } catch {
                report.badManifests.append(.init(digest: b, reason: "\(error)", affectedBlobs: []))
                if repair { unlink(manifestPath(b)); report.removed.append("manifest \(b)") }
            }
        }
        // In pack order, so the disk is read sequentially.
        let chunks = state.withLock { index.map { ($0.key, $0.value) } }.sorted { ($0.1.pack.id, $0.1.offset) < ($1.1.pack.id, $1.1.offset) }.map(\.0)
        let present = Set(chunks)
        var toDelete: [Digest] = []
        for (i, c) in chunks.enumerated() {
            report.chunksChecked += 1
            progress?(UInt64(i + 1), UInt64(chunks.count))
            do {
                _ = try readChunk(c)
                if users[c] == nil && !isInFlight(c) {
                    report.orphanedChunks.append(c)
                    if repair { toDelete.append(c); report.removed.append("orphaned chunk \(c)") }
                }
            } catch let e as ContentStoreError where e.code == .corruptChunk || e.code == .sizeMismatch {
                report.corruptChunks.append(.init(digest: c, reason: e.description, affectedBlobs: users[c] ?? []))
                if repair { toDelete.append(c); report.removed.append("corrupt chunk \(c)") }
            }
        }
        if !toDelete.isEmpty { _ = try removeChunks(toDelete) }
        for (b, m) in manifests.sorted(by: { $0.key < $1.key }) {
            for c in m.distinctChunks where !present.contains(c.digest) {
                report.missingChunks.append(.init(digest: c.digest, reason: "listed by \(b) but not stored", affectedBlobs: [b]))
            }
        }
        try syncDirtyDirectories()
        return report
    }


    // MARK: Pins

    /// Pins a stored blob: eviction never takes it.
    public func pin(_ digest: Digest) throws {
        guard hasBlob(digest) else { throw ContentStoreError.blobNotFound(digest) }
        try writeAtomically(pinPath(digest), [])
        try syncDirtyDirectories()
    }

    public func unpin(_ digest: Digest) throws {
        if unlink(pinPath(digest)) != 0 && errno != ENOENT { throw ContentStoreError.io("unlink", pinPath(digest)) }
    }

    public func isPinned(_ digest: Digest) -> Bool { FileIO.exists(pinPath(digest)) }

    // MARK: Garbage collection and capacity

    /// Deletes chunks no blob references (and no import in progress in this process is writing).
    /// Returns the bytes freed.
    @discardableResult
    public func collectGarbage() throws -> UInt64 {
        var live = Set<Digest>()
        for b in try blobs() {
            guard let m = try? manifest(for: b) else { continue }
            for c in m.chunks { live.insert(c.digest) }
        }
        let dead = try chunkDigests().filter { !live.contains($0) && !isInFlight($0) }
        let freed = try removeChunks(dead)
        try syncDirtyDirectories()
        return freed
    }

    /// Blobs in least-recently-used order (oldest first) with their last-use time in nanoseconds.
    public func blobsByLastUse() throws -> [(digest: Digest, lastUse: Int64)] {
        try blobs().map { ($0, FileIO.modificationTime(manifestPath($0))) }.sorted { ($0.1, $0.0) < ($1.1, $1.0) }
    }

    /// While the store is over its capacity, evicts the least recently used blob that is not pinned,
    /// not `keeping`, and not referenced by another stored blob, then collects garbage. Returns the
    /// evicted blobs. The store can stay over capacity if everything left is pinned or in use.
    @discardableResult
    public func enforceCapacity(keeping: Digest? = nil) throws -> [Digest] {
        guard let capacity = options.capacityBytes, usedBytes > capacity else { return [] }
        var evicted: [Digest] = []
        var manifests: [Digest: BlobManifest] = [:]
        for b in try blobs() { if let m = try? manifest(for: b) { manifests[b] = m } }
        var progressed = true
        while usedBytes > capacity && progressed {
            progressed = false
            // Recomputed each round: evicting a blob can free the blobs only it referenced.
            let referenced = Set(manifests.filter { !evicted.contains($0.key) }.values.flatMap(\.references))
            for (b, _) in try blobsByLastUse() where b != keeping && !isPinned(b) && !referenced.contains(b) {
                try removeBlob(b)
                evicted.append(b)
                try collectGarbage()
                progressed = true
                break
            }
        }
        return evicted
    }
}
