#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The local control API: HTTP/1.1 over a Unix socket (and, for `/metrics`, optionally over TCP).
///
/// Deliberately small: one request per connection, `Content-Length` bodies, bounded headers and
/// bodies. It is local-only (file permissions on the socket are the access control) and exists so
/// `gquic-fetch`, `gquic-peer status`, curl (`curl --unix-socket DATA/control.sock http://x/v1/status`)
/// and Prometheus can talk to a running daemon.
public struct ControlRequest: Sendable {
    public var method: String
    public var path: String
    public var query: [String: String]
    public var headers: [String: String]
    public var body: [UInt8]
    /// The process on the other end of a Unix-socket connection (SO_PEERCRED); nil over TCP.
    public var peerPID: Int32? = nil
}

public struct ControlResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]

    public init(status: Int = 200, contentType: String = "application/json", body: [UInt8]) {
        self.status = status; self.contentType = contentType; self.body = body
    }

    public static func json<T: Encodable>(_ value: T, status: Int = 200) -> ControlResponse {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let data = (try? enc.encode(value)) ?? Data("{}".utf8)
        return ControlResponse(status: status, body: Array(data))
    }

    public static func error(_ status: Int, _ message: String) -> ControlResponse {
        json(["error": message], status: status)
    }

    public static func text(_ s: String, contentType: String = "text/plain; charset=utf-8") -> ControlResponse {
        ControlResponse(contentType: contentType, body: Array(s.utf8))
    }
}

enum HTTPLimits {
    static let maxHeaderBytes = 16 * 1024
    static let maxBodyBytes = 4 * 1024 * 1024
}

/// Serves the control API on listening sockets, a thread per connection (connections are few and
/// local; the handler is synchronous and must be thread-safe).
public final class ControlServer: @unchecked Sendable {
    public typealias Handler = @Sendable (ControlRequest) -> ControlResponse
    private let handler: Handler
    private var listeners: [Int32] = []
    private let lock = NSLock()
    private var stopped = false
    public private(set) var unixPath: String?
    public private(set) var tcpPort: UInt16?

    public init(handler: @escaping Handler) { self.handler = handler }

    /// Listens on a Unix socket at `path` (replacing a stale socket file), mode 0600.
    public func listen(unixPath path: String) throws(PeerError) {
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket(AF_UNIX)", errno) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { close(fd); throw .system("control socket path too long: \(path)", ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else { let e = errno; close(fd); throw .system("binding \(path)", e) }
        chmod(path, 0o600)
        guard Glibc.listen(fd, 64) == 0 else { let e = errno; close(fd); throw .system("listening on \(path)", e) }
        unixPath = path
        start(fd)
    }

    /// Listens on TCP `host:port` (port 0 picks one; see `tcpPort`).
    public func listen(tcpHost host: String, port: UInt16) throws(PeerError) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket(AF_INET)", errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { close(fd); throw .system("\(host) is not an IPv4 address", EINVAL) }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else { let e = errno; close(fd); throw .system("binding \(host):\(port)", e) }
        guard Glibc.listen(fd, 64) == 0 else { let e = errno; close(fd); throw .system("listening on \(host):\(port)", e) }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        tcpPort = UInt16(bigEndian: bound.sin_port)
        start(fd)
    }

    private func start(_ fd: Int32) {
        lock.withLock { listeners.append(fd) }
        let t = Thread { [self] in acceptLoop(fd) }
        t.name = "gquic-control-accept"
        t.start()
    }

    private func acceptLoop(_ fd: Int32) {
        while true {
            let c = accept(fd, nil, nil)
            if c < 0 {
                if errno == EINTR { continue }
                return // listener closed
            }
            let t = Thread { [self] in serve(c) }
            t.name = "gquic-control-conn"
            t.start()
        }
    }

    private func serve(_ fd: Int32) {
        defer { close(fd) }
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let response: ControlResponse
        switch HTTPWire.readRequest(fd) {
        case .success(var req):
            req.peerPID = HTTPWire.peerPID(fd)
            response = handler(req)
        case .failure(let why): response = .error(400, why.message)
        }
        HTTPWire.writeResponse(fd, response)
    }

    /// Closes the listeners (connections in flight finish) and removes the socket file.
    public func stop() {
        let fds: [Int32] = lock.withLock {
            if stopped { return [] }
            stopped = true
            return listeners
        }
        for fd in fds { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }
        if let p = unixPath { unlink(p) }
    }

    deinit { stop() }
}

struct HTTPProblem: Error { let message: String }

