import MeshCore

// MARK: - Record values

/// What a container is for: gaming sessions outrank management work.
public enum ContainerClass: UInt8, Hashable, Sendable, CaseIterable, WireCodable {
    case gaming = 0
    case management = 1
    public func encode(to writer: inout WireWriter) { writer.u8(rawValue) }
    public init(from reader: inout WireReader) throws(WireError) {
        let at = reader.position
        guard let v = ContainerClass(rawValue: try reader.u8()) else { throw .malformed("unknown container class", at: at) }
        self = v
    }
}

public enum ContainerStatus: UInt8, Hashable, Sendable, CaseIterable, WireCodable {
    case pending = 0, starting, running, stopping, stopped, failed
    public func encode(to writer: inout WireWriter) { writer.u8(rawValue) }
    public init(from reader: inout WireReader) throws(WireError) {
        let at = reader.position
        guard let v = ContainerStatus(rawValue: try reader.u8()) else { throw .malformed("unknown container status", at: at) }
        self = v
    }
}

public struct Label: Hashable, Sendable, WireFields {
    public var key = ""
    public var value = ""
    public init() {}
    public init(_ key: String, _ value: String) { self.key = key; self.value = value }
    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.string(&key, max: 255); try c.string(&value, max: 1024)
    }
}

public struct GPUInfo: Hashable, Sendable, WireFields {
    public var model = ""
    public var count: UInt32 = 0
    public var memoryMiB: UInt64 = 0
    public init() {}
    public init(model: String, count: UInt32, memoryMiB: UInt64) { self.model = model; self.count = count; self.memoryMiB = memoryMiB }
    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.string(&model, max: 255); try c.uint(&count); try c.varint(&memoryMiB)
    }
}

/// What a node is: written by the node itself when it joins or its hardware changes.
public struct NodeSpec: Hashable, Sendable, WireFields {
    public var addresses: [PeerAddress] = []
    public var region = ""
    public var zone = ""
    public var labels: [Label] = []
    public var cpuMillicores: UInt32 = 0
    public var memoryMiB: UInt64 = 0
    public var diskGiB: UInt64 = 0
    public var gpu: GPUInfo? = nil
    public init() {}
    public init(addresses: [PeerAddress], region: String, zone: String, labels: [Label] = [],
                cpuMillicores: UInt32, memoryMiB: UInt64, diskGiB: UInt64, gpu: GPUInfo? = nil) {
        self.addresses = addresses; self.region = region; self.zone = zone; self.labels = labels
        self.cpuMillicores = cpuMillicores; self.memoryMiB = memoryMiB; self.diskGiB = diskGiB; self.gpu = gpu
    }
    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.array(&addresses, max: 32)
        try c.string(&region, max: 255); try c.string(&zone, max: 255)
        try c.array(&labels, max: 64)
        try c.uint(&cpuMillicores); try c.varint(&memoryMiB); try c.varint(&diskGiB)
        try c.optional(&gpu)
    }
}

/// How busy a node is: updated often, by the node itself.
public struct NodeLoad: Hashable, Sendable, WireFields {
    public var cpuPermille: UInt16 = 0
    public var memoryPermille: UInt16 = 0
    public var gpuPermille: UInt16 = 0
    public var runningContainers: UInt32 = 0
    public init() {}
    public init(cpuPermille: UInt16, memoryPermille: UInt16, gpuPermille: UInt16 = 0, runningContainers: UInt32) {
        self.cpuPermille = cpuPermille; self.memoryPermille = memoryPermille
        self.gpuPermille = gpuPermille; self.runningContainers = runningContainers
    }
    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.uint(&cpuPermille); try c.uint(&memoryPermille); try c.uint(&gpuPermille); try c.uint(&runningContainers)
    }
}

/// Where a container runs and what it is.
public struct ContainerSpec: Hashable, Sendable, WireFields {
    public var node = NodeID(digest: Digest(unchecked: [UInt8](repeating: 0, count: 32)))
    public var image = ""
    public var workloadClass = ContainerClass.management
    public var priority: Int32 = 0
    public init() {}
    public init(node: NodeID, image: String, workloadClass: ContainerClass, priority: Int32) {
        self.node = node; self.image = image; self.workloadClass = workloadClass; self.priority = priority
    }
    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.value(&node); try c.string(&image, max: 1024); try c.value(&workloadClass); try c.int(&priority)
    }
}

