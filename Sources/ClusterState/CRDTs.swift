import MeshCore

/// A CRDT that is a thin typed face over one dot store. Conformers get the `DotStore`
/// requirements forwarded, so they nest inside an `ORMap` like any store.
public protocol WrappedDotStore: DotStore {
    associatedtype Inner: DotStore
    var inner: Inner { get set }
    init(inner: Inner)
}

extension WrappedDotStore {
    public init() { self.init(inner: Inner()) }
    public var isBottom: Bool { inner.isBottom }
    public func forEachDot(_ body: (Dot) -> Void) { inner.forEachDot(body) }
    public mutating func join(_ other: Self, mine: CausalContext, theirs: CausalContext) {
        inner.join(other.inner, mine: mine, theirs: theirs)
    }
    public mutating func subtract(_ context: CausalContext) { inner.subtract(context) }
    public mutating func prune(replicas: Set<ReplicaID>) { inner.prune(replicas: replicas) }
    public func encode(to w: inout StoreWriter) { inner.encode(to: &w) }
    public init(from r: inout StoreReader) throws(WireError) { self.init(inner: try Inner(from: &r)) }

    /// The context of every dot this value holds (what a write that replaces it must cover).
    public var observedDots: CausalContext { var c = CausalContext(); inner.forEachDot { c.insert($0) }; return c }

    /// A delta that empties this value (the observed-remove of everything it holds).
    public func reset() -> Causal<Self> { Causal(store: Self(), context: observedDots) }
}

extension Causal where Store: WrappedDotStore {
    fileprivate static func wrap(_ d: Causal<Store.Inner>) -> Causal<Store> {
        Causal(store: Store(inner: d.store), context: d.context)
    }
}

// MARK: - Enable-wins flag

/// A flag where a concurrent enable beats a disable.
public struct EWFlag: WrappedDotStore {
    public var inner: DotSet
    public init(inner: DotSet) { self.inner = inner }

    public var isEnabled: Bool { !inner.isBottom }

    public func enable(by replica: ReplicaID, context: CausalContext) -> Causal<EWFlag> {
        Causal(adding: EWFlag(inner: DotSet(context.nextDot(for: replica))), removing: observedDots)
    }

    public func disable() -> Causal<EWFlag> { reset() }
}

// MARK: - Add-wins observed-remove set

/// A set where a concurrent add beats a remove; a remove removes only the adds it has seen.
public struct ORSet<Element: Hashable & WireCodable & Sendable>: WrappedDotStore {
    public var inner: DotMap<Element, DotSet>
    public init(inner: DotMap<Element, DotSet>) { self.inner = inner }

    public var elements: Set<Element> { Set(inner.entries.keys) }
    public var count: Int { inner.entries.count }
    public func contains(_ e: Element) -> Bool { inner.entries[e] != nil }

    public func add(_ e: Element, by replica: ReplicaID, context: CausalContext) -> Causal<ORSet> {
        var old = CausalContext()
        inner.entries[e]?.forEachDot { old.insert($0) }
        return Causal(adding: ORSet(inner: DotMap(e, DotSet(context.nextDot(for: replica)))), removing: old)
    }

    public func remove(_ e: Element) -> Causal<ORSet> {
        var old = CausalContext()
        inner.entries[e]?.forEachDot { old.insert($0) }
        return Causal(store: ORSet(), context: old)
    }
}

// MARK: - Observed-remove map

/// A map from keys to nested CRDTs. Updating a key concurrently with its removal keeps the update.
public struct ORMap<Key: Hashable & WireCodable & Sendable, Value: DotStore>: WrappedDotStore {
    public var inner: DotMap<Key, Value>
    public init(inner: DotMap<Key, Value>) { self.inner = inner }

    public subscript(key: Key) -> Value? { inner.entries[key] }
    public var keys: Dictionary<Key, Value>.Keys { inner.entries.keys }
    public var count: Int { inner.entries.count }
    public var entries: [Key: Value] { inner.entries }

    /// Runs a mutator of the nested value under `key` (bottom if absent) and lifts its delta.
    public func update(_ key: Key, by replica: ReplicaID, context: CausalContext,
                       _ mutate: (Value, ReplicaID, CausalContext) -> Causal<Value>) -> Causal<ORMap> {
        let d = mutate(inner.entries[key] ?? Value(), replica, context)
        return Causal(store: ORMap(inner: DotMap(key, d.store)), context: d.context)
    }

