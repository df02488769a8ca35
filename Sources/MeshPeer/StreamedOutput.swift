#if canImport(Glibc)
import Glibc
#endif
import CLinuxIO
import ContentStore
import Foundation
import MeshCore
import Synchronization

/// `gquic-fetch get -o FILE` written while the blob arrives, instead of exported from the store after
/// it is committed (which cost 0.8–10 s for 256 MiB on a loaded machine).
///
/// The daemon writes each verified chunk (a `VerifiedChunk`, so its bytes hash to the chunk digest the
/// manifest lists at that position) at its offset into a temp file next to FILE,
/// `.NAME.gquic-partial-PID-RAND`. When the store has committed the blob — every chunk present and the
/// concatenation verified against the blob's digest — `finish` fills any position not written yet
/// from the store (chunks that were already held, or arrived before the output was opened), fsyncs
/// unless `sync` is off, and renames the temp file onto FILE. Bytes that were not verified never reach
/// FILE: the file holds exactly the chunks of the committed chunk list, each verified, and `finish`
/// refuses a chunk list other than the one the output was opened with. Any failure removes the temp
/// file, and the caller exports from the store the ordinary way.
///
/// Thread-safe: chunks are written on the swarm's writer thread, `finish` runs on its own queue,
/// `abandon` comes from the control API.
public final class StreamedOutput: @unchecked Sendable {
    public enum State: Equatable, Sendable {
        /// Chunks are being written to the temp file.
        case writing
        /// FILE is in place, complete and verified.
        case done
        /// Nothing at FILE from this output (the temp file is gone); `reason` says why.
        case dropped(String)
    }

    public let target: String
    public let tempPath: String
    public let blob: Digest
    public let sync: Bool
    /// The process that asked for the file (its `get`); when it is gone before the file is done, the
    /// output is abandoned.
    public let owner: Int32?
    private let chunks: [(digest: Digest, size: Int)]
    private let offsets: [Int]
    /// Where each chunk digest goes (a chunk may appear at several positions).
    private let positions: [Digest: [Int]]
    private struct Inner {
        var fd: Int32
        var written: [Bool]
        var writtenCount = 0
        var state = State.writing
    }
    private let inner: Mutex<Inner>
    private let finished = DispatchSemaphore(value: 0)

    /// Creates the temp file next to `target` (an absolute path), sized for the whole blob.
    public init(target: String, blob: Digest, chunks: [(digest: Digest, size: Int)], sync: Bool, owner: Int32?) throws(PeerError) {
        self.target = target
        self.blob = blob
        self.sync = sync
        self.owner = owner
        self.chunks = chunks
        var offsets: [Int] = [], positions: [Digest: [Int]] = [:], at = 0
        offsets.reserveCapacity(chunks.count + 1)
        for (i, c) in chunks.enumerated() {
            offsets.append(at)
            positions[c.digest, default: []].append(i)
            at += c.size
        }
        offsets.append(at)
        self.offsets = offsets
        self.positions = positions
        StreamedOutput.removeStale(next: target)
        tempPath = ContentStore.partialName(target)
        let fd = open(tempPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .system("creating \(tempPath)", errno) }
        if ftruncate(fd, off_t(at)) != 0 {
            let e = errno
            close(fd); unlink(tempPath)
            throw .system("sizing \(tempPath) to \(at) bytes", e)
        }
        inner = Mutex(Inner(fd: fd, written: [Bool](repeating: false, count: chunks.count)))
    }

    deinit {
        inner.withLock { s in
            if s.fd >= 0 { close(s.fd); s.fd = -1 }
            if s.state == .writing { unlink(tempPath) }
        }
    }

