import MeshCore
import Synchronization

/// Runs closures on the thread that owns a set of connections (the endpoint's I/O thread).
protocol LoopExecutor: AnyObject, Sendable {
    func post(_ work: @escaping @Sendable () -> Void)
}

/// Moves a value that is confined to the I/O thread into a closure posted to that thread.
struct LoopBound<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// One QUIC stream on a mesh link: read it as an `AsyncSequence` of byte chunks, write with
/// back-pressure, finish, reset, stop-sending. Safe to use from any task.
public final class QUICStream: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    public let id: Int64
    public let trafficClass: TrafficClass
    /// True if we may write (bidirectional, or a unidirectional stream we opened).
    public let isWritable: Bool

    /// Bytes written but not yet acknowledged above which `write` waits. Default 8 MiB.
    static let highWater = 8 << 20
    static let lowWater = 4 << 20

    struct ReadState {
        /// Bytes received and not read yet, in one array: each packet's bytes are copied in once, and
        /// a read hands the whole array over (no per-packet arrays, no second copy to join them).
        var buffer: [UInt8] = []
        /// How many bytes the waiting reader asked for before it is woken.
        var wanted = 1
        /// What the last read asked for: the room a fresh buffer gets.
        var sizeHint = 16 << 10
        var fin = false
        var error: QUICError?
        var reader: CheckedContinuation<Void, Never>?
    }
    struct WriteState {
        var unacked = 0
        var error: QUICError?
        var writer: CheckedContinuation<Void, Never>?
        var finished = false
    }
    let readState = Mutex(ReadState())
    let writeState = Mutex(WriteState())
    private let executor: LoopExecutor
    private let streams: LoopBound<MeshStreams>

    init(id: Int64, trafficClass: TrafficClass, writable: Bool, executor: LoopExecutor, streams: MeshStreams) {
        self.id = id
        self.trafficClass = trafficClass
        self.isWritable = writable
        self.executor = executor
        self.streams = LoopBound(streams)
    }

    // MARK: Writing

    /// Queues `bytes` for sending. Waits while more than `highWater` bytes are unacknowledged, so a
    /// fast writer cannot outrun the network by more than that.
    public func write(_ bytes: [UInt8]) async throws(QUICError) {
        try await write(parts: [bytes])
    }

    /// Queues `parts` one after the other (each is handed to the connection as it is, not joined
    /// into one array first), with `write`'s back-pressure.
    public func write(parts: [[UInt8]]) async throws(QUICError) {
        let total = parts.reduce(0) { $0 + $1.count }
        guard total > 0 else { return }
        try writeState.withLock { (s: inout WriteState) throws(QUICError) in
            if let e = s.error { throw e }
            if s.finished || !isWritable { throw QUICError.invalidArgument("stream \(self.id) is finished or not writable") }
            s.unacked += total
        }
        let streams = self.streams, id = self.id
        executor.post { for p in parts where !p.isEmpty { streams.value.enqueue(stream: id, bytes: p, fin: false) } }
        await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
            let now = writeState.withLock { s -> Bool in
                if s.unacked <= QUICStream.highWater || s.error != nil { return true }
                s.writer = cont
                return false
            }
            if now { cont.resume() }
        }
        if let e = writeState.withLock({ $0.error }) { throw e }
    }

    /// Writes `bytes` and ends the stream.
    public func finish(_ bytes: [UInt8] = []) async throws(QUICError) {
        try writeState.withLock { (s: inout WriteState) throws(QUICError) in
            if let e = s.error { throw e }
            if s.finished { return }
            s.finished = true
            s.unacked += bytes.count
        }
        let streams = self.streams, id = self.id
        executor.post { streams.value.enqueue(stream: id, bytes: bytes, fin: true) }
    }

    /// Abandons the stream in both directions with an application error code (RESET_STREAM and
    /// STOP_SENDING).
    public func reset(errorCode: UInt64 = 0) {
        let streams = self.streams, id = self.id
        executor.post { streams.value.reset(stream: id, errorCode: errorCode) }
        failWrites(.invalidArgument("stream \(id) was reset locally"))
    }

    /// Tells the peer we will not read any more (STOP_SENDING).
    public func stopSending(errorCode: UInt64 = 0) {
        let streams = self.streams, id = self.id
        executor.post { streams.value.stopSending(stream: id, errorCode: errorCode) }
    }

    // MARK: Reading

    /// The most `read(minimum:)` waits for: well under the smallest stream flow-control window
    /// (`QUICSettings.initialMaxStreamData`), so the peer can always send that much unread.
    public static let maxReadMinimum = 256 << 10

    /// The next chunk of bytes, or nil at the end of the stream. Throws if the peer reset it.
    /// With `minimum` (capped at `maxReadMinimum`) it waits until that many bytes are buffered (or the
    /// stream ends or fails): a reader that knows it needs a whole 64 KiB frame is woken once for it
    /// rather than once per packet.
    public func read(minimum: Int = 1) async throws(QUICError) -> [UInt8]? {
        let minimum = Swift.max(1, Swift.min(minimum, QUICStream.maxReadMinimum))
        while true {
            enum Outcome { case data([UInt8]), end, failed(QUICError), wait }
            let outcome = readState.withLock { s -> Outcome in
                s.sizeHint = Swift.max(minimum, 16 << 10)
                if !s.buffer.isEmpty && (s.buffer.count >= minimum || s.fin || s.error != nil) {
                    defer { s.buffer = [] }
                    return .data(s.buffer)
                }
                if let e = s.error { return .failed(e) }
                if s.fin { return .end }
                return .wait
            }
            switch outcome {
            case .data(let bytes):
                let streams = self.streams, id = self.id, n = bytes.count
                executor.post { streams.value.consumed(stream: id, count: n) }
                return bytes
            case .end: return nil
            case .failed(let e): throw e
            case .wait:
                await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
                    let ready = readState.withLock { s -> Bool in
                        if s.buffer.count >= minimum || s.fin || s.error != nil { return true }
                        s.wanted = minimum
                        s.reader = cont
                        return false
                    }
                    if ready { cont.resume() }
                }
            }
        }
    }

    /// Reads to the end, refusing more than `limit` bytes.
    public func readAll(limit: Int) async throws(QUICError) -> [UInt8] {
        var out: [UInt8] = []
        while let chunk = try await read() {
            out += chunk
            guard out.count <= limit else {
                stopSending(errorCode: 1)
                throw QUICError.invalidArgument("stream \(id) carried more than \(limit) bytes")
            }
        }
        return out
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: QUICStream
        public mutating func next() async throws -> [UInt8]? { try await stream.read() }
    }
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: self) }

    // MARK: Called on the loop thread

    func deliver(_ bytes: UnsafeRawBufferPointer, fin: Bool) {
        let cont = readState.withLock { s -> CheckedContinuation<Void, Never>? in
            if bytes.count > 0 {
                // Room for what the reader waits for at once, so the array is not regrown (and
                // copied) packet by packet on the way there.
                if s.buffer.isEmpty { s.buffer.reserveCapacity(Swift.max(s.sizeHint, bytes.count)) }
                s.buffer.append(contentsOf: bytes.bindMemory(to: UInt8.self))
            }
            if fin { s.fin = true }
            guard s.buffer.count >= s.wanted || s.fin else { return nil }
            defer { s.reader = nil; s.wanted = 1 }
            return s.reader
        }
        cont?.resume()
    }

    /// The stream was opened already finished (a first message sent with the handshake).
    func markFinished() { writeState.withLock { $0.finished = true } }

    func failReads(_ e: QUICError) {
        let cont = readState.withLock { s -> CheckedContinuation<Void, Never>? in
            if !s.fin && s.error == nil { s.error = e }
            defer { s.reader = nil }
            return s.reader
        }
        cont?.resume()
    }

    func acked(_ n: Int) {
        let cont = writeState.withLock { s -> CheckedContinuation<Void, Never>? in
            s.unacked -= n
            guard s.unacked <= QUICStream.lowWater, let w = s.writer else { return nil }
            s.writer = nil
            return w
        }
        cont?.resume()
    }

    func failWrites(_ e: QUICError) {
        let cont = writeState.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.error == nil { s.error = e }
            defer { s.writer = nil }
            return s.writer
        }
        cont?.resume()
    }
}
