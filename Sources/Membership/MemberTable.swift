import MeshCore
import Synchronization

/// Interns node IDs and member endpoints (node, restart generation, address) as 32-bit numbers, so a
/// core's member table holds small integers instead of 32-byte IDs and address strings.
///
/// A daemon's core gets a directory of its own. Cores hosted together (the simulator, MembershipLab)
/// share one, so 10,000 cores that each know 10,000 members store every ID and address once instead
/// of 10^8 times. Nothing a core decides depends on the numbers handed out (only on its own member
/// order), so sharing does not change a run. Thread-safe (one mutex); entries are never freed, and a
/// directory holds at most `limit` node IDs (a member whose ID does not fit is not learned).
public final class MemberDirectory: Sendable {
    struct Endpoint: Hashable {
        var node: UInt32
        var generation: UInt64
        var address: PeerAddress
    }
    private struct State {
        var ids: [NodeID] = []
        var idIndex = NodeNumbers()
        var endpoints: [Endpoint] = []
        var endpointIndex: [Endpoint: UInt32] = [:]
    }
    private let state = Mutex(State())
    /// Most node IDs (and, separately, endpoints) this directory will intern.
    public let limit: Int

    /// - Parameter limit: most distinct node IDs (default 1 Mi, ~100 MB when full).
    public init(limit: Int = 1 << 20) { self.limit = limit }

    /// Node IDs interned so far.
    public var count: Int { state.withLock { $0.ids.count } }

    func intern(_ id: NodeID) -> UInt32? {
        state.withLock { s in
            if let n = s.idIndex.find(id) { return n }
            guard s.ids.count < limit else { return nil }
            let n = UInt32(s.ids.count)
            s.ids.append(id)
            s.idIndex.insert(id, n)
            return n
        }
    }

    func existing(_ id: NodeID) -> UInt32? { state.withLock { $0.idIndex.find(id) } }

    func id(_ n: UInt32) -> NodeID { state.withLock { $0.ids[Int(n)] } }

    func intern(_ e: Endpoint) -> UInt32? {
        state.withLock { s in
            if let n = s.endpointIndex[e] { return n }
            guard s.endpoints.count < limit * 4 else { return nil }
            let n = UInt32(s.endpoints.count)
            s.endpoints.append(e)
            s.endpointIndex[e] = n
            return n
        }
    }

    func endpoint(_ n: UInt32) -> Endpoint { state.withLock { $0.endpoints[Int(n)] } }

    /// Reads the entries `member(_:in:)` would read for each of `records` (see `MembershipCore.warm`);
    /// returns a sum of what it read.
    func touch(_ records: ArraySlice<RawUpdate>, in table: MemberTable) -> UInt32 {
        state.withLock { s in
            var sum: UInt32 = 0
            for r in records {
                guard let n = s.idIndex.find(r.node), let slot = table.slot(ofNode: n) else { continue }
                sum &+= s.endpoints[Int(table.endpoint(slot))].node
            }
            return sum
        }
    }

    /// The slot and endpoint `table` holds for `id`, if it holds it, in one lock (a received
    /// record's check against what a core holds took two: the node number, then the endpoint).
    func member(_ id: NodeID, in table: MemberTable) -> (slot: Int32, endpoint: Endpoint)? {
        state.withLock { s in
            guard let n = s.idIndex.find(id), let slot = table.slot(ofNode: n) else { return nil }
            return (slot, s.endpoints[Int(table.endpoint(slot))])
        }
    }

    /// The ID, generation and address of an endpoint, in one lock.
    func resolve(_ n: UInt32) -> (id: NodeID, endpoint: Endpoint) {
        state.withLock { s in
            let e = s.endpoints[Int(n)]
            return (s.ids[Int(e.node)], e)
        }
    }
}

/// The keyed bucket hash the two NodeID tables below use. IDs are hashes of public keys, which a
/// peer can grind, so the bucket comes from the ID mixed with a key drawn when a table is made, not
/// from its raw bits. (`Dictionary`/`Set` of `NodeID` hashed all 32 bytes with SipHash on every
/// lookup: ~4% of a 10,000-node simulation for the directory, ~3% for the core's link set.) A
/// table's layout decides only where an entry sits, never what a lookup answers, so it cannot
/// change a run.
struct NodeIDHash {
    typealias Words = (UInt64, UInt64, UInt64, UInt64)
    private let k0: UInt64, k1: UInt64, k2: UInt64, k3: UInt64

