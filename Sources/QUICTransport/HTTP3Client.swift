#if canImport(Glibc)
import Glibc
#endif
import Foundation
import MeshCore
import Synchronization

/// A minimal HTTP/3 client: GET one URL over a fresh QUIC connection, streaming the body to a file.
public enum HTTP3Client {
    /// What a finished download produced.
    public struct Download: Sendable {
        public var status: Int
        public var bytes: Int
        /// SHA-256 of the body, computed while it streamed to disk.
        public var digest: Digest
        public var seconds: Double
    }

    /// An `https://HOST:PORT/PATH` URL, parsed strictly.
    public struct Target: Sendable {
        public var host: String
        public var port: UInt16
        public var path: String
        public var authority: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

        public init(parsing url: String) throws(QUICError) {
            guard url.hasPrefix("https://") else {
                throw .invalidArgument("\"\(url)\" is not an https:// URL (HTTP/3 runs only over https)")
            }
            let rest = url.dropFirst("https://".count)
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            let hostPort = String(rest[..<slash])
            path = slash == rest.endIndex ? "/" : String(rest[slash...])
            if let a = PeerAddress(parsing: hostPort) {
                host = a.host; port = a.port
            } else if !hostPort.isEmpty, !hostPort.contains(":") {
                host = hostPort; port = 443
            } else {
                throw .invalidArgument("cannot read host and port from \"\(url)\"; expected https://HOST:PORT/PATH")
            }
        }
    }

    /// Downloads `url` to `path` ("/dev/null" discards the body but still counts and hashes it;
    /// otherwise written to `path.part`, renamed when complete and verified against
    /// the Content-Length). `progress` gets (bytes so far, total if known) about every 64 MiB and at the end.
    public static func download(url: String, to path: String, insecure: Bool = false,
                                settings: QUICSettings = QUICSettings(),
                                progress: (@Sendable (Int, Int?) -> Void)? = nil) async throws(QUICError) -> Download {
        let target = try Target(parsing: url)
        let remote = try SocketAddress.resolve(PeerAddress(host: target.host, port: target.port))
        var config = QUICEndpoint.Configuration(tls: .client(insecure: insecure))
        config.settings = settings
        config.acceptsConnections = false
        let endpoint = try QUICEndpoint(bind: PeerAddress(host: remote.isIPv6 ? "::" : "0.0.0.0", port: 0), configuration: config)
        defer { endpoint.shutdown() }
        // "/dev/null" discards the body (benchmarks); it is still counted and hashed.
        let discard = path == "/dev/null"
        let partial = discard ? path : path + ".part"
        let sink = try FileSink(path: partial)
        let start = ContinuousClock.now
        let result = await withCheckedContinuation { (cont: CheckedContinuation<Result<Int, QUICError>, Never>) in
            let once = OnceBox(cont)
            let box = LoopBound(sink)
            let responseSink = HTTP3Session.ResponseSink(
                onHeaders: { status, length in box.value.status = status; box.value.total = length },
                onData: { (d: UnsafeRawBufferPointer) throws(QUICError) -> Void in
                    try box.value.write(d)
                    if let progress, box.value.written - box.value.reported >= 64 << 20 {
                        box.value.reported = box.value.written
                        progress(box.value.written, box.value.total)
                    }
                },
                onEnd: { r in
                    switch r {
                    case .success: once.resume(.success(box.value.status))
                    case .failure(let e): once.resume(.failure(e))
                    }
                })
            let sinkBox = LoopBound(responseSink)
            let authority = target.authority, reqPath = target.path
            let endpointRef = endpoint
            Task {
                do {
                    try await endpointRef.dial(to: remote, alpn: [QUICEndpoint.http3ALPN], serverName: target.host) { conn in
                        let rec = LoopBound(conn)
                        let session = HTTP3Session(clientFor: authority, wake: { [weak endpointRef] in
                            endpointRef?.markDirty(rec.value)
                        })
                        session.get(authority: authority, path: reqPath, sink: sinkBox.value)
                        return session
                    }
                } catch {
                    once.resume(.failure(error as? QUICError ?? .closed("\(error)")))
                }
            }
        }
        do {
            let status = try result.get()
            try sink.close()
            guard status == 200 else {
                if !discard { unlink(partial) }
                throw QUICError.http("server answered \(status) for \(target.path)")
            }
            guard discard || rename(partial, path) == 0 else { throw QUICError.socket("renaming \(partial) to \(path)", errno) }
            progress?(sink.written, sink.total)
            return Download(status: status, bytes: sink.written, digest: sink.finish(),
                            seconds: (ContinuousClock.now - start).seconds)
        } catch {
            sink.abandon()
            if !discard { unlink(partial) }
            throw error as! QUICError
        }
    }
}

/// Resumes a continuation once, whichever callback comes first.
final class OnceBox<T: Sendable>: @unchecked Sendable {
    private let lock = Mutex<CheckedContinuation<T, Never>?>(nil)
    init(_ c: CheckedContinuation<T, Never>) { lock.withLock { $0 = c } }
    func resume(_ v: T) {
        let c = lock.withLock { s -> CheckedContinuation<T, Never>? in defer { s = nil }; return s }
        c?.resume(returning: v)
    }
}

/// Buffered writes to a file plus a running SHA-256 (used on the endpoint thread only).
final class FileSink {
    let fd: Int32
    let path: String
    var buffer: [UInt8] = []
    var written = 0
    var reported = 0
    var status = 0
    var total: Int?
    private var hasher = SHA256Hasher()

    init(path: String) throws(QUICError) {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .socket("creating \(path)", errno) }
        self.path = path
        buffer.reserveCapacity(1 << 20)
    }

    func write(_ d: UnsafeRawBufferPointer) throws(QUICError) {
        if let total, written + d.count > total {
            throw QUICError.http("server sent more body than its Content-Length (\(total))")
        }
        hasher.update(d)
        written += d.count
        if path == "/dev/null" { return }
        buffer.append(contentsOf: d)
        if buffer.count >= 1 << 20 { try flush() }
    }

    func flush() throws(QUICError) {
        var off = 0
        while off < buffer.count {
            let n = buffer.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            guard n > 0 else { throw .socket("writing \(path)", errno) }
            off += n
        }
        buffer.removeAll(keepingCapacity: true)
    }

    func close() throws(QUICError) {
        try flush()
        guard fsync(fd) == 0 || errno == EINVAL else { throw .socket("syncing \(path)", errno) }
    }

    func finish() -> Digest { hasher.finalize() }
    func abandon() {}
    deinit { Glibc.close(fd) }
}
