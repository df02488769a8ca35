import Foundation
import Glibc
import MeshCore

/// Bytes processed so far out of the total, reported during long imports and exports.
public typealias ProgressHandler = @Sendable (_ done: UInt64, _ total: UInt64) -> Void

/// The parallel ingest pipeline: one buffer in, its SHA-256 and chunk list out, chunks stored.
///
/// Every byte is hashed twice (the blob's digest and its chunk's), cut by FastCDC once, and either
/// compressed or copied into a pack buffer. Work is split into tasks that any worker thread picks up,
/// in this order of priority:
/// 1. **Blob hash** (one thread at a time; it is a single dependency chain and so the critical path):
///    advances the whole-blob SHA-256. With the SHA extensions it takes a chunk waiting to be hashed
///    along and hashes both in one interleaved loop (`SHA256Lane.update2`), which costs the chain
///    little and gives that chunk's digest almost for free; with no chunk waiting it runs alone for
///    256 KiB. It does not depend on the cut points, only on the bytes.
/// 2. **Cut** the next 8 MiB into chunks (sequential by nature, one thread at a time), kept a bounded
///    number of chunks ahead of the stores.
/// 3. **Store** a chunk whose digest is known: compress (or not) and append to the pack session.
/// 4. **Hash chunks**: two waiting chunks side by side (or one), then store them.
/// With two cores one thread mostly runs the blob chain and the other cuts, hashes and stores, and
/// whichever is idle takes the other's work, so both stay busy; the file is read from the page cache
/// while it is hot. Without the SHA extensions, hashing uses OpenSSL one message at a time.
final class IngestPipeline: @unchecked Sendable {
    private let store: ContentStore
    private let buffer: UnsafeRawBufferPointer
    private let progress: ProgressHandler?
    private let progressBase: UInt64
    private let progressTotal: UInt64
    private let cond = NSCondition()
    private let segment = 8 << 20
    /// Chunks cut but not yet stored, at most.
    private let maxAhead = 96
    private let lanes: Bool

    // Guarded by cond.
    private var cutOffset = 0
    private var cutBusy = false
    private var ends: [Int] = []
    private var digests: [Digest?] = []
    /// Chunks below this index are claimed for hashing.
    private var nextHash = 0
    /// Hashed by the blob task, waiting to be stored.
    private var toStore: [Int] = []
    private var completed = 0
    private var completedBytes = 0
    private var blobBusy = false
    /// Bytes of the blob consumed by the blob hash (whole blocks with the SHA extensions).
    private var blobOffset = 0
    private var blobDigest: Digest?
    private var failure: Error?
    private var blobLane = SHA256Lane()
    private let hasher = HasherBox()
    private let session: PackSession

    init(store: ContentStore, session: PackSession, buffer: UnsafeRawBufferPointer, progress: ProgressHandler?, progressBase: UInt64 = 0, progressTotal: UInt64? = nil) {
        self.store = store
        self.session = session
        self.buffer = buffer
        self.progress = progress
        self.progressBase = progressBase
        self.progressTotal = progressTotal ?? UInt64(buffer.count)
        self.lanes = store.hashWithSHALanes && SHA256Lane.available
    }

    private var finished: Bool {
        cutOffset == buffer.count && !cutBusy && completed == ends.count && blobDigest != nil
    }

    /// Runs the pipeline on `workers` threads. The chunks are appended to the session (the caller
    /// commits it), and stay in flight until the caller `endInFlight`s the returned digests after
    /// committing (or abandoning) the manifest.
    func run(workers: Int) throws -> (digest: Digest, chunks: [ChunkRef]) {
        DispatchQueue.concurrentPerform(iterations: max(1, workers)) { _ in work() }
        if let failure {
            store.endInFlight(digests.compactMap { $0 })
            throw failure
        }
        var chunks: [ChunkRef] = []
        chunks.reserveCapacity(ends.count)
        var prev = 0
        for (i, e) in ends.enumerated() { chunks.append(ChunkRef(digest: digests[i]!, length: e - prev)); prev = e }
        return (blobDigest!, chunks)
    }

