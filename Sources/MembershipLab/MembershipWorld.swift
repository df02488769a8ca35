import MeshCore
import Membership

/// A small deterministic world that hosts N membership cores: virtual time, seeded randomness,
/// links with latency, loss, extra per-node delay, partitions, crashes and restarts.
///
/// It stands in for the daemon's QUIC shell: a dial to an address of a running node in the same
/// partition yields `LinkEvent.up` on both sides after one round trip (the TLS handshake that proves
/// identities), unreliable messages (DATAGRAMs) are lost with probability `loss`, reliable ones
/// (streams) arrive late instead. Same seed, same run. Used by the Membership tests and by
/// `gquic-bench membership`; the full simulator (MeshSimulator) hosts the same core.
public final class MembershipWorld {
    public struct Host {
        public let id: NodeID
        public let address: PeerAddress
        public var core: MembershipCore?
        public var running: Bool { core != nil }
        public var generation: UInt64 = 0
        public var extraDelay: Duration = .zero
        public var partition = 0
        public var bytesSent = 0
        public var messagesSent = 0
        var wakeAt: Instant = .distantFuture
        var wakeToken: UInt64 = 0
    }

    private enum Event {
        case deliver(PeerMessage, from: Int, to: Int)
        case wake(Int, token: UInt64)
        case link(Int, LinkEvent)
    }

    private struct Scheduled: Comparable {
        var at: Instant
        var seq: UInt64
        var event: Int // index into the payload table
        static func < (a: Scheduled, b: Scheduled) -> Bool { (a.at, a.seq) < (b.at, b.seq) }
        static func == (a: Scheduled, b: Scheduled) -> Bool { a.at == b.at && a.seq == b.seq }
    }

    public private(set) var hosts: [Host] = []
    public private(set) var now: Instant = .zero
    public var settings: MembershipSettings
    /// Probability that an unreliable message (DATAGRAM) is lost.
    public var loss: Double = 0
    /// One-way latency and its uniform jitter.
    public var latency: Duration
    public var jitter: Duration
    /// Indices of the hosts whose addresses every node is given as seeds.
    public var seedHosts: [Int]
    /// Called for every change a core reports: (observer host, change).
    public var onChange: ((Int, MembershipChange) -> Void)?
    /// Called for every message delivered: (from, to, message).
    public var onDeliver: ((Int, Int, PeerMessage) -> Void)?
    /// Per-message overhead added to byte counts: IPv4 + UDP + QUIC short header + DATAGRAM frame
    /// + AEAD tag (20 + 8 + 1 + 8 + 1 + 2 + 16).
    public static let packetOverhead = 56

    private var rng: SeededRandom
    /// One directory for all hosted cores (IDs and addresses stored once, not once per observer).
    private let directory = MemberDirectory()
    private var heap: [Scheduled] = []
    private var payloads: [Int: Event] = [:]
    private var freeSlots: [Int] = []
    private var nextSlot = 0
    private var seq: UInt64 = 0
    private var byAddress: [PeerAddress: Int] = [:]
    private var byID: [NodeID: Int] = [:]

    public init(count: Int, seed: UInt64, settings: MembershipSettings = MembershipSettings(),
                latency: Duration = .microseconds(250), jitter: Duration = .microseconds(100), seedHosts: [Int] = [0]) {
        self.settings = settings
        self.latency = latency
        self.jitter = jitter
        self.seedHosts = seedHosts
        rng = SeededRandom(seed: seed)
        for i in 0..<count {
            let id = NodeID(digest: Digest.of(Array("sim-node-\(seed)-\(i)".utf8)))
            let addr = PeerAddress(host: "10.\(i >> 16 & 255).\(i >> 8 & 255).\(i & 255)", port: 7400)
            hosts.append(Host(id: id, address: addr))
            byAddress[addr] = i
            byID[id] = i
        }
    }

    public func index(of id: NodeID) -> Int? { byID[id] }

    // MARK: - Faults and lifecycle

    /// Starts (or restarts) host `i`, normally with a new generation; `keepGeneration` models a
    /// shell that lost its generation counter (the node restarts at incarnation 0 of an old
    /// generation, memberlist-style).
    public func start(_ i: Int, keepGeneration: Bool = false) {
        if !keepGeneration || hosts[i].generation == 0 { hosts[i].generation += 1 }
        let seeds = seedHosts.filter { $0 != i }.map { hosts[$0].address }
        var core = MembershipCore(me: hosts[i].id, address: hosts[i].address,
                                  generation: hosts[i].generation, seeds: seeds, settings: settings, random: rng.fork(),
                                  directory: directory)
        let out = core.start(now: now)
        hosts[i].core = core
        carryOut(out, from: i)
    }