    init() {
        var g = SystemRandomNumberGenerator()
        (k0, k1, k2, k3) = (g.next(), g.next(), g.next(), g.next() | 1)
    }

    @inline(__always) static func words(_ id: NodeID) -> Words {
        withUnsafeBytes(of: id) { raw in
            (raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
             raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        }
    }

    @inline(__always) func callAsFunction(_ w: Words) -> UInt64 {
        var h = ((w.0 ^ k0) &* 0x9e37_79b9_7f4a_7c15) ^ ((w.1 ^ k1) &* 0xc2b2_ae3d_27d4_eb4f)
        h ^= ((w.2 ^ k2) &* 0x1656_67b1_9e37_79f9) ^ (w.3 &* k3)
        h ^= h >> 29
        h &*= 0xbf58_476d_1ce4_e5b9
        h ^= h >> 32
        return h
    }
}

@inline(__always) private func same(_ a: NodeIDHash.Words, _ b: NodeIDHash.Words) -> Bool {
    a.0 == b.0 && a.1 == b.1 && a.2 == b.2 && a.3 == b.3
}


/// NodeID → directory number, insert-only: open addressing with linear probing, the whole ID in the
/// cell (one cache line per probe), hashed by `NodeIDHash`.
struct NodeNumbers {
    private struct Cell {
        var w: NodeIDHash.Words = (0, 0, 0, 0)
        var n: UInt32 = .max // .max: free
    }
    private var cells: [Cell] = []
    private var mask = -1
    private var count = 0
    private let hash = NodeIDHash()

    func find(_ id: NodeID) -> UInt32? {
        guard count > 0 else { return nil }
        let w = NodeIDHash.words(id)
        var i = Int(truncatingIfNeeded: hash(w)) & mask
        while true {
            let c = cells[i]
            if c.n == .max { return nil }
            if same(c.w, w) { return c.n }
            i = (i + 1) & mask
        }
    }

    /// Adds `id` (which must be absent) as number `n`.
    mutating func insert(_ id: NodeID, _ n: UInt32) {
        if (count + 1) * 2 > cells.count {
            let old = cells
            cells = Array(repeating: Cell(), count: Swift.max(64, cells.count * 2))
            mask = cells.count - 1
            for c in old where c.n != .max { place(c.w, c.n) }
        }
        place(NodeIDHash.words(id), n)
        count += 1
    }

    private mutating func place(_ w: NodeIDHash.Words, _ n: UInt32) {
        var i = Int(truncatingIfNeeded: hash(w)) & mask
        while cells[i].n != .max { i = (i + 1) & mask }
        cells[i] = Cell(w: w, n: n)
    }
}

/// A set of node IDs (a core's open links; every message received inserts its sender and every
/// message sent asks for its receiver): open addressing with linear probing and backward-shift
/// deletion, 32 bytes a cell, hashed by `NodeIDHash`. The all-zero ID marks a free cell and is
/// kept in a flag of its own.
struct NodeIDSet {
    private var cells: [NodeIDHash.Words] = []
    private var mask = -1
    private var stored = 0
    private var hasZero = false
    private let hash = NodeIDHash()

    var count: Int { stored + (hasZero ? 1 : 0) }

    @inline(__always) private static func isFree(_ w: NodeIDHash.Words) -> Bool { w.0 | w.1 | w.2 | w.3 == 0 }
    @inline(__always) private func home(_ w: NodeIDHash.Words) -> Int { Int(truncatingIfNeeded: hash(w)) & mask }

    private func index(_ w: NodeIDHash.Words) -> Int? {
        guard stored > 0 else { return nil }
        var i = home(w)
        while true {
            let c = cells[i]
            if Self.isFree(c) { return nil }
            if same(c, w) { return i }
            i = (i + 1) & mask
        }
    }

    func contains(_ id: NodeID) -> Bool {
        let w = NodeIDHash.words(id)
        return Self.isFree(w) ? hasZero : index(w) != nil
    }

    mutating func insert(_ id: NodeID) {
        let w = NodeIDHash.words(id)
        if Self.isFree(w) { hasZero = true; return }
        if index(w) != nil { return }
        if (stored + 1) * 4 > cells.count * 3 {
            let old = cells
            cells = Array(repeating: (0, 0, 0, 0), count: Swift.max(16, cells.count * 2))
            mask = cells.count - 1
            for c in old where !Self.isFree(c) { place(c) }
        }
        place(w)
        stored += 1
    }

