import MeshCore

/// Settings for the bulk class's scavenger mode (LEDBAT-style, RFC 6817 in spirit): bulk data gets
/// its own window on top of the congestion controller's, driven by queuing delay — the smallest of
/// the connection's last few RTT samples minus the base delay (the smallest RTT of the last ten
/// minutes). Below `target` the
/// window grows (doubling per round trip until the first time the queue passes the target, then by
/// at most an eighth per round trip, scaled by how far below target); above it, it is cut
/// multiplicatively, at most once per round trip (halved at twice the target). So bulk fills an
/// idle path but keeps the queue it builds at a shared bottleneck near `target`, leaving room for
/// control traffic (ours, or anyone's).
public struct ScavengerSettings: Sendable {
    /// Queuing delay bulk may add. Default 1 ms: the bottleneck's queue is every other flow's delay
    /// (LEDBAT allows up to 100 ms; a mesh that carries game and control traffic wants little).
    /// Measured through daemons at 100 Mbit/s (docs/benchmarks.md, priority): 5 ms left the p99
    /// control round trip ~13 ms above idle; 1 ms keeps it within the 5 ms goal.
    public var target: Duration = .milliseconds(1)
    /// Smallest bulk window in bytes, so bulk always progresses. Default 4 × 1452.
    public var minWindow: Int = 4 * 1452
    /// Largest bulk window in bytes. Default 64 MiB (the congestion controller limits first).
    public var maxWindow: Int = 64 << 20
    /// Bulk window at start. Default 64 KiB.
    public var initialWindow: Int = 64 << 10
    /// RTT samples whose minimum is the current delay (LEDBAT's CURRENT_FILTER): one late
    /// acknowledgement (a descheduled receiver) is not a queue. Default 4.
    public var currentFilter: Int = 4
    /// The base delay is the smallest RTT seen over this long (LEDBAT's BASE_HISTORY), kept as ten
    /// minima of a tenth each: when a path gets longer, bulk is throttled for at most this long
    /// instead of for the rest of the connection. Default 10 minutes.
    public var baseHistory: Duration = .seconds(600)
    public init() {}
}

/// Per-class sending limits for one mesh connection, consulted by the stream scheduler: token-bucket
/// rate caps per class, and the scavenger window for bulk. Pure logic (time comes in as `now`).
struct ClassLimiter {
    private struct Bucket {
        var rate: Double      // bytes per second
        var burst: Double     // bucket depth, bytes
        var tokens: Double
        var last: Instant
    }
    private var buckets: [Bucket?] = Array(repeating: nil, count: TrafficClass.allCases.count)
    private let scavenger: ScavengerSettings?
    private(set) var bulkWindow: Int
    private(set) var bulkUnacked = 0
    private var lastDecrease = Instant.zero
    /// The latest RTT samples (a ring of `currentFilter`), for the current delay.
    private var recentRTT: [Duration] = []
    private var recentNext = 0
    /// Until the queue first passes the target the window doubles per round trip (slow start).
    private var slowStart = true
    /// Minimum RTT per tenth of `baseHistory`, newest last.
    private var baseBuckets: [Duration] = []
    private var bucketStart = Instant.zero

    init(rates: [TrafficClass: Double], scavenger: ScavengerSettings?, now: Instant) {
        for (c, r) in rates where r > 0 {
            // Ten milliseconds of sending at the cap, at least two full packets.
            let burst = max(r * 0.010, 2 * 1452)
            buckets[Int(c.rawValue)] = Bucket(rate: r, burst: burst, tokens: burst, last: now)
        }
        self.scavenger = scavenger
        bulkWindow = scavenger?.initialWindow ?? .max
    }

    var isActive: Bool { scavenger != nil || buckets.contains { $0 != nil } }

    /// May `c` send now?
    mutating func allows(_ c: TrafficClass, now: Instant) -> Bool {
        if c == .bulk, scavenger != nil, bulkUnacked >= bulkWindow { return false }
        guard var b = buckets[Int(c.rawValue)] else { return true }
        if now > b.last {
            b.tokens = min(b.burst, b.tokens + b.rate * Double((now - b.last).nanosecondsClamped) / 1e9)
            b.last = now
            buckets[Int(c.rawValue)] = b
        }
        return b.tokens > 0
    }

    /// When a class that `allows` refused for its rate cap may send again (nil: no cap is waiting).
    func nextRefill(after now: Instant) -> Instant? {
        var next: Instant?
        for case let b? in buckets where b.tokens <= 0 {
            let ns = (-b.tokens + 1452) / b.rate * 1e9
            let t = now + .nanoseconds(Int64(ns))
            next = min(next ?? t, t)
        }
        return next
    }

    /// `count` bytes of class `c` went into packets.
    mutating func sent(_ c: TrafficClass, count: Int) {
        if buckets[Int(c.rawValue)] != nil { buckets[Int(c.rawValue)]!.tokens -= Double(count) }
        if c == .bulk { bulkUnacked += count }
    }

    /// The peer acknowledged `count` bulk bytes; `latestRTT`/`minRTT`/`smoothedRTT` from the connection.
    mutating func bulkAcked(_ count: Int, latestRTT: Duration, minRTT: Duration, smoothedRTT: Duration, now: Instant) {
        bulkUnacked = max(0, bulkUnacked - count)
        guard let s = scavenger, count > 0, minRTT > .zero else { return }
        if recentRTT.count < max(1, s.currentFilter) { recentRTT.append(latestRTT) } else { recentRTT[recentNext] = latestRTT }
        recentNext = (recentNext + 1) % max(1, s.currentFilter)
        let current = recentRTT.min() ?? latestRTT
        // The base: the connection's min RTT if it was seen within the history, else the windowed one.
        let bucketLength = s.baseHistory / 10
        if baseBuckets.isEmpty || now - bucketStart >= bucketLength {
            baseBuckets.append(latestRTT)
            if baseBuckets.count > 10 { baseBuckets.removeFirst(baseBuckets.count - 10) }
            bucketStart = now
        } else {
            baseBuckets[baseBuckets.count - 1] = min(baseBuckets[baseBuckets.count - 1], latestRTT)
        }
        let base = max(minRTT, baseBuckets.min() ?? minRTT)
        let queuing = Double((current - base).nanosecondsClamped)
        let target = Double(s.target.nanosecondsClamped)
        if queuing > target {
            // Multiplicative decrease, at most once per round trip: halve at 2 × target and beyond.
            slowStart = false
            guard now - lastDecrease >= smoothedRTT else { return }
            lastDecrease = now
            let factor = 1 - 0.5 * min(1, (queuing - target) / target)
            bulkWindow = max(s.minWindow, Int(Double(bulkWindow) * factor))
        } else {
            let offTarget = (target - queuing) / target // 0…1
            // Per round trip about a window is acknowledged: slow start doubles it, then it grows by
            // an eighth (at least a packet), so it probes back up without overshooting the target
            // by much before the delay signal, one round trip late, stops it.
            let step = slowStart ? Double(count) : Double(count) * Double(max(1452, bulkWindow / 8)) / Double(max(bulkWindow, 1))
            bulkWindow = min(s.maxWindow, bulkWindow + max(1, Int(step * offTarget)))
        }
    }
}
