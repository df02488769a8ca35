import MeshCore

/// The discrete-event world: virtual time, seeded randomness, N hosts running sans-IO cores through
/// `MeshProtocolCore`, links between them, and the scenario's joins, workload and faults.
///
/// Everything that happens is an event on one queue ordered by (virtual time, sequence number); the
/// world never reads a real clock and never iterates a hashed collection in a way that can change
/// the order of events, so one scenario and seed give one trace, byte for byte (`traceHash`).
public struct SimWorld {
    enum Event {
        case join(node: Int32)
        case deliver(slot: Int32)
        /// A message reaches its receiver's downlink (the link layer's `.arrive`).
        case arrive(slot: Int32)
        case tick(node: Int32, core: Int16, token: UInt64)
        case linkUp(node: Int32, peer: Int32, gen: UInt32)
        case linkDown(node: Int32, peer: Int32, peerGen: UInt32)
        case dialFailed(node: Int32, slot: Int32, gen: UInt32)
        case dialArrive(node: Int32, peer: Int32, gen: UInt32)
        case fault(Int32)
        case workload(spec: Int32, node: Int32, repetition: Int32)
        case sample
        case idleSweep

        var kind: Int {
            switch self {
            case .join: 0
            case .deliver: 1
            case .arrive: 2
            case .tick: 3
            case .linkUp: 4
            case .linkDown: 5
            case .dialFailed: 6
            case .dialArrive: 7
            case .fault: 8
            case .workload: 9
            case .sample: 10
            case .idleSweep: 11
            }
        }
    }

    /// Names of the event kinds, in `Event.kind` order (`SimStats.eventsByKind`).
    public static let eventKindNames = ["join", "deliver", "arrive", "tick", "link-up", "link-down", "dial-failed",
                                        "dial-arrive", "fault", "workload", "sample", "idle-sweep"]

    struct InFlight {
        var from: Int32
        var to: Int32
        var toGen: UInt32
        var wire: Int32
        var message: PeerMessage
        /// Set while the message is on its way to the receiver's downlink.
        var arrival: SimArrival?
    }

    /// Trace record kinds (first byte of each record in the hashed trace).
    enum TraceKind: UInt8 {
        case join = 1, deliver, tick, linkUp, linkDown, dialFailed, fault, workload, sample, send, drop, crash, restart, idle
    }

    /// Why a message was dropped (counted in `SimStats`).
    public enum DropReason: Int, CaseIterable, Sendable {
        case loss, partition, deadReceiver, unknownPeer, unreachable, unrouted, toSelf
        public var name: String {
            switch self {
            case .loss: "loss"
            case .partition: "partition"
            case .deadReceiver: "receiver-down"
            case .unknownPeer: "unknown-peer"
            case .unreachable: "unreachable"
            case .unrouted: "no-core-for-frame"
            case .toSelf: "to-self"
            }
        }
    }

    public let scenario: Scenario
    public let seed: UInt64
    public let directory: SimDirectory
    private let coreSpecs: [Scenario.CoreSpec]
    private let factories: [SimCoreFactory]
    private var queue = EventQueue<Event>()
    public private(set) var now: UInt64 = 0
    /// Virtual time as a `MeshClock`, for shell-side code hosted in the world (cores get `now`
    /// directly). Moves with the event queue; a node's skew is applied to what its cores see.
    public let clock = ManualClock()
    public let endTime: UInt64
    private let n: Int

    // Per node (structure of arrays: lean at 10,000 nodes).
    private var indexOf: NodeIndex
    /// The per-node fields every event touches, together (one cache line a node).
    struct NodeState {
        var alive = false
        /// Bumped on every crash: events for an older generation are stale.
        var gen: UInt32 = 0
        var incarnation = -1
        var skewOffset: Int64 = 0
        var skewPPM: Double = 0
        var lastLocal: UInt64 = 0
        var cpuCost: UInt64 = 0
        var busyUntil: UInt64 = 0
    }
    private var nodes: [NodeState]
    /// Node i's core c is at i * coreCount + c; nil while the node is down.
    private var cores: [(any MeshProtocolCore)?]
    private let coreCount: Int
    private var pendingToken: [UInt64]
    private var pendingTime: [UInt64]
    /// Per node: peer index → last use, in virtual milliseconds rounded up (4 bytes, so a cell is
    /// 8, not 16: a node that gossips holds ~1,000 links while a cluster forms, ~0.3 GB of cells at
    /// 10,000 nodes). The idle sweep runs at whole milliseconds with a whole-millisecond timeout
    /// (`idleTimeout`), where `ceil(t) + idle <= now` is exactly `t + idle <= now`.
    private var links: [SlotMap<UInt32>]
    /// Link idle times have millisecond resolution: the idle timeout is rounded up to whole
    /// milliseconds and the sweeps run at whole milliseconds (first at the timeout, then every
    /// half of it, rounded up), so the sweep's test on `links`' rounded-up times is exact. A
    /// timeout that is a whole number of 2 ms (the default 30 s) keeps its sweeps where they were.
    private var idleTimeout: UInt64 { Self.wholeMilliseconds(ns(scenario.link.idleTimeout)) }
    private static func wholeMilliseconds(_ ns: UInt64) -> UInt64 { max(1, (ns + 999_999) / 1_000_000) * 1_000_000 }
    /// `now` for `links` (a run lasts less than 2^32 ms, 49.7 days: `init` refuses longer ones).
    @inline(__always) private var linkNow: UInt32 { UInt32(clamping: (now &+ 999_999) / 1_000_000) }
    private var persisted: [[[UInt8]?]]
    private var nodeRandom: [SeededRandom]
    private var group: [UInt16] = []
    private var seedAddresses: [PeerAddress] = []
    private var observable: [Bool]

