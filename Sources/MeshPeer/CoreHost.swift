import Foundation
import MeshCore

/// How the daemon's cores reach the network. QUICTransport implements it with one authenticated
/// connection per peer pair; tests may implement it with an in-process loopback.
public protocol LinkTransport: AnyObject, Sendable {
    /// Sends a message to an already linked peer (reliably on its class's stream, or as a DATAGRAM
    /// when `unreliable`). Messages to an unlinked peer are dropped and reported as `LinkEvent.down`.
    func send(_ message: PeerMessage)
    /// Opens a link to `address`; the transport reports `.up` with the proven NodeID, or `.dialFailed`.
    func dial(_ address: PeerAddress)
    /// Where inbound messages and link events go. Set once, before the transport starts.
    func attach(_ sink: any LinkEventSink)
}

public protocol LinkEventSink: AnyObject, Sendable {
    func deliver(_ message: PeerMessage)
    func deliver(_ event: LinkEvent)
}

/// Drives sans-IO cores with real time: the daemon's twin of the simulator's virtual host.
///
/// Cores are touched only under one lock, from the transport's threads (inbound messages, link
/// events), from the control API (queries), and from the host's timer thread (wake-ups). Whatever
/// a core returns is carried out after the lock is released.
public final class CoreHost: LinkEventSink, @unchecked Sendable {
    private let lock = NSCondition()
    private var cores: [any MeshProtocolCore]
    private var wakeAt: [Instant?]
    private let clock: any MeshClock
    private let transport: any LinkTransport
    private var running = false
    private var timerThread: Thread?
    private var unroutable = 0

    public init(cores: [any MeshProtocolCore], transport: any LinkTransport, clock: any MeshClock = SystemClock()) {
        self.cores = cores
        self.wakeAt = Array(repeating: nil, count: cores.count)
        self.transport = transport
        self.clock = clock
    }

    /// Starts every core and the timer thread.
    public func start() {
        transport.attach(self)
        var out: [Outbox] = []
        lock.lock()
        running = true
        let now = clock.now()
        for i in cores.indices {
            let o = cores[i].start(now: now)
            wakeAt[i] = o.wakeAt
            out.append(o)
        }
        lock.unlock()
        out.forEach(carryOut)
        let t = Thread { [self] in timerLoop() }
        t.name = "gquic-core-timers"
        timerThread = t
        t.start()
    }

    public func stop() {
        lock.lock()
        running = false
        lock.broadcast()
        lock.unlock()
    }

    /// Frames whose type no core handles (dropped; counted for diagnostics).
    public var unroutableFrames: Int { lock.lock(); defer { lock.unlock() }; return unroutable }

    public func deliver(_ message: PeerMessage) {
        let o: Outbox? = withCoreLock { now in
            guard let i = cores.firstIndex(where: { $0.handles(frameType: message.frame.type) }) else {
                unroutable += 1
                return nil
            }
            let o = cores[i].receive(message, now: now)
            noteWake(i, o)
            return o
        }
        if let o { carryOut(o) }
    }

    public func deliver(_ event: LinkEvent) {
        let outs: [Outbox] = withCoreLock { now in
            cores.indices.map { i in
                let o = cores[i].linkChanged(event, now: now)
                noteWake(i, o)
                return o
            }
        }
        outs.forEach(carryOut)
    }

    /// Runs `body` on core `C` under the lock (for queries and local commands from the control API),
    /// then carries out the returned outbox.
    public func withCore<C: MeshProtocolCore, T>(_: C.Type, _ body: (inout C, Instant) -> (T, Outbox)) -> T? {
        let result: (T, Outbox)? = withCoreLock { now in
            guard let i = cores.firstIndex(where: { $0 is C }) else { return nil }
            var core = cores[i] as! C
            let r = body(&core, now)
            cores[i] = core
            noteWake(i, r.1)
            return r
        }
        guard let (value, outbox) = result else { return nil }
        carryOut(outbox)
        return value
    }

    private func withCoreLock<T>(_ body: (Instant) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(clock.now())
    }

    /// Records a core's requested wake-up (called with the lock held) and nudges the timer thread.
    private func noteWake(_ i: Int, _ o: Outbox) {
        if let w = o.wakeAt, wakeAt[i].map({ w < $0 }) ?? true {
            wakeAt[i] = w
            lock.signal()
        }
    }

    private func carryOut(_ o: Outbox) {
        for m in o.messages { transport.send(m) }
        for a in o.dials { transport.dial(a) }
    }

    private func timerLoop() {
        lock.lock()
        while running {
            let now = clock.now()
            var due: [Int] = []
            var next: Instant? = nil
            for (i, w) in wakeAt.enumerated() {
                guard let w else { continue }
                if w <= now { due.append(i) } else { next = min(next ?? w, w) }
            }
            if !due.isEmpty {
                var outs: [Outbox] = []
                for i in due {
                    wakeAt[i] = nil
                    let o = cores[i].tick(now: now)
                    wakeAt[i] = o.wakeAt
                    outs.append(o)
                }
                lock.unlock()
                outs.forEach(carryOut)
                lock.lock()
                continue
            }
            if let next {
                let wait = (next - now).seconds
                _ = lock.wait(until: Date(timeIntervalSinceNow: max(wait, 0.0005)))
            } else {
                lock.wait()
            }
        }
        lock.unlock()
    }
}
