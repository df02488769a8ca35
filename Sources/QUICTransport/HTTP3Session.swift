#if canImport(Glibc)
import Glibc
#endif
import CNghttp3
import CNgtcp2
import MeshCore

/// HTTP/3 over one QUIC connection, through nghttp3 0.8: the `h3` application. The client side
/// sends GET requests and streams each response body into a `ResponseSink`; the server side answers
/// GET/HEAD from a directory, memory-mapping each file so response bodies are never copied.
final class HTTP3Session: QUICApplication {
    /// Receives one response.
    final class ResponseSink {
        var status = 0
        var contentLength: Int?
        var received = 0
        let onHeaders: (Int, Int?) -> Void
        let onData: (UnsafeRawBufferPointer) throws(QUICError) -> Void
        let onEnd: (Result<Void, QUICError>) -> Void
        var finished = false
        init(onHeaders: @escaping (Int, Int?) -> Void, onData: @escaping (UnsafeRawBufferPointer) throws(QUICError) -> Void,
             onEnd: @escaping (Result<Void, QUICError>) -> Void) {
            self.onHeaders = onHeaders; self.onData = onData; self.onEnd = onEnd
        }
        func end(_ r: Result<Void, QUICError>) {
            guard !finished else { return }
            finished = true
            onEnd(r)
        }
    }

    /// A response body being served from a memory-mapped file.
    final class ServedBody {
        let map: UnsafeMutableRawPointer?
        let size: Int
        var offset = 0
        init(map: UnsafeMutableRawPointer?, size: Int) { self.map = map; self.size = size }
        deinit { if let map, size > 0 { munmap(map, size) } }
    }

    final class ServerRequest {
        var method = "", path = ""
        var body: ServedBody?
        var small: [UInt8] = []
        var responded = false
    }

    let isServer: Bool
    let root: String?
    weak var connection: QUICConnection?
    private var h3: OpaquePointer?
    private var sinks: [Int64: ResponseSink] = [:]
    private var requests: [Int64: ServerRequest] = [:]
    /// Client: requests to submit once the connection is up.
    private var pending: [(authority: String, path: String, sink: ResponseSink)] = []
    private let serverName: String
    let wake: () -> Void
    private var failure: QUICError?

    init(clientFor authority: String, wake: @escaping () -> Void) {
        isServer = false; root = nil; serverName = authority; self.wake = wake
    }

    init(serverRoot: String, wake: @escaping () -> Void) {
        isServer = true; root = serverRoot; serverName = ""; self.wake = wake
    }

    deinit { if let h3 { nghttp3_conn_del(h3) } }

    /// Queues a GET (client). Sent when the handshake completes, or at once if it already has.
    func get(authority: String, path: String, sink: ResponseSink) {
        pending.append((authority, path, sink))
        if h3 != nil { submitPending() }
    }

    // MARK: QUICApplication

    func start(_ connection: QUICConnection) throws(QUICError) {
        self.connection = connection
        var callbacks = nghttp3_callbacks()
        callbacks.acked_stream_data = { _, stream, len, ud, _ in
            HTTP3Session.from(ud).ackedBody(stream: stream, length: Int(len)); return 0
        }
        callbacks.stream_close = { _, stream, code, ud, _ in
            HTTP3Session.from(ud).h3StreamClosed(stream, code: code); return 0
        }
        callbacks.recv_data = { _, stream, data, len, ud, _ in
            HTTP3Session.from(ud).recvData(stream, UnsafeRawBufferPointer(start: data, count: len))
        }
        callbacks.deferred_consume = { _, stream, n, ud, _ in
            HTTP3Session.from(ud).connection?.consumed(stream: stream, count: n); return 0
        }
        callbacks.recv_header = { _, stream, token, name, value, _, ud, _ in
            HTTP3Session.from(ud).header(stream, token: token, name: name, value: value); return 0
        }
        callbacks.end_headers = { _, stream, _, ud, _ in
            HTTP3Session.from(ud).endHeaders(stream)
        }
        callbacks.end_stream = { _, stream, ud, _ in
            HTTP3Session.from(ud).endStream(stream)
        }
        callbacks.stop_sending = { _, stream, code, ud, _ in
            HTTP3Session.from(ud).connection?.shutdownStreamRead(stream, errorCode: code); return 0
        }
        callbacks.reset_stream = { _, stream, code, ud, _ in
            HTTP3Session.from(ud).connection?.shutdownStreamWrite(stream, errorCode: code); return 0
        }
        var settings = nghttp3_settings()
        gq_nghttp3_settings_default(&settings)
        settings.qpack_max_dtable_capacity = 4096
        settings.qpack_blocked_streams = 100
        let me = Unmanaged.passUnretained(self).toOpaque()
        var conn: OpaquePointer?
        let rc = isServer ? gq_nghttp3_conn_server_new(&conn, &callbacks, &settings, nil, me)
                          : gq_nghttp3_conn_client_new(&conn, &callbacks, &settings, nil, me)
        guard rc == 0, let conn else { throw .http("creating the HTTP/3 connection failed (\(rc))") }
        h3 = conn
        if isServer { nghttp3_conn_set_max_client_streams_bidi(conn, connection.settings.maxStreamsBidi) }
        guard let control = connection.openStream(bidirectional: false),
              let enc = connection.openStream(bidirectional: false),
              let dec = connection.openStream(bidirectional: false) else {
            throw .http("the peer allows fewer than 3 unidirectional streams; HTTP/3 needs 3")
        }
        guard nghttp3_conn_bind_control_stream(conn, control) == 0,
              nghttp3_conn_bind_qpack_streams(conn, enc, dec) == 0 else {
            throw .http("binding the control and QPACK streams failed")
        }
        submitPending()
    }