    private var linkLayer: any SimLinkLayer
    private var linkRandom: SeededRandom
    private var scenarioRandom: SeededRandom
    private var inflight: [InFlight?] = []
    private var freeSlots: [Int32] = []
    private var dialSlots: [PeerAddress?] = []
    private var freeDialSlots: [Int32] = []
    private var resolvedWorkloads: [[Int]] = []

    public private(set) var stats: SimStats
    private var traceBuffer: [UInt8] = []
    /// The trace so far, hashed in 64 KiB pieces: chain = SHA-256(chain ‖ piece).
    private var traceChain: [UInt8] = []
    /// Called with one human-readable line per trace record when set (`gquic-sim run --trace`).
    public var traceLines: ((String) -> Void)?
    /// Called every `progressEvery` events with the world (for a progress line).
    public var progress: ((borrowing SimWorld) -> Void)?
    public var progressEvery: UInt64 = 1 << 16

    public init(scenario: Scenario, seed: UInt64? = nil, registry: SimCoreRegistry,
                linkLayer: (any SimLinkLayer)? = nil) throws(ScenarioError) {
        self.scenario = scenario
        let seed = seed ?? scenario.seed
        self.seed = seed
        n = scenario.nodes
        var f: [SimCoreFactory] = []
        for spec in scenario.cores {
            guard let factory = registry.factory(named: spec.name) else {
                throw .missingCore(spec.name, registered: registry.names)
            }
            f.append(factory)
        }
        factories = f
        coreSpecs = scenario.cores
        endTime = UInt64(max(0, scenario.duration.nanosecondsClamped))
        // Link times are 32-bit milliseconds (`links`).
        guard endTime < UInt64(UInt32.max) * 1_000_000 else {
            throw .invalid(0, "duration \(scenario.duration) is longer than the simulator's 49 days")
        }

        var master = SeededRandom(seed: seed)
        var ids: [NodeID] = []
        ids.reserveCapacity(n)
        for i in 0..<n {
            var w = WireWriter(reservingCapacity: 32)
            w.raw(Array("gquic-sim node".utf8))
            w.fixed(seed)
            w.fixed(UInt64(i))
            ids.append(NodeID(digest: Digest.of(w.bytes)))
        }
        directory = SimDirectory(ids: ids)
        indexOf = NodeIndex(ids)
        nodeRandom = (0..<n).map { _ in master.fork() }
        linkRandom = master.fork()
        scenarioRandom = master.fork()
        nodes = Array(repeating: NodeState(), count: n)
        coreCount = scenario.cores.count
        cores = Array(repeating: nil, count: n * scenario.cores.count)
        pendingToken = Array(repeating: 0, count: n * scenario.cores.count)
        pendingTime = Array(repeating: 0, count: n * scenario.cores.count)
        links = Array(repeating: SlotMap(placeholder: 0), count: n)
        persisted = Array(repeating: Array(repeating: nil, count: scenario.cores.count), count: n)
        observable = Array(repeating: false, count: scenario.cores.count)
        stats = SimStats(nodes: n, coreNames: scenario.cores.map(\.name))

        let ranges = scenario.regionRanges()
        var regionOf = Array(repeating: 0, count: n)
        for (r, range) in ranges.enumerated() { for i in range { regionOf[i] = r } }
        if let linkLayer {
            self.linkLayer = linkLayer
        } else {
            self.linkLayer = MessageLevelLinks(settings: scenario.link, regionOf: regionOf,
                                               latency: scenario.latency.map { $0.map { $0 ?? .zero } },
                                               capacity: scenario.regions.map { ($0.up, $0.down) })
        }
        seedAddresses = try scenario.resolve(scenario.seeds, random: &scenarioRandom).map(SimDirectory.address(of:))
        try schedule()
    }