/// A node as readers see it (registers resolved).
public struct NodeView: Hashable, Sendable {
    public var id: NodeID
    public var spec: NodeSpec?
    public var load: NodeLoad?
}

/// A container as readers see it.
public struct ContainerView: Hashable, Sendable {
    public var id: String
    public var spec: ContainerSpec?
    public var status: ContainerStatus?
}

/// One change a subscriber sees; `nil` means removed.
public enum ClusterChange: Hashable, Sendable {
    case node(NodeID, NodeView?)
    case container(String, ContainerView?)
    /// The set of blobs `node` holds changed.
    case holdings(NodeID)
    case config(String, String?)
    /// The node left for good; its dots were pruned.
    case retired(NodeID)
}

// MARK: - The cluster store

public typealias NodeEntry = Pair<LWWRegister<NodeSpec>, LWWRegister<NodeLoad>>
public typealias ContainerEntry = Pair<LWWRegister<ContainerSpec>, LWWRegister<ContainerStatus>>

/// Every CRDT of the cluster schema under one causal context.
public struct ClusterStore: DotStore {
    public var nodes = ORMap<NodeID, NodeEntry>()
    public var containers = ORMap<String, ContainerEntry>()
    /// Node → the blobs it holds; only that node writes its own set.
    public var holdings = DotMap<NodeID, OwnedSet<Digest>>()
    public var config = ORMap<String, LWWRegister<String>>()
    /// Keys a delta removes. Only a hint: it lets a replica find the removed record at once instead
    /// of scanning its maps for the removed dots. It is not state (equality ignores it), delta
    /// groups keep it, and a replica drops it once joined.
    public var removedKeys = RemovedKeys()

    public struct RemovedKeys: Equatable, Sendable {
        public var nodes: Set<NodeID> = []
        public var containers: Set<String> = []
        public var config: Set<String> = []
        public var isEmpty: Bool { nodes.isEmpty && containers.isEmpty && config.isEmpty }
        mutating func formUnion(_ o: RemovedKeys) {
            nodes.formUnion(o.nodes); containers.formUnion(o.containers); config.formUnion(o.config)
        }
    }

    public init() {}

    public static func == (a: ClusterStore, b: ClusterStore) -> Bool {
        a.nodes == b.nodes && a.containers == b.containers && a.holdings == b.holdings && a.config == b.config
    }

    public var isBottom: Bool { nodes.isBottom && containers.isBottom && holdings.isBottom && config.isBottom }
    public func forEachDot(_ body: (Dot) -> Void) {
        nodes.forEachDot(body); containers.forEachDot(body); holdings.forEachDot(body); config.forEachDot(body)
    }
    public mutating func join(_ other: ClusterStore, mine: CausalContext, theirs: CausalContext) {
        _ = joinReporting(other, mine: mine, theirs: theirs)
    }

    struct Scanned {
        var nodes: [NodeID] = [], containers: [String] = [], holdings: [NodeID] = [], config: [String] = []
        var removedDots = false
    }