enum HTTPWire {
    static func readAll(_ fd: Int32, into buf: inout [UInt8], until done: ([UInt8]) -> Bool, limit: Int) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16384)
        while !done(buf) {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { return false }
            buf += chunk[0..<n]
            if buf.count > limit { return false }
        }
        return true
    }

    static func headerEnd(_ buf: [UInt8]) -> Int? {
        guard buf.count >= 4 else { return nil }
        for i in 0...(buf.count - 4) where buf[i] == 13 && buf[i + 1] == 10 && buf[i + 2] == 13 && buf[i + 3] == 10 { return i }
        return nil
    }

    static func parseHead(_ head: String) -> (first: String, headers: [String: String]) {
        var lines = head.components(separatedBy: "\r\n")
        let first = lines.isEmpty ? "" : lines.removeFirst()
        var headers: [String: String] = [:]
        for l in lines {
            guard let c = l.firstIndex(of: ":") else { continue }
            headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingWhitespace()
        }
        return (first, headers)
    }

    static func readRequest(_ fd: Int32) -> Result<ControlRequest, HTTPProblem> {
        var buf = [UInt8]()
        guard readAll(fd, into: &buf, until: { headerEnd($0) != nil }, limit: HTTPLimits.maxHeaderBytes),
              let end = headerEnd(buf) else { return .failure(HTTPProblem(message: "incomplete or oversized request head")) }
        let (first, headers) = parseHead(String(decoding: buf[0..<end], as: UTF8.self))
        let parts = first.split(separator: " ")
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else { return .failure(HTTPProblem(message: "malformed request line")) }
        let length = Int(headers["content-length"] ?? "0") ?? -1
        guard length >= 0, length <= HTTPLimits.maxBodyBytes else { return .failure(HTTPProblem(message: "bad or oversized Content-Length")) }
        var body = Array(buf[(end + 4)...])
        if body.count < length {
            guard readAll(fd, into: &body, until: { $0.count >= length }, limit: length) else {
                return .failure(HTTPProblem(message: "body shorter than Content-Length"))
            }
        }
        let target = String(parts[1])
        var path = target, query: [String: String] = [:]
        if let q = target.firstIndex(of: "?") {
            path = String(target[..<q])
            for pair in target[target.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1)
                let k = String(kv[0]).removingPercentEncoding ?? String(kv[0])
                let v = kv.count > 1 ? (String(kv[1]).removingPercentEncoding ?? String(kv[1])) : ""
                query[k] = v
            }
        }
        return .success(ControlRequest(method: String(parts[0]), path: path, query: query, headers: headers, body: Array(body.prefix(length))))
    }

    /// The pid of the process connected to Unix socket `fd` (SO_PEERCRED), or nil.
    static func peerPID(_ fd: Int32) -> Int32? {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (a _GNU_SOURCE declaration Glibc does not export).
        var cred: (pid: Int32, uid: UInt32, gid: UInt32) = (0, 0, 0)
        var len = socklen_t(MemoryLayout.size(ofValue: cred))
        let soPeerCred: Int32 = 17   // SO_PEERCRED on Linux (asm-generic/socket.h)
        guard getsockopt(fd, SOL_SOCKET, soPeerCred, &cred, &len) == 0, cred.pid > 0 else { return nil }
        return cred.pid
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 409: "Conflict"
        case 500: "Internal Server Error"
        case 503: "Service Unavailable"
        default: "Status"
        }
    }

    static func writeResponse(_ fd: Int32, _ r: ControlResponse) {
        let head = "HTTP/1.1 \(r.status) \(reason(r.status))\r\nContent-Type: \(r.contentType)\r\nContent-Length: \(r.body.count)\r\nConnection: close\r\n\r\n"
        writeAll(fd, Array(head.utf8) + r.body)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            // MSG_NOSIGNAL: a client that hung up must not kill the daemon with SIGPIPE.
            let n = bytes[off...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { if errno == EINTR { continue }; return }
            off += n
        }
    }
}

/// A client for the control API over the daemon's Unix socket.
public struct ControlClient: Sendable {
    public let socketPath: String

    public init(socketPath: String) { self.socketPath = socketPath }

    /// Sends one request and returns the status and body. Throws `PeerError.daemonUnreachable` when
    /// nothing listens on the socket.
    public func request(_ method: String, _ path: String, body: [UInt8] = [], timeoutSeconds: Int = 600) throws(PeerError) -> (status: Int, body: [UInt8]) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system("socket(AF_UNIX)", errno) }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw .system("control socket path too long: \(socketPath)", ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard ok == 0 else { throw .daemonUnreachable(socketPath, errno) }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let head = "\(method) \(path) HTTP/1.1\r\nHost: gquic\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        HTTPWire.writeAll(fd, Array(head.utf8) + body)
        var buf = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n < 0 { if errno == EINTR { continue }; throw .system("reading from \(socketPath)", errno) }
            if n == 0 { break }
            buf += chunk[0..<n]
            if buf.count > 64 * 1024 * 1024 { throw .protocolError("response larger than 64 MiB") }
        }
        guard let end = HTTPWire.headerEnd(buf) else { throw .protocolError("no HTTP response head") }
        let (first, _) = HTTPWire.parseHead(String(decoding: buf[0..<end], as: UTF8.self))
        let parts = first.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw .protocolError("bad status line \(first)") }
        return (status, Array(buf[(end + 4)...]))
    }
}
