import MeshCore

/// Control-class round trips to one peer: the daemon's `ping` (`gquic-peer ping`, `/v1/ping`).
///
/// A request (frame 0x70) carries a sequence number and padding up to the asked size; the peer's
/// `LinkEcho` answers at once with a reply (frame 0x71) of the same payload, on the same class. The
/// prober keeps each request's send time itself (it trusts nothing the peer echoes but the
/// sequence number) and records the round trip when the reply arrives. Both directions ride the
/// link's control stream, the same QUIC connection bulk chunk transfers use, so the round trip is
/// what a membership or container-control message sees while a transfer runs.
///
/// Sans-IO like every core: `start`/`tick`/`receive` with `now`, an `Outbox` out.
public struct LinkEcho: MeshProtocolCore {
    public static let requestType: UInt64 = 0x70
    public static let replyType: UInt64 = 0x71
    /// Smallest probe (frame header + sequence number) and largest (fits one QUIC packet).
    public static let sizeRange = 16...1024
    /// Samples kept per probe run (100 s at one probe every 10 ms); older ones are dropped.
    public static let maxSamples = 10_000
    /// A request unanswered this long is counted lost and forgotten (a reply after it is ignored), so
    /// a run against a peer that never answers holds at most `giveUp / interval` requests.
    public static let giveUp: Duration = .seconds(10)

    /// One probe run's settings.
    public struct Probe: Sendable, Equatable {
        public var peer: NodeID
        public var interval: Duration
        /// Encoded frame size in bytes (type, length, sequence number and padding).
        public var size: Int
        /// Requests to send; nil: until stopped.
        public var count: Int?
        public init(peer: NodeID, interval: Duration = .milliseconds(10), size: Int = 64, count: Int? = nil) {
            self.peer = peer; self.interval = interval; self.size = size; self.count = count
        }
    }

    /// One answered request: when it was sent (since the run started) and its round trip.
    public struct Sample: Sendable, Equatable {
        public var sequence: UInt64
        public var sentAfter: Duration
        public var roundTrip: Duration
    }

    /// What a probe run has measured so far.
    public struct Report: Sendable {
        public var probe: Probe
        public var sent: Int
        public var samples: [Sample]
        /// Requests sent more than a second ago (or before the run stopped) with no reply.
        public var lost: Int
        /// Requests sent less than `LinkEcho.giveUp` ago with no reply yet.
        public var awaiting: Int
        public var running: Bool
    }

    private var probe: Probe?
    private var started = Instant.zero
    private var nextSend = Instant.zero
    private var sent = 0
    private var outstanding: [UInt64: Instant] = [:]
    /// No request below this sequence number is outstanding (requests are numbered in send order).
    private var oldestOutstanding: UInt64 = 0
    private var samples: [Sample] = []
    private var lostCount = 0
    private var running = false

    public init() {}

    public func handles(frameType type: UInt64) -> Bool { type == Self.requestType || type == Self.replyType }

    public mutating func start(now: Instant) -> Outbox { Outbox() }
    public mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox { Outbox() }

    /// Starts a probe run (replacing any); the first request goes out now.
    public mutating func begin(_ p: Probe, now: Instant) -> Outbox {
        probe = p
        started = now
        nextSend = now
        sent = 0
        outstanding = [:]
        oldestOutstanding = 0
        samples = []
        lostCount = 0
        running = true
        return tick(now: now)
    }

    /// Stops sending; replies still in flight are counted as lost.
    public mutating func end() {
        running = false
        lostCount += outstanding.count
        outstanding = [:]
    }

    public var report: Report? {
        guard let probe else { return nil }
        let late = running ? outstanding.values.filter { $0 + .seconds(1) < nextSend }.count : 0
        return Report(probe: probe, sent: sent, samples: samples, lost: lostCount + late,
                      awaiting: outstanding.count, running: running)
    }

    /// Counts requests older than `giveUp` as lost and forgets them.
    private mutating func forgetGivenUp(now: Instant) {
        while oldestOutstanding < UInt64(sent) {
            if let at = outstanding[oldestOutstanding] {
                guard at + Self.giveUp <= now else { return }
                outstanding[oldestOutstanding] = nil
                lostCount += 1
            }
            oldestOutstanding += 1
        }
    }

    public mutating func tick(now: Instant) -> Outbox {
        var out = Outbox()
        guard running, let p = probe else { return out }
        forgetGivenUp(now: now)
        if let c = p.count, sent >= c {
            // Wait up to a second for the last replies, then stop.
            if outstanding.isEmpty || now >= nextSend + .seconds(1) { end() } else { out.wake(at: nextSend + .seconds(1)) }
            return out
        }
        if now >= nextSend {
            let seq = UInt64(sent)
            out.send(to: p.peer, .control, Frame(type: Self.requestType, payload: Self.payload(seq, size: p.size)))
            outstanding[seq] = now
            sent += 1
            // A fixed schedule (late ticks do not shift later probes), never two probes for one tick.
            nextSend = max(nextSend + p.interval, now)
        }
        out.wake(at: nextSend)
        return out
    }

    public mutating func receive(_ m: PeerMessage, now: Instant) -> Outbox {
        var out = Outbox()
        guard m.frame.payload.count <= Self.sizeRange.upperBound else { return out }
        switch m.frame.type {
        case Self.requestType:
            out.send(to: m.peer, m.traffic, Frame(type: Self.replyType, payload: m.frame.payload))
        case Self.replyType:
            var r = WireReader(m.frame.payload)
            guard let p = probe, m.peer == p.peer, let seq = try? r.fixed(UInt64.self),
                  let sentAt = outstanding.removeValue(forKey: seq) else { return out }
            if samples.count >= Self.maxSamples { samples.removeFirst(samples.count / 10) }
            samples.append(Sample(sequence: seq, sentAfter: sentAt - started, roundTrip: now - sentAt))
        default:
            break
        }
        return out
    }

    /// A request payload whose frame encodes to `size` bytes.
    static func payload(_ seq: UInt64, size: Int) -> [UInt8] {
        var w = WireWriter(reservingCapacity: size)
        w.fixed(seq)
        // Frame header: the type (2-byte varint) and the length (1 byte below 64, else 2).
        let header = 2 + (size - 3 < 64 ? 1 : 2)
        w.raw([UInt8](repeating: 0, count: max(0, size - header - 8)))
        return w.bytes
    }
}