    private func submitPending() {
        guard let h3, let connection else { return }
        let work = pending
        pending.removeAll()
        for (authority, path, sink) in work {
            guard let id = connection.openStream(bidirectional: true) else {
                sink.end(.failure(.http("cannot open a request stream")))
                continue
            }
            let headers = [(":method", "GET"), (":scheme", "https"), (":authority", authority), (":path", path),
                           ("user-agent", "gquic-fetch/1")]
            let rc = HTTP3Session.withNV(headers) { nva in
                nghttp3_conn_submit_request(h3, id, nva.baseAddress, nva.count, nil, nil)
            }
            guard rc == 0 else { sink.end(.failure(.http("submitting the request failed (\(rc))"))); continue }
            sinks[id] = sink
        }
        wake()
    }

    func receivedStreamData(_ connection: QUICConnection, stream: Int64, data: UnsafeRawBufferPointer, fin: Bool) throws(QUICError) {
        guard let h3 else { return }
        let n = nghttp3_conn_read_stream(h3, stream, data.bindMemory(to: UInt8.self).baseAddress, data.count, fin ? 1 : 0)
        if let failure { throw failure }
        guard n >= 0 else { throw .http("nghttp3 refused stream \(stream) data: \(String(cString: nghttp3_strerror(Int32(n))))") }
        connection.consumed(stream: stream, count: Int(n))
    }

    func streamOpened(_ connection: QUICConnection, stream: Int64) {}

    func streamClosed(_ connection: QUICConnection, stream: Int64, errorCode: UInt64?) {
        guard let h3 else { return }
        _ = nghttp3_conn_close_stream(h3, stream, errorCode ?? 0x100)
        if let sink = sinks.removeValue(forKey: stream) {
            sink.end(errorCode.map { $0 == 0x100 ? .success(()) : .failure(.streamReset($0)) } ?? .success(()))
        }
        requests[stream] = nil
    }

    func streamReset(_ connection: QUICConnection, stream: Int64, errorCode: UInt64) {
        if let h3 { _ = nghttp3_conn_shutdown_stream_read(h3, stream) }
    }

    func stopSending(_ connection: QUICConnection, stream: Int64, errorCode: UInt64) {
        if let h3 { _ = nghttp3_conn_shutdown_stream_read(h3, stream) }
    }

    func ackedStreamData(_ connection: QUICConnection, stream: Int64, offset: UInt64, length: UInt64) {
        if let h3 { _ = nghttp3_conn_add_ack_offset(h3, stream, length) }
    }

    func streamUnblocked(_ connection: QUICConnection, stream: Int64) {
        if let h3 { _ = nghttp3_conn_unblock_stream(h3, stream) }
    }

    func moreStreamsAllowed(_ connection: QUICConnection) { submitPending() }

    func receivedDatagram(_ connection: QUICConnection, data: UnsafeRawBufferPointer) {}