    private func chunk(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: buffer[(i == 0 ? 0 : ends[i - 1])..<ends[i]])
    }

    private func work() {
        let compressor = store.compressors.take()
        defer { store.compressors.give(compressor) }
        var scratch = [UInt8]()
        cond.lock()
        while failure == nil && !finished {
            // 1. The blob hash, with a waiting chunk alongside when there is one.
            if !blobBusy && blobDigest == nil {
                blobBusy = true
                let companion: (Int, UnsafeRawBufferPointer)? = lanes && nextHash < ends.count ? (nextHash, chunk(nextHash)) : nil
                if companion != nil { nextHash += 1 }
                let start = blobOffset
                cond.unlock()
                let (end, done, digest) = advanceBlob(from: start, with: companion?.1)
                if let d = digest { store.beginInFlight([d]) }
                cond.lock()
                blobOffset = end
                if done { blobDigest = lanes ? blobLane.finish(tail: UnsafeRawBufferPointer(rebasing: buffer[end...])) : hasher.finish() }
                if let (i, _) = companion { digests[i] = digest; toStore.append(i) }
                blobBusy = false
                cond.broadcast()
                continue
            }
            // 2. Keep the cutter ahead of the stores.
            if !cutBusy && cutOffset < buffer.count && ends.count - completed < maxAhead {
                cutBusy = true
                let start = cutOffset
                cond.unlock()
                let stop = min(buffer.count, start + segment)
                let newEnds = store.chunker.cutPoints(buffer, from: start, until: stop)
                cond.lock()
                ends += newEnds
                digests += [Digest?](repeating: nil, count: newEnds.count)
                cutOffset = newEnds.last ?? buffer.count
                cutBusy = false
                cond.broadcast()
                continue
            }
            // 3. Store a chunk the blob task hashed.
            if let i = toStore.popLast() {
                let slice = chunk(i), d = digests[i]!
                cond.unlock()
                storeAndReport([(i, slice, d)], compressor: compressor, scratch: &scratch)
                cond.lock()
                continue
            }
            // 4. Hash two waiting chunks side by side (or one), then store them.
            if nextHash < ends.count {
                let i = nextHash
                let pair = lanes && i + 1 < ends.count
                nextHash += pair ? 2 : 1
                let a = chunk(i), b = pair ? chunk(i + 1) : nil
                cond.unlock()
                var batch: [(Int, UnsafeRawBufferPointer, Digest)]
                if let b {
                    let (da, db) = SHA256Lane.digests(a, b)
                    batch = [(i, a, da), (i + 1, b, db)]
                } else {
                    batch = [(i, a, lanes ? SHA256Lane.digest(a) : Digest.of(a))]
                }
                store.beginInFlight(batch.map(\.2))
                cond.lock()
                for (j, _, d) in batch { digests[j] = d }
                cond.unlock()
                storeAndReport(batch, compressor: compressor, scratch: &scratch)
                cond.lock()
                continue
            }
            cond.wait()
        }
        cond.broadcast()
        cond.unlock()
    }

    /// Advances the blob hash from `start`; with a companion chunk, hashes it in the same loop and
    /// returns its digest (already marked in flight by the caller). Returns the new offset and
    /// whether the blob hash has consumed everything (the caller then finishes it).
    private func advanceBlob(from start: Int, with companion: UnsafeRawBufferPointer?) -> (Int, Bool, Digest?) {
        guard lanes else {
            let stop = min(buffer.count, start + segment)
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[start..<stop]))
            return (stop, stop == buffer.count, nil)
        }
        let blobBlocks = (buffer.count - start) / 64
        guard let c = companion else {
            let n = min(blobBlocks, 4096)
            if n > 0 { blobLane.update(buffer.baseAddress! + start, blocks: n) }
            return (start + n * 64, n == blobBlocks, nil)
        }
        var lane = SHA256Lane()
        let chunkBlocks = c.count / 64
        let both = min(blobBlocks, chunkBlocks)
        if both > 0 { SHA256Lane.update2(&blobLane, buffer.baseAddress! + start, &lane, c.baseAddress!, blocks: both) }
        if chunkBlocks > both { lane.update(c.baseAddress! + both * 64, blocks: chunkBlocks - both) }
        let digest = lane.finish(tail: UnsafeRawBufferPointer(rebasing: c[(chunkBlocks * 64)...]))
        return (start + both * 64, both == blobBlocks, digest)
    }

    /// Stores hashed chunks (called without the lock) and records their completion.
    private func storeAndReport(_ batch: [(Int, UnsafeRawBufferPointer, Digest)], compressor: ZstdCompressor, scratch: inout [UInt8]) {
        var err: Error?
        var bytes = 0
        for (_, slice, d) in batch where err == nil {
            do {
                _ = try store.storeChunk(slice, digest: d, compressor: compressor, scratch: &scratch, session: session)
                // A long import becomes durable piece by piece (and its index stays small per commit).
                if session.uncommittedBytes >= ContentStore.commitInterval { try session.commit() }
            } catch { err = error }
            bytes += slice.count
        }
        cond.lock()
        completed += batch.count
        completedBytes += bytes
        if let err, failure == nil { failure = err }
        let done = completedBytes
        cond.broadcast()
        cond.unlock()
        progress?(progressBase + UInt64(done), progressTotal)
    }
}