    public func remove(_ key: Key) -> Causal<ORMap> {
        var old = CausalContext()
        inner.entries[key]?.forEachDot { old.insert($0) }
        return Causal(store: ORMap(), context: old)
    }
}

// MARK: - Hybrid logical clock

/// A hybrid logical clock timestamp (Kulkarni et al., 2014): milliseconds of physical time in the
/// high 48 bits, a logical counter in the low 16. Ordered as one integer.
public struct HLCTimestamp: Hashable, Comparable, Sendable, WireCodable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(milliseconds: UInt64, logical: UInt16) { rawValue = milliseconds << 16 | UInt64(logical) }
    public var milliseconds: UInt64 { rawValue >> 16 }
    public var logical: UInt16 { UInt16(truncatingIfNeeded: rawValue) }
    public static let zero = HLCTimestamp(rawValue: 0)
    public static func < (a: HLCTimestamp, b: HLCTimestamp) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "\(milliseconds).\(logical)" }
    public func encode(to writer: inout WireWriter) { writer.varint(rawValue) }
    /// The largest timestamp accepted off the wire (2^61: year ≈ 3084). A peer cannot push a
    /// clock to where its next timestamp would not encode.
    public static let max = HLCTimestamp(rawValue: 1 << 61)
    public init(from reader: inout WireReader) throws(WireError) {
        let at = reader.position
        rawValue = try reader.varint()
        guard rawValue <= HLCTimestamp.max.rawValue else {
            throw .valueOutOfRange(rawValue, limit: HLCTimestamp.max.rawValue, at: at)
        }
    }
}

/// The clock itself. Sans-IO: physical time is an argument, never read here.
public struct HybridLogicalClock: Sendable, Hashable {
    public private(set) var last = HLCTimestamp.zero
    public init() {}

    /// A timestamp above every one issued or observed so far, and at least `physical`.
    public mutating func timestamp(physical: WallTime) -> HLCTimestamp {
        let pt = physical.millisecondsSinceEpoch
        if pt > last.milliseconds {
            last = HLCTimestamp(milliseconds: pt, logical: 0)
        } else if last.logical == .max {
            last = HLCTimestamp(milliseconds: last.milliseconds + 1, logical: 0)
        } else {
            last = HLCTimestamp(rawValue: last.rawValue + 1)
        }
        return last
    }

    /// Takes in a timestamp seen elsewhere, so later local timestamps order after it.
    public mutating func observe(_ ts: HLCTimestamp) { if ts > last { last = ts } }
}

/// A value with the timestamp of the write that set it.
public struct Stamped<Value: Equatable & WireCodable & Sendable>: Equatable, Sendable, WireCodable {
    public var timestamp: HLCTimestamp
    public var value: Value
    public init(_ timestamp: HLCTimestamp, _ value: Value) { self.timestamp = timestamp; self.value = value }
    public func encode(to writer: inout WireWriter) { timestamp.encode(to: &writer); value.encode(to: &writer) }
    public init(from reader: inout WireReader) throws(WireError) {
        timestamp = try HLCTimestamp(from: &reader)
        value = try Value(from: &reader)
    }
}

// MARK: - Registers

/// A last-writer-wins register on HLC timestamps. Concurrent writes are all kept (as in an MV
/// register) until the next write observes them; reads pick the highest (timestamp, dot). So join
/// stays a plain dot-kernel join, and every replica that has the same writes reads the same value.
public struct LWWRegister<Value: Equatable & WireCodable & Sendable>: WrappedDotStore {
    public var inner: DotFun<Stamped<Value>>
    public init(inner: DotFun<Stamped<Value>>) { self.inner = inner }

    /// The winning write: highest timestamp, ties broken by dot.
    public var winner: (timestamp: HLCTimestamp, dot: Dot, value: Value)? {
        var best: DotFun<Stamped<Value>>.Entry? = nil
        for e in inner.entries {
            if let b = best, (b.value.timestamp, b.dot) >= (e.value.timestamp, e.dot) { continue }
            best = e
        }
        return best.map { ($0.value.timestamp, $0.dot, $0.value.value) }
    }