    private mutating func place(_ w: NodeIDHash.Words) {
        var i = home(w)
        while !Self.isFree(cells[i]) { i = (i + 1) & mask }
        cells[i] = w
    }

    mutating func remove(_ id: NodeID) {
        let w = NodeIDHash.words(id)
        if Self.isFree(w) { hasZero = false; return }
        guard var i = index(w) else { return }
        stored -= 1
        var j = i
        while true {
            j = (j + 1) & mask
            let c = cells[j]
            if Self.isFree(c) { break }
            if !staysInPlace(home: home(c), hole: i, at: j) {
                cells[i] = c
                i = j
            }
        }
        cells[i] = (0, 0, 0, 0)
    }
}

/// A core's open links: a bit per node number for peers in the directory (a 10,000-node directory
/// is 1.25 KB of bits), and a `NodeIDSet` for the few that are not (yet). A 32-byte-cell set of every
/// linked peer was 54 KB a node at 5,000 simulated members, growing with the cluster (13% of the
/// simulator's heap). Callers pass the peer's node number if the directory has one
/// (`MemberDirectory.existing`); a peer linked before it was interned is found in the other set.
struct LinkSet {
    private var bits: [UInt64] = []
    private var others = NodeIDSet()

    func contains(_ id: NodeID, number n: UInt32?) -> Bool {
        if let n {
            let w = Int(n >> 6)
            if w < bits.count && bits[w] & (1 << UInt64(n & 63)) != 0 { return true }
        }
        return others.count > 0 && others.contains(id)
    }

    /// - Parameter nodes: the directory's size, so the bits grow to it at once.
    mutating func insert(_ id: NodeID, number n: UInt32?, nodes: @autoclosure () -> Int) {
        guard let n else { others.insert(id); return }
        let w = Int(n >> 6)
        if w >= bits.count {
            // (Grown from `capacity`, as `MemberTable.slotOf` is.)
            if w >= bits.capacity { bits.reserveCapacity(Swift.max(w + 1, bits.capacity + bits.capacity / 4 + 4, (nodes() + 63) >> 6)) }
            bits.append(contentsOf: repeatElement(0, count: w + 1 - bits.count))
        }
        bits[w] |= 1 << UInt64(n & 63)
    }

    mutating func remove(_ id: NodeID, number n: UInt32?) {
        if let n, Int(n >> 6) < bits.count { bits[Int(n >> 6)] &= ~(1 << UInt64(n & 63)) }
        if others.count > 0 { others.remove(id) }
    }
}

/// One core's members: a slot per member, ~21 bytes a member.
///
/// Slot fields: the interned endpoint (node, generation, address), when the status last changed
/// (deciseconds since the core started) and the incarnation, together in one 12-byte record (a
/// received record about a known member is checked against its version with one cache line of the
/// table instead of one per field); the status in an array of its own (scans read only it). An
/// incarnation grows by one per refutation, so 32 bits hold every real one; a larger one (the wire
/// allows up to 2^62 − 1, and a peer may claim any) is kept whole in a side table. A node number →
/// slot map is a dense array over the directory's numbers. Freed slots are reused; iteration is in
/// slot order, so it depends only on what this core saw, never on the shared directory.
struct MemberTable {
    struct Record {
        var endpoint: UInt32
        var since: UInt32
        /// The incarnation, or `MemberTable.wide` if it is in `wideIncarnations`.
        var incarnation: UInt32
    }
    static let free: UInt8 = 0xff
    /// Marks an incarnation too large for the record.
    static let wide: UInt32 = .max
    private var records: [Record] = []
    private var wideIncarnations: [Int32: UInt64] = [:]
    private(set) var statuses: [UInt8] = []
    /// Node number → slot + 1 (0: not a member).
    private var slotOf: [UInt32] = []
    private var freeSlots: [Int32] = []
    private(set) var count = 0

    var capacity: Int { records.count }

    @inline(__always) func slot(ofNode n: UInt32) -> Int32? {
        let i = Int(n)
        guard i < slotOf.count, slotOf[i] != 0 else { return nil }
        return Int32(slotOf[i] - 1)
    }

    @inline(__always) func status(_ s: Int32) -> MemberStatus? { MemberStatus(rawValue: statuses[Int(s)]) }
    @inline(__always) func isUsed(_ s: Int32) -> Bool { statuses[Int(s)] != Self.free }
    @inline(__always) func endpoint(_ s: Int32) -> UInt32 { records[Int(s)].endpoint }
    @inline(__always) func since(_ s: Int32) -> UInt32 { records[Int(s)].since }
    @inline(__always) func incarnation(_ s: Int32) -> UInt64 {
        let i = records[Int(s)].incarnation
        return i == Self.wide ? wideIncarnations[s]! : UInt64(i)
    }