    mutating func joinReporting(_ other: ClusterStore, mine: CausalContext, theirs: CausalContext) -> Scanned {
        // The four maps share one context, so removal candidates are listed once for all of them:
        // a dot removed from the containers map must not make the holdings map scan itself.
        var candidates = DotMap<NodeID, OwnedSet<Digest>>.removalCandidates(otherDots: { other.forEachDot($0) }, mine: mine, theirs: theirs)
        var s = Scanned()
        var removed = nodes.inner.joinKeys(other.nodes.inner, mine: mine, theirs: theirs, candidates: &candidates)
        removed = containers.inner.joinKeys(other.containers.inner, mine: mine, theirs: theirs, candidates: &candidates) || removed
        removed = holdings.joinKeys(other.holdings, mine: mine, theirs: theirs, candidates: &candidates) || removed
        removed = config.inner.joinKeys(other.config.inner, mine: mine, theirs: theirs, candidates: &candidates) || removed
        if !other.removedKeys.isEmpty {
            removedKeys.formUnion(other.removedKeys)
        }
        if candidates != nil && !candidates!.isEmpty && !other.removedKeys.isEmpty {
            func settle<K, V>(_ map: inout DotMap<K, V>, _ keys: Set<K>, _ otherMap: DotMap<K, V>, _ out: inout [K]) {
                for k in keys where otherMap.entries[k] == nil {
                    guard let i = map.entries.index(forKey: k) else { continue }
                    var hit = false
                    map.entries.values[i].forEachDot { if candidates!.remove($0) != nil { hit = true } }
                    guard hit else { continue }
                    map.entries.values[i].subtract(theirs)
                    if map.entries.values[i].isBottom { map.entries.remove(at: i) }
                    out.append(k)
                }
            }
            settle(&nodes.inner, other.removedKeys.nodes, other.nodes.inner, &s.nodes)
            settle(&containers.inner, other.removedKeys.containers, other.containers.inner, &s.containers)
            settle(&config.inner, other.removedKeys.config, other.config.inner, &s.config)
        }
        if var c = candidates, !c.isEmpty {
            // Holdings dots of replica r live only under the node whose replica is r (checked at
            // decode), so a blob removal settles there without scanning 10,000 nodes' sets.
            let byReplica = Dictionary(grouping: c, by: \.replica)
            for node in holdings.entries.keys where other.holdings.entries[node] == nil {
                guard let dots = byReplica[ReplicaID(node)], let i = holdings.entries.index(forKey: node) else { continue }
                let before = holdings.entries.values[i].count
                holdings.entries.values[i].subtract(theirs)
                let after = holdings.entries.values[i].count
                if after != before { s.holdings.append(node) }
                if after == 0 { holdings.entries.remove(at: i) }
                if before - after == dots.count { c.subtract(dots) }
            }
            candidates = c
        }
        if candidates == nil || !candidates!.isEmpty {
            s.nodes += nodes.inner.subtractOutside(other.nodes.inner, theirs: theirs)
            s.containers += containers.inner.subtractOutside(other.containers.inner, theirs: theirs)
            if candidates == nil { s.holdings = holdings.subtractOutside(other.holdings, theirs: theirs) }
            s.config += config.inner.subtractOutside(other.config.inner, theirs: theirs)
        }
        s.removedDots = removed || !(s.nodes.isEmpty && s.containers.isEmpty && s.holdings.isEmpty && s.config.isEmpty)
        return s
    }

    public mutating func subtract(_ c: CausalContext) {
        nodes.subtract(c); containers.subtract(c); holdings.subtract(c); config.subtract(c)
    }
    public mutating func prune(replicas: Set<ReplicaID>) {
        nodes.prune(replicas: replicas); containers.prune(replicas: replicas)
        holdings.prune(replicas: replicas); config.prune(replicas: replicas)
    }
    public func encode(to w: inout StoreWriter) {
        nodes.encode(to: &w); containers.encode(to: &w); holdings.encode(to: &w); config.encode(to: &w)
        w.count(removedKeys.nodes.count)
        for k in removedKeys.nodes.sorted() { k.encode(to: &w.writer) }
        w.count(removedKeys.containers.count)
        for k in removedKeys.containers.sorted() { k.encode(to: &w.writer) }
        w.count(removedKeys.config.count)
        for k in removedKeys.config.sorted() { k.encode(to: &w.writer) }
    }
    public init(from r: inout StoreReader) throws(WireError) {
        nodes = try .init(from: &r); containers = try .init(from: &r)
        let at = r.reader.position
        holdings = try .init(from: &r)
        for (node, set) in holdings.entries where set.owner != ReplicaID(node) {
            throw .malformed("holdings of node \(node.short) written by another replica", at: at)
        }
        config = try .init(from: &r)
        for _ in 0..<(try r.count(unitSize: 32)) { removedKeys.nodes.insert(try NodeID(from: &r.reader)) }
        for _ in 0..<(try r.count(unitSize: 1)) { removedKeys.containers.insert(try String(from: &r.reader)) }
        for _ in 0..<(try r.count(unitSize: 1)) { removedKeys.config.insert(try String(from: &r.reader)) }
    }
}

