#if canImport(Glibc)
import Glibc
#endif
import MeshCore

/// A node's data directory:
///
/// ```
/// DATA/node.key       Ed25519 identity (mode 0600)
/// DATA/gquic.conf     configuration (optional; defaults apply)
/// DATA/store/         content store
/// DATA/state/         cluster-state snapshot and delta log
/// DATA/lock           held (flock) by the running daemon; contains its pid
/// DATA/control.sock   control API (while running)
/// ```
public struct DataDirectory: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    public var keyPath: String { path + "/node.key" }
    public var configPath: String { path + "/gquic.conf" }
    public var storePath: String { path + "/store" }
    public var statePath: String { path + "/state" }
    public var lockPath: String { path + "/lock" }

    /// Resolves a path from the configuration: relative paths live inside the data directory.
    public func resolve(_ p: String) -> String { p.hasPrefix("/") ? p : path + "/" + p }

    public var exists: Bool { access(keyPath, F_OK) == 0 }

    /// Creates the directory, a fresh identity and a commented config skeleton. Refuses to touch an
    /// already initialised directory.
    @discardableResult
    public func initialise() throws(PeerError) -> NodeIdentity {
        if exists { throw .alreadyInitialised(path) }
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw .system("creating \(prefix)", errno) }
        }
        chmod(path, 0o700)
        for dir in [storePath, statePath] {
            if mkdir(dir, 0o700) != 0 && errno != EEXIST { throw .system("creating \(dir)", errno) }
        }
        let identity: NodeIdentity
        do {
            identity = try NodeIdentity.generate()
            try identity.save(path: keyPath)
        } catch { throw .identity(error) }
        if access(configPath, F_OK) != 0 {
            try writeFile(configPath, PeerConfig.skeleton(), mode: 0o644)
        }
        return identity
    }

    public func loadIdentity() throws(PeerError) -> NodeIdentity {
        guard exists else { throw .notInitialised(path) }
        do { return try NodeIdentity.load(path: keyPath) } catch { throw .identity(error) }
    }

    /// Reads `gquic.conf` if present (or `override`), then the environment.
    public func loadConfig(file override: String? = nil, environment: [String: String]) throws(PeerError) -> PeerConfig {
        var config = PeerConfig()
        let file = override ?? configPath
        if override != nil || access(file, F_OK) == 0 {
            let text: String
            do { text = try readFile(file, limit: 1 << 20) } catch { throw .config(.unreadable(file, error.description)) }
            do { try config.apply(ConfigFile(text: text, path: file)) } catch { throw .config(error) }
        }
        do { try config.apply(environment: environment) } catch { throw .config(error) }
        return config
    }

    /// Takes the directory's lock for this process's lifetime. A second daemon on the same data
    /// directory is refused, naming the running one's pid.
    public func lock() throws(PeerError) -> DirectoryLock {
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .system("opening \(lockPath)", errno) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, buf.count, 0)
            close(fd)
            let pid = n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingWhitespace() : "?"
            throw .locked(path, pid: pid)
        }
        ftruncate(fd, 0)
        let pid = Array("\(getpid())\n".utf8)
        _ = pwrite(fd, pid, pid.count, 0)
        return DirectoryLock(fd: fd)
    }

    /// The pid recorded in the lock file, if a daemon holds the lock now.
    public func runningPid() -> Int32? {
        let fd = open(lockPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 { flock(fd, LOCK_UN); return nil }
        var buf = [UInt8](repeating: 0, count: 32)
        let n = pread(fd, &buf, buf.count, 0)
        return n > 0 ? Int32(String(decoding: buf[0..<n], as: UTF8.self).trimmingWhitespace()) : nil
    }
}

/// Holds a data directory's flock until released or the process exits.
public final class DirectoryLock: Sendable {
    private let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }
}

func writeFile(_ path: String, _ text: String, mode: mode_t) throws(PeerError) {
    let tmp = path + ".tmp-\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw .system("creating \(tmp)", errno) }
    let bytes = Array(text.utf8)
    let ok = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == $0.count } && fsync(fd) == 0
    let err = errno
    close(fd)
    guard ok, rename(tmp, path) == 0 else { unlink(tmp); throw .system("writing \(path)", err) }
}

func readFile(_ path: String, limit: Int) throws(PeerError) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .system("opening \(path)", errno) }
    defer { close(fd) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 16384)
    while true {
        let n = read(fd, &buf, buf.count)
        if n < 0 { throw .system("reading \(path)", errno) }
        if n == 0 { break }
        out += buf[0..<n]
        if out.count > limit { throw .system("reading \(path): larger than \(limit) bytes", EFBIG) }
    }
    return String(decoding: out, as: UTF8.self)
}

/// Errors of the daemon and its tools: each says what went wrong and what to do.
public struct PeerError: Error, CustomStringConvertible, Sendable {
    private enum Kind: Sendable {
        case alreadyInitialised(String)
        case notInitialised(String)
        case locked(String, pid: String)
        case identity(String)
        case config(ConfigError)
        case system(String)
        case daemonUnreachable(String)
        case protocolError(String)
    }
    private let kind: Kind
    /// The `errno` of a failed system call, when there was one.
    public let errnoCode: Int32?

    static func alreadyInitialised(_ p: String) -> PeerError { .init(kind: .alreadyInitialised(p), errnoCode: nil) }
    static func notInitialised(_ p: String) -> PeerError { .init(kind: .notInitialised(p), errnoCode: nil) }
    static func locked(_ p: String, pid: String) -> PeerError { .init(kind: .locked(p, pid: pid), errnoCode: nil) }
    static func identity(_ e: IdentityError) -> PeerError { .init(kind: .identity(e.description), errnoCode: e.errnoCode) }
    public static func config(_ e: ConfigError) -> PeerError { .init(kind: .config(e), errnoCode: nil) }
    static func system(_ what: String, _ err: Int32) -> PeerError { .init(kind: .system(what), errnoCode: err) }
    /// A failure described fully by `what` (no errno).
    static func system(_ what: String) -> PeerError { .init(kind: .system(what), errnoCode: nil) }
    public static func daemonUnreachable(_ where_: String, _ err: Int32?) -> PeerError { .init(kind: .daemonUnreachable(where_), errnoCode: err) }
    public static func protocolError(_ why: String) -> PeerError { .init(kind: .protocolError(why), errnoCode: nil) }

    /// The configuration error inside, if this is one.
    public var configError: ConfigError? { if case .config(let e) = kind { e } else { nil } }
    public var isLocked: Bool { if case .locked = kind { true } else { false } }
    public var isDaemonUnreachable: Bool { if case .daemonUnreachable = kind { true } else { false } }

    public var description: String {
        let reason = errnoCode.map { ": " + String(cString: strerror($0)) } ?? ""
        switch kind {
        case .alreadyInitialised(let p): return "\(p) is already initialised (it has a node.key); use it with `gquic-peer run --data \(p)`"
        case .notInitialised(let p): return "\(p) has no node identity; run `gquic-peer init --data \(p)` first"
        case .locked(let p, let pid): return "another gquic-peer (pid \(pid)) is already running on \(p); stop it first or use another --data directory"
        case .identity(let e): return e
        case .config(let e): return e.description
        case .system(let what): return "\(what)\(reason)"
        case .daemonUnreachable(let w):
            return "no gquic-peer is running at \(w)\(reason) — start one with `gquic-peer run --data DIR`, or point at it with --data/--control"
        case .protocolError(let why): return "unexpected answer from the daemon: \(why)"
        }
    }
}
