#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A point on a monotonic timeline, in nanoseconds since an arbitrary origin.
///
/// Every sans-IO core takes `now: Instant` as an input instead of reading a clock, so the daemon
/// (real time) and the simulator (virtual time) drive the very same code.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    public static let zero = Instant(nanoseconds: 0)
    /// Later than every instant a run can reach: "no timer".
    public static let distantFuture = Instant(nanoseconds: .max)

    public static func < (a: Instant, b: Instant) -> Bool { a.nanoseconds < b.nanoseconds }

    /// Adding saturates at `distantFuture` and subtracting at `zero`: timers never wrap.
    public static func + (a: Instant, d: Duration) -> Instant {
        let ns = d.nanosecondsClamped
        if ns >= 0 {
            let (sum, overflow) = a.nanoseconds.addingReportingOverflow(UInt64(ns))
            return Instant(nanoseconds: overflow ? .max : sum)
        }
        let magnitude = ns.magnitude
        return Instant(nanoseconds: a.nanoseconds > magnitude ? a.nanoseconds - magnitude : 0)
    }

    public static func - (a: Instant, d: Duration) -> Instant { a + (.zero - d) }

    /// The signed time from `b` to `a`.
    public static func - (a: Instant, b: Instant) -> Duration {
        if a >= b { return .nanoseconds(Int64(clamping: a.nanoseconds - b.nanoseconds)) }
        return .zero - .nanoseconds(Int64(clamping: b.nanoseconds - a.nanoseconds))
    }

    public var description: String {
        let ms = Double(nanoseconds) / 1e6
        return "t+\(ms)ms"
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch. Used only where humans or hybrid logical
/// clocks need calendar time; ordering and timers use `Instant`.
public struct WallTime: Comparable, Hashable, Sendable {
    public var nanosecondsSinceEpoch: UInt64
    public init(nanosecondsSinceEpoch: UInt64) { self.nanosecondsSinceEpoch = nanosecondsSinceEpoch }
    public static func < (a: WallTime, b: WallTime) -> Bool { a.nanosecondsSinceEpoch < b.nanosecondsSinceEpoch }
    public var millisecondsSinceEpoch: UInt64 { nanosecondsSinceEpoch / 1_000_000 }
}

extension Duration {
    /// This duration in whole nanoseconds, clamped to `Int64`.
    public var nanosecondsClamped: Int64 {
        let (s, atto) = components
        let (secNs, overflow) = s.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return s < 0 ? .min : .max }
        let (total, overflow2) = secNs.addingReportingOverflow(atto / 1_000_000_000)
        if overflow2 { return s < 0 ? .min : .max }
        return total
    }

    /// This duration in seconds as a `Double` (for reports and rates).
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}

/// Where the edges of the system read time. Cores never hold one; shells and the simulator do.
public protocol MeshClock: Sendable {
    /// Monotonic time: never goes backwards, unaffected by wall-clock steps.
    func now() -> Instant
    /// Calendar time.
    func wallNow() -> WallTime
}

/// The real clock: `CLOCK_MONOTONIC` and `CLOCK_REALTIME`.
public struct SystemClock: MeshClock {
    public init() {}

    public func now() -> Instant {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Instant(nanoseconds: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
    }

    public func wallNow() -> WallTime {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return WallTime(nanosecondsSinceEpoch: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec))
    }
}

/// A clock that moves only when told to: for unit tests and the simulator's virtual time.
public final class ManualClock: MeshClock, Sendable {
    private let state: Mutex<(now: Instant, wallOrigin: WallTime)>

    /// - Parameters:
    ///   - start: the initial monotonic instant.
    ///   - wallOrigin: the wall time at monotonic zero (default: 2026-01-01T00:00:00Z).
    public init(start: Instant = .zero,
                wallOrigin: WallTime = WallTime(nanosecondsSinceEpoch: 1_767_225_600 * 1_000_000_000)) {
        state = Mutex((start, wallOrigin))
    }

    public func now() -> Instant { state.withLock { $0.now } }

    public func wallNow() -> WallTime {
        state.withLock { WallTime(nanosecondsSinceEpoch: $0.wallOrigin.nanosecondsSinceEpoch &+ $0.now.nanoseconds) }
    }

    /// Moves time forward; a negative duration is ignored (monotonic time never goes back).
    public func advance(by d: Duration) {
        state.withLock { s in
            let next = s.now + d
            if next > s.now { s.now = next }
        }
    }

    /// Jumps to `instant` if it is later than now.
    public func advance(to instant: Instant) {
        state.withLock { s in if instant > s.now { s.now = instant } }
    }
}