/// A cluster state or a delta of one (the same lattice): the causal store plus the grow-only set
/// of nodes that left for good, whose dots are pruned everywhere.
public struct ClusterData: Equatable, Sendable, WireCodable {
    public var causal = Causal<ClusterStore>()
    public private(set) var retired: Set<NodeID> = []
    private var retiredReplicas: Set<ReplicaID> = []

    public init() {}
    init(_ causal: Causal<ClusterStore>) { self.causal = causal }

    public var isBottom: Bool { causal.isBottom && retired.isEmpty }

    public static func == (a: ClusterData, b: ClusterData) -> Bool { a.causal == b.causal && a.retired == b.retired }

    /// A delta that retires `node`.
    static func retiring(_ node: NodeID) -> ClusterData {
        var d = ClusterData()
        d.retired = [node]
        d.retiredReplicas = [ReplicaID(node)]
        return d
    }

    /// Joins `other` in; returns what changed for readers.
    @discardableResult
    public mutating func join(_ other: ClusterData) -> [ClusterChange] { joinDetectingChange(other).changes }

    /// Joins `other` in; returns what changed for readers, and whether the state changed at all
    /// (it can change invisibly: a losing register value collected, a context grown).
    public mutating func joinDetectingChange(_ other: ClusterData) -> (changes: [ClusterChange], changed: Bool) {
        var changes: [ClusterChange] = []
        var incoming = other
        let newlyRetired = other.retired.subtracting(retired)
        if !newlyRetired.isEmpty {
            let reps = Set(newlyRetired.map(ReplicaID.init))
            let before = self
            causal.prune(replicas: reps)
            retired.formUnion(newlyRetired)
            retiredReplicas.formUnion(reps)
            changes += newlyRetired.sorted().map { ClusterChange.retired($0) }
            changes += ClusterData.diff(before, self)
        }
        if !retiredReplicas.isEmpty && !incoming.causal.context.replicas.isDisjoint(with: retiredReplicas) {
            incoming.causal.prune(replicas: retiredReplicas)
        }
        let delta = incoming.causal.store
        // Readers' values before, for the keys the delta names.
        let oldNodes = delta.nodes.keys.map { ($0, nodeView($0)) }
        let oldContainers = delta.containers.keys.map { ($0, containerView($0)) }
        let oldConfig = delta.config.keys.map { ($0, config($0)) }
        let oldHoldings = delta.holdings.entries.keys.map { ($0, causal.store.holdings[$0]) }
        let contextGrows = !incoming.causal.context.isSubset(of: causal.context)
        let scanned = causal.store.joinReporting(delta, mine: causal.context, theirs: incoming.causal.context)
        if contextGrows { causal.context.formUnion(incoming.causal.context) }
        for (k, old) in oldNodes { let new = nodeView(k); if new != old { changes.append(.node(k, new)) } }
        for (k, old) in oldContainers { let new = containerView(k); if new != old { changes.append(.container(k, new)) } }
        for (k, old) in oldConfig { let new = config(k); if new != old { changes.append(.config(k, new)) } }
        for (k, old) in oldHoldings where causal.store.holdings[k] != old { changes.append(.holdings(k)) }
        changes += scanned.nodes.map { .node($0, nodeView($0)) }
        changes += scanned.containers.map { .container($0, containerView($0)) }
        changes += scanned.config.map { .config($0, config($0)) }
        changes += scanned.holdings.map { .holdings($0) }
        return (changes, contextGrows || scanned.removedDots || !newlyRetired.isEmpty)
    }

