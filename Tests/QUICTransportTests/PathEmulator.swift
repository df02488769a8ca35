#if canImport(Glibc)
import Glibc
#endif
import Foundation
import MeshCore
import Synchronization
@testable import QUICTransport

/// A UDP path between one client and one server on loopback, run by a thread: optionally drops every
/// `dropEvery`-th datagram and limits each direction to `rate` bytes per second behind a drop-tail
/// queue of `queueBytes` (a bottleneck link with a buffer). The client dials `address`.
final class PathEmulator: @unchecked Sendable {
    let address: PeerAddress
    private let front: UDPSocket
    private let back: UDPSocket
    private let server: SocketAddress
    private let dropEvery: Int
    private let rate: Double
    private let queueBytes: Int
    private let running = Atomic<Bool>(true)
    private let done = DispatchSemaphore(value: 0)
    /// Datagrams dropped on purpose (loss) and by the full queue.
    let dropped = Atomic<Int>(0)
    /// How many client→server datagrams arrived with each IP TOS byte (DSCP << 2 | ECN).
    let upstreamTOS = Mutex<[UInt8: Int]>([:])
    /// The first client→server datagrams (up to 16), for replay tests.
    let firstUpstream = Mutex<[[UInt8]]>([])

    private struct Direction {
        var queue: [(due: UInt64, bytes: [UInt8], tos: UInt8)] = []
        var head = 0
        var queued = 0
        var lastDeparture: UInt64 = 0
        var count = 0
    }

    init(to server: PeerAddress, dropEvery: Int = 0, rate: Double = 0, queueBytes: Int = 256 << 10) throws {
        self.server = try SocketAddress.resolve(server)
        front = try UDPSocket(bind: SocketAddress(ip: "127.0.0.1", port: 0)!)
        back = try UDPSocket(bind: SocketAddress(ip: "127.0.0.1", port: 0)!)
        address = front.localAddress.peerAddress
        self.dropEvery = dropEvery; self.rate = rate; self.queueBytes = queueBytes
        let t = Thread { self.run() }
        t.start()
    }

    func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        done.wait()
    }

    private static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    private func run() {
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
        defer { buf.deallocate(); done.signal() }
        var up = Direction(), down = Direction()
        var client: SocketAddress?
        var fds = [pollfd(fd: front.fd, events: Int16(POLLIN), revents: 0), pollfd(fd: back.fd, events: Int16(POLLIN), revents: 0)]
        while running.load(ordering: .acquiring) {
            let t = Self.now()
            let nextDue = [up, down].compactMap { $0.head < $0.queue.count ? $0.queue[$0.head].due : nil }.min()
            var timeout: Int32 = 20
            if let d = nextDue { timeout = d <= t ? 0 : Int32(min(20, (d - t) / 1_000_000)) }
            fds[0].revents = 0; fds[1].revents = 0
            if poll(&fds, 2, timeout) == 0, let d = nextDue, d > t, d - t < 1_000_000 {
                var ts = timespec(tv_sec: 0, tv_nsec: Int(min(d - t, 100_000)))
                nanosleep(&ts, nil)
            }
            while let (n, from, tos, segment) = front.receive(into: buf) {
                client = from
                for bytes in Self.split(buf, n, segment) {
                    upstreamTOS.withLock { $0[tos, default: 0] += 1 }
                    firstUpstream.withLock { if $0.count < 16 { $0.append(bytes) } }
                    enqueue(&up, bytes, tos: tos)
                }
            }
            while let (n, _, tos, segment) = back.receive(into: buf) {
                for bytes in Self.split(buf, n, segment) { enqueue(&down, bytes, tos: tos) }
            }
            let now = Self.now()
            release(&up, now: now) { b, tos in b.withUnsafeBytes { _ = back.send($0, segmentSize: $0.count, to: server, tos: tos) } }
            if let client {
                release(&down, now: now) { b, tos in b.withUnsafeBytes { _ = front.send($0, segmentSize: $0.count, to: client, tos: tos) } }
            }
        }
    }

    /// The datagrams in one read (GRO may coalesce several of `segment` bytes).
    private static func split(_ buf: UnsafeMutableRawBufferPointer, _ n: Int, _ segment: Int) -> [[UInt8]] {
        let step = segment > 0 ? segment : max(n, 1)
        return stride(from: 0, to: n, by: step).map { Array(UnsafeRawBufferPointer(rebasing: buf[$0..<min(n, $0 + step)])) }
    }

    private func enqueue(_ d: inout Direction, _ bytes: [UInt8], tos: UInt8) {
        d.count += 1
        if dropEvery > 0 && d.count % dropEvery == 0 { dropped.add(1, ordering: .relaxed); return }
        if rate > 0 && d.queued + bytes.count > queueBytes { dropped.add(1, ordering: .relaxed); return }
        let now = Self.now()
        var due = now
        if rate > 0 {
            due = max(now, d.lastDeparture) + UInt64(Double(bytes.count) / rate * 1e9)
            d.lastDeparture = due
        }
        d.queue.append((due, bytes, tos))
        d.queued += bytes.count
    }

    private func release(_ d: inout Direction, now: UInt64, send: ([UInt8], UInt8) -> Void) {
        while d.head < d.queue.count, d.queue[d.head].due <= now {
            let (_, b, tos) = d.queue[d.head]
            d.queued -= b.count
            d.head += 1
            send(b, tos)
        }
        if d.head > 1024 { d.queue.removeFirst(d.head); d.head = 0 }
    }
}