    /// Removes the temp files an earlier write to `target` left behind when its process died (a
    /// daemon that crashed mid-fetch): `.NAME.gquic-partial-PID-RAND` next to `target` whose PID no
    /// longer runs. Files of live processes, and any other name, are left alone.
    static func removeStale(next target: String) {
        let (dir, prefix) = ContentStore.partialPrefix(target)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count).split(separator: "-", omittingEmptySubsequences: false)
            guard rest.count == 2, let pid = Int32(rest[0]), UInt32(rest[1]) != nil, StreamedOutputs.exited(pid) else { continue }
            unlink((dir == "/" ? "" : dir) + "/" + name)
        }
    }

    public var state: State { inner.withLock { $0.state } }
    /// Positions written so far.
    public var writtenChunks: Int { inner.withLock { $0.writtenCount } }
    public var size: Int { offsets[offsets.count - 1] }

    /// Writes `chunk` at every position of the chunk list that names its digest (nothing if none does,
    /// or the output is no longer writing). A write error drops the output.
    public func write(_ chunk: VerifiedChunk) {
        guard let at = positions[chunk.digest] else { return }
        inner.withLock { s in
            guard s.state == .writing else { return }
            for i in at where !s.written[i] {
                guard chunk.bytes.count == chunks[i].size else {
                    drop(&s, "chunk \(i) is \(chunk.bytes.count) bytes, the chunk list says \(chunks[i].size)")
                    return
                }
                if let why = pwriteAll(s.fd, chunk.bytes, at: offsets[i]) { drop(&s, why); return }
                s.written[i] = true
                s.writtenCount += 1
                // Start writing back now, so the fsync at the end has little left to wait for.
                if sync { _ = gq_start_writeback(s.fd, Int64(offsets[i]), Int64(chunk.bytes.count)) }
            }
        }
    }

    /// The blob was committed with `committed` as its chunk list (verified by the store): fills the
    /// positions not written yet with `read` (verified chunks from the store), fsyncs unless `sync` is
    /// off, and renames the temp file onto the target. On any failure the temp file is removed.
    public func finish(committed: [(digest: Digest, size: Int)], read: (Digest) throws -> VerifiedChunk) {
        defer { finished.signal() }
        guard committed.count == chunks.count, zip(committed, chunks).allSatisfy({ $0.digest == $1.digest && $0.size == $1.size }) else {
            inner.withLock { drop(&$0, "the committed chunk list differs from the one the output was opened with") }
            return
        }
        let missing = inner.withLock { s in s.state == .writing ? s.written.indices.filter { !s.written[$0] } : [] }
        for i in missing {
            do { write(try read(chunks[i].digest)) } catch {
                inner.withLock { drop(&$0, "reading chunk \(i) from the store: \(error)") }
                return
            }
        }
        inner.withLock { s in
            guard s.state == .writing else { return }
            guard s.writtenCount == chunks.count else { drop(&s, "\(chunks.count - s.writtenCount) chunks were not written"); return }
            if sync && fsync(s.fd) != 0 { drop(&s, "fsync \(tempPath): \(String(cString: strerror(errno)))"); return }
            close(s.fd)
            s.fd = -1
            guard rename(tempPath, target) == 0 else { drop(&s, "renaming onto \(target): \(String(cString: strerror(errno)))"); return }
            s.state = .done
        }
    }

    /// Stops the output and removes its temp file (a fetch failed, the `get` went away, the daemon
    /// stops). A finished output is left as it is.
    public func abandon(_ why: String) {
        let wasWriting = inner.withLock { s in
            guard s.state == .writing else { return false }
            drop(&s, why)
            return true
        }
        if wasWriting { finished.signal() }
    }

    /// Waits until the output is done or dropped, at most `timeout`; nil if it is still writing then.
    public func wait(timeout: Duration) -> State? {
        if case .writing = state {
            let ns = Int(timeout.components.seconds) * 1_000_000_000 + Int(timeout.components.attoseconds / 1_000_000_000)
            guard finished.wait(timeout: .now() + .nanoseconds(ns)) == .success else { return nil }
            finished.signal()   // let other waiters through too
        }
        return state
    }

    private func drop(_ s: inout Inner, _ why: String) {
        guard s.state == .writing else { return }
        if s.fd >= 0 { close(s.fd); s.fd = -1 }
        unlink(tempPath)
        s.state = .dropped(why)
    }

    private func pwriteAll(_ fd: Int32, _ bytes: [UInt8], at offset: Int) -> String? {
        bytes.withUnsafeBytes { buf -> String? in
            var done = 0
            while done < buf.count {
                let n = pwrite(fd, buf.baseAddress! + done, buf.count - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    return "writing \(tempPath): \(String(cString: strerror(errno)))"
                }
                done += n
            }
            return nil
        }
    }
}

/// The streamed outputs a node has been asked for, by blob: requests until the blob's chunk list is
/// known (the manifest arrives with the first holder's answer), then open outputs until their `get`
/// claims them through `/v1/export`. Shared by the swarm shell (opens, feeds and finishes them under
/// the host's lock or on its writer thread) and the control API (claims and abandons them); it never
/// calls back into either, so it cannot deadlock with them.
public final class StreamedOutputs: Sendable {
    public struct Request: Sendable {
        public var target: String
        public var sync: Bool
        public var owner: Int32?
        public init(target: String, sync: Bool, owner: Int32?) { self.target = target; self.sync = sync; self.owner = owner }
    }
    private struct Table {
        var requests: [Digest: [Request]] = [:]
        var outputs: [StreamedOutput] = []
    }
    private let table = Mutex(Table())

    public init() {}

    /// Asks for `blob` to be streamed to `request.target` once its chunk list is known.
    public func request(_ blob: Digest, _ request: Request) {
        table.withLock { $0.requests[blob, default: []].append(request) }
    }

    /// Whether anything waits for `blob`'s chunk list.
    public func wants(_ blob: Digest) -> Bool { table.withLock { $0.requests[blob] != nil } }

