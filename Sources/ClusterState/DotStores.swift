import MeshCore

/// The payload half of a causal CRDT (Almeida, Shoker, Baquero, "Delta State Replicated Data
/// Types", §6): a store of dots whose meaning is fixed by the causal context it travels with.
///
/// A dot present in the context but absent from the store was removed. `join` is the lattice join
/// of `(self, mine)` with `(other, theirs)`; the caller joins the contexts afterwards. Every store is
/// its own delta type: a mutator returns a small store plus a small context.
public protocol DotStore: Equatable, Sendable {
    /// The empty store (bottom).
    init()
    var isBottom: Bool { get }
    /// Every dot the store holds.
    func forEachDot(_ body: (Dot) -> Void)
    /// Joins `(other, theirs)` into `(self, mine)`; contexts are joined by the caller.
    mutating func join(_ other: Self, mine: CausalContext, theirs: CausalContext)
    /// Drops every dot covered by `context` (the join with a bottom store whose context it is).
    mutating func subtract(_ context: CausalContext)
    /// Drops every dot minted by one of `replicas` (pruning nodes that left for good).
    mutating func prune(replicas: Set<ReplicaID>)
    func encode(to w: inout StoreWriter)
    init(from r: inout StoreReader) throws(WireError)
}

extension DotStore {
    /// How many dots the store holds.
    public var dotCount: Int { var n = 0; forEachDot { _ in n += 1 }; return n }
}

// MARK: - Dot set

/// A set of dots: the store of the enable-wins flag and of each OR-Set element.
public struct DotSet: DotStore {
    public var dots = SmallVec<Dot>()

    public init() {}
    public init(_ dot: Dot) { dots.append(dot) }

    public var isBottom: Bool { dots.isEmpty }
    public func forEachDot(_ body: (Dot) -> Void) { for d in dots { body(d) } }

    public func contains(_ dot: Dot) -> Bool { dots.first { $0 == dot } != nil }

    public mutating func join(_ other: DotSet, mine: CausalContext, theirs: CausalContext) {
        // (s ∩ s') ∪ (s \ c') ∪ (s' \ c)
        dots.removeAll { theirs.contains($0) && !other.contains($0) }
        for d in other.dots where !mine.contains(d) { dots.append(d) }
    }

    public mutating func subtract(_ context: CausalContext) { dots.removeAll { context.contains($0) } }
    public mutating func prune(replicas: Set<ReplicaID>) { dots.removeAll { replicas.contains($0.replica) } }

    public static func == (a: DotSet, b: DotSet) -> Bool {
        a.dots.count == b.dots.count && a.dots.allSatisfy { b.contains($0) }
    }

    public func encode(to w: inout StoreWriter) {
        w.count(dots.count)
        for d in dots { w.dot(d) }
    }

    public init(from r: inout StoreReader) throws(WireError) {
        let n = try r.count(unitSize: 2)
        for _ in 0..<n { dots.append(try r.dot()) }
    }
}

// MARK: - Dot function

/// A map from dots to values: the store of registers and counters. Values under one dot never
/// change, so joining two copies of the same dot keeps either.
public struct DotFun<Value: Equatable & WireCodable & Sendable>: DotStore {
    public struct Entry: Sendable {
        public var dot: Dot
        public var value: Value
    }
    public var entries = SmallVec<Entry>()

    public init() {}
    public init(_ dot: Dot, _ value: Value) { entries.append(Entry(dot: dot, value: value)) }

    public var isBottom: Bool { entries.isEmpty }
    public func forEachDot(_ body: (Dot) -> Void) { for e in entries { body(e.dot) } }
    public var values: [Value] { entries.map(\.value) }

    public func entry(_ dot: Dot) -> Entry? { entries.first { $0.dot == dot } }

    public mutating func join(_ other: DotFun, mine: CausalContext, theirs: CausalContext) {
        // Entries of ours can only go if their dot is in `theirs`; when that context is the smaller
        // side (a delta joining a big register), walk it instead of our entries.
        if theirs.dotCount(upTo: entries.count) <= entries.count {
            var doomed: [Dot] = []
            theirs.forEachDot { d in if other.entry(d) == nil && mine.contains(d) { doomed.append(d) } }
            if !doomed.isEmpty { entries.removeAll { doomed.contains($0.dot) } }
        } else {
            entries.removeAll { theirs.contains($0.dot) && other.entry($0.dot) == nil }
        }
        // Ours cannot hold a dot outside `mine`, so "not in mine" means "new here".
        for e in other.entries where !mine.contains(e.dot) { entries.append(e) }
    }

