import MeshCore

/// A set with exactly one writer, its `owner` (a node's own blob holdings). Because only the owner
/// mints dots, an element needs just the owner's counter (no replica per element), and the context
/// for the owner is almost always a single number. Join follows the OR-Set rules restricted to the
/// owner's dots, so it is a lattice join like the others.
public struct OwnedSet<Element: Hashable & WireCodable & Sendable>: DotStore {
    public private(set) var owner = ReplicaID(rawValue: 0)
    /// Element → counter of the owner's dot that added it.
    public private(set) var counters: [Element: UInt64] = [:]

    public init() {}

    public var isBottom: Bool { counters.isEmpty }
    public var count: Int { counters.count }
    public var elements: Dictionary<Element, UInt64>.Keys { counters.keys }
    public func contains(_ e: Element) -> Bool { counters[e] != nil }

    public func forEachDot(_ body: (Dot) -> Void) { for c in counters.values { body(Dot(owner, c)) } }

    public mutating func join(_ other: OwnedSet, mine: CausalContext, theirs: CausalContext) {
        if counters.isEmpty { owner = other.owner }
        if !other.counters.isEmpty && other.owner != owner { return } // not ours to mix; refused at decode
        // Remove ours that `theirs` has seen and `other` no longer holds. A delta's owner dots are
        // usually just its own elements' dots and the dots they replace, found by element; only
        // when `theirs` covers more than that (a removal, a full state) is the whole set walked.
        let ownerDots = theirs.versions[owner, default: 0] + UInt64(theirs.cloud[owner]?.count ?? 0)
        if ownerDots > 0 {
            var accounted: UInt64 = 0
            for (e, c) in other.counters {
                accounted += 1
                if let have = counters[e], have != c, theirs.contains(Dot(owner, have)) {
                    counters[e] = nil
                    accounted += 1
                }
            }
            if ownerDots > accounted {
                counters = counters.filter { e, c in !theirs.contains(Dot(owner, c)) || other.counters[e] == c }
            }
        }
        for (e, c) in other.counters where !mine.contains(Dot(owner, c)) {
            if let have = counters[e], have >= c { continue }
            counters[e] = c
        }
    }

    public mutating func subtract(_ context: CausalContext) {
        guard context.versions[owner] != nil || context.cloud[owner] != nil else { return }
        counters = counters.filter { !context.contains(Dot(owner, $0.value)) }
    }

    public mutating func prune(replicas: Set<ReplicaID>) { if replicas.contains(owner) { counters = [:] } }

    /// The owner adds `e` (replacing its earlier dot for `e`, if any).
    public func add(_ e: Element, by owner: ReplicaID, context: CausalContext) -> Causal<OwnedSet> {
        var d = OwnedSet()
        d.owner = owner
        let dot = context.nextDot(for: owner)
        d.counters[e] = dot.counter
        var ctx = CausalContext(dots: [dot])
        if let old = counters[e] { ctx.insert(Dot(owner, old)) }
        return Causal(store: d, context: ctx)
    }

    /// The owner adds every element of `es` in one delta (consecutive dots), e.g. a node announcing
    /// the thousands of blobs its store already holds at start-up in one durable write.
    public func add(contentsOf es: some Sequence<Element>, by owner: ReplicaID, context: CausalContext) -> Causal<OwnedSet> {
        var d = OwnedSet()
        d.owner = owner
        var ctx = CausalContext()
        var next = context.nextDot(for: owner).counter
        for e in es where d.counters[e] == nil {
            d.counters[e] = next
            ctx.insert(Dot(owner, next))
            if let old = counters[e] { ctx.insert(Dot(owner, old)) }
            next += 1
        }
        return Causal(store: d, context: ctx)
    }

    /// The owner removes every element of `es` in one delta.
    public func remove(contentsOf es: some Sequence<Element>) -> Causal<OwnedSet> {
        var ctx = CausalContext()
        for e in es { if let old = counters[e] { ctx.insert(Dot(owner, old)) } }
        return Causal(store: OwnedSet(), context: ctx)
    }

    /// The owner removes `e`.
    public func remove(_ e: Element) -> Causal<OwnedSet> {
        var ctx = CausalContext()
        if let old = counters[e] { ctx.insert(Dot(owner, old)) }
        return Causal(store: OwnedSet(), context: ctx)
    }

    public func encode(to w: inout StoreWriter) {
        w.count(counters.count)
        guard !counters.isEmpty else { return }
        w.dot(Dot(owner, 1)) // the owner's table index (the counter is unused)
        for (e, c) in counters { e.encode(to: &w.writer); w.writer.varint(c) }
    }

    public init(from r: inout StoreReader) throws(WireError) {
        let n = try r.count(unitSize: 2)
        guard n > 0 else { return }
        owner = try r.dot().replica
        counters.reserveCapacity(n)
        for _ in 0..<n {
            let at = r.reader.position
            let e = try Element(from: &r.reader)
            let c = try r.counter()
            guard counters.updateValue(c, forKey: e) == nil else { throw .malformed("duplicate set element", at: at) }
        }
    }

    public static func == (a: OwnedSet, b: OwnedSet) -> Bool {
        a.counters == b.counters && (a.counters.isEmpty || a.owner == b.owner)
    }
}
