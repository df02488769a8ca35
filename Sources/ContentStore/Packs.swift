import CLinuxIO
import Foundation
import Glibc
import MeshCore

/// Chunk storage: append-only pack files, each with an index file.
///
/// ```
/// packs/<id>.pack   chunk frames (ChunkEncoding header + zstd or raw payload) appended back to back
/// packs/<id>.idx    64-byte records, one per chunk: digest(32) offset(u64 LE) length(u32 LE) zero(12)
///                   check(8) — check is the first 8 bytes of SHA-256 over the 56 bytes before it
/// ```
/// A chunk exists for the store only once its index record is durable: a session appends frames to
/// a pack, `fdatasync`s the pack, and only then appends the records to the `.idx` and `fdatasync`s
/// that. On open, every record's check and bounds are verified; a torn last record is cut off, pack
/// bytes past the last indexed frame (an interrupted import) are truncated away, and a pack with no
/// index is deleted — so a crash never leaves a partial chunk visible. Garbage collection drops
/// records from the index (rewritten atomically) and then frees their bytes by punching holes
/// (`fallocate(PUNCH_HOLE)`), or, on file systems that cannot, by copying the live frames into a
/// new pack (compaction). A pack with no live frames is deleted.
final class PackFile: @unchecked Sendable {
    let id: String
    let packPath: String
    let indexPath: String
    let fd: Int32
    /// Replaced when GC rewrites the index (under the state lock, while no session holds the pack).
    var indexFD: Int32
    // Guarded by the store's state lock.
    /// Append offset (bytes reserved so far).
    var size: UInt64
    /// End of the last frame with a durable index record: an abandoned session truncates back to it.
    var committedEnd: UInt64
    /// Bytes in the .idx file.
    var indexSize: UInt64
    var liveRecords = 0
    /// A session is appending to this pack; GC leaves it alone.
    var checkedOut = false
    /// Descriptor opened with O_DIRECT for whole-buffer writes (-1: not opened; -2: unsupported).
    /// Used only by a session's writer thread.
    var directFD: Int32 = -1

    init(id: String, directory: String, fd: Int32, indexFD: Int32, size: UInt64, indexSize: UInt64) {
        self.id = id
        self.packPath = "\(directory)/\(id).pack"
        self.indexPath = "\(directory)/\(id).idx"
        self.fd = fd
        self.indexFD = indexFD
        self.size = size
        self.committedEnd = size
        self.indexSize = indexSize
    }

    deinit {
        Glibc.close(fd); Glibc.close(indexFD)
        if directFD >= 0 { Glibc.close(directFD) }
    }
}

/// Where a chunk's frame is. Holding it keeps the pack's file descriptor open, so a concurrent
/// compaction cannot close it under a reader.
struct ChunkLocation: Sendable {
    let pack: PackFile
    let offset: UInt64
    let length: UInt32
}

/// The 64-byte index record.
enum PackIndexRecord {
    static let size = 64

    static func encode(_ digest: Digest, offset: UInt64, length: UInt32, into out: inout [UInt8]) {
        var rec = digest.bytes
        rec.reserveCapacity(size)
        for k in 0..<8 { rec.append(UInt8(truncatingIfNeeded: offset >> (8 * UInt64(k)))) }
        for k in 0..<4 { rec.append(UInt8(truncatingIfNeeded: length >> (8 * UInt32(k)))) }
        rec += [UInt8](repeating: 0, count: 12)
        rec += Digest.of(rec).bytes.prefix(8)
        out += rec
    }

    /// nil when the check does not match.
    static func decode(_ rec: UnsafeRawBufferPointer) -> (digest: Digest, offset: UInt64, length: UInt32)? {
        guard rec.count == size else { return nil }
        let check = Digest.of(UnsafeRawBufferPointer(rebasing: rec[0..<56])).bytes
        guard rec[56..<64].elementsEqual(check.prefix(8)) else { return nil }
        var offset: UInt64 = 0, length: UInt32 = 0
        for k in 0..<8 { offset |= UInt64(rec[32 + k]) << (8 * UInt64(k)) }
        for k in 0..<4 { length |= UInt32(rec[40 + k]) << (8 * UInt32(k)) }
        return (Digest(unchecked: rec[0..<32]), offset, length)
    }
}