    func nextStreamData(_ connection: QUICConnection, vecs: UnsafeMutableBufferPointer<ngtcp2_vec>) -> (stream: Int64, count: Int, fin: Bool)? {
        guard let h3 else { return nil }
        var stream: Int64 = -1
        var fin: Int32 = 0
        let n = vecs.withMemoryRebound(to: nghttp3_vec.self) { v in
            nghttp3_conn_writev_stream(h3, &stream, &fin, v.baseAddress, v.count)
        }
        guard n >= 0, stream >= 0 else { return nil }
        return (stream, Int(n), fin != 0)
    }

    func wroteStreamData(_ connection: QUICConnection, stream: Int64, count: Int, fin: Bool) {
        if let h3 { _ = nghttp3_conn_add_write_offset(h3, stream, count) }
    }

    func streamBlocked(_ connection: QUICConnection, stream: Int64, permanently: Bool) {
        guard let h3 else { return }
        if permanently { nghttp3_conn_shutdown_stream_write(h3, stream) } else { nghttp3_conn_block_stream(h3, stream) }
    }

    func connectionClosed(_ connection: QUICConnection, error: QUICError?) {
        for sink in sinks.values { sink.end(.failure(error ?? .closed("connection closed before the response ended"))) }
        sinks.removeAll()
        for (_, _, sink) in pending { sink.end(.failure(error ?? .closed("connection closed"))) }
        pending.removeAll()
        requests.removeAll()
    }

    // MARK: nghttp3 callbacks

    static func from(_ p: UnsafeMutableRawPointer?) -> HTTP3Session {
        Unmanaged<HTTP3Session>.fromOpaque(p!).takeUnretainedValue()
    }

    private func header(_ stream: Int64, token: Int32, name: OpaquePointer?, value: OpaquePointer?) {
        let v = nghttp3_rcbuf_get_buf(value)
        let valueString = String(decoding: UnsafeBufferPointer(start: v.base, count: v.len), as: UTF8.self)
        if isServer {
            let req = requests[stream] ?? ServerRequest()
            requests[stream] = req
            let nb = nghttp3_rcbuf_get_buf(name)
            let nameString = String(decoding: UnsafeBufferPointer(start: nb.base, count: nb.len), as: UTF8.self)
            if nameString == ":method" { req.method = valueString }
            if nameString == ":path" { req.path = valueString }
        } else if let sink = sinks[stream] {
            if token == Int32(NGHTTP3_QPACK_TOKEN__STATUS.rawValue) { sink.status = Int(valueString) ?? 0 }
            if token == Int32(NGHTTP3_QPACK_TOKEN_CONTENT_LENGTH.rawValue) { sink.contentLength = Int(valueString) }
        }
    }

    private func endHeaders(_ stream: Int64) -> Int32 {
        if isServer {
            if let req = requests[stream] { respond(stream, req) }
        } else if let sink = sinks[stream] {
            sink.onHeaders(sink.status, sink.contentLength)
        }
        return 0
    }

    private func endStream(_ stream: Int64) -> Int32 {
        if !isServer, let sink = sinks.removeValue(forKey: stream) {
            if let cl = sink.contentLength, cl != sink.received {
                sink.end(.failure(.http("response ended after \(sink.received) of \(cl) bytes")))
            } else {
                sink.end(.success(()))
            }
        }
        return 0
    }

    private func recvData(_ stream: Int64, _ data: UnsafeRawBufferPointer) -> Int32 {
        if let sink = sinks[stream] {
            sink.received += data.count
            do { try sink.onData(data) } catch {
                failure = error
                sinks[stream] = nil
                sink.end(.failure(error))
                return NGHTTP3_ERR_CALLBACK_FAILURE
            }
        }
        connection?.consumed(stream: stream, count: data.count)
        return 0
    }

    private func ackedBody(stream: Int64, length: Int) {}

    private func h3StreamClosed(_ stream: Int64, code: UInt64) {
        requests[stream] = nil
    }

    // MARK: Serving files