    /// The chunk list of `blob` is known: opens an output for every request waiting for it. Returns the
    /// requests that could not be opened, with why (their `get` falls back to an export).
    @discardableResult
    public func open(_ blob: Digest, chunks: [(digest: Digest, size: Int)]) -> [(Request, String)] {
        let requests = table.withLock { $0.requests.removeValue(forKey: blob) ?? [] }
        var opened: [StreamedOutput] = [], failures: [(Request, String)] = []
        for r in requests {
            do { opened.append(try StreamedOutput(target: r.target, blob: blob, chunks: chunks, sync: r.sync, owner: r.owner)) } catch {
                failures.append((r, "\(error)"))
            }
        }
        table.withLock { $0.outputs += opened }
        return failures
    }

    /// `blob` will not be streamed (it is not a single file): its requests are dropped.
    public func drop(_ blob: Digest) { table.withLock { _ = $0.requests.removeValue(forKey: blob) } }

    /// The outputs still being written for `blob`.
    public func writing(_ blob: Digest) -> [StreamedOutput] {
        table.withLock { $0.outputs.filter { $0.blob == blob && $0.state == .writing } }
    }

    /// `blob` was committed with `committed` as its chunk list: each output of it is finished (filled,
    /// fsynced, renamed) on a background queue, not on the caller's thread.
    public func finish(_ blob: Digest, committed: [(digest: Digest, size: Int)], read: @escaping @Sendable (Digest) throws -> VerifiedChunk) {
        drop(blob)
        for o in writing(blob) {
            DispatchQueue.global().async { o.finish(committed: committed, read: read) }
        }
    }

    /// `blob`'s fetch failed: every output of it is abandoned, every request dropped.
    public func fail(_ blob: Digest, _ why: String) {
        drop(blob)
        for o in writing(blob) { o.abandon("the fetch failed: \(why)") }
    }

    /// What became of the output of `blob` to `target`, once it is done or dropped (waiting at most
    /// `timeout` while it is being written); nil if there is none. A claimed output is forgotten.
    public func claim(_ blob: Digest, target: String, timeout: Duration) -> StreamedOutput.State? {
        let o = table.withLock { t -> StreamedOutput? in
            t.requests[blob]?.removeAll { $0.target == target }
            if t.requests[blob]?.isEmpty == true { t.requests[blob] = nil }
            return t.outputs.last { $0.blob == blob && $0.target == target }
        }
        guard let o else { return nil }
        let state = o.wait(timeout: timeout)
        if state != nil { table.withLock { $0.outputs.removeAll { $0 === o } } }
        return state
    }

    /// The `get` that asked for `blob` at `target` went away: its requests and outputs are dropped,
    /// temp files removed (a finished FILE stays). Returns how many there were.
    @discardableResult
    public func abandon(_ blob: Digest, target: String, _ why: String) -> Int {
        let (requests, gone) = table.withLock { t -> (Int, [StreamedOutput]) in
            let before = t.requests[blob]?.count ?? 0
            t.requests[blob]?.removeAll { $0.target == target }
            let requests = before - (t.requests[blob]?.count ?? 0)
            if t.requests[blob]?.isEmpty == true { t.requests[blob] = nil }
            let gone = t.outputs.filter { $0.blob == blob && $0.target == target }
            t.outputs.removeAll { $0.blob == blob && $0.target == target }
            return (requests, gone)
        }
        for o in gone { o.abandon(why) }
        return requests + gone.count
    }

    /// Drops what belongs to `get` processes that have exited without claiming it (killed, say): an
    /// output still being written is abandoned at once, its temp file removed, rather than left until
    /// the blob is committed. Run every so often (the daemon: twice a second).
    public func sweep() {
        let gone = table.withLock { t -> [StreamedOutput] in
            for (blob, rs) in t.requests {
                let alive = rs.filter { !StreamedOutputs.exited($0.owner) }
                t.requests[blob] = alive.isEmpty ? nil : alive
            }
            let gone = t.outputs.filter { StreamedOutputs.exited($0.owner) }
            t.outputs.removeAll { o in gone.contains { $0 === o } }
            return gone
        }
        for o in gone { o.abandon("the get that asked for it exited") }
    }

    /// Abandons everything (the daemon stops).
    public func abandonAll(_ why: String) {
        let all = table.withLock { t -> [StreamedOutput] in
            t.requests = [:]
            defer { t.outputs = [] }
            return t.outputs
        }
        for o in all { o.abandon(why) }
    }

    /// Outputs and requests held (for tests and status).
    public var count: (requests: Int, outputs: Int) {
        table.withLock { t in (t.requests.values.reduce(0) { $0 + $1.count }, t.outputs.count) }
    }

    static func exited(_ pid: Int32?) -> Bool {
        guard let pid, pid > 0 else { return false }
        return kill(pid, 0) != 0 && errno == ESRCH
    }
}
