import MeshCore

/// One node's replica of the cluster state, with the typed write API. Pure: no clock, no disk, no
/// network. Every write returns the delta it produced (already joined here) for anti-entropy and
/// the log, and the changes readers see.
public struct ClusterReplica: Sendable {
    public let node: NodeID
    public let replica: ReplicaID
    public private(set) var data: ClusterData
    public private(set) var clock = HybridLogicalClock()

    /// The result of a write: the delta to ship and persist, and the changes it made.
    public struct Write: Sendable {
        public var delta: ClusterData
        public var changes: [ClusterChange]
    }

    public init(node: NodeID, data: ClusterData = ClusterData()) {
        self.node = node
        replica = ReplicaID(node)
        self.data = data
        self.data.causal.store.removedKeys = .init()
    }

    private var store: ClusterStore { data.causal.store }
    private var context: CausalContext { data.causal.context }

    private mutating func commit(_ causal: Causal<ClusterStore>) -> Write {
        let delta = ClusterData(causal)
        let changes = data.join(delta)
        dropHints()
        return Write(delta: delta, changes: changes)
    }

    /// Joins a delta or state received from a peer (already decoded and validated).
    @discardableResult
    public mutating func apply(_ delta: ClusterData) -> [ClusterChange] { applyDetectingChange(delta).changes }

    /// Like `apply`, and also says whether the state changed at all.
    public mutating func applyDetectingChange(_ delta: ClusterData) -> (changes: [ClusterChange], changed: Bool) {
        defer { dropHints() }
        return data.joinDetectingChange(delta)
    }

    /// Removal hints belong to deltas, not to a replica's state.
    private mutating func dropHints() {
        if !data.causal.store.removedKeys.isEmpty { data.causal.store.removedKeys = .init() }
    }

    // MARK: Nodes

    /// Sets the spec of `id` (normally a node writes its own).
    public mutating func setNodeSpec(_ spec: NodeSpec, for id: NodeID? = nil, wall: WallTime) -> Write {
        let id = id ?? node
        var c = clock
        let d = store.nodes.update(id, by: replica, context: context) { entry, r, ctx in
            let reg = entry.first.assign(spec, clock: &c, physical: wall, by: r, context: ctx)
            return Causal(store: NodeEntry(reg.store, .init()), context: reg.context)
        }
        clock = c
        var s = ClusterStore(); s.nodes = d.store
        return commit(Causal(store: s, context: d.context))
    }

    public mutating func setNodeLoad(_ load: NodeLoad, for id: NodeID? = nil, wall: WallTime) -> Write {
        let id = id ?? node
        var c = clock
        let d = store.nodes.update(id, by: replica, context: context) { entry, r, ctx in
            let reg = entry.second.assign(load, clock: &c, physical: wall, by: r, context: ctx)
            return Causal(store: NodeEntry(.init(), reg.store), context: reg.context)
        }
        clock = c
        var s = ClusterStore(); s.nodes = d.store
        return commit(Causal(store: s, context: d.context))
    }

    /// Observed-remove of a node's record (a concurrent update keeps it).
    public mutating func removeNode(_ id: NodeID) -> Write {
        let d = store.nodes.remove(id)
        var s = ClusterStore(); s.nodes = d.store; s.removedKeys.nodes = [id]
        return commit(Causal(store: s, context: d.context))
    }

    /// `id` left for good: its record and holdings go, and every dot it minted is pruned on every
    /// replica that learns of this, so the state stops carrying it. Writes that `id` made and that
    /// arrive later are ignored. The retired set keeps 32 bytes per retired node.
    public mutating func retire(_ id: NodeID) -> Write {
        var out = removeNode(id)
        var ctx = CausalContext()
        store.holdings[id]?.forEachDot { ctx.insert($0) }
        let h = commit(Causal(store: ClusterStore(), context: ctx))
        out.delta.join(h.delta); out.changes += h.changes
        let r = ClusterData.retiring(id)
        out.changes += data.join(r)
        out.delta.join(r)
        return out
    }

    public var nodes: [NodeView] { store.nodes.keys.compactMap { data.nodeView($0) } }
    public func node(_ id: NodeID) -> NodeView? { data.nodeView(id) }
    public var retiredNodes: Set<NodeID> { data.retired }

    // MARK: Containers