/// Frames gathered in memory and written to a pack with one `pwrite`: one write per few MiB instead
/// of one per chunk (each write can wait on the file system's journal, whatever its size).
/// Owned by one thread at a time (the appender, then the writer), handed over under the session lock.
final class WriteBuffer: @unchecked Sendable {
    static let capacity = 4 << 20
    /// O_DIRECT needs block-aligned offsets, lengths and memory: buffers start at aligned pack
    /// offsets and are padded with zeros (dead bytes no index record covers).
    static let alignment = 4096
    let memory = UnsafeMutableRawPointer.allocate(byteCount: WriteBuffer.capacity + WriteBuffer.alignment, alignment: WriteBuffer.alignment)
    var pack: PackFile?
    var offset: UInt64 = 0
    var used = 0
    var records: [(Digest, UInt64, UInt32)] = []
    deinit { memory.deallocate() }
}

/// One writer's run of appends (an import, a received chunk, a compaction). It checks a pack out of
/// the store (or creates one), appends frames (through a `WriteBuffer`), and `commit` makes them
/// durable and visible; `abandon` truncates what was not committed. Appends may come from several
/// threads at once.
final class PackSession: @unchecked Sendable {
    private let store: ContentStore
    private let lock = NSLock()
    private let commitLock = NSLock()
    private var current: PackFile?
    private var touched: [PackFile] = []
    private var pending: [(Digest, PackFile, UInt64, UInt32)] = []
    private var pendingBytes: UInt64 = 0
    private var claimed = Set<Digest>()
    private var finished = false
    private var buffer: WriteBuffer?
    /// Full buffers are written here, so the threads that hash and compress never wait on the disk.
    private let writer = DispatchQueue(label: "gquic.content.pack-writer")
    /// At most this many full buffers wait for the writer (bounds memory: 4 × 4 MiB).
    private let inFlightBuffers = DispatchSemaphore(value: 4)
    private var writeError: ContentStoreError?
    /// Commit moves index entries already in the store to the new frames (compaction).
    let relocating: Bool

    /// Whether full buffers may bypass the page cache (O_DIRECT). Received chunks are written
    /// buffered: they are read back soon (served to other peers, hashed at commit, exported), and a
    /// network transfer's write rate gains nothing from skipping the copy.
    private let direct: Bool

    init(store: ContentStore, relocating: Bool = false, direct: Bool = true) {
        self.store = store
        self.relocating = relocating
        self.direct = direct
    }

    /// False if this session already writes the chunk.
    func claim(_ d: Digest) -> Bool { lock.withLock { claimed.insert(d).inserted } }

    /// Appends one frame (given in parts). Thread-safe; the frame becomes visible at `commit`.
    func append(_ digest: Digest, parts: [UnsafeRawBufferPointer]) throws(ContentStoreError) -> Int {
        let total = parts.reduce(0) { $0 + $1.count }
        var full: WriteBuffer?
        var direct: (PackFile, UInt64)?
        lock.lock()
        var pack = current
        let fits = pack.map { p in store.state.withLock { p.size == 0 || p.size + UInt64(total) <= ContentStore.maxPackSize } } ?? false
        if !fits {
            full = buffer; buffer = nil
            do { pack = try store.checkOutPack(minimumRoom: UInt64(total)) } catch {
                lock.unlock()
                if let full { try? handOff(full) }
                throw error
            }
            current = pack
            touched.append(pack!)
        }
        let p = pack!
        if total > WriteBuffer.capacity {
            if full == nil { full = buffer; buffer = nil }
            _ = alignedStart(p)   // after the padding of the buffer just taken
            direct = (p, reserve(p, total))
        } else {
            if let b = buffer, b.used + total > WriteBuffer.capacity { full = b; buffer = nil }
            let b: WriteBuffer
            if let existing = buffer { b = existing } else {
                b = store.writeBuffers.take()
                b.pack = p; b.used = 0; b.records.removeAll(keepingCapacity: true)
                b.offset = alignedStart(p)
                buffer = b
            }
            let offset = reserve(p, total)
            var at = b.used
            for part in parts where part.count > 0 {
                (b.memory + at).copyMemory(from: part.baseAddress!, byteCount: part.count)
                at += part.count
            }
            b.records.append((digest, offset, UInt32(total)))
            b.used = at
        }
        lock.unlock()
        store.addUsage(Int64(total))
        if let full { try handOff(full) }
        if let (p, offset) = direct {
            var at = offset
            for part in parts { try writeAll(p, part, at: at); at += UInt64(part.count) }
            lock.withLock {
                pending.append((digest, p, offset, UInt32(total)))
                pendingBytes += UInt64(total)
            }
        }
        return total
    }

