import MeshCore

/// A simulation scenario, read from a hand-written `.sim` file (format: simulations/README.md).
public struct Scenario: Sendable {
    public var name: String = "unnamed"
    public var description: String = ""
    public var duration: Duration = .seconds(60)
    public var seed: UInt64 = 1
    public var nodes: Int = 0
    public var cores: [CoreSpec] = []
    /// Nodes whose addresses every core receives as bootstrap seeds.
    public var seeds: NodeSet = .none
    public var regions: [RegionSpec] = []
    /// One-way latency between regions, indexed like `regions`.
    public var latency: [[Duration?]] = []
    public var link = LinkSettings()
    public var joins: [JoinSpec] = []
    public var workloads: [WorkloadSpec] = []
    public var faults: [FaultSpec] = []
    /// How often convergence and gauges are sampled.
    public var sampleEvery: Duration = .seconds(1)

    public init() {}

    public struct CoreSpec: Sendable, Hashable {
        public var name: String
        public var parameters: [String: String]
        public init(name: String, parameters: [String: String] = [:]) { self.name = name; self.parameters = parameters }
    }

    public struct RegionSpec: Sendable, Hashable {
        public var name: String
        public var weight: Double = 1
        public var up: Double?
        public var down: Double?
    }

    public struct JoinSpec: Sendable {
        public var at: Duration
        public var nodes: NodeSet
        /// Starts are spread evenly over this window (0: all at `at`).
        public var spread: Duration
    }

    public struct WorkloadSpec: Sendable {
        public var at: Duration
        public var nodes: NodeSet
        public var kind: String
        public var core: String?
        public var every: Duration?
        public var count: Int
        public var parameters: [String: String]
    }

    public struct FaultSpec: Sendable {
        public var at: Duration
        public var kind: Fault
        /// Repeat every this long, `count` times in all (node sets are drawn afresh each time).
        public var every: Duration? = nil
        public var count: Int = 1
    }

    public enum Fault: Sendable {
        /// Each group can reach only itself; nodes in no group form one more group.
        case partition([NodeSet])
        case heal
        case crash(NodeSet)
        case restart(NodeSet, keepDisk: Bool)
        /// Each input costs `cpu` of processing time; link capacities scale by `bandwidth`.
        case slow(NodeSet, cpu: Duration, bandwidth: Double)
        /// The node's clock reads `offset` ahead (negative: behind) and runs `ppm` parts per million fast.
        case skew(NodeSet, offset: Duration, ppm: Double)
        /// Changes the loss rate of every link from now on.
        case loss(Double)
    }

    /// Node indexes to a `NodeSet` expression's nodes (deterministic for a seed).
    public func resolve(_ set: NodeSet, random: inout SeededRandom) throws(ScenarioError) -> [Int] {
        switch set {
        case .none, .down: return []
        case .all: return Array(0..<nodes)
        case .list(let ranges):
            var out: [Int] = []
            for r in ranges {
                guard r.upperBound < nodes else {
                    throw .invalid(0, "node \(r.upperBound) is out of range: the scenario has \(nodes) nodes (0..\(nodes - 1))")
                }
                out.append(contentsOf: r)
            }
            return Array(Set(out)).sorted()
        case .random(let k):
            guard k <= nodes else { throw .invalid(0, "random:\(k) asks for more nodes than the scenario's \(nodes)") }
            var pool = Array(0..<nodes)
            for i in 0..<k {
                let j = i + Int(random.next() % UInt64(nodes - i))
                pool.swapAt(i, j)
            }
            return pool[0..<k].sorted()
        case .region(let name):
            guard let r = regions.firstIndex(where: { $0.name == name }) else {
                throw .invalid(0, "unknown region \"\(name)\"; declared: \(regions.map(\.name).joined(separator: ", "))")
            }
            return Array(regionRanges()[r])
        }
    }

    /// Contiguous blocks of node indexes per region, sized by weight.
    public func regionRanges() -> [Range<Int>] {
        let total = regions.reduce(0) { $0 + $1.weight }
        var out: [Range<Int>] = []
        var start = 0
        var acc = 0.0
        for (i, r) in regions.enumerated() {
            acc += r.weight
            let end = i == regions.count - 1 ? nodes : min(nodes, Int((acc / total * Double(nodes)).rounded()))
            out.append(start..<max(start, end))
            start = max(start, end)
        }
        return out
    }
}

