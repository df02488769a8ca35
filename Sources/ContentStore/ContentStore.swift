import Foundation
import Glibc
import MeshCore

/// A content-addressed store on local disk.
///
/// Layout under the store directory:
/// ```
/// gquic-store        marker file: "gquic-content-store 2"
/// lock               flock(2)-held by the process that has the store open (one writer at a time)
/// packs/<id>.pack    chunk frames appended back to back, each named by the SHA-256 of its raw bytes
/// packs/<id>.idx     the pack's index: digest → offset, length (see PackFile)
/// blobs/ab/<hex>     one manifest per blob (BlobManifest in the wire codec); its mtime is the LRU clock
/// pins/<hex>         empty file: the blob must not be evicted
/// tmp/               temp files; anything here is an interrupted write and is deleted on open
/// ```
/// A chunk becomes visible only when its index record is durable, which is written only after its
/// pack data was fdatasync'ed; manifests and pins appear by `rename` after their data was written and
/// fsync'ed, and their directory is fsync'ed; a manifest appears only after all its chunks are durable
/// and the blob was verified against its digest. So a crash at any point leaves either no blob or a
/// whole one (orphaned chunks at worst, which `collectGarbage` or `verify(repair:)` remove). A store
/// in the version-1 layout (one file per chunk under `chunks/`) is converted on open.
public final class ContentStore: @unchecked Sendable {
    public struct Options: Sendable {
        public var chunking: ChunkingParameters = .default
        /// zstd level for chunk frames. 3 is zstd's default: ~300 MB/s per core on binaries.
        public var compressionLevel: Int32 = 3
        /// A chunk is stored compressed only if that saves at least this fraction of its size
        /// (otherwise it is stored raw and flagged so; reads then skip decompression).
        public var minimumCompressionGain: Double = 0.03
        /// Size limit for stored chunks and manifests; nil means unlimited. Over it, the least recently
        /// used unpinned blobs are evicted after each commit.
        public var capacityBytes: UInt64? = nil
        /// Threads used for hashing, chunking and compressing one import.
        public var workers: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)
        /// fsync files and directories, and write packs with O_DIRECT (turn off only for throwaway
        /// stores in benchmarks: writes then go to the page cache and nothing waits for the disk).
        public var durable = true
        /// Free the space of collected chunks by punching holes in pack files (where the file system
        /// supports it); otherwise, or when false, a pack with dead chunks is compacted (copied).
        public var punchHoles = true
        public init() {}
    }

    public let root: String
    public let options: Options
    let chunker: FastCDC
    private let lockFD: Int32
    let state = NSLock()
    private var tempCounter = 0
    private var dirtyDirectories = Set<String>()
    /// Bytes in pack, pack index and manifest files (kept up to date in process).
    var usage: UInt64 = 0
    /// Every visible chunk (guarded by `state`).
    var index: [Digest: ChunkLocation] = [:]
    /// Every pack file by id (guarded by `state`).
    var packs: [String: PackFile] = [:]
    /// Damaged pack index records found on open (reported by `verify`).
    private(set) var packDamage: [String] = []
    /// Chunks written by imports that have not committed their manifest yet (GC must not take them).
    private var inFlight: [Digest: Int] = [:]
    private var recentPuts: [Digest: ContinuousClock.Instant] = [:]
    let compressors = Pool { ZstdCompressor() }
    /// Imports hash with the SHA extensions when the CPU has them; tests turn this off to check that
    /// the OpenSSL path gives the same manifests. Set before importing.
    nonisolated(unsafe) var hashWithSHALanes = SHA256Lane.available
    let decompressors = Pool { ZstdDecompressor() }
    /// Pack write buffers, shared by every session: a fresh 4 MiB buffer per session (one per batch
    /// of received chunks) had every byte written to the store land in never-touched memory first,
    /// a page fault per 4 KiB (over 300 per MiB received in the namespace swarm).
    let writeBuffers = Pool(keep: 8) { WriteBuffer() }

    static let marker = "gquic-content-store 2\n"
    static let markerV1 = "gquic-content-store 1\n"
    static let tempFanout = 8

    /// Opens (creating if needed) the store at `path`. Takes the store's lock, deletes leftovers of
    /// interrupted writes from `tmp/`, and measures the space in use.
    public static func open(path: String, options: Options = Options()) throws -> ContentStore {
        try ContentStore(path: path, options: options)
    }

    private init(path: String, options: Options) throws {
        var root = path
        while root.count > 1 && root.hasSuffix("/") { root.removeLast() }
        self.root = root
        self.options = options
        self.chunker = FastCDC(options.chunking)
        let markerPath = root + "/gquic-store"
        var convertV1 = false
        if FileIO.exists(root) {
            guard FileIO.isDirectory(root) else { throw ContentStoreError.notAStore(root, "it is not a directory") }
            if FileIO.exists(markerPath) {
                let text = String(decoding: try FileIO.readFile(markerPath, maxSize: 4096), as: UTF8.self)
                convertV1 = text == ContentStore.markerV1
                guard text == ContentStore.marker || convertV1 else {
                    throw ContentStoreError.notAStore(root, "its gquic-store marker says \"\(text.prefix(60))\", this build reads \(ContentStore.marker.dropLast())")
                }
            } else if !(try FileIO.list(root)).isEmpty {
                throw ContentStoreError.notAStore(root, "the directory is not empty and has no gquic-store marker; pick an empty or new directory")
            }
        } else {
            try FileIO.makeDirectory(root)
        }
        for sub in ["packs", "blobs", "pins", "tmp"] { try FileIO.makeDirectory(root + "/" + sub) }
        let fd = Glibc.open(root + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ContentStoreError.io("open", root + "/lock") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(fd)
            throw ContentStoreError.storeLocked(root)
        }
        lockFD = fd
        // Interrupted writes: never visible, safe to delete.
        for name in try FileIO.list(root + "/tmp") { FileIO.removeTree(root + "/tmp/" + name) }
        // Temp files spread over a few subdirectories: concurrent creates in one directory serialise
        // on its inode lock.
        for i in 0..<ContentStore.tempFanout { try FileIO.makeDirectory("\(root)/tmp/\(i)") }
        packDamage = try loadPacks()
        if convertV1 { try convertFromV1() }
        if !FileIO.exists(markerPath) || convertV1 {
            try writeAtomically(markerPath, Array(ContentStore.marker.utf8))
            try syncDirtyDirectories()
        }
        usage = try measureUsage()
    }

    /// Moves the chunk files of a version-1 store (`chunks/ab/<hex>`) into a pack, verifying each;
    /// a corrupt one is left out (its blobs then show it as missing in `verify`).
    private func convertFromV1() throws {
        let dir = root + "/chunks"
        let session = PackSession(store: self)
        for fan in try FileIO.list(dir) {
            for name in try FileIO.list(dir + "/" + fan) {
                guard let d = Digest(Digest.prefix + name), index[d] == nil,
                      let frame = try? FileIO.readFile("\(dir)/\(fan)/\(name)", maxSize: Int(ContentStore.maxFrameSize)),
                      (try? decodeChunkFrame(frame, digest: d)) != nil else { continue }
                _ = try frame.withUnsafeBytes { try session.append(d, parts: [$0]) }
            }
        }
        try session.commit()
        session.finish()
        FileIO.removeTree(dir)
    }

    private var closed = false

    deinit { close() }

    /// Releases the store's lock so another process may open it. The object must not be used after.
    public func close() {
        let wasOpen = state.withLock { () -> Bool in defer { closed = true }; return !closed }
        guard wasOpen else { return }
        flock(lockFD, LOCK_UN)
        Glibc.close(lockFD)
    }

    // MARK: Paths

    func manifestPath(_ d: Digest) -> String { let h = d.hex; return "\(root)/blobs/\(h.prefix(2))/\(h)" }
    func pinPath(_ d: Digest) -> String { "\(root)/pins/\(d.hex)" }

    /// Space used by chunks and manifests, in bytes.
    public var usedBytes: UInt64 { state.withLock { usage } }

    func addUsage(_ delta: Int64) {
        state.withLock { usage = UInt64(max(0, Int64(usage) + delta)) }
    }

    func measureUsage() throws -> UInt64 {
        var total: UInt64 = 0
        for name in try FileIO.list(packDirectory) { total += FileIO.allocatedOrSize("\(packDirectory)/\(name)") }
        for fan in try FileIO.list("\(root)/blobs") {
            for name in try FileIO.list("\(root)/blobs/\(fan)") { total += FileIO.allocatedOrSize("\(root)/blobs/\(fan)/\(name)") }
        }
        return total
    }

    // MARK: Atomic writes

    /// A fresh name under `tmp/`.
    func tempPath() -> String {
        let n = state.withLock { tempCounter += 1; return tempCounter }
        return "\(root)/tmp/\(n % ContentStore.tempFanout)/\(getpid())-\(n)-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Writes `parts` to a temp file, fsyncs it, renames it to `path`, and marks `path`'s directory
    /// dirty (call `syncDirtyDirectories` before anything durable refers to it). Returns bytes written.
    @discardableResult
    func writeAtomically(_ path: String, parts: [UnsafeRawBufferPointer]) throws(ContentStoreError) -> Int {
        let tmp = tempPath()
        let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ContentStoreError.io("create", tmp) }
        var total = 0
        var failure: ContentStoreError? = nil
        for p in parts where failure == nil {
            do { try FileIO.writeAll(fd: fd, p, path: tmp); total += p.count } catch let e { failure = e }
        }
        if failure == nil && options.durable && fdatasync(fd) != 0 { failure = ContentStoreError.io("fsync", tmp) }
        if let failure {
            Glibc.close(fd); unlink(tmp)
            throw failure
        }
        Glibc.close(fd)
        try publish(tmp: tmp, final: path)
        return total
    }

    /// Renames a durable temp file into place and marks its directory dirty.
    func publish(tmp: String, final path: String) throws(ContentStoreError) {
        let dir = String(path[..<path.lastIndex(of: "/")!])
        if rename(tmp, path) != 0 {
            if errno == ENOENT {
                try FileIO.makeDirectory(dir)
                markDirty(String(dir[..<dir.lastIndex(of: "/")!]))
                if rename(tmp, path) == 0 { markDirty(dir); return }
            }
            let e = errno
            unlink(tmp)
            throw ContentStoreError.io("rename into", path, errno: e)
        }
        markDirty(dir)
    }

    @discardableResult
    func writeAtomically(_ path: String, _ bytes: [UInt8]) throws -> Int {
        try bytes.withUnsafeBytes { try writeAtomically(path, parts: [$0]) }
    }

    private func markDirty(_ dir: String) { state.withLock { _ = dirtyDirectories.insert(dir) } }

    /// fsyncs every directory a rename touched since the last call.
    func syncDirtyDirectories() throws(ContentStoreError) {
        let dirs = state.withLock { () -> Set<String> in defer { dirtyDirectories.removeAll() }; return dirtyDirectories }
        guard options.durable else { return }
        for d in dirs.sorted(by: { $0.count > $1.count }) { try FileIO.fsyncDirectory(d) }
    }

    // MARK: Chunks

    public func hasChunk(_ digest: Digest) -> Bool { state.withLock { index[digest] != nil } }

    /// Where a chunk's frame is stored.
    func location(of digest: Digest) throws(ContentStoreError) -> ChunkLocation {
        guard let loc = state.withLock({ index[digest] }) else { throw .chunkNotFound(digest) }
        return loc
    }

    /// The size of a chunk as stored (compressed or raw, with its header), if present: what sending
    /// it costs.
    public func storedSize(ofChunk digest: Digest) -> UInt64? {
        state.withLock { index[digest].map { UInt64($0.length) } }
    }

    /// Reads a chunk, decompresses it and checks it against its digest. Corrupt data throws
    /// `.corruptChunk` and is never returned.
    public func readChunk(_ digest: Digest) throws -> [UInt8] {
        try decodeChunkFrame(try readFrame(at: try location(of: digest)), digest: digest)
    }

    /// The stored frame of a chunk as is (compressed or raw with its header), for sending to a peer
    /// that will `putChunkFrame` it. Not verified here: the receiver verifies.
    public func readChunkFrame(_ digest: Digest) throws -> [UInt8] {
        try readFrame(at: try location(of: digest))
    }

    /// A chunk's bytes, not hashed: only for a caller that hashes what it reads as a whole and checks
    /// that against a digest it trusts (a blob's content at commit or export), and on a mismatch reads
    /// again with `readChunk` to name the bad chunk. Saves one SHA-256 pass over every byte.
    func readChunkUnhashed(_ digest: Digest) throws -> [UInt8] {
        try decodeChunkFrame(try readFrame(at: try location(of: digest)), digest: digest, verify: false)
    }

    func decodeChunkFrame(_ frame: [UInt8], digest: Digest, verify: Bool = true) throws -> [UInt8] {
        var r = WireReader(frame)
        let encodingByte: UInt8
        let rawLength: Int
        do {
            encodingByte = try r.u8()
            rawLength = Int(try r.varint(as: UInt32.self, max: UInt32(ChunkingParameters.largestAllowedChunk)))
        } catch {
            throw ContentStoreError.corruptChunk(digest, "its header is damaged (\(error))")
        }
        guard let encoding = ChunkEncoding(rawValue: encodingByte) else { throw ContentStoreError.corruptChunk(digest, "unknown encoding \(encodingByte)") }
        let payloadStart = r.position
        var raw: [UInt8]
        switch encoding {
        case .raw:
            guard frame.count - payloadStart == rawLength else {
                throw ContentStoreError.corruptChunk(digest, "raw payload is \(frame.count - payloadStart) bytes, header says \(rawLength)")
            }
            raw = Array(frame[payloadStart...])
        case .zstd:
            raw = [UInt8](repeating: 0, count: rawLength)
            let d = decompressors.take()
            defer { decompressors.give(d) }
            let n: Int
            do {
                n = try frame.withUnsafeBytes { (src: UnsafeRawBufferPointer) throws -> Int in
                    try raw.withUnsafeMutableBytes { (dst: UnsafeMutableRawBufferPointer) throws -> Int in
                        try d.decompress(UnsafeRawBufferPointer(rebasing: src[payloadStart...]), into: dst)
                    }
                }
            } catch {
                throw ContentStoreError.corruptChunk(digest, "its zstd frame does not decode (\(error))")
            }
            guard n == rawLength else { throw ContentStoreError.corruptChunk(digest, "decoded to \(n) bytes, header says \(rawLength)") }
        }
        guard verify else { return raw }
        let actual = Digest.of(raw)
        guard actual == digest else { throw ContentStoreError.corruptChunk(digest, "its bytes hash to \(actual)") }
        return raw
    }

    /// Stores a chunk received from elsewhere after checking it hashes to `digest`. Durable when it
    /// returns (pack and index fdatasync'ed). Returns false if the store already had it.
    @discardableResult
    public func putChunk(_ bytes: [UInt8], digest: Digest) throws -> Bool {
        try putChunks([(digest: digest, bytes: bytes)]) > 0
    }

    /// Stores a chunk frame as read by a peer's `readChunkFrame`, after decoding and verifying it.
    @discardableResult
    public func putChunkFrame(_ frame: [UInt8], digest: Digest) throws -> Bool {
        markPut(digest)
        if hasChunk(digest) { return false }
        guard frame.count <= Int(ContentStore.maxFrameSize) else {
            throw ContentStoreError.corruptChunk(digest, "its frame is \(frame.count) bytes, over the \(ContentStore.maxFrameSize)-byte limit")
        }
        _ = try decodeChunkFrame(frame, digest: digest)
        let session = PackSession(store: self)
        try withSession(session) { _ = try frame.withUnsafeBytes { try session.append(digest, parts: [$0]) } }
        return true
    }

    /// Runs `body`, then commits the session (its chunks become durable and visible); on any failure
    /// abandons it (nothing it wrote stays).
    func withSession<R>(_ session: PackSession, _ body: () throws -> R) throws -> R {
        do {
            let r = try body()
            try session.commit()
            session.finish()
            return r
        } catch {
            session.abandon()
            throw error
        }
    }

    /// Compresses (when it pays) and appends one chunk whose digest the caller computed from these
    /// very bytes to the session. Returns the bytes written (0 if it was already present).
    func storeChunk(_ raw: UnsafeRawBufferPointer, digest: Digest, compressor: ZstdCompressor, scratch: inout [UInt8], session: PackSession) throws -> Int {
        if hasChunk(digest) || !session.claim(digest) { return 0 }
        var header = WireWriter(reservingCapacity: 9)
        let bound = ZstdCompressor.bound(raw.count)
        if scratch.count < bound { scratch = [UInt8](repeating: 0, count: bound) }
        var n = raw.count
        if try !looksIncompressible(raw, compressor: compressor, scratch: &scratch) {
            n = try scratch.withUnsafeMutableBytes { (dst: UnsafeMutableRawBufferPointer) throws -> Int in
                try compressor.compress(raw, into: dst, level: options.compressionLevel)
            }
        }
        let worthIt = Double(n) <= Double(raw.count) * (1 - options.minimumCompressionGain)
        header.u8(worthIt ? ChunkEncoding.zstd.rawValue : ChunkEncoding.raw.rawValue)
        header.varint(UInt64(raw.count))
        return try header.bytes.withUnsafeBytes { (h: UnsafeRawBufferPointer) throws -> Int in
            if worthIt {
                return try scratch.withUnsafeBytes { (s: UnsafeRawBufferPointer) throws -> Int in
                    try session.append(digest, parts: [h, UnsafeRawBufferPointer(rebasing: s[0..<n])])
                }
            }
            return try session.append(digest, parts: [h, raw])
        }
    }

    /// A quick test before compressing a large chunk: two 4 KiB samples (start and middle) at zstd
    /// level 1. If neither shrinks by the minimum gain, the chunk (random data, already-compressed
    /// media or archives) is stored raw without a full compression attempt — the attempt costs about
    /// as much as hashing it. Which encoding a chunk gets never changes its digest.
    func looksIncompressible(_ raw: UnsafeRawBufferPointer, compressor: ZstdCompressor, scratch: inout [UInt8]) throws -> Bool {
        let sample = 4096
        guard raw.count >= 4 * sample else { return false }
        let limit = Double(sample) * (1 - options.minimumCompressionGain)
        for start in [0, raw.count / 2] {
            let n = try scratch.withUnsafeMutableBytes { (dst: UnsafeMutableRawBufferPointer) throws -> Int in
                try compressor.compress(UnsafeRawBufferPointer(rebasing: raw[start..<(start + sample)]), into: dst, level: 1)
            }
            if Double(n) <= limit { return false }
        }
        return true
    }

    func beginInFlight(_ digests: [Digest]) { state.withLock { for d in digests { inFlight[d, default: 0] += 1 } } }
    func endInFlight(_ digests: [Digest]) {
        state.withLock {
            for d in digests {
                if let n = inFlight[d], n > 1 { inFlight[d] = n - 1 } else { inFlight[d] = nil }
            }
        }
    }
    /// True while an import is writing the chunk, or for `putGracePeriod` after a `putChunk` of it
    /// (a transfer stores chunks one by one before its `commitBlob`; GC must not take them meanwhile).
    func isInFlight(_ d: Digest) -> Bool {
        state.withLock {
            if inFlight[d] != nil { return true }
            guard let t = recentPuts[d] else { return false }
            if ContinuousClock.now - t < ContentStore.putGracePeriod { return true }
            recentPuts[d] = nil
            return false
        }
    }

    /// How long chunks stored by `putChunk`/`putChunkFrame` are safe from garbage collection while
    /// no manifest references them yet (in this process).
    public static let putGracePeriod: Duration = .seconds(600)

    func markPut(_ d: Digest) { state.withLock { recentPuts[d] = ContinuousClock.now } }

    // MARK: Blobs

    public func hasBlob(_ digest: Digest) -> Bool { FileIO.exists(manifestPath(digest)) }

    /// The manifest of a stored blob (decoded with bounds, validated).
    public func manifest(for digest: Digest) throws -> BlobManifest {
        let path = manifestPath(digest)
        let bytes: [UInt8]
        do {
            bytes = try FileIO.readFile(path, maxSize: 64 << 20)
        } catch {
            throw error.errnoCode == ENOENT ? ContentStoreError.blobNotFound(digest) : error
        }
        let m: BlobManifest
        do { m = try BlobManifest(wireBytes: bytes) } catch {
            throw ContentStoreError.badManifest(path, "\(error)")
        }
        guard m.digest == digest else { throw ContentStoreError.badManifest(path, "it describes \(m.digest)") }
        try m.validate()
        return m
    }

    /// Every stored blob's digest, sorted.
    public func blobs() throws -> [Digest] {
        var out: [Digest] = []
        for fan in try FileIO.list(root + "/blobs") {
            for name in try FileIO.list("\(root)/blobs/\(fan)") {
                if let d = Digest(Digest.prefix + name) { out.append(d) }
            }
        }
        return out.sorted()
    }

    /// Makes a blob visible once every chunk it lists is present and the content checks out: each
    /// chunk is read back and verified, a file's bytes must hash to `manifest.digest`, each tree file to
    /// its entry's digest, and a tree's listing to `manifest.digest`. Throws `.missingChunk` naming the
    /// first absent chunk. Then evicts least-recently-used blobs if the store is over capacity.
    ///
    /// `hashed`: the content's digest taken while the chunks arrived (`BlobContentHasher`). When it
    /// covers this manifest's chunks and matches, the blob is not read back to hash it; otherwise
    /// (partial, another chunk list, or a mismatch) the store hashes the blob itself, as without it.
    public func commitBlob(_ manifest: BlobManifest, hashed: BlobContentHasher? = nil) throws {
        try manifest.validate()
        for c in manifest.chunks where !hasChunk(c.digest) {
            throw ContentStoreError.missingChunk(blob: manifest.digest, chunk: c.digest)
        }
        switch manifest.kind {
        case .file:
            let early = hashed?.digest(for: manifest)
            let actual = early == manifest.digest ? early! : try hashOfChunks(manifest.chunks[...], expected: manifest.digest)
            guard actual == manifest.digest else { throw ContentStoreError.digestMismatch("blob content", expected: manifest.digest, actual: actual) }
        case .tree:
            let spans = try manifest.fileChunkSpans()
            for (i, e) in manifest.entries.enumerated() where e.type == .file {
                let actual = try hashOfChunks(manifest.chunks[spans[i]!], expected: e.digest!)
                guard actual == e.digest else { throw ContentStoreError.digestMismatch("file \"\(e.path)\"", expected: e.digest!, actual: actual) }
            }
        }
        for r in manifest.references where !hasBlob(r) {
            throw ContentStoreError.badManifest(manifest.digest.description, "it references blob \(r), which the store does not hold")
        }
        try writeManifest(manifest)
    }

    /// SHA-256 of the concatenated chunks. One hash pass: the chunks are not hashed one by one, since
    /// the caller checks the result against the digest it expects; when that check would fail
    /// (`expected` differs), they are read again, verified, so a corrupt chunk is named.
    func hashOfChunks(_ chunks: ArraySlice<ChunkRef>, expected: Digest) throws -> Digest {
        func pass(verify: Bool) throws -> Digest {
            let h = HasherBox()
            for c in chunks {
                let raw = verify ? try readChunk(c.digest) : try readChunkUnhashed(c.digest)
                guard raw.count == Int(c.length) else { throw ContentStoreError.sizeMismatch("chunk \(c.digest)", expected: UInt64(c.length), actual: UInt64(raw.count)) }
                raw.withUnsafeBytes { h.update($0) }
            }
            return h.finish()
        }
        let actual = try pass(verify: false)
        return actual == expected ? actual : try pass(verify: true)
    }

    /// Writes a manifest whose content the caller has verified, after making its chunks durable.
    func writeManifest(_ manifest: BlobManifest) throws {
        try syncDirtyDirectories()
        if hasBlob(manifest.digest) { touch(manifest.digest); return }
        let n = try writeAtomically(manifestPath(manifest.digest), manifest.wireBytes())
        addUsage(Int64(n))
        try syncDirtyDirectories()
        try enforceCapacity(keeping: manifest.digest)
    }

    /// Marks a blob as just used (the LRU clock is the manifest file's mtime).
    public func touch(_ digest: Digest) {
        _ = utimensat(AT_FDCWD, manifestPath(digest), nil, 0)
    }

    /// Deletes a blob's manifest (its chunks stay until `collectGarbage`). Pinned blobs are refused.
    public func removeBlob(_ digest: Digest) throws {
        guard hasBlob(digest) else { throw ContentStoreError.blobNotFound(digest) }
        guard !isPinned(digest) else { throw ContentStoreError.invalidArgument("blob \(digest) is pinned; unpin it first") }
        let path = manifestPath(digest)
        let size = FileIO.allocatedOrSize(path)
        guard unlink(path) == 0 else { throw ContentStoreError.io("unlink", path) }
        addUsage(-Int64(size))
        markDirty(String(path[..<path.lastIndex(of: "/")!]))
        try syncDirtyDirectories()
    }
}

/// A tiny lock-protected free list, so each thread reuses a zstd context instead of creating one per
/// chunk.
final class Pool<T>: @unchecked Sendable {
    private var items: [T] = []
    private let lock = NSLock()
    private let make: () -> T
    private let keep: Int
    /// Keeps at most `keep` items given back; more are dropped.
    init(keep: Int = .max, _ make: @escaping () -> T) { self.make = make; self.keep = keep }
    func take() -> T { lock.withLock { items.popLast() } ?? make() }
    func give(_ item: T) { lock.withLock { if items.count < keep { items.append(item) } } }
}
