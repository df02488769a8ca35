#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import MeshCore

/// The disk edge of the cluster state: a snapshot plus a delta log in one directory. The CRDT core
/// never touches it; the shell appends what `ClusterSync.takeApplied()` returns before sending
/// acknowledgements, and snapshots now and then.
///
/// - `snapshot`: magic `GQCS` + version byte, then the encoded `ClusterData`. Written to a temp
///   file, fsynced, renamed over the old one, and the directory fsynced.
/// - `deltas.log`: records `length (u32 BE) | SHA-256 prefix (8 bytes) | encoded ClusterData`.
///   Each `append` is one write and one fsync. A torn or corrupt tail (a crash mid-write, never
///   acknowledged) is cut off at recovery.
/// - `epoch`: the anti-entropy epoch, one more on every open.
public final class ClusterStateDisk {
    public let directory: String
    private var logFD: Int32
    public private(set) var logBytes: Int

    /// What `open` found.
    public struct Recovered: Sendable {
        public var data: ClusterData
        /// Use this as `ClusterSync`'s epoch: larger than any earlier run's.
        public var epoch: UInt64
        public var replayedDeltas: Int
        public var discardedTailBytes: Int
    }

    static let magic: [UInt8] = Array("GQCS".utf8) + [1]

    private init(directory: String, logFD: Int32, logBytes: Int) {
        self.directory = directory
        self.logFD = logFD
        self.logBytes = logBytes
    }

    deinit { close(logFD) }

    /// Opens (creating if needed) `directory` and recovers the state it holds.
    public static func open(directory: String) throws(ClusterStateError) -> (ClusterStateDisk, Recovered) {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST { throw .io("mkdir \(directory)", errno: errno) }
        var data = ClusterData()
        if let snap = try readFile("\(directory)/snapshot") {
            guard snap.count >= magic.count, Array(snap.prefix(magic.count)) == magic else {
                throw .corrupt("\(directory)/snapshot does not start with the GQCS header")
            }
            do { data = try ClusterData(wireBytes: Array(snap.dropFirst(magic.count))) } catch {
                throw .corrupt("\(directory)/snapshot: \(error)")
            }
        }
        let epochText = try readFile("\(directory)/epoch").map { String(decoding: $0, as: UTF8.self) } ?? "0"
        let epoch = (UInt64(epochText.trimmingWhitespace) ?? 0) + 1
        try writeAtomically("\(directory)/epoch", Array("\(epoch)\n".utf8), directory: directory)

        let logPath = "\(directory)/deltas.log"
        let log = try readFile(logPath) ?? []
        var offset = 0, replayed = 0
        while log.count - offset >= 12 {
            let n = log[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
            guard n <= log.count - offset - 12 else { break }
            let payload = Array(log[(offset + 12)..<(offset + 12 + n)])
            guard Array(Digest.of(payload).bytes.prefix(8)) == Array(log[(offset + 4)..<(offset + 12)]) else { break }
            do { data.join(try ClusterData(wireBytes: payload)) } catch {
                throw .corrupt("\(logPath) record at byte \(offset): \(error)")
            }
            offset += 12 + n
            replayed += 1
        }
        let fd = Glibc.open(logPath, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io("open \(logPath)", errno: errno) }
        if offset < log.count {
            guard ftruncate(fd, off_t(offset)) == 0, fsync(fd) == 0 else { close(fd); throw .io("truncate \(logPath)", errno: errno) }
        }
        guard lseek(fd, off_t(offset), SEEK_SET) >= 0 else { close(fd); throw .io("seek \(logPath)", errno: errno) }
        let disk = ClusterStateDisk(directory: directory, logFD: fd, logBytes: offset)
        return (disk, Recovered(data: data, epoch: epoch, replayedDeltas: replayed, discardedTailBytes: log.count - offset))
    }

    /// Appends deltas to the log and fsyncs: when this returns, they survive a crash.
    public func append(_ deltas: [ClusterData]) throws(ClusterStateError) {
        guard !deltas.isEmpty else { return }
        var out: [UInt8] = []
        for d in deltas {
            let payload = d.wireBytes()
            let n = UInt32(payload.count)
            out += [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)]
            out += Digest.of(payload).bytes.prefix(8)
            out += payload
        }
        try ClusterStateDisk.writeAll(logFD, out, what: "append to \(directory)/deltas.log")
        guard fsync(logFD) == 0 else { throw .io("fsync \(directory)/deltas.log", errno: errno) }
        logBytes += out.count
    }

    /// Writes `data` as the new snapshot and empties the log (whose deltas it contains).
    public func snapshot(_ data: ClusterData) throws(ClusterStateError) {
        try ClusterStateDisk.writeAtomically("\(directory)/snapshot", ClusterStateDisk.magic + data.wireBytes(), directory: directory)
        // A crash before the truncation only means replaying deltas the snapshot has: joins are idempotent.
        guard ftruncate(logFD, 0) == 0, lseek(logFD, 0, SEEK_SET) >= 0, fsync(logFD) == 0 else {
            throw .io("truncate \(directory)/deltas.log", errno: errno)
        }
        logBytes = 0
    }

    // MARK: File helpers

    static func readFile(_ path: String) throws(ClusterStateError) -> [UInt8]? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw .io("open \(path)", errno: errno)
        }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = read(fd, &buf, buf.count)
            if n < 0 { if errno == EINTR { continue }; throw .io("read \(path)", errno: errno) }
            if n == 0 { break }
            out += buf[0..<n]
        }
        return out
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], what: String) throws(ClusterStateError) {
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw .io(what, errno: errno) }
            done += n
        }
    }

    static func writeAtomically(_ path: String, _ bytes: [UInt8], directory: String) throws(ClusterStateError) {
        let tmp = path + ".tmp"
        let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .io("create \(tmp)", errno: errno) }
        do { try writeAll(fd, bytes, what: "write \(tmp)") } catch { close(fd); throw error }
        guard fsync(fd) == 0 else { let e = errno; close(fd); throw .io("fsync \(tmp)", errno: e) }
        close(fd)
        guard rename(tmp, path) == 0 else { throw .io("rename \(tmp)", errno: errno) }
        let dfd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw .io("open \(directory)", errno: errno) }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw .io("fsync \(directory)", errno: errno) }
    }
}

extension String {
    fileprivate var trimmingWhitespace: String {
        String(self.drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}