    /// Starts every host, spreading the starts over `spread`.
    public func startAll(spread: Duration = .zero) {
        for i in hosts.indices {
            if spread > .zero { run(until: now + spread / hosts.count) }
            start(i)
        }
    }

    /// Starts hosts `0..<count` as a cluster that formed before the run: each core starts without
    /// seeds and learns every other of them from one push-pull request (as host 0 would send it,
    /// host 1 for host 0), handed to it directly; its full-state reply is not delivered (the sender
    /// knows everyone already). What the members then gossip about each other — every record
    /// is new to them — runs as usual. Forming a 10,000-node cluster through seeds costs 10^8
    /// push-pull records and 10^9 gossip receptions before a steady-state measurement can start;
    /// this costs one 10^4-record state per node.
    ///
    /// A cluster that formed before the run has no news left to spread, so each member's gossip
    /// queue is emptied after the hand-over (`MembershipCore.forgetQueuedGossip`); otherwise every
    /// member gossips 2,048+ records about members everyone already knows for minutes, and that,
    /// not the protocol's steady state, is what a bandwidth measurement sees. `gossipFormation`
    /// keeps the queued records (the behaviour before 2026-12).
    public func startFormed(count: Int, gossipFormation: Bool = false) {
        let keepSeeds = seedHosts
        seedHosts = []
        for i in 0..<count { start(i) }
        seedHosts = keepSeeds
        var pp = MembershipMessage.PushPull()
        pp.clusterID = settings.clusterID
        pp.members = (0..<count).map { i in
            MemberUpdate(node: hosts[i].id, address: hosts[i].address,
                         version: MemberVersion(generation: hosts[i].generation, incarnation: 0), status: .alive, from: nil)
        }
        let frame = MembershipMessage.pushPull(pp).frame
        for i in 0..<count {
            let from = i == 0 ? 1 : 0
            let msg = PeerMessage(peer: hosts[from].id, traffic: .control, frame: frame, unreliable: false)
            var out = withCore(i) { $0.receive(msg, now: now) }
            out.messages.removeAll() // the full-state reply
            if !gossipFormation { hosts[i].core?.forgetQueuedGossip() }
            carryOut(out, from: i)
        }
    }

    /// Stops host `i` without a word (process killed, machine gone).
    public func crash(_ i: Int) {
        hosts[i].core = nil
        hosts[i].wakeToken += 1
    }

    public func leave(_ i: Int) {
        guard hosts[i].running else { return }
        let out = withCore(i) { $0.leave(now: now) }
        carryOut(out, from: i)
    }

    /// Splits hosts into groups that cannot reach each other; hosts not listed join group 0.
    public func partition(_ groups: [[Int]]) {
        for i in hosts.indices { hosts[i].partition = 0 }
        for (g, members) in groups.enumerated() { for i in members { hosts[i].partition = g } }
    }

    public func heal() { for i in hosts.indices { hosts[i].partition = 0 } }

    /// Delays every message to and from host `i` by `delay` (a slow but live node).
    public func slow(_ i: Int, by delay: Duration) { hosts[i].extraDelay = delay }

    /// Delivers `message` to host `to` now, as if host `from` had sent it over their authenticated
    /// link: what a misbehaving member could send (tests of forged gossip).
    public func inject(_ message: MembershipMessage, from: Int, to: Int) {
        let msg = PeerMessage(peer: hosts[to].id, traffic: .control, frame: message.frame, unreliable: true)
        schedule(.deliver(msg, from: from, to: to), at: now)
    }

    // MARK: - Queries

    /// How host `observer` sees host `subject` (nil if unknown or the observer is down).
    public func status(of subject: Int, at observer: Int) -> MemberStatus? {
        hosts[observer].core?.member(hosts[subject].id)?.status
    }

    public func core(_ i: Int) -> MembershipCore? { hosts[i].core }

    public var runningHosts: [Int] { hosts.indices.filter { hosts[$0].running } }

    /// True when every running host sees every other running host as alive.
    public var converged: Bool {
        let up = runningHosts
        for o in up {
            guard let core = hosts[o].core else { continue }
            for s in up where s != o {
                if core.member(hosts[s].id)?.status != .alive { return false }
            }
        }
        return true
    }

    // MARK: - Running

    /// Runs events until `until`.
    public func run(until: Instant) {
        while let top = heap.first, top.at <= until {
            popEvent()
            now = top.at
            guard let event = payloads.removeValue(forKey: top.event) else { continue }
            freeSlots.append(top.event)
            dispatch(event)
        }
        if until > now { now = until }
    }