/// SHA256Hasher is non-copyable; a class lets the pipeline hand it between threads (one at a time).
final class HasherBox: @unchecked Sendable {
    private var h = SHA256Hasher()
    func update(_ b: UnsafeRawBufferPointer) { h.update(b) }
    func finish() -> Digest { h.finalize() }
}

extension ContentStore {
    /// Chunks, hashes, compresses and stores a buffer; returns its digest and chunks. The chunks stay
    /// marked in flight (safe from GC) until the caller calls `endInFlight`.
    func ingest(_ buffer: UnsafeRawBufferPointer, session: PackSession, progress: ProgressHandler?, base: UInt64 = 0, total: UInt64? = nil) throws -> (digest: Digest, chunks: [ChunkRef]) {
        let pipeline = IngestPipeline(store: self, session: session, buffer: buffer, progress: progress, progressBase: base, progressTotal: total)
        let workers = buffer.count < 2 * options.chunking.maxSize ? 1 : options.workers
        return try pipeline.run(workers: workers)
    }

    /// Imports one file as a blob whose digest is the SHA-256 of its bytes. With `expectedDigest`, the
    /// blob is committed only if the content matches it (`.digestMismatch` otherwise, nothing visible).
    @discardableResult
    public func importFile(at path: String, expectedDigest: Digest? = nil, expectedSize: UInt64? = nil,
                           mediaType: String = "", references: [Digest] = [],
                           progress: ProgressHandler? = nil) throws -> BlobManifest {
        let file = try MappedFile(path: path)
        if let expectedSize, UInt64(file.size) != expectedSize {
            throw ContentStoreError.sizeMismatch(path, expected: expectedSize, actual: UInt64(file.size))
        }
        return try importBuffer(file.buffer, what: path, expectedDigest: expectedDigest, mediaType: mediaType, references: references, progress: progress)
    }

    /// Imports bytes held in memory as a file blob.
    @discardableResult
    public func importBytes(_ bytes: [UInt8], expectedDigest: Digest? = nil, mediaType: String = "", references: [Digest] = []) throws -> BlobManifest {
        try bytes.withUnsafeBytes { try importBuffer($0, what: "bytes", expectedDigest: expectedDigest, mediaType: mediaType, references: references, progress: nil) }
    }

    func importBuffer(_ buffer: UnsafeRawBufferPointer, what: String, expectedDigest: Digest?, mediaType: String,
                      references: [Digest], progress: ProgressHandler?) throws -> BlobManifest {
        let session = PackSession(store: self)
        let (digest, chunks) = try withSession(session) { try ingest(buffer, session: session, progress: progress) }
        defer { endInFlight(chunks.map(\.digest)) }
        if let expectedDigest, digest != expectedDigest {
            throw ContentStoreError.digestMismatch(what, expected: expectedDigest, actual: digest)
        }
        var m = BlobManifest()
        m.digest = digest
        m.kind = .file
        m.size = UInt64(buffer.count)
        m.mediaType = mediaType
        m.chunks = chunks
        m.references = references
        try m.validate()
        try writeManifest(m)
        return m
    }
}