/// Link behaviour shared by all nodes unless a region overrides capacity.
public struct LinkSettings: Sendable, Hashable {
    /// Upload and download capacity in bytes per second.
    public var up: Double = 12_500_000
    public var down: Double = 12_500_000
    /// Extra delay drawn uniformly from [0, jitter] per message.
    public var jitter: Duration = .zero
    /// Probability that a packet is lost.
    public var loss: Double = 0
    /// Probability that a message is held back by up to `reorderDelay` (so later ones overtake it).
    public var reorder: Double = 0
    public var reorderDelay: Duration = .milliseconds(10)
    /// Payload bytes per packet and per-packet header bytes (IP + UDP + QUIC), for wire size.
    public var mtu: Int = 1200
    public var overhead: Int = 48
    /// A link to a crashed or partitioned peer is reported down after this long.
    public var linkTimeout: Duration = .seconds(10)
    /// A link nobody used for this long is closed (0: never).
    public var idleTimeout: Duration = .seconds(30)
    /// A dial to an unreachable address fails after this long.
    public var dialTimeout: Duration = .seconds(5)
    /// Lower-class backlog (as time at the uplink's rate) that every message waits behind: the part
    /// already in the kernel's queue, where classes no longer count. Default 0 (strict priority).
    public var fifo: Duration = .zero
    /// The hosts' CPUs (the `cpu` line); nil: CPU is free and infinite.
    public var cpu: CPUSettings? = nil
    public init() {}
}

/// A set of nodes as written in a scenario: `all`, `none`, `3`, `0..99`, `1,5,9..12`, `random:10`,
/// `region:eu`, and for faults `down` (the nodes down at that moment).
public enum NodeSet: Sendable, Hashable {
    case none
    case all
    case list([ClosedRange<Int>])
    case random(Int)
    case region(String)
    /// The nodes that are down when the fault fires (for `restart nodes=down`).
    case down

    static func parse(_ text: String, line: Int) throws(ScenarioError) -> NodeSet {
        switch text {
        case "all": return .all
        case "none", "": return .none
        case "down": return .down
        default: break
        }
        if text.hasPrefix("random:") {
            guard let k = Int(text.dropFirst(7)), k >= 0 else { throw .invalid(line, "random:K needs a count, got \"\(text)\"") }
            return .random(k)
        }
        if text.hasPrefix("region:") { return .region(String(text.dropFirst(7))) }
        var ranges: [ClosedRange<Int>] = []
        for part in text.split(separator: ",") {
            let bounds = part.split(separator: ".", omittingEmptySubsequences: true)
            if part.contains("..") && bounds.count == 2, let lo = Int(bounds[0]), let hi = Int(bounds[1]), lo <= hi, lo >= 0 {
                ranges.append(lo...hi)
            } else if let v = Int(part), v >= 0 {
                ranges.append(v...v)
            } else {
                throw .invalid(line, "\"\(part)\" is not a node set: use all, 7, 0..99, 1,5,9..12, random:K or region:NAME")
            }
        }
        return .list(ranges)
    }
}

/// Why a scenario could not be read or run.
public struct ScenarioError: Error, Hashable, CustomStringConvertible {
    private enum Kind: Hashable {
        case invalid(Int, String)
        case missingCore(String, [String])
        case unreadable(String, Int32)
    }
    private let kind: Kind
    public var file: String?

    static func invalid(_ line: Int, _ why: String) -> ScenarioError { .init(kind: .invalid(line, why)) }
    public static func missingCore(_ name: String, registered: [String]) -> ScenarioError {
        .init(kind: .missingCore(name, registered))
    }
    public static func unreadable(_ path: String, errno: Int32) -> ScenarioError { .init(kind: .unreadable(path, errno)) }

    /// The `errno` of a file that could not be read, if that is the failure.
    public var errnoCode: Int32? { if case .unreadable(_, let e) = kind { return e } else { return nil } }
    /// The name of a core the scenario needs but this build lacks.
    public var missingCoreName: String? { if case .missingCore(let n, _) = kind { return n } else { return nil } }

    public var description: String {
        let at = file.map { "\($0): " } ?? ""
        switch kind {
        case .invalid(0, let why): return "\(at)\(why)"
        case .invalid(let line, let why): return "\(at)line \(line): \(why)"
        case .missingCore(let name, let registered):
            return "\(at)the scenario needs the core \"\(name)\", which this build of gquic-sim does not have "
                + "(registered cores: \(registered.joined(separator: ", "))). A core is registered in "
                + "Sources/gquic-sim/Cores.swift once its module has landed; until then this scenario cannot run."
        case .unreadable(let path, let e): return "cannot read scenario \(path) (errno \(e)); give a path or a name from `gquic-sim list`"
        }
    }
}