    public func run(for d: Duration) { run(until: now + d) }

    /// Runs until `condition` holds (checked every `step`) or `limit` passes; returns the time taken.
    @discardableResult
    public func run(until condition: () -> Bool, step: Duration = .milliseconds(100), limit: Duration) -> Duration? {
        let start = now
        while now - start < limit {
            if condition() { return now - start }
            run(for: step)
        }
        return condition() ? now - start : nil
    }

    private func dispatch(_ event: Event) {
        switch event {
        case .deliver(let msg, let from, let to):
            guard hosts[to].running, hosts[to].partition == hosts[from].partition else { return }
            var incoming = msg
            incoming.peer = hosts[from].id
            onDeliver?(from, to, incoming)
            let out = withCore(to) { $0.receive(incoming, now: now) }
            carryOut(out, from: to)
        case .wake(let i, let token):
            guard token == hosts[i].wakeToken, hosts[i].running else { return }
            hosts[i].wakeAt = .distantFuture
            let out = withCore(i) { $0.tick(now: now) }
            carryOut(out, from: i)
        case .link(let i, let ev):
            guard hosts[i].running else { return }
            let out = withCore(i) { $0.linkChanged(ev, now: now) }
            carryOut(out, from: i)
        }
    }

    /// Runs `body` on host `i`'s core in place, through the array's and the optional's modify
    /// accessors: no copy of the core, so its dictionaries stay uniquely referenced. (Moving it out
    /// and back, as this did until 2026-12, copied the struct field by field twice per event:
    /// `swift_retain` was 16% of a 10,000-node false-positive run.)
    private func withCore<R>(_ i: Int, _ body: (inout MembershipCore) -> R) -> R {
        body(&hosts[i].core!)
    }

    private func oneWay(_ a: Int, _ b: Int) -> Duration {
        let j = jitter > .zero ? Duration.nanoseconds(Int64(rng.next() % UInt64(jitter.nanosecondsClamped))) : .zero
        return latency + j + hosts[a].extraDelay + hosts[b].extraDelay
    }

    private func carryOut(_ out: Outbox, from i: Int) {
        if hosts[i].running {
            let changes = withCore(i) { $0.takeChanges() }
            if let onChange { for ch in changes { onChange(i, ch) } }
        }
        for msg in out.messages {
            hosts[i].messagesSent += 1
            hosts[i].bytesSent += msg.frame.encodedCount + Self.packetOverhead
            guard let to = byID[msg.peer] else { continue }
            var delay = oneWay(i, to)
            if loss > 0 && Double(rng.next() >> 11) / Double(1 << 53) < loss {
                if msg.unreliable { continue }
                delay = delay + latency * 4 + .milliseconds(25) // a stream retransmission
            }
            schedule(.deliver(msg, from: i, to: to), at: now + delay)
        }
        for addr in out.dials {
            guard let to = byAddress[addr], hosts[to].running, hosts[to].partition == hosts[i].partition, to != i else {
                schedule(.link(i, .dialFailed(address: addr)), at: now + .seconds(1))
                continue
            }
            let rtt = oneWay(i, to) + oneWay(to, i)
            schedule(.link(to, .up(peer: hosts[i].id, address: hosts[i].address, rtt: rtt)), at: now + rtt)
            schedule(.link(i, .up(peer: hosts[to].id, address: addr, rtt: rtt)), at: now + rtt)
        }
        if let w = out.wakeAt, hosts[i].running, w != hosts[i].wakeAt {
            hosts[i].wakeToken += 1
            hosts[i].wakeAt = w
            schedule(.wake(i, token: hosts[i].wakeToken), at: max(w, now))
        }
    }

    private func schedule(_ e: Event, at: Instant) {
        let slot: Int
        if let s = freeSlots.popLast() { slot = s } else { slot = nextSlot; nextSlot += 1 }
        payloads[slot] = e
        seq += 1
        heap.append(Scheduled(at: at, seq: seq, event: slot))
        var c = heap.count - 1
        while c > 0 {
            let p = (c - 1) / 2
            if heap[c] < heap[p] { heap.swapAt(c, p); c = p } else { break }
        }
    }

    private func popEvent() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        var p = 0
        while true {
            let l = 2 * p + 1, r = l + 1
            var m = p
            if l < heap.count && heap[l] < heap[m] { m = l }
            if r < heap.count && heap[r] < heap[m] { m = r }
            if m == p { break }
            heap.swapAt(p, m); p = m
        }
    }
}
