import MeshCore

/// Settings for the bulk class's scavenger mode (LEDBAT-style, RFC 6817 in spirit): bulk data gets
/// its own window on top of the congestion controller's, driven by queuing delay — the connection's
/// latest RTT sample minus its minimum RTT. Below `target` the window grows (up to doubling per
/// round trip, scaled by how far below target); above it, it is cut multiplicatively, at most once
/// per round trip. So bulk fills an idle path but backs off as soon as it builds a queue at a
/// shared bottleneck, leaving room for control traffic (ours, or anyone's).
public struct ScavengerSettings: Sendable {
    /// Queuing delay bulk may add. Default 5 ms (LEDBAT says ≤ 100 ms; a mesh wants control RTTs low).
    public var target: Duration = .milliseconds(5)
    /// Smallest bulk window in bytes, so bulk always progresses. Default 4 × 1452.
    public var minWindow: Int = 4 * 1452
    /// Largest bulk window in bytes. Default 64 MiB (the congestion controller limits first).
    public var maxWindow: Int = 64 << 20
    /// Bulk window at start. Default 64 KiB.
    public var initialWindow: Int = 64 << 10
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
        for b in buckets.compactMap({ $0 }) where b.tokens <= 0 {
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
        let queuing = Double((latestRTT - minRTT).nanosecondsClamped)
        let target = Double(s.target.nanosecondsClamped)
        if queuing > target {
            // Multiplicative decrease, at most once per round trip: halve at 2 × target and beyond.
            guard now - lastDecrease >= smoothedRTT else { return }
            lastDecrease = now
            let factor = 1 - 0.5 * min(1, (queuing - target) / target)
            bulkWindow = max(s.minWindow, Int(Double(bulkWindow) * factor))
        } else {
            let offTarget = (target - queuing) / target // 0…1
            bulkWindow = min(s.maxWindow, bulkWindow + Int(Double(count) * offTarget))
        }
    }
}