    /// Moves a pack's append offset to the next block boundary and returns it.
    private func alignedStart(_ p: PackFile) -> UInt64 {
        store.state.withLock { () -> UInt64 in
            let a = UInt64(WriteBuffer.alignment)
            p.size = (p.size + a - 1) / a * a
            return p.size
        }
    }

    private func reserve(_ p: PackFile, _ n: Int) -> UInt64 {
        store.state.withLock { () -> UInt64 in defer { p.size += UInt64(n) }; return p.size }
    }

    private func writeAll(_ p: PackFile, _ part: UnsafeRawBufferPointer, at offset: UInt64) throws(ContentStoreError) {
        var done = 0
        while done < part.count {
            let n = pwrite(p.fd, part.baseAddress! + done, part.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ContentStoreError.io("write", p.packPath)
            }
            done += n
        }
    }

    /// Queues a full buffer for the writer thread. Throws the error of an earlier queued write.
    private func handOff(_ b: WriteBuffer) throws(ContentStoreError) {
        if let e = lock.withLock({ writeError }) { throw e }
        inFlightBuffers.wait()
        writer.async {
            defer { self.inFlightBuffers.signal() }
            do throws(ContentStoreError) { try self.write(b) } catch {
                self.lock.withLock { if self.writeError == nil { self.writeError = error } }
            }
        }
    }

    /// Waits until the writer thread has written everything queued; throws its first error.
    private func drainWriter() throws(ContentStoreError) {
        writer.sync {}
        if let e = lock.withLock({ writeError }) { throw e }
    }

    /// Writes a full buffer to its pack; its frames then wait for the next `commit`.
    private func write(_ b: WriteBuffer) throws(ContentStoreError) {
        guard let p = b.pack, b.used > 0 else { store.writeBuffers.give(b); return }
        do {
            // O_DIRECT only when the data must reach the disk anyway: a store that is not durable
            // (a throwaway benchmark store) leaves it to the page cache, as any buffered writer.
            if !(direct && store.options.durable && writeDirect(b, p)) {
                try writeAll(p, UnsafeRawBufferPointer(start: b.memory, count: b.used), at: b.offset)
                // Start writeback now so the commit's fdatasync has little left to wait for.
                if store.options.durable { _ = gq_start_writeback(p.fd, Int64(b.offset), Int64(b.used)) }
            }
        } catch {
            store.writeBuffers.give(b)
            throw error
        }
        lock.withLock {
            for (d, o, l) in b.records { pending.append((d, p, o, l)) }
            pendingBytes += UInt64(b.used)
            b.pack = nil
        }
        store.writeBuffers.give(b)
    }

