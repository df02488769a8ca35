import MeshCore
@testable import ClusterState

func nodeID(_ i: Int) -> NodeID { NodeID(publicKey: Array("node-\(i)".utf8)) }
func blob(_ i: Int) -> Digest { Digest.of(Array("blob-\(i)".utf8)) }
func wall(_ ms: UInt64) -> WallTime { WallTime(nanosecondsSinceEpoch: (1_767_225_600_000 + ms) * 1_000_000) }

/// The generic test CRDT: a map of records that use every kind of store.
typealias TestValue = Pair<LWWRegister<UInt64>, Pair<ORSet<UInt32>, Pair<PNCounter, Pair<EWFlag, MVRegister<String>>>>>
typealias TestMap = ORMap<UInt32, TestValue>

/// Random mutations of `TestMap`, each returning the delta (already applied to `state`).
func randomOp(_ state: inout Causal<TestMap>, replica: ReplicaID, clock: inout HybridLogicalClock,
              rng: inout SeededRandom, keys: UInt32 = 6) -> Causal<TestMap> {
    let key = UInt32.random(in: 0..<keys, using: &rng)
    let ctx = state.context
    let map = state.store
    let now = wall(UInt64.random(in: 0..<1000, using: &rng))
    let delta: Causal<TestMap>
    switch Int.random(in: 0..<8, using: &rng) {
    case 0:
        delta = map.remove(key)
    case 1:
        var c = clock
        delta = map.update(key, by: replica, context: ctx) { v, r, ctx in
            let d = v.first.assign(UInt64.random(in: 0..<100, using: &rng), clock: &c, physical: now, by: r, context: ctx)
            return Causal(store: TestValue(d.store, .init()), context: d.context)
        }
        clock = c
    case 2, 3:
        let e = UInt32.random(in: 0..<5, using: &rng)
        let add = Bool.random(using: &rng)
        delta = map.update(key, by: replica, context: ctx) { v, r, ctx in
            let d = add ? v.second.first.add(e, by: r, context: ctx) : v.second.first.remove(e)
            return Causal(store: TestValue(.init(), .init(d.store, .init())), context: d.context)
        }
    case 4:
        let n = Int64.random(in: -5...5, using: &rng)
        delta = map.update(key, by: replica, context: ctx) { v, r, ctx in
            let d = v.second.second.first.add(n, replica: r, context: ctx)
            return Causal(store: TestValue(.init(), .init(.init(), .init(d.store, .init()))), context: d.context)
        }
    case 5:
        let on = Bool.random(using: &rng)
        delta = map.update(key, by: replica, context: ctx) { v, r, ctx in
            let f = v.second.second.second.first
            let d = on ? f.enable(by: r, context: ctx) : f.disable()
            return Causal(store: TestValue(.init(), .init(.init(), .init(.init(), .init(d.store, .init())))), context: d.context)
        }
    default:
        let s = "v\(Int.random(in: 0..<9, using: &rng))"
        delta = map.update(key, by: replica, context: ctx) { v, r, ctx in
            let d = v.second.second.second.second.assign(s, by: r, context: ctx)
            return Causal(store: TestValue(.init(), .init(.init(), .init(.init(), .init(.init(), d.store)))), context: d.context)
        }
    }
    state.join(delta)
    return delta
}

/// Random states that share some history: replicas mutate and sometimes join others' deltas.
func randomStates(count: Int, ops: Int, rng: inout SeededRandom) -> (states: [Causal<TestMap>], deltas: [Causal<TestMap>]) {
    var states = [Causal<TestMap>](repeating: Causal(), count: count)
    var clocks = [HybridLogicalClock](repeating: HybridLogicalClock(), count: count)
    var deltas: [Causal<TestMap>] = []
    for _ in 0..<ops {
        let i = Int.random(in: 0..<count, using: &rng)
        if !deltas.isEmpty && Int.random(in: 0..<3, using: &rng) == 0 {
            states[i].join(deltas[Int.random(in: 0..<deltas.count, using: &rng)])
        } else {
            deltas.append(randomOp(&states[i], replica: ReplicaID(rawValue: UInt64(i + 1)), clock: &clocks[i], rng: &rng))
        }
    }
    return (states, deltas)
}