    /// Every reader-visible difference between two states (used after pruning).
    static func diff(_ a: ClusterData, _ b: ClusterData) -> [ClusterChange] {
        var out: [ClusterChange] = []
        for k in Set(a.causal.store.nodes.keys).union(b.causal.store.nodes.keys) where a.nodeView(k) != b.nodeView(k) {
            out.append(.node(k, b.nodeView(k)))
        }
        for k in Set(a.causal.store.containers.keys).union(b.causal.store.containers.keys) where a.containerView(k) != b.containerView(k) {
            out.append(.container(k, b.containerView(k)))
        }
        for k in Set(a.causal.store.config.keys).union(b.causal.store.config.keys) where a.config(k) != b.config(k) {
            out.append(.config(k, b.config(k)))
        }
        for k in Set(a.causal.store.holdings.entries.keys).union(b.causal.store.holdings.entries.keys)
        where a.causal.store.holdings[k] != b.causal.store.holdings[k] {
            out.append(.holdings(k))
        }
        return out
    }

    // MARK: Reads

    public func nodeView(_ id: NodeID) -> NodeView? {
        guard let e = causal.store.nodes[id] else { return nil }
        return NodeView(id: id, spec: e.first.value, load: e.second.value)
    }
    public func containerView(_ id: String) -> ContainerView? {
        guard let e = causal.store.containers[id] else { return nil }
        return ContainerView(id: id, spec: e.first.value, status: e.second.value)
    }
    public func config(_ key: String) -> String? { causal.store.config[key]?.value }

    // MARK: Wire

    public func encode(to writer: inout WireWriter) {
        writer.varint(UInt64(retired.count))
        for n in retired.sorted() { n.encode(to: &writer) }
        causal.encode(to: &writer)
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let n = try reader.length(max: 1 << 20, unitSize: 32)
        for _ in 0..<n {
            let id = try NodeID(from: &reader)
            retired.insert(id)
            retiredReplicas.insert(ReplicaID(id))
        }
        causal = try Causal(from: &reader)
    }
}

// MARK: - Errors

/// Why a delta, message or file was refused. The replica is untouched when one is thrown.
public struct ClusterStateError: Error, Hashable, CustomStringConvertible {
    private enum Kind: Hashable {
        case malformed(WireError)
        case oversized(Int, limit: Int)
        case notOwner(String)
        case io(String, errno: Int32)
        case corrupt(String)
    }
    private let kind: Kind

    /// The decoding error underneath, if the bytes were malformed.
    public var wireError: WireError? { if case .malformed(let e) = kind { return e }; return nil }
    /// The errno of a failed disk operation, if any.
    public var errnoCode: Int32? { if case .io(_, let e) = kind { return e }; return nil }
    public var isOversized: Bool { if case .oversized = kind { return true }; return false }

    static func malformed(_ e: WireError) -> Self { .init(kind: .malformed(e)) }
    static func oversized(_ n: Int, limit: Int) -> Self { .init(kind: .oversized(n, limit: limit)) }
    static func notOwner(_ what: String) -> Self { .init(kind: .notOwner(what)) }
    static func io(_ what: String, errno: Int32) -> Self { .init(kind: .io(what, errno: errno)) }
    static func corrupt(_ what: String) -> Self { .init(kind: .corrupt(what)) }

    public var description: String {
        switch kind {
        case .malformed(let e): "cluster-state delta refused: \(e); the replica was not changed (a peer running another version, or a corrupted message)"
        case .oversized(let n, let limit): "cluster-state delta of \(n) bytes refused: the limit is \(limit) bytes; raise ClusterSync.Settings.maxDeltaBytes if this is legitimate"
        case .notOwner(let what): "refused: \(what)"
        case .io(let what, let e): "cluster-state storage: \(what) failed (errno \(e)); check the directory's permissions and free space"
        case .corrupt(let what): "cluster-state storage is corrupt: \(what); move the directory aside to start from the peers' state"
        }
    }
}

extension ClusterData {
    /// Decodes untrusted bytes: refuses more than `maxBytes`, malformed encodings, and deltas that
    /// break the kernel's invariants, with a typed error. Nothing is joined here.
    public static func decode(_ bytes: [UInt8], maxBytes: Int) throws(ClusterStateError) -> ClusterData {
        guard bytes.count <= maxBytes else { throw .oversized(bytes.count, limit: maxBytes) }
        do { return try ClusterData(wireBytes: bytes) } catch { throw .malformed(error) }
    }
}