    // MARK: Scheduling the scenario

    private func ns(_ d: Duration) -> UInt64 { UInt64(max(0, d.nanosecondsClamped)) }

    private mutating func schedule() throws(ScenarioError) {
        let joins = scenario.joins.isEmpty ? [Scenario.JoinSpec(at: .zero, nodes: .all, spread: .zero)] : scenario.joins
        for j in joins {
            let nodes = try scenario.resolve(j.nodes, random: &scenarioRandom)
            let spread = ns(j.spread)
            for (k, node) in nodes.enumerated() {
                let offset = nodes.count > 1 ? spread * UInt64(k) / UInt64(nodes.count) : 0
                queue.push(at: ns(j.at) + offset, .join(node: Int32(node)))
            }
        }
        for (i, w) in scenario.workloads.enumerated() {
            let nodes = try scenario.resolve(w.nodes, random: &scenarioRandom)
            resolvedWorkloads.append(nodes)
            if let core = w.core, !scenario.cores.contains(where: { $0.name == core }) {
                throw .invalid(0, "workload names core \"\(core)\", which no `core` line declares")
            }
            for node in nodes { queue.push(at: ns(w.at), .workload(spec: Int32(i), node: Int32(node), repetition: 0)) }
        }
        // Resolve fault node sets now, in scenario order, so the draws do not depend on when faults fire.
        for (index, f) in scenario.faults.enumerated() {
            let sets: [NodeSet]
            switch f.kind {
            case .partition(let groups): sets = groups
            case .crash(let s), .restart(let s, _), .slow(let s, _, _), .skew(let s, _, _): sets = [s]
            case .heal, .loss: sets = []
            }
            for k in 0..<f.count {
                var resolved: [[Int]] = []
                for set in sets { resolved.append(try scenario.resolve(set, random: &scenarioRandom)) }
                queue.push(at: ns(f.at) + UInt64(k) * ns(f.every ?? .zero), .fault(Int32(faultEvents.count)))
                faultEvents.append((index, resolved))
            }
        }
        queue.push(at: 0, .sample)
        if scenario.link.idleTimeout > .zero { queue.push(at: idleTimeout, .idleSweep) }
    }

    /// Each scheduled fault firing: its scenario line and its resolved node sets.
    private var faultEvents: [(spec: Int, sets: [[Int]])] = []

    // MARK: Running

    /// Runs until the scenario's duration has passed (or `until`, if earlier). Throws when a core's
    /// factory or workload hook throws.
    public mutating func run(until: Duration? = nil) throws {
        let stop = until.map { min(endTime, ns($0)) } ?? endTime
        while let t = queue.peekTime, t <= stop {
            let e = queue.pop()!
            if e.time != now { clock.advance(to: Instant(nanoseconds: e.time)) }
            now = e.time
            stats.events += 1
            stats.eventsByKind[e.payload.kind] += 1
            try dispatch(e.payload)
            if stats.events % progressEvery == 0 { progress?(self) }
        }
        if stop == endTime, now < endTime || queue.peekTime == nil {
            now = endTime
            clock.advance(to: Instant(nanoseconds: now))
        }
        if stop == endTime { finish() }
    }

    private var finished = false

    private mutating func finish() {
        guard !finished else { return }
        finished = true
        if stats.samples.last?.t != Double(now) / 1e9 { takeSample() }
        flushTrace()
        traceHash = Digest(unchecked: traceChain.isEmpty ? Digest.of([UInt8]()).bytes : traceChain)
    }

    /// SHA-256 over every trace record of the run; nil until the run has finished.
    public private(set) var traceHash: Digest?

