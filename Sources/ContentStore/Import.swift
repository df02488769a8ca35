import Foundation
import Glibc
import MeshCore

/// Bytes processed so far out of the total, reported during long imports and exports.
public typealias ProgressHandler = @Sendable (_ done: UInt64, _ total: UInt64) -> Void

/// The parallel ingest pipeline: one buffer in, its SHA-256 and chunk list out, chunks stored.
///
/// Work is split into three kinds of task that any worker thread picks up: cutting the next 8 MiB into
/// FastCDC chunks (sequential by nature, so one thread at a time), advancing the whole-blob SHA-256 by
/// 8 MiB (also sequential), and hashing + compressing + writing one chunk (fully parallel). Cutting is
/// kept a little ahead of the chunk workers and the whole-blob hash follows the cut point, so with two
/// cores both stay busy and the file is read once from the page cache while it is hot.
final class IngestPipeline: @unchecked Sendable {
    private let store: ContentStore
    private let buffer: UnsafeRawBufferPointer
    private let progress: ProgressHandler?
    private let progressBase: UInt64
    private let progressTotal: UInt64
    private let cond = NSCondition()
    private let segment = 8 << 20

    // Guarded by cond.
    private var cutOffset = 0
    private var cutBusy = false
    private var ends: [Int] = []
    private var digests: [Digest?] = []
    private var nextTask = 0
    private var completed = 0
    private var completedBytes = 0
    private var hashOffset = 0
    private var hashBusy = false
    private var failure: Error?
    private let hasher = HasherBox()
    private let session: PackSession

    init(store: ContentStore, session: PackSession, buffer: UnsafeRawBufferPointer, progress: ProgressHandler?, progressBase: UInt64 = 0, progressTotal: UInt64? = nil) {
        self.store = store
        self.session = session
        self.buffer = buffer
        self.progress = progress
        self.progressBase = progressBase
        self.progressTotal = progressTotal ?? UInt64(buffer.count)
    }

    private var finished: Bool {
        cutOffset == buffer.count && !cutBusy && completed == ends.count && hashOffset == buffer.count && !hashBusy
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
        return (hasher.finish(), chunks)
    }

    private func work() {
        let compressor = store.compressors.take()
        defer { store.compressors.give(compressor) }
        var scratch = [UInt8]()
        cond.lock()
        while failure == nil && !finished {
            // 1. Keep the cutter ahead of the chunk workers.
            if !cutBusy && cutOffset < buffer.count && ends.count - nextTask < 16 {
                cutBusy = true
                let start = cutOffset
                cond.unlock()
                var newEnds: [Int] = []
                var at = start
                let stop = min(buffer.count, start + segment)
                while at < stop {
                    at += store.chunker.nextCut(UnsafeRawBufferPointer(rebasing: buffer[at...]))
                    newEnds.append(at)
                }
                cond.lock()
                ends += newEnds
                digests += [Digest?](repeating: nil, count: newEnds.count)
                cutOffset = at
                cutBusy = false
                cond.broadcast()
                continue
            }
            // 2. The whole-blob hash follows the cut point (or anything left when there is no chunk work).
            let noChunkWork = nextTask == ends.count
            if !hashBusy && hashOffset < cutOffset && (hashOffset + segment <= cutOffset || noChunkWork || cutOffset == buffer.count) {
                hashBusy = true
                let start = hashOffset
                let stop = min(buffer.count, start + segment)
                cond.unlock()
                hasher.update(UnsafeRawBufferPointer(rebasing: buffer[start..<stop]))
                cond.lock()
                hashOffset = stop
                hashBusy = false
                cond.broadcast()
                continue
            }
            // 3. Hash, compress and store one chunk.
            if nextTask < ends.count {
                let i = nextTask
                nextTask += 1
                let lo = i == 0 ? 0 : ends[i - 1]
                let hi = ends[i]
                cond.unlock()
                let slice = UnsafeRawBufferPointer(rebasing: buffer[lo..<hi])
                let d = Digest.of(slice)
                store.beginInFlight([d])
                var err: Error?
                do {
                    _ = try store.storeChunk(slice, digest: d, compressor: compressor, scratch: &scratch, session: session)
                    // A long import becomes durable piece by piece (and its index stays small per commit).
                    if session.uncommittedBytes >= ContentStore.commitInterval { try session.commit() }
                } catch { err = error }
                cond.lock()
                digests[i] = d
                completed += 1
                completedBytes += hi - lo
                if let err, failure == nil { failure = err }
                let done = completedBytes
                cond.broadcast()
                if let progress {
                    cond.unlock()
                    progress(progressBase + UInt64(done), progressTotal)
                    cond.lock()
                }
                continue
            }
            cond.wait()
        }
        cond.broadcast()
        cond.unlock()
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
