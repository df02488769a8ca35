/// What a run measured. Filled by the world as it goes; `SimReport` turns it into a table, JSON and SVG.
public struct SimStats: Sendable {
    public struct GaugeSummary: Sendable, Codable, Hashable {
        public var min: Double
        public var mean: Double
        public var max: Double
    }

    public struct Sample: Sendable {
        /// Virtual seconds.
        public var t: Double
        public var live: Int
        /// Per core name: fraction of live nodes sharing the most common state digest.
        public var agreement: [String: Double]
        /// Per `core.gauge`: min, mean, max over live nodes.
        public var gauges: [String: GaugeSummary]
        /// `SimStats.eventsByKind` at the time of the sample.
        public var eventsByKind: [UInt64] = []
    }

    public var events: UInt64 = 0
    /// Events handled, by kind (`SimWorld.eventKindNames`, same order).
    public var eventsByKind: [UInt64] = Array(repeating: 0, count: SimWorld.eventKindNames.count)
    public var sent: UInt64 = 0
    public var delivered: UInt64 = 0
    /// Indexed by `SimWorld.DropReason.rawValue`.
    public var dropped: [UInt64] = Array(repeating: 0, count: SimWorld.DropReason.allCases.count)
    public var bytesUp: [UInt64]
    public var bytesDown: [UInt64]
    /// Indexed by `TrafficClass.rawValue`.
    public var bytesUpByClass: [UInt64] = [0, 0, 0, 0]
    public var crashes = 0
    public var restarts = 0
    public var partitions = 0
    public var workloadSkipped = 0
    public let coreNames: [String]
    /// Completion times by label, and in the order labels first appeared.
    public var completions: [String: LatencyHistogram] = [:]
    public var completionLabels: [String] = []
    public var completionCounts: [String: UInt64] = [:]
    /// `completionCounts` as it was at each sample (for completions-over-time).
    public var completionsSoFar: [[String: UInt64]] = []
    public var samples: [Sample] = []

    init(nodes: Int, coreNames: [String]) {
        bytesUp = Array(repeating: 0, count: nodes)
        bytesDown = Array(repeating: 0, count: nodes)
        self.coreNames = coreNames
    }

    mutating func complete(_ c: SimCompletion, at: UInt64) {
        if completions[c.label] == nil {
            completions[c.label] = LatencyHistogram()
            completionLabels.append(c.label)
        }
        completions[c.label]!.record(UInt64(max(0, c.elapsed.nanosecondsClamped)))
        completionCounts[c.label, default: 0] += 1
    }

    public var droppedTotal: UInt64 { dropped.reduce(0, +) }
    public func dropped(_ reason: SimWorld.DropReason) -> UInt64 { dropped[reason.rawValue] }
}