    /// - Parameter nodes: how many node numbers exist (the directory's count): when the node-number
    ///   map must grow it grows to at least that at once, not by a quarter at a time (a joiner's
    ///   push-pull brings thousands of members in rising number order, and each growth copied the map).
    mutating func insert(node: UInt32, endpoint: UInt32, incarnation: UInt64, status: MemberStatus, since t: UInt32, nodes: Int = 0) -> Int32 {
        let s: Int32
        let r = Record(endpoint: endpoint, since: t, incarnation: 0)
        if let f = freeSlots.popLast() {
            s = f
            records[Int(s)] = r
            statuses[Int(s)] = status.rawValue
        } else {
            s = Int32(records.count)
            Self.grow(&records, limit: nodes); records.append(r)
            Self.grow(&statuses, limit: nodes); statuses.append(status.rawValue)
        }
        set(s, incarnation: incarnation)
        let i = Int(node)
        if i >= slotOf.count {
            // Storage grows by a quarter of itself (or to the directory at once), never by what one
            // new number needs: sized from `count`, a reservation past `capacity` was due on every
            // number above the last, and each copied the whole map (at 10,000 joining nodes, the
            // largest share of the simulator's malloc and memmove time).
            if i >= slotOf.capacity { slotOf.reserveCapacity(Swift.max(i + 1, slotOf.capacity + slotOf.capacity / 4 + 16, nodes)) }
            slotOf.append(contentsOf: repeatElement(0, count: i + 1 - slotOf.count))
        }
        slotOf[i] = UInt32(s) + 1
        count += 1
        return s
    }

    mutating func remove(_ s: Int32, node: UInt32) {
        statuses[Int(s)] = Self.free
        set(s, incarnation: 0)
        slotOf[Int(node)] = 0
        freeSlots.append(s)
        count -= 1
    }

    mutating func set(_ s: Int32, endpoint: UInt32) { records[Int(s)].endpoint = endpoint }
    mutating func set(_ s: Int32, incarnation: UInt64) {
        if records[Int(s)].incarnation == Self.wide { wideIncarnations[s] = nil }
        if incarnation >= UInt64(Self.wide) {
            records[Int(s)].incarnation = Self.wide
            wideIncarnations[s] = incarnation
        } else {
            records[Int(s)].incarnation = UInt32(incarnation)
        }
    }
    mutating func set(_ s: Int32, status: MemberStatus, since t: UInt32) {
        statuses[Int(s)] = status.rawValue
        records[Int(s)].since = t
    }

    /// Grows by a quarter instead of doubling: at 10^8 records in one process, doubling's slack
    /// alone would be gigabytes. `limit` (the directory's size: a table holds interned members
    /// only) caps a growth step, so a table that fills the directory ends with little slack; a step
    /// is still at least a sixteenth (a simulated directory grows one joiner at a time, just ahead
    /// of the tables, and growing to it exactly copied a table per member inserted).
    @inline(__always) static func grow<T>(_ a: inout [T], limit: @autoclosure () -> Int = 0) {
        if a.count == a.capacity {
            let quarter = a.count + a.count / 4 + 16
            let least = a.count + a.count / 16 + 16
            let cap = limit()
            a.reserveCapacity(cap > a.count ? Swift.max(least, Swift.min(quarter, cap)) : quarter)
        }
    }
}

/// A dictionary that keeps at most `limit` keys, forgetting the earliest inserted first (per-peer
/// state that only matters for peers seen recently: Vivaldi filters, member coordinates).
struct RecentMap<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private(set) var values: [Key: Value] = [:]
    private var order: [Key] = []
    private var next = 0
    let limit: Int

    init(limit: Int) { self.limit = max(1, limit) }

    subscript(key: Key) -> Value? {
        get { values[key] }
        set {
            guard let v = newValue else { values[key] = nil; return }
            if values.updateValue(v, forKey: key) == nil {
                if order.count >= limit {
                    // The ring slot may name a key removed meanwhile; removing it again is harmless.
                    if order[next] != key { values[order[next]] = nil }
                    order[next] = key
                    next = (next + 1) % limit
                } else {
                    order.append(key)
                }
            }
        }
    }
}