    /// Writes a buffer with O_DIRECT: the data goes from the buffer to the disk without a copy into
    /// the page cache (that copy costs about as much CPU as hashing the data again). False if the
    /// file system does not do O_DIRECT (tmpfs) or the write failed in a way a buffered write may not
    /// (the caller then writes it buffered, which reports a real error such as a full disk).
    private func writeDirect(_ b: WriteBuffer, _ p: PackFile) -> Bool {
        if p.directFD == -1 {
            let fd = Glibc.open(p.packPath, O_WRONLY | O_CLOEXEC | gq_o_direct())
            p.directFD = fd >= 0 ? fd : -2
        }
        guard p.directFD >= 0, b.offset % UInt64(WriteBuffer.alignment) == 0 else { return false }
        let a = WriteBuffer.alignment
        let padded = (b.used + a - 1) / a * a
        (b.memory + b.used).initializeMemory(as: UInt8.self, repeating: 0, count: padded - b.used)
        var done = 0
        while done < padded {
            let n = pwrite(p.directFD, b.memory + done, padded - done, off_t(b.offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 || n % a != 0 {
                if n < 0 && errno == EINVAL { Glibc.close(p.directFD); p.directFD = -2 }
                return false
            }
            done += n
        }
        return true
    }

    /// Bytes appended but not yet committed.
    var uncommittedBytes: UInt64 { lock.withLock { pendingBytes + UInt64(buffer?.used ?? 0) } }

    /// Makes every frame appended so far durable (pack fdatasync), then writes and syncs their index
    /// records, then makes them visible in the store's index.
    func commit() throws {
        commitLock.lock()
        defer { commitLock.unlock() }
        // What is still in the buffer or queued goes to the pack first.
        if let b = lock.withLock({ () -> WriteBuffer? in defer { buffer = nil }; return buffer }) { try handOff(b) }
        try drainWriter()
        let batch = lock.withLock { () -> [(Digest, PackFile, UInt64, UInt32)] in
            defer { pending.removeAll(); pendingBytes = 0 }
            return pending
        }
        guard !batch.isEmpty else { return }
        var byPack: [ObjectIdentifier: (PackFile, [(Digest, UInt64, UInt32)])] = [:]
        for (d, p, o, l) in batch { byPack[ObjectIdentifier(p), default: (p, [])].1.append((d, o, l)) }
        for (_, (p, _)) in byPack where store.options.durable {
            guard fdatasync(p.fd) == 0 else { throw ContentStoreError.io("fdatasync", p.packPath) }
        }
        for (_, (p, records)) in byPack {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(records.count * PackIndexRecord.size)
            for (d, o, l) in records { PackIndexRecord.encode(d, offset: o, length: l, into: &bytes) }
            let at = store.state.withLock { p.indexSize }
            do {
                try bytes.withUnsafeBytes { (b: UnsafeRawBufferPointer) throws in
                    var done = 0
                    while done < b.count {
                        let n = pwrite(p.indexFD, b.baseAddress! + done, b.count - done, off_t(at) + off_t(done))
                        if n < 0 { if errno == EINTR { continue }; throw ContentStoreError.io("write", p.indexPath) }
                        done += n
                    }
                }
                if store.options.durable && fdatasync(p.indexFD) != 0 { throw ContentStoreError.io("fdatasync", p.indexPath) }
            } catch {
                _ = ftruncate(p.indexFD, off_t(at))
                throw error
            }
            store.state.withLock { p.indexSize = at + UInt64(bytes.count) }
            store.addUsage(Int64(bytes.count))
            store.publish(records, in: p, relocating: relocating)
        }
    }

    /// Ends the session after a successful `commit`: its packs go back to the store for reuse.
    func finish() {
        lock.withLock { finished = true }
        // Cut the zero padding after the last O_DIRECT buffer.
        for p in touched {
            let size = store.state.withLock { p.size }
            var st = stat()
            if fstat(p.fd, &st) == 0 && UInt64(st.st_size) > size { _ = ftruncate(p.fd, off_t(size)) }
        }
        store.checkIn(touched)
    }

    /// Ends the session after a failure: frames not committed are cut off the packs (which are deleted
    /// if nothing in them was ever committed), so no partial data remains.
    func abandon() {
        writer.sync {}
        let packs = lock.withLock { () -> [PackFile] in
            defer { finished = true; pending.removeAll(); buffer = nil }
            return finished ? [] : touched
        }
        for p in packs { store.truncateUncommitted(p) }
        store.checkIn(packs)
    }

    deinit { if !finished { abandon() } }
}

extension ContentStore {
    /// A pack grows to at most this size before a session starts a new one.
    static let maxPackSize: UInt64 = 512 << 20
    /// An import commits (makes durable and visible) what it wrote so far every this many bytes.
    static let commitInterval: UInt64 = 256 << 20

    var packDirectory: String { root + "/packs" }

    /// A pack no session is using with room left, or a new one.
    func checkOutPack(minimumRoom: UInt64) throws(ContentStoreError) -> PackFile {
        let reused = state.withLock { () -> PackFile? in
            let p = packs.values.filter { !$0.checkedOut && $0.size + minimumRoom <= ContentStore.maxPackSize }.min { $0.id < $1.id }
            p?.checkedOut = true
            return p
        }
        if let reused { return reused }
        while true {
            let id = String(UInt64.random(in: 0...UInt64.max), radix: 16).leftPadded(16)
            let packPath = "\(packDirectory)/\(id).pack", indexPath = "\(packDirectory)/\(id).idx"
            let fd = Glibc.open(packPath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd < 0 && errno == EEXIST { continue }
            guard fd >= 0 else { throw ContentStoreError.io("create", packPath) }
            let ifd = Glibc.open(indexPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard ifd >= 0 else {
                let e = ContentStoreError.io("create", indexPath)
                Glibc.close(fd); unlink(packPath)
                throw e
            }
            // The new names must survive a crash before anything is indexed in them.
            if options.durable { try FileIO.fsyncDirectory(packDirectory) }
            let p = PackFile(id: id, directory: packDirectory, fd: fd, indexFD: ifd, size: 0, indexSize: 0)
            p.checkedOut = true
            state.withLock { packs[id] = p }
            return p
        }
    }

    func checkIn(_ list: [PackFile]) {
        state.withLock { for p in list { p.checkedOut = false } }
        // A pack nothing was ever committed to is useless: drop it.
        for p in list where state.withLock({ p.indexSize == 0 && p.size == 0 && !p.checkedOut }) { dropPack(p) }
    }

    /// Cuts a pack back to its last committed frame (after a failed session).
    func truncateUncommitted(_ p: PackFile) {
        let (size, end) = state.withLock { (p.size, p.committedEnd) }
        guard size > end else { return }
        _ = ftruncate(p.fd, off_t(end))
        state.withLock { p.size = end }
        addUsage(-Int64(size - end))
    }

    /// Makes committed records visible: the first location of a digest wins (a duplicate frame is dead
    /// space) unless the session is relocating them.
    func publish(_ records: [(Digest, UInt64, UInt32)], in p: PackFile, relocating: Bool) {
        state.withLock {
            for (d, o, l) in records {
                p.committedEnd = max(p.committedEnd, o + UInt64(l))
                if let old = index[d] {
                    guard relocating else { continue }
                    old.pack.liveRecords -= 1
                }
                index[d] = ChunkLocation(pack: p, offset: o, length: l)
                p.liveRecords += 1
            }
        }
    }

    /// Deletes a pack's files (index first, so a crash in between leaves a pack without index, which
    /// the next open deletes) and forgets it.
    func dropPack(_ p: PackFile) {
        state.withLock { packs[p.id] = nil }
        let freed = FileIO.allocatedOrSize(p.packPath) + FileIO.allocatedOrSize(p.indexPath)
        unlink(p.indexPath)
        unlink(p.packPath)
        addUsage(-Int64(freed))
    }

    /// Reads every pack index, verifies it, and repairs what an interrupted write left (see the
    /// `PackFile` documentation). Returns descriptions of damaged index records that were dropped.
    func loadPacks() throws -> [String] {
        try FileIO.makeDirectory(packDirectory)
        var damage: [String] = []
        var changed = false
        let names = try FileIO.list(packDirectory)
        let ids = Set(names.filter { $0.hasSuffix(".idx") }.map { String($0.dropLast(4)) })
        for name in names where name.hasSuffix(".pack") && !ids.contains(String(name.dropLast(5))) {
            unlink("\(packDirectory)/\(name)")   // written by a session that never committed
            changed = true
        }
        for name in names where !name.hasSuffix(".pack") && !name.hasSuffix(".idx") {
            unlink("\(packDirectory)/\(name)")   // leftovers of an index rewrite
            changed = true
        }
        for id in ids.sorted() {
            let packPath = "\(packDirectory)/\(id).pack", indexPath = "\(packDirectory)/\(id).idx"
            guard FileIO.exists(packPath) else {
                let n = FileIO.allocatedOrSize(indexPath) / UInt64(PackIndexRecord.size)
                if n > 0 { damage.append("pack \(id): its index lists \(n) chunks but the pack file is gone") }
                unlink(indexPath); changed = true
                continue
            }
            let fd = Glibc.open(packPath, O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { throw ContentStoreError.io("open", packPath) }
            let ifd = Glibc.open(indexPath, O_RDWR | O_CLOEXEC)
            guard ifd >= 0 else { Glibc.close(fd); throw ContentStoreError.io("open", indexPath) }
            let packSize = UInt64(try FileIO.fileSize(fd: fd, path: packPath))
            let indexBytes = try FileIO.readFile(indexPath, maxSize: Int(ContentStore.maxPackSize / 64 + 1) * PackIndexRecord.size * 2)
            var records: [(Digest, UInt64, UInt32)] = []
            var lastGood = 0
            var bad: [Int] = []
            let count = indexBytes.count / PackIndexRecord.size
            indexBytes.withUnsafeBytes { buf in
                for i in 0..<count {
                    let rec = UnsafeRawBufferPointer(rebasing: buf[(i * PackIndexRecord.size)..<((i + 1) * PackIndexRecord.size)])
                    if let r = PackIndexRecord.decode(rec), r.length > 0, r.length <= ContentStore.maxFrameSize,
                       r.offset + UInt64(r.length) <= packSize {
                        records.append(r)
                        lastGood = i + 1
                    } else {
                        bad.append(i)
                    }
                }
            }
            // Bad records after the last good one are a torn append: cut them (and any partial record).
            let damaged = bad.filter { $0 < lastGood }
            if !damaged.isEmpty { damage.append("pack \(id): \(damaged.count) index records are damaged (records \(damaged.prefix(5).map(String.init).joined(separator: ", "))); their chunks are lost") }
            let indexSize = UInt64(lastGood * PackIndexRecord.size)
            if indexSize < UInt64(indexBytes.count) { _ = ftruncate(ifd, off_t(indexSize)); changed = true }
            let end = records.map { $0.1 + UInt64($0.2) }.max() ?? 0
            if packSize > end { _ = ftruncate(fd, off_t(end)); changed = true }
            let p = PackFile(id: id, directory: packDirectory, fd: fd, indexFD: ifd, size: end, indexSize: indexSize)
            if records.isEmpty {
                packs[id] = p
                dropPack(p)
                changed = true
                continue
            }
            packs[id] = p
            publish(records, in: p, relocating: false)
        }
        if changed && options.durable { try FileIO.fsyncDirectory(packDirectory) }
        return damage
    }

    /// Largest frame a pack index may declare.
    static var maxFrameSize: UInt32 { UInt32(ChunkingParameters.largestAllowedChunk + 64 + ZstdCompressor.bound(0)) + (UInt32(ChunkingParameters.largestAllowedChunk) >> 7) }

    /// Removes chunks from the index and frees their space: rewrites each affected pack's index
    /// atomically without them, then punches holes (or compacts), and deletes packs left empty.
    /// Packs a session is writing are skipped (their chunks stay). Returns the bytes freed.
    func removeChunks(_ digests: some Sequence<Digest>) throws -> UInt64 {
        let before = usedBytes
        // Group by pack, skipping checked-out packs.
        // Each affected pack is checked out while GC works on it, so no session appends meanwhile.
        var victims: [String: (PackFile, [ChunkLocation])] = [:]
        state.withLock {
            for d in digests {
                guard let loc = index[d] else { continue }
                if victims[loc.pack.id] == nil {
                    guard !loc.pack.checkedOut else { continue }
                    loc.pack.checkedOut = true
                    victims[loc.pack.id] = (loc.pack, [])
                }
                index[d] = nil
                loc.pack.liveRecords -= 1
                victims[loc.pack.id]!.1.append(loc)
            }
        }
        defer { state.withLock { for (_, (p, _)) in victims { p.checkedOut = false } } }
        for (_, (p, dead)) in victims.sorted(by: { $0.key < $1.key }) {
            if state.withLock({ p.liveRecords }) == 0 { dropPack(p); continue }
            try rewriteIndex(p)
            if options.punchHoles && punch(p, dead) { continue }
            try compact(p)
        }
        if !victims.isEmpty && options.durable { try FileIO.fsyncDirectory(packDirectory) }
        let after = try measureUsage()
        state.withLock { usage = after }
        return before > after ? before - after : 0
    }

    /// Rewrites a pack's index with only its live records (temp file, fsync, rename, dir fsync).
    private func rewriteIndex(_ p: PackFile) throws {
        let live = state.withLock { index.filter { $0.value.pack === p }.map { ($0.key, $0.value) } }.sorted { $0.1.offset < $1.1.offset }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(live.count * PackIndexRecord.size)
        for (d, loc) in live { PackIndexRecord.encode(d, offset: loc.offset, length: loc.length, into: &bytes) }
        try writeAtomically(p.indexPath, bytes)
        try syncDirtyDirectories()
        // Later appends go to the new file.
        let fd = Glibc.open(p.indexPath, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw ContentStoreError.io("open", p.indexPath) }
        let old = state.withLock { () -> Int32 in
            defer { p.indexFD = fd; p.indexSize = UInt64(bytes.count) }
            return p.indexFD
        }
        Glibc.close(old)
    }

    /// Frees the blocks of dead frames. False if the file system cannot punch holes.
    private func punch(_ p: PackFile, _ dead: [ChunkLocation]) -> Bool {
        // Adjacent dead frames (usually a whole import's) are punched as one range, so the partial
        // blocks at frame boundaries are freed too.
        var ranges: [(UInt64, UInt64)] = []
        for loc in dead.sorted(by: { $0.offset < $1.offset }) {
            if let last = ranges.last, last.1 == loc.offset { ranges[ranges.count - 1].1 = loc.offset + UInt64(loc.length) }
            else { ranges.append((loc.offset, loc.offset + UInt64(loc.length))) }
        }
        for (lo, hi) in ranges {
            if gq_punch_hole(p.fd, Int64(lo), Int64(hi - lo)) != 0 {
                if errno == EOPNOTSUPP || errno == ENOSYS { return false }
            }
        }
        return true
    }

    /// Copies a pack's live frames into another pack, then deletes it.
    private func compact(_ p: PackFile) throws {
        let live = state.withLock { index.filter { $0.value.pack === p }.map { ($0.key, $0.value) } }
        let session = PackSession(store: self, relocating: true)
        do {
            for (d, loc) in live {
                let frame = try readFrame(at: loc)
                _ = try frame.withUnsafeBytes { try session.append(d, parts: [$0]) }
            }
            try session.commit()
            session.finish()
        } catch {
            session.abandon()
            throw error
        }
        dropPack(p)
    }

    /// The stored frame at a location (unverified).
    func readFrame(at loc: ChunkLocation) throws(ContentStoreError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(loc.length))
        var done = 0
        while done < out.count {
            let n = out.withUnsafeMutableBytes { pread(loc.pack.fd, $0.baseAddress! + done, $0.count - done, off_t(loc.offset) + off_t(done)) }
            if n < 0 { if errno == EINTR { continue }; throw ContentStoreError.io("read", loc.pack.packPath) }
            if n == 0 { throw ContentStoreError.sizeMismatch(loc.pack.packPath, expected: loc.offset + UInt64(loc.length), actual: loc.offset + UInt64(done)) }
            done += n
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}