    public mutating func subtract(_ context: CausalContext) { entries.removeAll { context.contains($0.dot) } }
    public mutating func prune(replicas: Set<ReplicaID>) { entries.removeAll { replicas.contains($0.dot.replica) } }

    public static func == (a: DotFun, b: DotFun) -> Bool {
        a.entries.count == b.entries.count && a.entries.allSatisfy { e in b.entry(e.dot)?.value == e.value }
    }

    public func encode(to w: inout StoreWriter) {
        w.count(entries.count)
        for e in entries { w.dot(e.dot); e.value.encode(to: &w.writer) }
    }

    public init(from r: inout StoreReader) throws(WireError) {
        let n = try r.count(unitSize: 3)
        for _ in 0..<n {
            let d = try r.dot()
            entries.append(Entry(dot: d, value: try Value(from: &r.reader)))
        }
    }
}

// MARK: - Dot map

/// A map from keys to nested dot stores: the store of the OR-Map and the OR-Set. A key is present
/// while its nested store holds a dot; removing a key removes the dots it had observed, so a
/// concurrent update elsewhere wins (add-wins / update-wins).
public struct DotMap<Key: Hashable & WireCodable & Sendable, Value: DotStore>: DotStore {
    public var entries: [Key: Value] = [:]

    public init() {}
    public init(_ key: Key, _ value: Value) { if !value.isBottom { entries[key] = value } }

    public var isBottom: Bool { entries.isEmpty }
    public func forEachDot(_ body: (Dot) -> Void) { for v in entries.values { v.forEachDot(body) } }

    public subscript(key: Key) -> Value? { entries[key] }

    public mutating func join(_ other: DotMap, mine: CausalContext, theirs: CausalContext) {
        _ = joinReportingScan(other, mine: mine, theirs: theirs)
    }

    /// What a join did besides adding `other`'s keys.
    public struct JoinReport {
        /// Keys outside `other` that lost dots (they need a change event too).
        public var scanned: [Key] = []
        /// True if the join removed any dot we held (with a context we already had, that is the
        /// only way a join can change the state).
        public var removedDots = false
    }

    /// Joins and reports what changed beyond `other`'s own keys.
    @discardableResult
    public mutating func joinReportingScan(_ other: DotMap, mine: CausalContext, theirs: CausalContext) -> JoinReport {
        var candidates = removalCandidates(of: other, mine: mine, theirs: theirs)
        var report = JoinReport()
        report.removedDots = joinKeys(other, mine: mine, theirs: theirs, candidates: &candidates)
        if candidates == nil || !candidates!.isEmpty {
            report.scanned = subtractOutside(other, theirs: theirs)
        }
        if !report.scanned.isEmpty { report.removedDots = true }
        return report
    }

    /// Keys that `other` does not mention change only if `theirs` removes one of their dots: a dot
    /// we have seen (in `mine`) that `other` does not hold. When `theirs` is small (a delta), this
    /// lists those candidates; each one found under a key of `other` is settled by that key's join,
    /// and only if some remain must the other keys be scanned. Nil when `theirs` is too big to list
    /// (a full state): then always scan.
    public static func removalCandidates(otherDots: (((Dot) -> Void) -> Void), mine: CausalContext,
                                         theirs: CausalContext) -> Set<Dot>? {
        let n = theirs.dotCount(upTo: 4096)
        guard n <= 4096 else { return nil }
        // Every dot `other` holds is in `theirs`; if that is all `theirs` has, nothing is removed.
        var held = 0
        otherDots { _ in held += 1 }
        if held == n { return [] }
        var heldSet = Set<Dot>()
        otherDots { heldSet.insert($0) }
        var c = Set<Dot>()
        theirs.forEachDot { d in if mine.contains(d) && !heldSet.contains(d) { c.insert(d) } }
        return c
    }

    func removalCandidates(of other: DotMap, mine: CausalContext, theirs: CausalContext) -> Set<Dot>? {
        DotMap.removalCandidates(otherDots: { other.forEachDot($0) }, mine: mine, theirs: theirs)
    }