/// Random writes on the typed schema.
func randomClusterWrite(_ r: inout ClusterReplica, rng: inout SeededRandom, nodes: Int, at ms: UInt64,
                        holdings: Bool = true) -> ClusterReplica.Write {
    let w = wall(ms)
    let target = nodeID(Int.random(in: 0..<nodes, using: &rng))
    let cid = "c\(Int.random(in: 0..<8, using: &rng))"
    var op = Int.random(in: 0..<10, using: &rng)
    if !holdings && (op == 6 || op == 7) { op = 8 }
    switch op {
    case 0: return r.setNodeSpec(NodeSpec(addresses: [PeerAddress(host: "10.0.0.\(Int.random(in: 1..<9, using: &rng))", port: 7400)],
                                          region: "eu", zone: "z\(Int.random(in: 0..<3, using: &rng))",
                                          cpuMillicores: 8000, memoryMiB: 32768, diskGiB: 500), wall: w)
    case 1: return r.setNodeLoad(NodeLoad(cpuPermille: UInt16.random(in: 0..<1000, using: &rng), memoryPermille: 10, runningContainers: 3), wall: w)
    case 2: return r.removeNode(target)
    case 3: return r.putContainer(cid, ContainerSpec(node: target, image: "proton:\(Int.random(in: 0..<4, using: &rng))",
                                                    workloadClass: Bool.random(using: &rng) ? .gaming : .management,
                                                    priority: Int32.random(in: -5...5, using: &rng)), wall: w)
    case 4: return r.setContainerStatus(cid, ContainerStatus.allCases.randomElement(using: &rng)!, wall: w)
    case 5: return r.removeContainer(cid)
    case 6: return r.addHolding(blob(Int.random(in: 0..<10, using: &rng)))
    case 7: return r.removeHolding(blob(Int.random(in: 0..<10, using: &rng)))
    case 8: return r.setConfig("k\(Int.random(in: 0..<4, using: &rng))", "v\(Int.random(in: 0..<100, using: &rng))", wall: w)
    default: return r.removeConfig("k\(Int.random(in: 0..<4, using: &rng))")
    }
}

/// A small deterministic message loop that drives `ClusterSync` cores: a virtual clock, links
/// that can drop, duplicate and reorder messages, and partitions.
struct TestNetwork {
    var cores: [ClusterSync]
    var ids: [NodeID]
    var now = Instant.zero
    var rng: SeededRandom
    var queue: [(at: Instant, order: UInt64, msg: PeerMessage, from: Int)] = []
    var order: UInt64 = 0
    var wakes: [Instant?]
    var dropRate = 0.0, dupRate = 0.0, reorderRate = 0.0
    var cut: Set<[Int]> = []   // pairs [a, b] with a < b that cannot talk
    var delivered = 0

    init(count: Int, seed: UInt64, settings: ClusterSync.Settings = .init()) {
        ids = (0..<count).map(nodeID)
        cores = ids.map { ClusterSync(replica: ClusterReplica(node: $0), epoch: 1, settings: settings) }
        rng = SeededRandom(seed: seed)
        wakes = Array(repeating: nil, count: count)
        for i in 0..<count { handle(i, cores[i].start(now: now)) }
        for i in 0..<count { for j in 0..<count where i != j { linkUp(i, j) } }
    }

    func index(_ id: NodeID) -> Int { ids.firstIndex(of: id)! }
    func connected(_ a: Int, _ b: Int) -> Bool { !cut.contains([min(a, b), max(a, b)]) }

    mutating func linkUp(_ i: Int, _ j: Int) {
        handle(i, cores[i].linkChanged(.up(peer: ids[j], address: PeerAddress(host: "10.0.0.\(j)", port: 7400)), now: now))
    }

    mutating func handle(_ i: Int, _ out: Outbox) {
        if let w = out.wakeAt { wakes[i] = w }
        for m in out.messages {
            let to = index(m.peer)
            guard connected(i, to) else { continue }
            if Double.random(in: 0..<1, using: &rng) < dropRate { continue }
            let copies = Double.random(in: 0..<1, using: &rng) < dupRate ? 2 : 1
            for _ in 0..<copies {
                var delay = Duration.milliseconds(1)
                if Double.random(in: 0..<1, using: &rng) < reorderRate { delay = .milliseconds(Int64.random(in: 1...40, using: &rng)) }
                order += 1
                var msg = m
                msg.peer = ids[i]
                queue.append((now + delay, order, msg, to))
            }
        }
    }

    mutating func write(_ i: Int, _ op: (inout ClusterReplica) -> ClusterReplica.Write) {
        let out = cores[i].write(now: now, op)
        handle(i, out)
    }

    /// Runs until `deadline`: delivers messages and fires wake-ups in time order.
    mutating func run(for d: Duration) {
        let deadline = now + d
        while true {
            let nextMsg = queue.min { ($0.at, $0.order) < ($1.at, $1.order) }
            let nextWake = wakes.enumerated().compactMap { i, w in w.map { (i, $0) } }.min { $0.1 < $1.1 }
            let tMsg = nextMsg?.at ?? .distantFuture
            let tWake = nextWake?.1 ?? .distantFuture
            let t = min(tMsg, tWake)
            if t > deadline { now = deadline; return }
            now = t
            if tMsg <= tWake, let m = nextMsg {
                queue.removeAll { $0.order == m.order }
                guard connected(index(m.msg.peer), m.from) else { continue }
                delivered += 1
                handle(m.from, cores[m.from].receive(m.msg, now: now))
            } else if let (i, _) = nextWake {
                wakes[i] = nil
                handle(i, cores[i].tick(now: now))
            }
        }
    }
}