    private func respond(_ stream: Int64, _ req: ServerRequest) {
        guard let h3, !req.responded else { return }
        req.responded = true
        var status = 200
        var contentType = "application/octet-stream"
        if req.method != "GET" && req.method != "HEAD" {
            status = 405; req.small = Array("method not allowed\n".utf8); contentType = "text/plain"
        } else if let file = resolve(req.path) {
            let fd = open(file, O_RDONLY | O_CLOEXEC)
            var st = stat()
            if fd >= 0, fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
                let size = Int(st.st_size)
                var map: UnsafeMutableRawPointer?
                if size > 0 {
                    let m = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
                    map = m == MAP_FAILED ? nil : m
                    if map != nil { madvise(map, size, MADV_SEQUENTIAL) }
                }
                if size == 0 || map != nil { req.body = ServedBody(map: map, size: size) } else {
                    status = 500; req.small = Array("cannot map file\n".utf8); contentType = "text/plain"
                }
            } else {
                status = 404; req.small = Array("not found\n".utf8); contentType = "text/plain"
            }
            if fd >= 0 { close(fd) }
        } else {
            status = 404; req.small = Array("not found\n".utf8); contentType = "text/plain"
        }
        let length = req.body?.size ?? req.small.count
        let headers = [(":status", String(status)), ("server", "gquic-peer"), ("content-type", contentType),
                       ("content-length", String(length))]
        var reader = nghttp3_data_reader(read_data: { _, stream, vec, veccnt, flags, ud, _ in
            HTTP3Session.from(ud).readBody(stream, vec!, veccnt, flags!)
        })
        let withBody = req.method != "HEAD"
        _ = HTTP3Session.withNV(headers) { nva in
            withBody ? nghttp3_conn_submit_response(h3, stream, nva.baseAddress, nva.count, &reader)
                     : nghttp3_conn_submit_response(h3, stream, nva.baseAddress, nva.count, nil)
        }
        wake()
    }

    private func readBody(_ stream: Int64, _ vec: UnsafeMutablePointer<nghttp3_vec>, _ count: Int, _ flags: UnsafeMutablePointer<UInt32>) -> nghttp3_ssize {
        guard let req = requests[stream], count > 0 else {
            flags.pointee |= UInt32(NGHTTP3_DATA_FLAG_EOF)
            return 0
        }
        if let body = req.body {
            let n = min(body.size - body.offset, 4 << 20)
            if n > 0, let map = body.map {
                vec[0] = nghttp3_vec(base: (map + body.offset).assumingMemoryBound(to: UInt8.self), len: n)
                body.offset += n
            }
            if body.offset >= body.size { flags.pointee |= UInt32(NGHTTP3_DATA_FLAG_EOF) }
            return n > 0 ? 1 : 0
        }
        flags.pointee |= UInt32(NGHTTP3_DATA_FLAG_EOF)
        guard !req.small.isEmpty else { return 0 }
        // Kept alive in `req` until the stream closes (after the peer acknowledged everything).
        let n = req.small.count
        return req.small.withUnsafeMutableBufferPointer { b in
            vec[0] = nghttp3_vec(base: b.baseAddress, len: n)
            return 1
        }
    }

    /// Maps a request path onto a regular file under `root`; nil for anything that could escape it.
    func resolve(_ rawPath: String) -> String? {
        guard let root else { return nil }
        var path = String(rawPath.prefix { $0 != "?" && $0 != "#" })
        guard path.hasPrefix("/"), !path.contains("\0") else { return nil }
        path = HTTP3Session.percentDecode(path) ?? ""
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard !path.isEmpty, !parts.contains(where: { $0 == ".." || $0 == "." }) else { return nil }
        if parts.isEmpty { return root + "/index.html" }
        return root + "/" + parts.joined(separator: "/")
    }

    static func percentDecode(_ s: String) -> String? {
        var out: [UInt8] = []
        var it = Array(s.utf8).makeIterator()
        while let c = it.next() {
            if c == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(), let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16) else { return nil }
                guard v != 0 else { return nil }
                out.append(v)
            } else { out.append(c) }
        }
        return String(validating: out, as: UTF8.self)
    }

    static func withNV<R>(_ headers: [(String, String)], _ body: (UnsafeBufferPointer<nghttp3_nv>) -> R) -> R {
        var storage: [UnsafeMutablePointer<UInt8>] = []
        defer { storage.forEach { $0.deallocate() } }
        func dup(_ s: String) -> (UnsafeMutablePointer<UInt8>, Int) {
            let b = Array(s.utf8)
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(b.count, 1))
            p.initialize(from: b, count: b.count)
            storage.append(p)
            return (p, b.count)
        }
        let nva = headers.map { (n, v) -> nghttp3_nv in
            let (np, nl) = dup(n), (vp, vl) = dup(v)
            return nghttp3_nv(name: np, value: vp, namelen: nl, valuelen: vl, flags: UInt8(NGHTTP3_NV_FLAG_NONE))
        }
        return nva.withUnsafeBufferPointer(body)
    }
}