    public mutating func putContainer(_ id: String, _ spec: ContainerSpec, wall: WallTime) -> Write {
        var c = clock
        let d = store.containers.update(id, by: replica, context: context) { entry, r, ctx in
            let reg = entry.first.assign(spec, clock: &c, physical: wall, by: r, context: ctx)
            return Causal(store: ContainerEntry(reg.store, .init()), context: reg.context)
        }
        clock = c
        var s = ClusterStore(); s.containers = d.store
        return commit(Causal(store: s, context: d.context))
    }

    public mutating func setContainerStatus(_ id: String, _ status: ContainerStatus, wall: WallTime) -> Write {
        var c = clock
        let d = store.containers.update(id, by: replica, context: context) { entry, r, ctx in
            let reg = entry.second.assign(status, clock: &c, physical: wall, by: r, context: ctx)
            return Causal(store: ContainerEntry(.init(), reg.store), context: reg.context)
        }
        clock = c
        var s = ClusterStore(); s.containers = d.store
        return commit(Causal(store: s, context: d.context))
    }

    public mutating func removeContainer(_ id: String) -> Write {
        let d = store.containers.remove(id)
        var s = ClusterStore(); s.containers = d.store; s.removedKeys.containers = [id]
        return commit(Causal(store: s, context: d.context))
    }

    public func container(_ id: String) -> ContainerView? { data.containerView(id) }
    public var containers: [ContainerView] { store.containers.keys.compactMap { data.containerView($0) } }
    public func containers(on node: NodeID) -> [ContainerView] {
        store.containers.entries.compactMap { k, e in e.first.value?.node == node ? data.containerView(k) : nil }
    }

    // MARK: Blob availability (each node writes only its own)

    public mutating func addHolding(_ blob: Digest) -> Write {
        let set = store.holdings[node] ?? OwnedSet()
        let d = set.add(blob, by: replica, context: context)
        var s = ClusterStore(); s.holdings = DotMap(node, d.store)
        return commit(Causal(store: s, context: d.context))
    }

    public mutating func removeHolding(_ blob: Digest) -> Write {
        guard let set = store.holdings[node] else { return Write(delta: ClusterData(), changes: []) }
        let d = set.remove(blob)
        return commit(Causal(store: ClusterStore(), context: d.context))
    }

    /// Adds many blobs to this node's holdings in one write (start-up, an OCI image's blobs).
    public mutating func addHoldings(_ blobs: some Sequence<Digest>) -> Write {
        let set = store.holdings[node] ?? OwnedSet()
        let d = set.add(contentsOf: blobs.filter { !set.contains($0) }, by: replica, context: context)
        guard !d.store.isBottom else { return Write(delta: ClusterData(), changes: []) }
        var s = ClusterStore(); s.holdings = DotMap(node, d.store)
        return commit(Causal(store: s, context: d.context))
    }

    /// Removes many blobs from this node's holdings in one write (evicted or collected while down).
    public mutating func removeHoldings(_ blobs: some Sequence<Digest>) -> Write {
        guard let set = store.holdings[node] else { return Write(delta: ClusterData(), changes: []) }
        let d = set.remove(contentsOf: blobs)
        guard !d.context.isEmpty else { return Write(delta: ClusterData(), changes: []) }
        return commit(Causal(store: ClusterStore(), context: d.context))
    }

    public func holdings(of node: NodeID) -> Set<Digest> { Set(store.holdings[node].map { Array($0.elements) } ?? []) }
    /// Nodes that hold `blob`.
    public func holders(of blob: Digest) -> [NodeID] {
        store.holdings.entries.compactMap { $0.value.contains(blob) ? $0.key : nil }.sorted()
    }

    // MARK: Config

    public mutating func setConfig(_ key: String, _ value: String, wall: WallTime) -> Write {
        var c = clock
        let d = store.config.update(key, by: replica, context: context) { reg, r, ctx in
            reg.assign(value, clock: &c, physical: wall, by: r, context: ctx)
        }
        clock = c
        var s = ClusterStore(); s.config = d.store
        return commit(Causal(store: s, context: d.context))
    }

    public mutating func removeConfig(_ key: String) -> Write {
        let d = store.config.remove(key)
        var s = ClusterStore(); s.config = d.store; s.removedKeys.config = [key]
        return commit(Causal(store: s, context: d.context))
    }

    public func config(_ key: String) -> String? { data.config(key) }
    public var configEntries: [String: String] {
        store.config.entries.compactMapValues { $0.value }
    }
}