    /// Joins the keys of `other`; settles the candidates found under them. Returns true if a dot
    /// we held was removed.
    public mutating func joinKeys(_ other: DotMap, mine: CausalContext, theirs: CausalContext,
                                  candidates: inout Set<Dot>?) -> Bool {
        var removed = false
        for (k, v2) in other.entries {
            if let i = entries.index(forKey: k) {
                // Mutate in place (through the index): copying a big nested value out and back
                // would make every join cost the size of the value.
                var before = -1
                if candidates != nil {
                    if !candidates!.isEmpty {
                        entries.values[i].forEachDot { if candidates!.remove($0) != nil { removed = true } }
                    }
                } else {
                    before = entries.values[i].dotCount
                    v2.forEachDot { if !mine.contains($0) { before += 1 } }
                }
                entries.values[i].join(v2, mine: mine, theirs: theirs)
                if before >= 0 && entries.values[i].dotCount < before { removed = true }
                if entries.values[i].isBottom { entries.remove(at: i) }
            } else {
                var v = Value()
                v.join(v2, mine: mine, theirs: theirs)
                if !v.isBottom { entries[k] = v }
            }
        }
        return removed
    }

    /// Removes the dots `theirs` covers from every key outside `other`; returns the keys that changed.
    public mutating func subtractOutside(_ other: DotMap, theirs: CausalContext) -> [Key] {
        var changed: [Key] = []
        for k in Array(entries.keys) where other.entries[k] == nil {
            let i = entries.index(forKey: k)!
            let before = entries.values[i].dotCount
            entries.values[i].subtract(theirs)
            if entries.values[i].isBottom { entries.remove(at: i); changed.append(k) }
            else if entries.values[i].dotCount != before { changed.append(k) }
        }
        return changed
    }

    public mutating func subtract(_ context: CausalContext) {
        for k in Array(entries.keys) {
            entries[k]!.subtract(context)
            if entries[k]!.isBottom { entries[k] = nil }
        }
    }

    public mutating func prune(replicas: Set<ReplicaID>) {
        for k in Array(entries.keys) {
            entries[k]!.prune(replicas: replicas)
            if entries[k]!.isBottom { entries[k] = nil }
        }
    }

    public func encode(to w: inout StoreWriter) {
        w.count(entries.count)
        for (k, v) in entries { k.encode(to: &w.writer); v.encode(to: &w) }
    }

    public init(from r: inout StoreReader) throws(WireError) {
        let n = try r.count(unitSize: 2)
        entries.reserveCapacity(n)
        for _ in 0..<n {
            let at = r.reader.position
            let k = try Key(from: &r.reader)
            let v = try Value(from: &r)
            guard !v.isBottom else { throw .malformed("map entry with an empty value", at: at) }
            guard entries.updateValue(v, forKey: k) == nil else { throw .malformed("duplicate map key", at: at) }
        }
    }
}

// MARK: - Product

/// Two dot stores under one causal context (a record with two CRDT fields).
public struct Pair<First: DotStore, Second: DotStore>: DotStore {
    public var first = First()
    public var second = Second()

    public init() {}
    public init(_ first: First, _ second: Second) { self.first = first; self.second = second }

    public var isBottom: Bool { first.isBottom && second.isBottom }
    public func forEachDot(_ body: (Dot) -> Void) { first.forEachDot(body); second.forEachDot(body) }

    public mutating func join(_ other: Pair, mine: CausalContext, theirs: CausalContext) {
        first.join(other.first, mine: mine, theirs: theirs)
        second.join(other.second, mine: mine, theirs: theirs)
    }
    public mutating func subtract(_ context: CausalContext) { first.subtract(context); second.subtract(context) }
    public mutating func prune(replicas: Set<ReplicaID>) { first.prune(replicas: replicas); second.prune(replicas: replicas) }

    public func encode(to w: inout StoreWriter) { first.encode(to: &w); second.encode(to: &w) }
    public init(from r: inout StoreReader) throws(WireError) {
        first = try First(from: &r)
        second = try Second(from: &r)
    }
}

// MARK: - Causal pair

/// A dot store with its causal context: a whole replica state, or a delta. Join is commutative,
/// associative and idempotent; a mutator's delta joined into any replica has the mutation's effect.
public struct Causal<Store: DotStore>: Equatable, Sendable {
    public var store: Store
    public var context: CausalContext

    public init(store: Store = Store(), context: CausalContext = CausalContext()) {
        self.store = store
        self.context = context
    }

    /// A delta that adds `store` (whose dots are new) and removes the dots in `removing`.
    public init(adding store: Store, removing: CausalContext = CausalContext()) {
        self.store = store
        context = removing
        store.forEachDot { context.insert($0) }
    }

    public var isBottom: Bool { store.isBottom && context.isEmpty }

    public mutating func join(_ other: Causal) {
        store.join(other.store, mine: context, theirs: other.context)
        context.formUnion(other.context)
    }