    public var value: Value? { winner?.value }

    /// The highest timestamp held (a new write must go above it).
    public var maxTimestamp: HLCTimestamp { inner.entries.map(\.value.timestamp).max() ?? .zero }

    public func assign(_ value: Value, at timestamp: HLCTimestamp, by replica: ReplicaID,
                       context: CausalContext) -> Causal<LWWRegister> {
        Causal(adding: LWWRegister(inner: DotFun(context.nextDot(for: replica), Stamped(timestamp, value))),
               removing: observedDots)
    }

    /// Writes with a fresh timestamp from `clock` that also orders after every value held here.
    public func assign(_ value: Value, clock: inout HybridLogicalClock, physical: WallTime,
                       by replica: ReplicaID, context: CausalContext) -> Causal<LWWRegister> {
        clock.observe(maxTimestamp)
        return assign(value, at: clock.timestamp(physical: physical), by: replica, context: context)
    }
}

/// A multi-value register: a write replaces the values it has seen; concurrent writes all stay.
public struct MVRegister<Value: Equatable & WireCodable & Sendable>: WrappedDotStore {
    public var inner: DotFun<Value>
    public init(inner: DotFun<Value>) { self.inner = inner }

    public var values: [Value] { inner.values }

    public func assign(_ value: Value, by replica: ReplicaID, context: CausalContext) -> Causal<MVRegister> {
        Causal(adding: MVRegister(inner: DotFun(context.nextDot(for: replica), value)), removing: observedDots)
    }
}

// MARK: - Counters

/// A grow-only counter as a dot store: each replica keeps one dot carrying its running total, and
/// each increment replaces it. Being a dot store, it nests in an `ORMap` and resets by observed-remove.
public struct GCounter: WrappedDotStore {
    public var inner: DotFun<UInt64>
    public init(inner: DotFun<UInt64>) { self.inner = inner }

    public var value: UInt64 {
        var best: [ReplicaID: UInt64] = [:]
        for e in inner.entries { best[e.dot.replica] = max(best[e.dot.replica, default: 0], e.value) }
        return best.values.reduce(0, &+)
    }

    public func increment(by n: UInt64 = 1, replica: ReplicaID, context: CausalContext) -> Causal<GCounter> {
        var own: UInt64 = 0
        var old = CausalContext()
        for e in inner.entries where e.dot.replica == replica { own = max(own, e.value); old.insert(e.dot) }
        return Causal(adding: GCounter(inner: DotFun(context.nextDot(for: replica), own &+ n)), removing: old)
    }
}

/// The two running totals of one replica in a `PNCounter`.
public struct PNTotals: Equatable, Sendable, WireFields {
    public var increments: UInt64 = 0
    public var decrements: UInt64 = 0
    public init() {}
    public init(_ p: UInt64, _ n: UInt64) { increments = p; decrements = n }
    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.varint(&increments)
        try c.varint(&decrements)
    }
}

/// A counter that goes both ways.
public struct PNCounter: WrappedDotStore {
    public var inner: DotFun<PNTotals>
    public init(inner: DotFun<PNTotals>) { self.inner = inner }

    public var value: Int64 {
        var best: [ReplicaID: PNTotals] = [:]
        for e in inner.entries {
            let b = best[e.dot.replica, default: PNTotals()]
            best[e.dot.replica] = PNTotals(max(b.increments, e.value.increments), max(b.decrements, e.value.decrements))
        }
        return best.values.reduce(0) { $0 &+ Int64(bitPattern: $1.increments &- $1.decrements) }
    }

    public func add(_ delta: Int64, replica: ReplicaID, context: CausalContext) -> Causal<PNCounter> {
        var own = PNTotals()
        var old = CausalContext()
        for e in inner.entries where e.dot.replica == replica {
            own = PNTotals(max(own.increments, e.value.increments), max(own.decrements, e.value.decrements))
            old.insert(e.dot)
        }
        if delta >= 0 { own.increments &+= UInt64(delta) } else { own.decrements &+= delta.magnitude }
        return Causal(adding: PNCounter(inner: DotFun(context.nextDot(for: replica), own)), removing: old)
    }
}
