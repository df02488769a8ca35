import Testing
import MeshCore
@testable import ClusterState

@Suite("Merge laws")
struct MergeLawTests {
    @Test("join is commutative, associative and idempotent over random states", arguments: 0..<40)
    func lawsOverRandomStates(seed: UInt64) {
        var rng = SeededRandom(seed: 1000 + seed)
        let (s, _) = randomStates(count: 3, ops: 60, rng: &rng)
        let (a, b, c) = (s[0], s[1], s[2])
        #expect(a.joined(b) == b.joined(a))
        #expect(a.joined(b).joined(c) == a.joined(b.joined(c)))
        #expect(a.joined(a) == a)
        #expect(a.joined(b).joined(b) == a.joined(b))
    }

    @Test("deltas joined in any order, any number of times, give the same state", arguments: 0..<25)
    func deltasInAnyOrder(seed: UInt64) {
        var rng = SeededRandom(seed: 5000 + seed)
        let (_, deltas) = randomStates(count: 3, ops: 80, rng: &rng)
        var inOrder = Causal<TestMap>()
        for d in deltas { inOrder.join(d) }
        var shuffled = Causal<TestMap>()
        var ds = deltas + deltas.prefix(10)
        ds.shuffle(using: &rng)
        for d in ds { shuffled.join(d) }
        #expect(inOrder == shuffled)
        // Grouping deltas first (a delta interval) changes nothing either.
        var grouped = Causal<TestMap>()
        let half = ds.count / 2
        grouped.join(ds[..<half].reduce(Causal()) { $0.joined($1) })
        grouped.join(ds[half...].reduce(Causal()) { $0.joined($1) })
        #expect(grouped == inOrder)
    }

    @Test("random states and deltas survive the wire unchanged", arguments: 0..<20)
    func wireRoundTrip(seed: UInt64) throws {
        var rng = SeededRandom(seed: 7000 + seed)
        let (states, deltas) = randomStates(count: 3, ops: 50, rng: &rng)
        for x in states + deltas {
            #expect(try Causal<TestMap>(wireBytes: x.wireBytes()) == x)
        }
        var r = ClusterReplica(node: nodeID(0))
        for step in 0..<60 {
            let d = randomClusterWrite(&r, rng: &rng, nodes: 3, at: UInt64(step)).delta
            #expect(try ClusterData(wireBytes: d.wireBytes()) == d)
        }
        #expect(try ClusterData(wireBytes: r.data.wireBytes()) == r.data)
    }

    @Test("the cluster schema's join obeys the laws, retirement included", arguments: 0..<15)
    func clusterLaws(seed: UInt64) {
        var rng = SeededRandom(seed: 9000 + seed)
        var reps = (0..<3).map { ClusterReplica(node: nodeID($0)) }
        var deltas: [ClusterData] = []
        for step in 0..<120 {
            let i = Int.random(in: 0..<3, using: &rng)
            if !deltas.isEmpty && Int.random(in: 0..<3, using: &rng) == 0 {
                reps[i].apply(deltas.randomElement(using: &rng)!)
            } else if step == 70 && seed % 2 == 0 {
                deltas.append(reps[i].retire(nodeID(3)).delta)
            } else {
                deltas.append(randomClusterWrite(&reps[i], rng: &rng, nodes: 4, at: UInt64(step)).delta)
            }
        }
        func j(_ x: ClusterData, _ y: ClusterData) -> ClusterData { var z = x; z.join(y); return z }
        let (a, b, c) = (reps[0].data, reps[1].data, reps[2].data)
        #expect(j(a, b) == j(b, a))
        #expect(j(j(a, b), c) == j(a, j(b, c)))
        #expect(j(a, a) == a)
    }
}

@Suite("CRDT semantics")
struct SemanticsTests {
    let A = ReplicaID(rawValue: 1), B = ReplicaID(rawValue: 2)

    @Test("OR-Set: a concurrent add wins over a remove; a remove removes what it saw")
    func orSetAddWins() {
        var a = Causal<ORSet<UInt32>>()
        a.join(a.store.add(7, by: A, context: a.context))
        var b = a
        let rm = b.store.remove(7); b.join(rm)
        let add = a.store.add(7, by: A, context: a.context); a.join(add)
        #expect(a.joined(b).store.contains(7))
        #expect(!b.store.contains(7))
        var c = Causal<ORSet<UInt32>>()
        c.join(c.store.add(1, by: B, context: c.context))
        c.join(c.store.remove(1))
        #expect(!c.store.contains(1))
    }