    private mutating func flushTrace() {
        guard !traceBuffer.isEmpty else { return }
        var h = SHA256Hasher()
        h.update(traceChain)
        h.update(traceBuffer)
        traceChain = h.finalize().bytes
        traceBuffer.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    private mutating func trace(_ kind: TraceKind, _ node: Int32, _ peer: Int32 = -1, _ aux: UInt64 = 0) {
        // One 32-byte little-endian record: kind, 3 zero bytes, node, time, peer, 4 zero bytes, aux.
        var record = (UInt32(kind.rawValue).littleEndian, node.littleEndian, now.littleEndian,
                      peer.littleEndian, Int32(0), aux.littleEndian)
        withUnsafeBytes(of: &record) { traceBuffer.append(contentsOf: $0) }
        if traceBuffer.count >= 1 << 16 { flushTrace() }
        if let sink = traceLines {
            sink("\(now) \(kind) node=\(node) peer=\(peer) aux=\(aux)")
        }
    }

    private mutating func dispatch(_ event: Event) throws {
        switch event {
        case .join(let node):
            trace(.join, node)
            if !nodes[Int(node)].alive { try startNode(Int(node), keepDisk: false) }
        case .deliver(let slot):
            try deliver(slot)
        case .arrive(let slot):
            // The receiver's downlink takes messages in the order they arrive. One that a dead or
            // cut-off receiver would never take goes straight on to be dropped (`deliver`).
            let f = inflight[Int(slot)]!
            var at = now
            if let a = f.arrival, nodes[Int(f.to)].alive, nodes[Int(f.to)].gen == f.toGen, reachable(Int(f.from), Int(f.to)) {
                at = max(now, linkLayer.arrive(a))
            }
            inflight[Int(slot)]!.arrival = nil
            queue.push(at: at, .deliver(slot: slot))
        case .tick(let node, let core, let token):
            let i = Int(node)
            let key = i * coreSpecs.count + Int(core)
            guard nodes[i].alive, pendingToken[key] == token else { return }
            if deferForCPU(i, event) { return }
            pendingToken[key] = 0
            trace(.tick, node, -1, UInt64(core))
            let local = localNow(i)
            let out = cores[i * coreCount + Int(core)]!.tick(now: local)
            handle(out, node: i, core: Int(core))
        case .linkUp(let node, let peer, let g):
            let i = Int(node)
            guard nodes[i].alive, nodes[i].gen == g, links[i][peer] != nil else { return }
            if deferForCPU(i, event) { return }
            trace(.linkUp, node, peer)
            let rtt = Duration.nanoseconds(Int64(clamping: linkLayer.latency(from: i, to: Int(peer)) &+ linkLayer.latency(from: Int(peer), to: i)))
            let ev = LinkEvent.up(peer: directory.ids[Int(peer)], address: SimDirectory.address(of: Int(peer)), rtt: rtt)
            notifyLink(i, ev)
        case .linkDown(let node, let peer, let peerGen):
            let i = Int(node), p = Int(peer)
            guard nodes[i].alive, links[i][peer] != nil, !nodes[p].alive || nodes[p].gen != peerGen || !reachable(i, p) else { return }
            links[i][peer] = nil
            trace(.linkDown, node, peer)
            notifyLink(i, .down(peer: directory.ids[p]))
        case .dialFailed(let node, let slot, let g):
            let address = dialSlots[Int(slot)]!
            dialSlots[Int(slot)] = nil
            freeDialSlots.append(slot)
            let i = Int(node)
            guard nodes[i].alive, nodes[i].gen == g else { return }
            trace(.dialFailed, node)
            notifyLink(i, .dialFailed(address: address))
        case .dialArrive(let node, let peer, let g):
            let i = Int(node), d = Int(peer)
            guard nodes[i].alive, nodes[i].gen == g else { return }
            let one = linkLayer.latency(from: i, to: d)
            if nodes[d].alive, reachable(i, d) {
                // The handshake's first flight reached a live peer: up for the dialler one latency
                // later (1 RTT in all), for the acceptor two (1.5 RTT).
                links[i][peer] = linkNow
                links[d][node] = linkNow
                queue.push(at: now + one, .linkUp(node: node, peer: peer, gen: nodes[i].gen))
                queue.push(at: now + 2 * one, .linkUp(node: peer, peer: node, gen: nodes[d].gen))
            } else {
                let started = now - min(now, one)
                dialFails(i, SimDirectory.address(of: d), at: max(now, started + ns(scenario.link.dialTimeout)))
            }
        case .fault(let index):
            trace(.fault, -1, -1, UInt64(index))
            try applyFault(Int(index))
        case .workload(let spec, let node, let repetition):
            let i = Int(node)
            let w = scenario.workloads[Int(spec)]
            if let every = w.every, Int(repetition) + 1 < w.count {
                queue.push(at: now + ns(every), .workload(spec: spec, node: node, repetition: repetition + 1))
            }
            guard nodes[i].alive else { stats.workloadSkipped += 1; return }
            trace(.workload, node, -1, UInt64(spec) << 32 | UInt64(repetition))
            try runWorkload(w, node: i, repetition: Int(repetition))
        case .sample:
            trace(.sample, -1)
            takeSample()
            let next = now + ns(scenario.sampleEvery)
            if next <= endTime { queue.push(at: next, .sample) }
        case .idleSweep:
            idleSweep()
            queue.push(at: now + Self.wholeMilliseconds(idleTimeout / 2), .idleSweep)
        }
    }

    /// A slow node handles one input per `cpuCost`; later inputs wait (the event is re-queued).
    private mutating func deferForCPU(_ i: Int, _ event: Event) -> Bool {
        let cost = nodes[i].cpuCost
        guard cost > 0 else { return false }
        if now < nodes[i].busyUntil {
            queue.push(at: nodes[i].busyUntil, event)
            return true
        }
        nodes[i].busyUntil = now + cost
        return false
    }

    // MARK: Nodes

    /// The node's own clock reading (skew and drift applied, never going back).
    @inline(__always)
    private mutating func localNow(_ i: Int) -> Instant {
        if nodes[i].skewOffset == 0 && nodes[i].skewPPM == 0 { return Instant(nanoseconds: now) }
        let drifted = Double(now) * (1 + nodes[i].skewPPM / 1e6) + Double(nodes[i].skewOffset)
        let local = drifted <= 0 ? 0 : UInt64(drifted)
        nodes[i].lastLocal = max(nodes[i].lastLocal, local)
        return Instant(nanoseconds: nodes[i].lastLocal)
    }

    /// The global instant at which node `i`'s clock reads `local`.
    private func globalTime(_ i: Int, _ local: Instant) -> UInt64 {
        // A wake-up already due fires now: virtual time never runs backwards.
        if nodes[i].skewOffset == 0 && nodes[i].skewPPM == 0 { return max(local.nanoseconds, now) }
        if local == .distantFuture { return .max }
        let g = (Double(local.nanoseconds) - Double(nodes[i].skewOffset)) / (1 + nodes[i].skewPPM / 1e6)
        return g <= Double(now) ? now : UInt64(min(g.rounded(.up), 1.8e19))
    }

    private mutating func startNode(_ i: Int, keepDisk: Bool) throws {
        nodes[i].incarnation += 1
        nodes[i].alive = true
        nodes[i].busyUntil = now
        var built: [any MeshProtocolCore] = []
        for (c, spec) in coreSpecs.enumerated() {
            let ctx = SimCoreContext(
                nodeID: directory.ids[i], index: i, address: SimDirectory.address(of: i),
                seeds: seedAddresses.filter { $0 != SimDirectory.address(of: i) },
                random: nodeRandom[i].fork(), persisted: keepDisk ? persisted[i][c] : nil,
                incarnation: nodes[i].incarnation, parameters: spec.parameters, directory: directory)
            let core = try factories[c](ctx)
            if core is any SimObservableCore { observable[c] = true }
            built.append(core)
        }
        if !keepDisk { for c in coreSpecs.indices { persisted[i][c] = nil } }
        for (c, core) in built.enumerated() { cores[i * coreCount + c] = core }
        let local = localNow(i)
        for c in coreSpecs.indices {
            guard nodes[i].alive else { break }
            let out = cores[i * coreCount + c]!.start(now: local)
            handle(out, node: i, core: c)
        }
    }

    private mutating func crashNode(_ i: Int) {
        guard nodes[i].alive else { return }
        trace(.crash, Int32(i))
        for c in coreSpecs.indices {
            if var o = cores[i * coreCount + c] as? any SimObservableCore {
                for done in o.drainCompletions() { stats.complete(done, at: now) }
            }
            if let p = cores[i * coreCount + c] as? any SimPersistentCore { persisted[i][c] = p.persistentState() }
            pendingToken[i * coreSpecs.count + c] = 0
        }
        nodes[i].alive = false
        let oldGen = nodes[i].gen
        nodes[i].gen &+= 1
        for c in 0..<coreCount { cores[i * coreCount + c] = nil }
        for peer in links[i].sortedKeys() {
            queue.push(at: now + ns(scenario.link.linkTimeout), .linkDown(node: peer, peer: Int32(i), peerGen: oldGen))
        }
        links[i] = SlotMap(placeholder: 0)
    }

    private mutating func notifyLink(_ i: Int, _ event: LinkEvent) {
        let local = localNow(i)
        for c in coreSpecs.indices {
            guard nodes[i].alive else { return }
            let out = cores[i * coreCount + c]!.linkChanged(event, now: local)
            handle(out, node: i, core: c)
        }
    }

    private mutating func runWorkload(_ w: Scenario.WorkloadSpec, node i: Int, repetition: Int) throws {
        let target = w.core.flatMap { name in coreSpecs.firstIndex { $0.name == name } }
        let candidates = target.map { [$0] } ?? Array(coreSpecs.indices)
        for c in candidates {
            guard var core = cores[i * coreCount + c] as? any SimWorkloadCore else { continue }
            let out = try core.workload(SimWorkload(kind: w.kind, parameters: w.parameters, repetition: repetition),
                                        now: localNow(i))
            cores[i * coreCount + c] = core
            handle(out, node: i, core: c)
            return
        }
        throw SimRunError("workload kind=\(w.kind): no core of this run accepts workload "
            + "(\(coreSpecs.map(\.name).joined(separator: ", ")) do not conform to SimWorkloadCore)")
    }

    // MARK: Outboxes, links and messages

    private mutating func handle(_ out: Outbox, node i: Int, core c: Int) {
        for m in out.messages { send(m, from: i) }
        for d in out.dials { dial(d, from: i) }
        if let wake = out.wakeAt {
            let at = globalTime(i, wake)
            let key = i * coreSpecs.count + c
            if at <= endTime {
                // Keep only the earliest pending request; a later one is a no-op until it fires.
                let token = queue.nextSeq
                if pendingToken[key] == 0 || at < pendingAt(key) {
                    pendingToken[key] = token
                    pendingTime[key] = at
                    queue.push(at: at, .tick(node: Int32(i), core: Int16(c), token: token))
                }
            }
        }
    }

    @inline(__always) private func pendingAt(_ key: Int) -> UInt64 { pendingTime[key] }

    @inline(__always)
    private func reachable(_ a: Int, _ b: Int) -> Bool { group.isEmpty || group[a] == group[b] }

    /// Opens a connection between `a` and `b`: both learn `up` after the handshake (1 RTT for the
    /// dialler, 1.5 RTT for the acceptor). Returns the instant the dialler may send.
    private mutating func establish(_ a: Int, _ b: Int) -> UInt64 {
        let one = linkLayer.latency(from: a, to: b)
        links[a][Int32(b)] = linkNow
        links[b][Int32(a)] = linkNow
        queue.push(at: now + 2 * one, .linkUp(node: Int32(a), peer: Int32(b), gen: nodes[a].gen))
        queue.push(at: now + 3 * one, .linkUp(node: Int32(b), peer: Int32(a), gen: nodes[b].gen))
        return now + 2 * one
    }

    private mutating func drop(_ reason: DropReason, from: Int, to: Int32, type: UInt64) {
        stats.dropped[reason.rawValue] += 1
        trace(.drop, Int32(from), to, UInt64(reason.rawValue) << 56 | (type & 0xff_ffff_ffff_ffff))
    }

    private mutating func send(_ m: PeerMessage, from i: Int) {
        stats.sent += 1
        guard let dst = indexOf.find(m.peer) else { drop(.unknownPeer, from: i, to: -1, type: m.frame.type); return }
        let d = Int(dst)
        if d == i { drop(.toSelf, from: i, to: dst, type: m.frame.type); return }
        var notBefore = now
        if nodes[d].alive && reachable(i, d) {
            // Refresh both ends' last use; a missing end means a (re)connection with a handshake.
            let fresh = links[i].updateValue(linkNow, forKey: dst) == nil
            if links[d].updateValue(linkNow, forKey: Int32(i)) == nil || fresh { notBefore = establish(i, d) }
        } else if links[i][dst] == nil || links[d][Int32(i)] == nil {
            drop(.unreachable, from: i, to: dst, type: m.frame.type); return
        }
        let bytes = m.frame.payload.count + VarInt.encodedLength(m.frame.type) + VarInt.encodedLength(UInt64(m.frame.payload.count))
        let verdict = linkLayer.transmit(SimTransmission(from: i, to: d, bytes: bytes, unreliable: m.unreliable, traffic: m.traffic, notBefore: notBefore),
                                         random: &linkRandom)
        trace(.send, Int32(i), dst, m.frame.type << 32 | UInt64(bytes))
        let at: UInt64, wire: Int, arrival: SimArrival?
        switch verdict {
        case .lost(let wire):
            stats.bytesUp[i] += UInt64(wire)
            drop(.loss, from: i, to: dst, type: m.frame.type)
            return
        case .deliver(let t, let w): at = t; wire = w; arrival = nil
        case .arrive(let a): at = a.at; wire = Int(a.wireBytes); arrival = a
        }
        stats.bytesUp[i] += UInt64(wire)
        stats.bytesUpByClass[Int(m.traffic.rawValue)] += UInt64(wire)
        var msg = m
        msg.peer = directory.ids[i]
        let f = InFlight(from: Int32(i), to: dst, toGen: nodes[d].gen, wire: Int32(clamping: wire), message: msg, arrival: arrival)
        let slot: Int32
        if let s = freeSlots.popLast() { slot = s; inflight[Int(s)] = f } else { slot = Int32(inflight.count); inflight.append(f) }
        queue.push(at: at, arrival == nil ? .deliver(slot: slot) : .arrive(slot: slot))
    }

    private mutating func deliver(_ slot: Int32) throws {
        let d = Int(inflight[Int(slot)]!.to)
        if nodes[d].alive, nodes[d].cpuCost > 0, now < nodes[d].busyUntil {
            queue.push(at: nodes[d].busyUntil, .deliver(slot: slot))
            return
        }
        let f = inflight[Int(slot)].take()!
        freeSlots.append(slot)
        let type = f.message.frame.type
        guard nodes[d].alive, nodes[d].gen == f.toGen else { drop(.deadReceiver, from: Int(f.from), to: f.to, type: type); return }
        guard reachable(Int(f.from), d) else { drop(.partition, from: Int(f.from), to: f.to, type: type); return }
        if nodes[d].cpuCost > 0 { nodes[d].busyUntil = now + nodes[d].cpuCost }
        stats.bytesDown[d] += UInt64(f.wire)
        var route = -1
        for c in 0..<coreCount where cores[d * coreCount + c]!.handles(frameType: type) { route = c; break }
        guard route >= 0 else {
            drop(.unrouted, from: Int(f.from), to: f.to, type: type); return
        }
        stats.delivered += 1
        trace(.deliver, f.to, f.from, type << 32 | UInt64(f.wire))
        let local = localNow(d)
        let out = cores[d * coreCount + route]!.receive(f.message, now: local)
        handle(out, node: d, core: route)
    }

    private mutating func dialFails(_ i: Int, _ address: PeerAddress, at: UInt64) {
        let slot: Int32
        if let s = freeDialSlots.popLast() { slot = s; dialSlots[Int(s)] = address } else { slot = Int32(dialSlots.count); dialSlots.append(address) }
        queue.push(at: at, .dialFailed(node: Int32(i), slot: slot, gen: nodes[i].gen))
    }

    /// A dial is decided when its first packet reaches the address: a live, reachable node there
    /// completes the handshake; anything else fails after the dial timeout.
    private mutating func dial(_ address: PeerAddress, from i: Int) {
        guard let d = SimDirectory.index(of: address), d < n, d != i else {
            dialFails(i, address, at: now + ns(scenario.link.dialTimeout))
            return
        }
        if links[i][Int32(d)] != nil && links[d][Int32(i)] != nil {
            queue.push(at: now, .linkUp(node: Int32(i), peer: Int32(d), gen: nodes[i].gen))
        } else {
            queue.push(at: now + linkLayer.latency(from: i, to: d), .dialArrive(node: Int32(i), peer: Int32(d), gen: nodes[i].gen))
        }
    }

    private mutating func idleSweep() {
        let idle = idleTimeout
        guard now >= idle else { return }
        for a in 0..<n where !links[a].isEmpty {
            let expired = links[a].sortedKeys { $0 > Int32(a) && UInt64($1) * 1_000_000 + idle <= now }
            for b in expired {
                links[a][b] = nil
                trace(.idle, Int32(a), b)
                if nodes[a].alive { notifyLink(a, .down(peer: directory.ids[Int(b)])) }
                if links[Int(b)].removeValue(forKey: Int32(a)) != nil, nodes[Int(b)].alive {
                    notifyLink(Int(b), .down(peer: directory.ids[a]))
                }
            }
        }
    }

    // MARK: Faults

    private mutating func applyFault(_ index: Int) throws {
        let sets = faultEvents[index].sets
        switch scenario.faults[faultEvents[index].spec].kind {
        case .partition:
            var g = Array(repeating: UInt16(sets.count), count: n)
            for (k, set) in sets.enumerated() { for i in set { g[i] = UInt16(k) } }
            group = g
            stats.partitions += 1
            let timeout = now + ns(scenario.link.linkTimeout)
            for a in 0..<n where !links[a].isEmpty {
                for b in links[a].sortedKeys() where g[a] != g[Int(b)] {
                    queue.push(at: timeout, .linkDown(node: Int32(a), peer: b, peerGen: nodes[Int(b)].gen))
                }
            }
        case .heal:
            group = []
        case .crash:
            for i in sets[0] { crashNode(i); stats.crashes += 1 }
        case .restart(let set, let keepDisk):
            let targets = set == .down ? (0..<n).filter { !nodes[$0].alive && nodes[$0].incarnation >= 0 } : sets[0]
            for i in targets {
                crashNode(i)
                trace(.restart, Int32(i), -1, keepDisk ? 1 : 0)
                try startNode(i, keepDisk: keepDisk)
                stats.restarts += 1
            }
        case .slow(_, let cpu, let bandwidth):
            for i in sets[0] {
                nodes[i].cpuCost = ns(cpu)
                linkLayer.setBandwidthFactor(bandwidth, node: i)
            }
        case .skew(_, let offset, let ppm):
            for i in sets[0] {
                nodes[i].skewOffset = offset.nanosecondsClamped
                nodes[i].skewPPM = ppm
            }
        case .loss(let p):
            linkLayer.loss = p
        }
    }

    // MARK: Sampling

    private mutating func takeSample() {
        var sample = SimStats.Sample(t: Double(now) / 1e9, live: 0, agreement: [:], gauges: [:], eventsByKind: stats.eventsByKind)
        var digests: [[Digest]] = Array(repeating: [], count: coreSpecs.count)
        var gaugeAcc: [String: (min: Double, sum: Double, max: Double, count: Int)] = [:]
        var gaugeOrder: [String] = []
        for i in 0..<n where nodes[i].alive {
            sample.live += 1
            for c in coreSpecs.indices where observable[c] {
                guard var o = cores[i * coreCount + c] as? any SimObservableCore else { continue }
                for done in o.drainCompletions() { stats.complete(done, at: now) }
                if let d = o.stateDigest() { digests[c].append(d) }
                for g in o.gauges() {
                    let key = "\(coreSpecs[c].name).\(g.name)"
                    if let a = gaugeAcc[key] {
                        gaugeAcc[key] = (Swift.min(a.min, g.value), a.sum + g.value, Swift.max(a.max, g.value), a.count + 1)
                    } else {
                        gaugeAcc[key] = (g.value, g.value, g.value, 1)
                        gaugeOrder.append(key)
                    }
                }
                cores[i * coreCount + c] = o
            }
        }
        for c in coreSpecs.indices where !digests[c].isEmpty {
            let sorted = digests[c].sorted()
            var best = 0, run = 0
            for k in sorted.indices {
                run = k > 0 && sorted[k] == sorted[k - 1] ? run + 1 : 1
                best = Swift.max(best, run)
            }
            sample.agreement[coreSpecs[c].name] = Double(best) / Double(Swift.max(1, sample.live))
        }
        for key in gaugeOrder {
            let a = gaugeAcc[key]!
            sample.gauges[key] = .init(min: a.min, mean: a.sum / Double(a.count), max: a.max)
        }
        stats.completionsSoFar.append(stats.completionCounts)
        stats.samples.append(sample)
    }

    // MARK: Introspection (tests, reports)

    public var liveCount: Int { nodes.lazy.filter { $0.alive }.count }
    public func isAlive(_ i: Int) -> Bool { nodes[i].alive }
    public func core(of node: Int, at index: Int = 0) -> (any MeshProtocolCore)? {
        nodes[node].alive ? cores[node * coreCount + index] : nil
    }
    public var pendingEvents: Int { queue.count }
}

/// A run-time failure (a core's factory or workload hook threw).
public struct SimRunError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// NodeID → node index: open addressing with the whole 32-byte ID stored in the slot, so a lookup
/// touches one cache line (IDs are SHA-256 outputs, so their first word is already a good hash).
struct NodeIndex {
    private struct Slot {
        var w: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        var index: Int32 = -1
    }
    private var slots: [Slot]
    private let mask: Int

    init(_ ids: [NodeID]) {
        precondition(MemoryLayout<NodeID>.size == 32, "NodeIndex reads a NodeID as four words")
        var cap = 16
        while cap < ids.count * 2 { cap <<= 1 }
        mask = cap - 1
        slots = Array(repeating: Slot(), count: cap)
        for (i, id) in ids.enumerated() {
            let w = NodeIndex.words(id)
            var s = Int(truncatingIfNeeded: w.0) & mask
            while slots[s].index >= 0 { s = (s + 1) & mask }
            slots[s] = Slot(w: w, index: Int32(i))
        }
    }

    /// The ID's four stored words, read in place (no byte array).
    @inline(__always)
    static func words(_ id: NodeID) -> (UInt64, UInt64, UInt64, UInt64) {
        withUnsafeBytes(of: id) { raw in
            (raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
             raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        }
    }

    func find(_ id: NodeID) -> Int32? {
        let w = NodeIndex.words(id)
        var s = Int(truncatingIfNeeded: w.0) & mask
        while true {
            let slot = slots[s]
            if slot.index < 0 { return nil }
            if slot.w == w { return slot.index }
            s = (s + 1) & mask
        }
    }
}
