import MeshCore

/// Who minted a dot: a replica of the cluster state. Derived from the node's `NodeID` (its first
/// eight bytes), so every node has exactly one replica and a dot costs 16 bytes in memory.
public struct ReplicaID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// The replica of `node`.
    public init(_ node: NodeID) {
        rawValue = node.bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
    public static func < (a: ReplicaID, b: ReplicaID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue, radix: 16) }
}

/// One event: the `counter`-th write of `replica` (counters start at 1).
public struct Dot: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var replica: ReplicaID
    public var counter: UInt64
    public init(_ replica: ReplicaID, _ counter: UInt64) { self.replica = replica; self.counter = counter }
    /// The largest counter accepted off the wire (2^61), leaving room to mint more below the
    /// varint limit: a peer cannot push a replica's counter to where encoding would fail.
    public static let maxCounter: UInt64 = 1 << 61
    public static func < (a: Dot, b: Dot) -> Bool { (a.replica, a.counter) < (b.replica, b.counter) }
    public var description: String { "\(replica):\(counter)" }
}

/// The set of dots a replica has seen, kept compact: a version vector (every dot of replica `r` up
/// to `versions[r]`) plus a "dot cloud" of dots seen out of order. Inserting the dot that closes a
/// gap folds the cloud back into the vector (Almeida, Shoker, Baquero §5: "compact causal context").
public struct CausalContext: Hashable, Sendable {
    public private(set) var versions: [ReplicaID: UInt64] = [:]
    public private(set) var cloud: [ReplicaID: Set<UInt64>] = [:]

    public init() {}

    public init(dots: some Sequence<Dot>) {
        for d in dots { insert(d) }
    }

    @inline(__always)
    public func contains(_ dot: Dot) -> Bool {
        if dot.counter <= versions[dot.replica, default: 0] { return true }
        return cloud[dot.replica]?.contains(dot.counter) ?? false
    }

    public var isEmpty: Bool { versions.isEmpty && cloud.isEmpty }

    /// The next dot `replica` mints: one past everything it is known to have minted.
    public func nextDot(for replica: ReplicaID) -> Dot {
        var c = versions[replica, default: 0] + 1
        if let extra = cloud[replica], let top = extra.max(), top >= c { c = top + 1 }
        return Dot(replica, c)
    }

    public mutating func insert(_ dot: Dot) {
        let v = versions[dot.replica, default: 0]
        if dot.counter <= v { return }
        if dot.counter == v + 1 {
            versions[dot.replica] = dot.counter
            if cloud[dot.replica] != nil { compact(dot.replica) }
        } else {
            cloud[dot.replica, default: []].insert(dot.counter)
        }
    }

    /// Folds the cloud of `replica` into its vector entry where it has become contiguous.
    private mutating func compact(_ replica: ReplicaID) {
        guard var extra = cloud[replica] else { return }
        var v = versions[replica, default: 0]
        extra = extra.filter { $0 > v }
        while extra.remove(v + 1) != nil { v += 1 }
        if v > 0 { versions[replica] = v }
        cloud[replica] = extra.isEmpty ? nil : extra
    }

    /// Adds every dot of `replica` up to `counter`.
    public mutating func raise(_ replica: ReplicaID, to counter: UInt64) {
        guard counter > versions[replica, default: 0] else { return }
        versions[replica] = counter
        if cloud[replica] != nil { compact(replica) }
    }

    /// Adds every dot of `other`.
    public mutating func formUnion(_ other: CausalContext) {
        for (r, n) in other.versions { raise(r, to: n) }
        for (r, extra) in other.cloud {
            for c in extra { insert(Dot(r, c)) }
        }
    }

    /// Forgets every dot of `replica` (pruning a node that left for good).
    public mutating func removeReplica(_ replica: ReplicaID) {
        versions[replica] = nil
        cloud[replica] = nil
    }

    /// How many dots the context holds, counting at most up to `limit` (then returns `limit + 1`).
    public func dotCount(upTo limit: Int) -> Int {
        var n = 0
        for (_, v) in versions {
            n += Int(clamping: v)
            if n > limit { return limit + 1 }
        }
        for (_, e) in cloud {
            n += e.count
            if n > limit { return limit + 1 }
        }
        return n
    }

    /// Every dot, one by one. Only sensible for small contexts (deltas); see `dotCount(upTo:)`.
    public func forEachDot(_ body: (Dot) throws -> Void) rethrows {
        for (r, v) in versions where v > 0 { for c in 1...v { try body(Dot(r, c)) } }
        for (r, e) in cloud { for c in e { try body(Dot(r, c)) } }
    }

    /// Every replica named in the context.
    public var replicas: Set<ReplicaID> { Set(versions.keys).union(cloud.keys) }

    /// True if every dot of `self` is in `other`.
    public func isSubset(of other: CausalContext) -> Bool {
        for (r, v) in versions {
            let ov = other.versions[r, default: 0]
            if v > ov {
                let extra = other.cloud[r] ?? []
                if v - ov > UInt64(extra.count) { return false }
                for c in (ov + 1)...v where !extra.contains(c) { return false }
            }
        }
        for (r, e) in cloud { for c in e where !other.contains(Dot(r, c)) { return false } }
        return true
    }
}

/// A sequence that stores its first element inline: most registers and dot sets hold exactly one
/// element, and this keeps them free of a heap allocation.
public struct SmallVec<Element: Sendable>: Sendable, Sequence {
    @usableFromInline var head: Element?
    @usableFromInline var tail: [Element] = []

    public init() {}

    public var isEmpty: Bool { head == nil }
    public var count: Int { head == nil ? 0 : 1 + tail.count }

    public mutating func append(_ e: Element) {
        if head == nil { head = e } else { tail.append(e) }
    }

    public mutating func removeAll(where shouldRemove: (Element) throws -> Bool) rethrows {
        try tail.removeAll(where: shouldRemove)
        if let h = head, try shouldRemove(h) {
            head = tail.isEmpty ? nil : tail.removeFirst()
        }
    }

    public func first(where predicate: (Element) throws -> Bool) rethrows -> Element? {
        if let h = head, try predicate(h) { return h }
        return try tail.first(where: predicate)
    }

    public struct Iterator: IteratorProtocol {
        var head: Element?
        var inner: IndexingIterator<[Element]>
        public mutating func next() -> Element? {
            if let h = head { head = nil; return h }
            return inner.next()
        }
    }

    public func makeIterator() -> Iterator { Iterator(head: head, inner: tail.makeIterator()) }
}