    public func joined(_ other: Causal) -> Causal {
        var c = self
        c.join(other)
        return c
    }

    /// Drops every dot of `replicas` from store and context.
    public mutating func prune(replicas: Set<ReplicaID>) {
        guard !replicas.isEmpty else { return }
        store.prune(replicas: replicas)
        for r in replicas { context.removeReplica(r) }
    }
}

extension Causal: WireCodable {
    public func encode(to writer: inout WireWriter) {
        // A table of replica IDs first (8 bytes each, once); dots then name a replica by its index.
        let ids = context.replicas.sorted()
        var index: [ReplicaID: UInt64] = [:]
        index.reserveCapacity(ids.count)
        for (i, r) in ids.enumerated() { index[r] = UInt64(i) }
        var w = StoreWriter(writer: writer, index: index)
        writer = WireWriter()
        w.count(ids.count)
        for r in ids { w.writer.fixed(r.rawValue) }
        let versions = context.versions.filter { $0.value > 0 }
        w.count(versions.count)
        for (r, n) in versions { w.writer.varint(index[r]!); w.writer.varint(n) }
        w.count(context.cloud.count)
        for (r, e) in context.cloud {
            w.writer.varint(index[r]!)
            w.count(e.count)
            for c in e.sorted() { w.writer.varint(c) }
        }
        store.encode(to: &w)
        writer = w.writer
    }

    public init(from reader: inout WireReader) throws(WireError) {
        let start = reader.position
        var r = StoreReader(reader: reader, replicas: [])
        let nReplicas = try r.count(unitSize: 8)
        var ids: [ReplicaID] = []
        ids.reserveCapacity(nReplicas)
        for _ in 0..<nReplicas { ids.append(ReplicaID(rawValue: try r.reader.fixed(UInt64.self))) }
        guard Set(ids).count == ids.count else { throw .malformed("duplicate replica in the replica table", at: start) }
        r.replicas = ids
        var ctx = CausalContext()
        for _ in 0..<(try r.count(unitSize: 2)) {
            let d = try r.dot()
            ctx.raise(d.replica, to: d.counter)
        }
        for _ in 0..<(try r.count(unitSize: 2)) {
            let replica = try r.replica()
            for _ in 0..<(try r.count(unitSize: 1)) {
                ctx.insert(Dot(replica, try r.counter()))
            }
        }
        let storeAt = r.reader.position
        let store = try Store(from: &r)
        // The invariant every join relies on: each stored dot is unique and inside the context.
        var seen = Set<Dot>()
        var bad: String? = nil
        store.forEachDot { d in
            if bad != nil { return }
            if !seen.insert(d).inserted { bad = "dot \(d) appears twice" }
            else if !ctx.contains(d) { bad = "dot \(d) is not in the causal context" }
        }
        if let why = bad { throw .malformed(why, at: storeAt) }
        self.init(store: store, context: ctx)
        reader = r.reader
    }
}

// MARK: - Coding helpers

/// Encodes a store: dots name their replica by its index in the message's replica table.
public struct StoreWriter {
    public var writer: WireWriter
    let index: [ReplicaID: UInt64]

    public mutating func count(_ n: Int) { writer.varint(UInt64(n)) }
    public mutating func dot(_ d: Dot) {
        writer.varint(index[d.replica] ?? 0)
        writer.varint(d.counter)
    }
}

/// Decodes a store, checking every count against what remains before allocating.
public struct StoreReader {
    public var reader: WireReader
    var replicas: [ReplicaID]
    /// The most elements any one collection in a delta may declare.
    public static let maxCount = 1 << 24

    public mutating func count(unitSize: Int) throws(WireError) -> Int {
        try reader.length(max: StoreReader.maxCount, unitSize: unitSize)
    }
    public mutating func replica() throws(WireError) -> ReplicaID {
        let at = reader.position
        let i = try reader.varint()
        guard i < UInt64(replicas.count) else { throw .malformed("replica index \(i) outside the table of \(replicas.count)", at: at) }
        return replicas[Int(i)]
    }
    public mutating func dot() throws(WireError) -> Dot {
        let r = try replica()
        return Dot(r, try counter())
    }
    public mutating func counter() throws(WireError) -> UInt64 {
        let at = reader.position
        let c = try reader.varint()
        guard c > 0 else { throw .malformed("dot counter 0", at: at) }
        guard c <= Dot.maxCounter else { throw .valueOutOfRange(c, limit: Dot.maxCounter, at: at) }
        return c
    }
}