    @Test("enable-wins flag: concurrent enable and disable leave it enabled")
    func enableWins() {
        var a = Causal<EWFlag>()
        a.join(a.store.enable(by: A, context: a.context))
        var b = a
        b.join(b.store.disable())
        a.join(a.store.enable(by: A, context: a.context))
        #expect(a.joined(b).store.isEnabled)
        #expect(b.joined(b).store.isEnabled == false)
    }

    @Test("MV register keeps concurrent writes; a later write replaces both")
    func mvRegister() {
        var a = Causal<MVRegister<String>>(), b = Causal<MVRegister<String>>()
        a.join(a.store.assign("x", by: A, context: a.context))
        b.join(b.store.assign("y", by: B, context: b.context))
        var m = a.joined(b)
        #expect(Set(m.store.values) == ["x", "y"])
        m.join(m.store.assign("z", by: A, context: m.context))
        #expect(m.store.values == ["z"])
    }

    @Test("LWW register: the higher HLC timestamp wins regardless of merge order")
    func lww() {
        var ca = HybridLogicalClock(), cb = HybridLogicalClock()
        var a = Causal<LWWRegister<String>>(), b = Causal<LWWRegister<String>>()
        a.join(a.store.assign("early", clock: &ca, physical: wall(100), by: A, context: a.context))
        b.join(b.store.assign("late", clock: &cb, physical: wall(200), by: B, context: b.context))
        #expect(a.joined(b).store.value == "late")
        #expect(b.joined(a).store.value == "late")
        // A writer that has seen "late" orders after it even with a slow physical clock.
        var m = a.joined(b)
        m.join(m.store.assign("after", clock: &ca, physical: wall(50), by: A, context: m.context))
        #expect(m.store.value == "after")
        #expect(m.store.inner.entries.count == 1)
    }

    @Test("HLC: monotonic across stalled physical time and observed remote stamps")
    func hlc() {
        var c = HybridLogicalClock()
        let t1 = c.timestamp(physical: wall(10))
        let t2 = c.timestamp(physical: wall(10))
        let t3 = c.timestamp(physical: wall(5))
        #expect(t1 < t2 && t2 < t3)
        c.observe(HLCTimestamp(milliseconds: 1_767_225_600_000 + 999, logical: 3))
        let t4 = c.timestamp(physical: wall(20))
        #expect(t4 > HLCTimestamp(milliseconds: 1_767_225_600_000 + 999, logical: 3))
    }

    @Test("counters sum every replica's increments, also concurrently")
    func counters() {
        var a = Causal<GCounter>(), b = Causal<GCounter>()
        for _ in 0..<3 { a.join(a.store.increment(replica: A, context: a.context)) }
        b.join(b.store.increment(by: 10, replica: B, context: b.context))
        let m = a.joined(b)
        #expect(m.store.value == 13)
        #expect(m.joined(a).store.value == 13)
        var p = Causal<PNCounter>(), q = Causal<PNCounter>()
        p.join(p.store.add(5, replica: A, context: p.context))
        q.join(q.store.add(-8, replica: B, context: q.context))
        p.join(p.store.add(-1, replica: A, context: p.context))
        #expect(p.joined(q).store.value == -4)
    }

    @Test("OR-Map: an update concurrent with a key's removal keeps the key")
    func mapUpdateWins() {
        typealias M = ORMap<String, MVRegister<UInt64>>
        var a = Causal<M>()
        a.join(a.store.update("k", by: A, context: a.context) { v, r, c in v.assign(1, by: r, context: c) })
        var b = a
        b.join(b.store.remove("k"))
        a.join(a.store.update("k", by: A, context: a.context) { v, r, c in v.assign(2, by: r, context: c) })
        let m = a.joined(b)
        #expect(m.store["k"]?.values == [2])
        #expect(b.store["k"] == nil)
    }

    @Test("causal contexts compact: out-of-order dots fold into the version vector")
    func contextCompaction() {
        var c = CausalContext()
        c.insert(Dot(A, 3)); c.insert(Dot(A, 2))
        #expect(c.versions[A] == nil && c.cloud[A]?.count == 2)
        c.insert(Dot(A, 1))
        #expect(c.versions[A] == 3 && c.cloud.isEmpty)
        var d = CausalContext(); d.insert(Dot(A, 5))
        c.formUnion(d)
        #expect(c.cloud[A] == [5])
        var e = CausalContext(); e.insert(Dot(A, 4))
        c.formUnion(e)
        #expect(c.versions[A] == 5 && c.cloud.isEmpty)
        #expect(c.nextDot(for: A) == Dot(A, 6))
    }
}
