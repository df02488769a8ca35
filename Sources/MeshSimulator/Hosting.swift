import MeshCore

/// What a core factory gets when the simulator (re)starts a node.
public struct SimCoreContext: Sendable {
    /// The node's identity: `NodeID(digest:)` of a hash of the run's seed and the node's index.
    public let nodeID: NodeID
    public let index: Int
    /// The node's address on the virtual network (`10.a.b.c:7400`); dials to it reach this node.
    public let address: PeerAddress
    /// Bootstrap addresses (the scenario's `seeds` line), excluding the node's own.
    public let seeds: [PeerAddress]
    /// A stream of randomness of the node's own: forked from the run's seed per node, core and
    /// incarnation, so a run reproduces from its seed.
    public var random: SeededRandom
    /// What the core's `SimPersistentCore.persistentState()` returned when the node crashed, if it
    /// restarts with `disk=keep`; nil on first start and after `disk=wipe`.
    public let persisted: [UInt8]?
    /// 0 on first start, then 1, 2, … per restart.
    public let incarnation: Int
    /// The `key=value` words of the scenario's `core NAME …` line.
    public let parameters: [String: String]
    /// Everyone on the virtual network (for traffic generators; protocol cores learn peers themselves).
    public let directory: SimDirectory
}

/// The node identities of a run, shared by all nodes (one copy, not one per node).
public final class SimDirectory: Sendable {
    public let ids: [NodeID]
    public init(ids: [NodeID]) { self.ids = ids }
    public var count: Int { ids.count }
    public static func address(of index: Int) -> PeerAddress {
        PeerAddress(host: "10.\((index >> 16) & 255).\((index >> 8) & 255).\(index & 255)", port: 7400)
    }
    /// The node index an address names, if it is a simulator address.
    public static func index(of address: PeerAddress) -> Int? {
        guard address.port == 7400 else { return nil }
        let parts = address.host.split(separator: ".")
        guard parts.count == 4, parts[0] == "10", let a = Int(parts[1]), let b = Int(parts[2]), let c = Int(parts[3]),
              (0...255).contains(a), (0...255).contains(b), (0...255).contains(c) else { return nil }
        return a << 16 | b << 8 | c
    }
}

/// Builds a core for a node. Thrown errors abort the run with their description.
public typealias SimCoreFactory = @Sendable (SimCoreContext) throws -> any MeshProtocolCore

/// The cores a build of the simulator can host, by the name scenarios use (`core membership`).
public struct SimCoreRegistry: Sendable {
    public struct Entry: Sendable {
        public let name: String
        public let summary: String
        public let factory: SimCoreFactory
    }
    public private(set) var entries: [Entry] = []

    public init() {}

    /// The registry with the simulator's own built-in cores (`flood`).
    public static var builtIn: SimCoreRegistry {
        var r = SimCoreRegistry()
        r.register("flood", summary: "traffic generator for measuring the link model (chatter, echo RTTs, windowed pushes)") { ctx in
            try FloodCore(context: ctx)
        }
        return r
    }

    /// Adds (or replaces) a core under `name`.
    public mutating func register(_ name: String, summary: String, factory: @escaping SimCoreFactory) {
        entries.removeAll { $0.name == name }
        entries.append(Entry(name: name, summary: summary, factory: factory))
    }

    public func factory(named name: String) -> SimCoreFactory? { entries.first { $0.name == name }?.factory }
    public var names: [String] { entries.map(\.name) }
}

/// A scenario's `workload` line, as one node's core receives it.
public struct SimWorkload: Sendable, Hashable {
    /// The `kind=` word: `publish`, `fetch`, `write`, `push`, … (the core decides what it knows).
    public var kind: String
    /// The remaining `key=value` words of the line.
    public var parameters: [String: String]
    /// Counts the repetitions of a line with `every=`/`count=` (0 for the first).
    public var repetition: Int
    public init(kind: String, parameters: [String: String], repetition: Int = 0) {
        self.kind = kind; self.parameters = parameters; self.repetition = repetition
    }
}

/// A core that accepts workload events (publishes, fetches, state writes). The simulator delivers a
/// scenario's `workload` lines through this hook; a core without it cannot be given workload.
public protocol SimWorkloadCore: MeshProtocolCore {
    /// Throws (any error; its description is shown) for a workload the core does not understand.
    mutating func workload(_ event: SimWorkload, now: Instant) throws -> Outbox
}

/// A core with state that survives a crash on disk. On `fault … crash`, the simulator calls
/// `persistentState()` and keeps the bytes; `restart … disk=keep` passes them to the factory as
/// `SimCoreContext.persisted`, `disk=wipe` passes nil. (Think of it as "what was fsynced".)
public protocol SimPersistentCore: MeshProtocolCore {
    func persistentState() -> [UInt8]
}

/// A finished unit of work whose time goes into the completion-time CDF (`label` groups them).
public struct SimCompletion: Sendable, Hashable {
    public var label: String
    public var elapsed: Duration
    public init(label: String, elapsed: Duration) { self.label = label; self.elapsed = elapsed }
}

/// A named number a core reports about itself (for example the size of its membership view).
public struct SimGauge: Sendable, Hashable {
    public var name: String
    public var value: Double
    public init(_ name: String, _ value: Double) { self.name = name; self.value = value }
}

/// A core the simulator can measure. All three are optional in spirit: return nil / [] when unused.
public protocol SimObservableCore: MeshProtocolCore {
    /// A digest of the state that should converge across live nodes (a membership view, a CRDT
    /// state). The run's "agreement" is the fraction of live nodes sharing the most common digest.
    func stateDigest() -> Digest?
    /// Numbers sampled every `sample every=` and summarised (min, mean, max over live nodes).
    func gauges() -> [SimGauge]
    /// Work completed since the last call. Called after every input the core handles.
    mutating func drainCompletions() -> [SimCompletion]
}
