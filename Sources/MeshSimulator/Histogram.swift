/// A log-linear histogram of durations in nanoseconds: 32 buckets per power of two (about 3%
/// resolution), fixed memory, so ten million samples cost the same as ten.
public struct LatencyHistogram: Sendable {
    private static let subBits = 5
    private static let sub = 1 << subBits
    public private(set) var counts: [UInt64] = Array(repeating: 0, count: 64 * 32)
    public private(set) var total: UInt64 = 0
    public private(set) var maxValue: UInt64 = 0
    public private(set) var sum: Double = 0

    public init() {}

    @inline(__always)
    static func bucket(_ v: UInt64) -> Int {
        if v < UInt64(sub) { return Int(v) }
        let e = 63 - v.leadingZeroBitCount
        let s = Int((v >> UInt64(e - subBits)) & UInt64(sub - 1))
        return (e - subBits + 1) * sub + s
    }

    /// The smallest value that falls into bucket `i`.
    static func lowerBound(_ i: Int) -> UInt64 {
        if i < sub { return UInt64(i) }
        let e = i / sub + subBits - 1
        return (UInt64(1) << UInt64(e)) | (UInt64(i % sub) << UInt64(e - subBits))
    }

    public mutating func record(_ ns: UInt64) {
        counts[LatencyHistogram.bucket(ns)] += 1
        total += 1
        sum += Double(ns)
        if ns > maxValue { maxValue = ns }
    }

    /// The value at quantile `q` (0...1), in nanoseconds (the bucket's lower bound; exact below 32 ns).
    public func quantile(_ q: Double) -> UInt64 {
        guard total > 0 else { return 0 }
        let target = UInt64((q * Double(total)).rounded(.up))
        var acc: UInt64 = 0
        for (i, c) in counts.enumerated() where c > 0 {
            acc += c
            if acc >= max(1, target) { return min(LatencyHistogram.lowerBound(i), maxValue) }
        }
        return maxValue
    }

    public var mean: Double { total == 0 ? 0 : sum / Double(total) }

    /// Points of the cumulative distribution: (value in ns, fraction of samples at or below).
    public func cdf() -> [(UInt64, Double)] {
        var out: [(UInt64, Double)] = []
        var acc: UInt64 = 0
        for (i, c) in counts.enumerated() where c > 0 {
            acc += c
            out.append((min(LatencyHistogram.lowerBound(i + 1), maxValue), Double(acc) / Double(total)))
        }
        return out
    }
}
