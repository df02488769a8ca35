import MeshCore

/// A member as this node sees it.
public struct Member: Hashable, Sendable {
    public var node: NodeID
    public var address: PeerAddress
    public var version: MemberVersion
    public var status: MemberStatus
    /// When this node last saw the status change.
    public var since: Instant
    /// The member's Vivaldi coordinate, from its last ack to us.
    public var coordinate: Coordinate?
}

/// A change in this node's view, for the shell (logs, metrics, the daemon's peer list).
public struct MembershipChange: Hashable, Sendable {
    public var node: NodeID
    public var status: MemberStatus
    public var version: MemberVersion
    public var address: PeerAddress
    public var at: Instant
}

/// Counters for reports and metrics.
public struct MembershipStats: Sendable {
    public var probesSent = 0
    public var probesFailed = 0
    public var indirectProbesSent = 0
    /// Pings repeated over the reliable stream when the direct ping went unanswered.
    public var fallbackProbesSent = 0
    public var refutations = 0
    public var suspicionsStarted = 0
    public var membersDeclaredDead = 0
    public var messagesSent = 0
    public var bytesSent = 0
    public var messagesRefused: [MembershipError.Code: Int] = [:]
    /// Member updates received: piggybacked, gossiped, and the records of push-pull states.
    public var updatesReceived = 0
    /// Of those, the ones about members already held at the same version or a newer one, which
    /// change nothing and are dropped without being decoded.
    public var updatesAlreadyHeld = 0
    /// Updates sent piggybacked or gossiped (the records of push-pull states are not counted).
    public var updatesSent = 0
    /// Pings answered from nodes not (yet) in our view (see `handleBody`).
    public var strangerPingsAnswered = 0
}

/// The sans-IO SWIM + Lifeguard core. One value per node; the shell (daemon or simulator) feeds it
/// messages, link events and ticks with `now`, and carries out the returned `Outbox`.
///
/// Membership messages ride the node's mutually authenticated QUIC links as DATAGRAMs
/// (`unreliable = true`, class `.control`); push-pull states ride reliable streams. So the sender's
/// `NodeID` is proven by TLS, and everything but a join request is refused from non-members.
public struct MembershipCore: MeshProtocolCore, Sendable {
    public let me: NodeID
    public private(set) var address: PeerAddress
    public let settings: MembershipSettings
    public private(set) var version: MemberVersion
    public private(set) var seeds: [PeerAddress]

    private var rng: SeededRandom
    /// Interned IDs and endpoints (shared by cores hosted in one process; see `MemberDirectory`).
    public let directory: MemberDirectory
    private let myNumber: UInt32
    private var table = MemberTable()
    /// `since` values count deciseconds from here (the first `start`).
    private var epoch: Instant?
    private var liveCount = 0 // alive + suspect, not counting us
    /// Order-independent digest of the alive set (this node included): word-wise sums of the IDs.
    private var aliveSum: SIMD4<UInt64> = .zero

    private var probeOrder: [Int32] = []
    private var probeCursor = 0
    private var sequence: UInt64

    private struct PendingProbe: Sendable {
        var target: NodeID
        var sentAt: Instant
        var timeoutAt: Instant
        var periodEndAt: Instant
        var indirectSent = false
        var expectedNacks = 0
        var nacks = 0
        /// The last-chance probe of a suspect whose suspicion timed out.
        var final = false
        /// Members asked to probe the target for us (their relayed acks count).
        var helpers: [NodeID] = []
        /// The target's version when the probe started.
        var version = MemberVersion(generation: 0, incarnation: 0)
        /// The ping waits for a link to the target (held in `queued` while the dial runs).
        var awaitingLink = false
    }
    private var probes: [UInt64: PendingProbe] = [:] { didSet { timersDirty = true } }

    private struct Relay: Sendable {
        var requester: NodeID
        var requesterSequence: UInt64
        var target: NodeID
        var nackAt: Instant
        var nacked = false
        var expiresAt: Instant
    }
    private var relays: [UInt64: Relay] = [:] { didSet { timersDirty = true } }

    private var suspicions: [Int32: SuspicionTimer] = [:] { didSet { timersDirty = true } }
    /// The earliest probe, relay or suspicion deadline, recomputed only after those change (a
    /// 10,000-member node can hold hundreds of suspicions while a cluster forms, and every input
    /// asks for the next wake-up).
    private var timersNext: Instant = .distantFuture
    private var timersDirty = false
    /// Probes that ended without an ack, kept a while so a late ack still teaches us the RTT.
    private var lateProbes: [UInt64: (target: NodeID, sentAt: Instant)] = [:]
    /// Per-member RTT, microseconds: smoothed and last sample, from acks (late ones too), for the
    /// 1,024 members measured most recently (a full probe round at N = 1,000; unbounded, a
    /// 10,000-member node held ~2,000 after 10 minutes, 0.5 GB across a simulated cluster).
    private var rtts = RecentMap<Int32, RTT>(limit: 1_024)
    private struct RTT: Sendable { var smoothed: UInt32; var last: UInt32 }
    /// Vivaldi coordinates of the 64 members that acked us most recently (each ~150 bytes; 256 of
    /// them per node were ~0.4 GB of a simulated 10,000-node cluster).
    private var coordinates = RecentMap<Int32, Coordinate>(limit: 64)
    private var broadcasts: BroadcastQueue
    /// Lifeguard's local health multiplier (0...settings.lifeguard.maxMultiplier).
    public private(set) var localHealth = 0

    /// How often expired bookkeeping (late probes, held messages, old dials, long-dead members) is
    /// dropped. Nothing waits on it: each item is also checked where it is used.
    static let reapInterval: Duration = .seconds(5)

    private var started = false
    private var leaving = false
    private var nextProbeAt: Instant = .distantFuture
    private var nextGossipAt: Instant = .distantFuture
    private var nextPushPullAt: Instant = .distantFuture
    /// False until the first periodic push-pull has been placed at a random point of the interval
    /// scaled to the cluster as this member then sees it (see `tickBody`).
    private var pushPullStaggered = false
    private var nextReconnectAt: Instant = .distantFuture
    private var nextReapAt: Instant = .distantFuture

    private var links = LinkSet()
    /// What `warm` read (never used: it only keeps those reads in the program).
    private var warmed: UInt32 = 0
    private var queued: [NodeID: [(message: PeerMessage, until: Instant)]] = [:]
    private var lastDial: [PeerAddress: Instant] = [:]
    private var joinDials: Set<PeerAddress> = []
    /// Join candidates (seeds, mDNS finds) still to try in this join attempt, in the order they
    /// will be tried; the one being tried now is `joinTarget` (see `tryNextJoinCandidate`).
    private var joinCandidates: [PeerAddress] = []
    private var joinTarget: PeerAddress?
    /// Seeds this join announces itself to without pulling their state (all but the first tried).
    private var announceTo: Set<PeerAddress> = []
    /// Who answered this join's dials, by the address dialled (a later candidate whose link is up
    /// already, from its announce, is asked over that link; a dial now would be a no-op).
    private var joinPeers: [PeerAddress: NodeID] = [:]
    /// When the candidate being tried counts as failed if no push-pull has completed by then.
    private var joinDeadline: Instant = .distantFuture
    private var pushPullOutstanding: [NodeID: Instant] = [:]
    /// True once a push-pull with some member completed (we have a view of the cluster).
    public private(set) var joined = false

    public private(set) var vivaldi: VivaldiState
    public private(set) var stats = MembershipStats()
    private var changes: [MembershipChange] = []
    /// False for hosts that never read the change log (the simulator): changes are then not
    /// recorded at all instead of recorded and dropped (each change resolves its member's ID and
    /// address; a joiner's push-pull records one per member).
    public var logsChanges = true
    /// The last message refused, and why (for logs and tests).
    public private(set) var lastRefusal: MembershipError?

    /// - Parameters:
    ///   - me: this node's identity (proven to peers by the QUIC link's TLS handshake).
    ///   - address: where others reach this node (advertised in its alive record).
    ///   - generation: a number that grows across restarts of this node (the shell passes, e.g.,
    ///     wall-clock milliseconds at start, or a counter persisted on disk).
    ///   - seeds: addresses or DNS names to join through; dialled at start and while we know no one.
    ///   - random: the core's only source of randomness (seeded in the simulator).
    ///   - directory: where member IDs and addresses are interned; cores hosted in one process (the
    ///     simulator) pass one shared directory, a daemon leaves the default (its own).
    public init(me: NodeID, address: PeerAddress, generation: UInt64, seeds: [PeerAddress] = [],
                settings: MembershipSettings = MembershipSettings(), random: SeededRandom,
                directory: MemberDirectory = MemberDirectory()) {
        self.me = me
        self.directory = directory
        self.myNumber = directory.intern(me) ?? UInt32.max
        self.address = address
        self.settings = settings
        self.version = MemberVersion(generation: generation, incarnation: 0)
        self.seeds = seeds
        self.rng = random
        self.sequence = rng.next() >> 34
        self.vivaldi = VivaldiState(settings: settings.vivaldi)
        self.broadcasts = BroadcastQueue(capacity: min(max(1, settings.gossip.maxQueuedUpdates), BroadcastQueue.maxCapacity))
    }

    // MARK: - Public view

    public func handles(frameType type: UInt64) -> Bool { FrameTypeRange.membership.contains(type) }

    /// Every member this node knows, itself excluded, in any status.
    public var view: [Member] { usedSlots.map { memberAt($0) } }

    public func member(_ node: NodeID) -> Member? { slot(of: node).map { memberAt($0) } }

    /// Members known, in any status (itself excluded).
    public var memberCount: Int { table.count }

    /// A digest of who this node believes is alive, itself included, independent of order: two nodes
    /// with the same alive set have the same digest (word-wise sums of the IDs and the count; O(1)).
    public var aliveSetDigest: SIMD4<UInt64> {
        var d = aliveSum
        d[0] &+= UInt64(liveCount + 1) &* 0x9e37_79b9_7f4a_7c15
        return d
    }

    /// Members currently alive or suspect (the cluster size estimate minus one).
    public var liveMemberCount: Int { liveCount }

    /// How many members this node holds in each status (indexed by `MemberStatus.rawValue`), and
    /// how many suspicion timers run. A scan of the table: for sampling, not for every input.
    public var statusCounts: (byStatus: [Int], suspicionTimers: Int) {
        var counts = [0, 0, 0, 0]
        for st in table.statuses where Int(st) < counts.count { counts[Int(st)] += 1 }
        return (counts, suspicions.count)
    }

    /// Estimated cluster size: live members plus this node.
    public var clusterSize: Int { liveCount + 1 }

    /// Changes since the last call (bounded: the oldest are dropped if no one collects them).
    public mutating func takeChanges() -> [MembershipChange] {
        defer { clearChanges() }
        return changes
    }

    /// Empties the change log, keeping a small buffer but not a large one: a join's push-pull logs
    /// a change per member (10,000 × ~80 bytes), and 10,000 hosted cores that each kept that
    /// capacity held ~8 GB of empty buffers (most of the simulator's memory at 10,000 nodes).
    private mutating func clearChanges() {
        if changes.capacity > 256 { changes = [] } else { changes.removeAll(keepingCapacity: true) }
    }

    /// Live members ordered by estimated RTT from here (Vivaldi), nearest first.
    public func nearestMembers(_ count: Int) -> [Member] {
        let mine = vivaldi.coordinate
        return coordinates.values.keys.sorted().filter { table.status($0) == .alive }.map { memberAt($0) }
            .filter { $0.coordinate != nil }
            .sorted { mine.distance(to: $0.coordinate!) < mine.distance(to: $1.coordinate!) }
            .prefix(count).map { $0 }
    }

    /// Adds join candidates (mDNS finds, late-configured seeds). Dialled now if we know no one.
    public mutating func addSeeds(_ more: [PeerAddress], now: Instant) -> Outbox {
        var out = Outbox()
        for a in more where !seeds.contains(a) && a != address {
            seeds.append(a)
            if liveCount == 0 && started && !leaving {
                joinCandidates.append(a)
                if joinTarget == nil { tryNextJoinCandidate(now: now, &out) }
            }
        }
        scheduleWake(&out)
        return out
    }

    // MARK: - MeshProtocolCore

    public mutating func start(now: Instant) -> Outbox {
        var out = Outbox()
        started = true
        leaving = false
        if epoch == nil {
            epoch = now
            aliveSum &+= Self.words(me)
        }
        let jitter = Duration.nanoseconds(Int64(rng.next() % UInt64(max(1, settings.probe.interval.nanosecondsClamped))))
        nextProbeAt = now + jitter
        nextGossipAt = now + settings.gossip.interval
        nextPushPullAt = now + stagger(pushPullInterval())
        pushPullStaggered = false
        nextReconnectAt = now + settings.reconnect.interval
        nextReapAt = now + Self.reapInterval
        broadcasts.enqueue(BroadcastQueue.me)
        beginJoin(now: now, &out)
        scheduleWake(&out)
        return out
    }

    public mutating func receive(_ message: PeerMessage, now: Instant) -> Outbox {
        do {
            return try handle(message, now: now)
        } catch {
            var out = Outbox()
            scheduleWake(&out)
            return out
        }
    }

    /// Like `receive`, but says why a message was refused.
    public mutating func handle(_ message: PeerMessage, now: Instant) throws(MembershipError) -> Outbox {
        var out = Outbox()
        do {
            try handleBody(message, now: now, &out)
        } catch {
            stats.messagesRefused[error.code, default: 0] += 1
            lastRefusal = error
            throw error
        }
        scheduleWake(&out)
        return out
    }

    /// Acks a ping to us, our own record first if `accused`. A ping that came over the stream (the
    /// prober's fallback) is answered the same way (`reliable`).
    private mutating func answer(_ ping: MembershipMessage.Ping, from: NodeID, accused: Bool, reliable: Bool, now: Instant, _ out: inout Outbox) {
        var ack = MembershipMessage.Ack()
        ack.sequence = ping.sequence
        ack.responder = me
        ack.coordinate = vivaldi.coordinate
        let reply = frame(MembershipMessage.FrameType.ack, headBound: ack.headBound, first: accused ? BroadcastQueue.me : nil) { ack.encodeHead(to: &$0) }
        send(reply.frame, to: from, reliable: reliable, now: now, &out)
    }

    private mutating func handleBody(_ message: PeerMessage, now: Instant, _ out: inout Outbox) throws(MembershipError) {
        guard started else { return }
        // The updates stay in the message's bytes, checked: most are records we already hold, and
        // those are recognised without being decoded (`fresh`).
        let (decoded, updates) = try MembershipMessage.decodeLeavingUpdates(message.frame, maxPushPullBytes: settings.limits.maxPushPullBytes)
        let from = message.peer
        if from == me { return }
        // A message arrived, so the shell has an authenticated link to its sender.
        let fromNumber = directory.existing(from)
        links.insert(from, number: fromNumber, nodes: directory.count)
        if case .pushPull(let pp) = decoded {
            try onPushPull(pp, members: updates, from: from, now: now, &out)
            return
        }
        // Everything but a join request must come from a member: a node outside the cluster cannot
        // inject members or suspicions, whatever it says. One exception: a ping to us from a node
        // we do not know yet is answered (and its own alive record, if it carries one, applied as
        // a join's would be), nothing else in it is. A node that joined a moment ago probes members
        // its alive has not reached yet; refused, its probe failed on a live member and the
        // suspicion went to every member (at 6,000 joining members: ~40 a second, each answered
        // by thousands of last-chance probes; docs/benchmarks.md, sim, session 8). The sender is
        // authenticated by its link, and an ack tells it nothing a member would not.
        guard let sender = fromNumber.flatMap({ table.slot(ofNode: $0) }) else {
            guard case .ping(let ping) = decoded, ping.target == me,
                  settings.allowedNodes.map({ $0.contains(from) }) ?? true else { throw .notAMember(from) }
            let own = updates.filter { $0.node == from && $0.status == .alive }
            if !own.isEmpty { apply(own[...], in: updates.bytes, now: now) }
            stats.strangerPingsAnswered += 1
            answer(ping, from: from, accused: false, reliable: !message.unreliable, now: now, &out)
            return
        }
        if table.status(sender) == .left {
            // A member we hold as left may still speak for itself, and only that: a newer alive
            // of its own refutes a `left` another member forged (records are not signed; see
            // docs/protocol.md). A node that really left never sends one in the same generation.
            let own = updates.filter { $0.node == from && $0.status == .alive }
            guard !own.isEmpty else { throw .notAMember(from) }
            apply(own[...], in: updates.bytes, now: now)
            return
        }
        switch decoded {
        case .ping(let ping):
            apply(updates.records[...], in: updates.bytes, now: now)
            guard ping.target == me else { return }
            // The prober suspects us (Lifeguard's buddy system put the suspicion in its ping): our
            // refutation goes first in the answer.
            let accused = updates.contains { $0.node == me && $0.status != .alive }
            if accused { broadcasts.enqueue(BroadcastQueue.me) }
            answer(ping, from: from, accused: accused, reliable: !message.unreliable, now: now, &out)
        case .pingReq(let req):
            apply(updates.records[...], in: updates.bytes, now: now)
            if req.target == me {
                var ack = MembershipMessage.Ack()
                ack.sequence = req.sequence
                ack.responder = me
                send(.ack(ack), to: from, reliable: !message.unreliable, now: now, &out)
                return
            }
            guard let target = slot(of: req.target), isLive(target), relays.count < 4_096 else { return } // bounded: each relay lives at most a few seconds
            sequence &+= 1
            let timeout = scaled(settings.probe.timeout)
            // Late acks are still relayed while the requester may be waiting: a last-chance probe
            // waits `probe.lastChanceWait`, and a slow target's round trip can be longer than our
            // own probe timeout (relays that gave up after twice the timeout, 600 ms, let slowed
            // members with a 600 ms RTT be declared dead at N = 1,000 under 10% loss).
            relays[sequence] = Relay(requester: from, requesterSequence: req.sequence, target: req.target,
                                     nackAt: now + .nanoseconds(Int64(Double(timeout.nanosecondsClamped) * settings.probe.nackFraction)),
                                     expiresAt: now + max(timeout * 2, expectedRTTWait(req.target) * 2, settings.probe.lastChanceWait))
            var ping = MembershipMessage.Ping()
            ping.sequence = sequence
            ping.target = req.target
            send(frame(MembershipMessage.FrameType.ping) { ping.encodeHead(to: &$0) }.frame, to: req.target, now: now, &out)
        case .ack(let ack):
            apply(updates.records[...], in: updates.bytes, now: now)
            if let probe = probes[ack.sequence] {
                // Only the target itself, or a member we asked to probe it, may answer for it.
                guard ack.responder == probe.target, from == probe.target || probe.helpers.contains(from) else { return }
                probes[ack.sequence] = nil
                adjustHealth(-1)
                if probe.final, let t = slot(of: probe.target), table.status(t) == .suspect, version(at: t) == probe.version,
                   var timer = suspicions[t], timer.finalProbe {
                    // Alive after all, and not yet refuted: give it a fresh suspicion period.
                    timer = SuspicionTimer(start: now, k: timer.k, min: timer.min, max: timer.max, firstSuspector: me)
                    timer.probedOnce = true
                    suspicions[t] = timer
                }
                if from == probe.target { observeRTT(now - probe.sentAt, for: from) }
                if from == probe.target, let c = ack.coordinate {
                    vivaldi.observe(rtt: now - probe.sentAt, to: from, coordinate: c, rng: &rng)
                    if let f = slot(of: from) { setCoordinate(c, at: f) }
                }
            } else if let late = lateProbes[ack.sequence], late.target == from, ack.responder == from {
                lateProbes[ack.sequence] = nil
                observeRTT(now - late.sentAt, for: from)
            } else if let relay = relays[ack.sequence], ack.responder == relay.target, from == relay.target {
                relays[ack.sequence] = nil
                var fwd = MembershipMessage.Ack()
                fwd.sequence = relay.requesterSequence
                fwd.responder = relay.target
                send(.ack(fwd), to: relay.requester, now: now, &out)
            }
        case .nack(let nack):
            if var probe = probes[nack.sequence] { probe.nacks += 1; probes[nack.sequence] = probe }
        case .gossip:
            apply(updates.records[...], in: updates.bytes, now: now)
        case .pushPull:
            break // handled above
        }

        return
    }

    public mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox {
        withOutbox { $0.linkBody(event, now: now, &$1) }
    }

    private mutating func linkBody(_ event: LinkEvent, now: Instant, _ out: inout Outbox) {
        switch event {
        case .up(let peer, let addr, let rtt):
            guard peer != me else { return }
            let number = directory.existing(peer)
            links.insert(peer, number: number, nodes: directory.count)
            // The handshake's RTT is the first we know of a member we never probed (most members:
            // each is probed by a given member once per N probe periods). Without it a probe of a
            // member 220 ms away had 300 ms for its ack and 200 ms for the fallback ping's, so one
            // lost datagram made a live member suspect to every member (docs/benchmarks.md). Kept
            // only where it lengthens a probe's wait (twice the RTT past the probe timeout): on a
            // LAN no link adds an entry, and a simulated 10,000-node cluster holds no more of them
            // than its long paths need.
            if let rtt, rtt * 2 > settings.probe.timeout, let s = number.flatMap({ table.slot(ofNode: $0) }), rtts[s] == nil {
                observeRTT(rtt, slot: s)
            }
            // (Emptiness checked first: most links come up with nothing queued and no join dial
            // outstanding, and hashing an ID or an address for nothing was a tenth of this.)
            if !queued.isEmpty, let pending = queued.removeValue(forKey: peer) {
                for item in pending where item.until >= now { emit(item.message, &out) }
                if !probes.isEmpty { startProbeClocks(of: peer, now: now) }
            }
            // A DNS-name seed may come up under its resolved address: while a join dial is
            // outstanding, any link to a node we do not count as live also gets the sync.
            let wasJoinDial = !joinDials.isEmpty
                && (joinDials.remove(addr) != nil || (!joinDials.isEmpty && !(slot(of: peer).map { self.isLive($0) } ?? false)))
            if wasJoinDial, joinTarget != nil { joinPeers[addr] = peer }
            if wasJoinDial, started, !leaving, addr != joinTarget, announceTo.remove(addr) != nil {
                // A seed we do not pull from: it learns of us first-hand, and answers nothing.
                send(fullState(kind: .announce), to: peer, now: now, &out)
            } else if wasJoinDial, started, !leaving {
                // A seed (or mDNS find, or a dead member we reconnect to) proved its identity: sync.
                sendPushPull(to: peer, now: now, &out)
                // The candidate being tried gets the push-pull's own time to answer.
                if addr == joinTarget { joinDeadline = now + settings.pushPull.timeout }
            }
        case .down(let peer):
            links.remove(peer, number: directory.existing(peer))
        case .dialFailed(let addr):
            joinDials.remove(addr)
            if addr == joinTarget {
                tryNextJoinCandidate(now: now, &out)
            } else if announceTo.remove(addr) != nil {
                // A seed we only announced to is down: do not wait on it later in this join.
                joinCandidates.removeAll { $0 == addr }
            }
            for node in queued.keys.sorted() where address(of: node) == addr { queued[node] = nil }
        }
        return
    }

    public mutating func tick(now: Instant) -> Outbox {
        withOutbox { $0.tickBody(now: now, &$1) }
    }

    private mutating func tickBody(now: Instant, _ out: inout Outbox) {
        guard started else { return }
        // Probes, relays and suspicions act only once one of their deadlines has come, and the
        // earliest of those is kept (`timersNext`): before it, the three scans below would find
        // nothing to do. (Each scan sorts its keys and copies every timer; while 10,000 nodes join
        // a member holds hundreds of suspicions, and most ticks are for probes and gossip.)
        refreshTimers()
        if now >= timersNext { runTimers(now: now, &out) }
        if now >= nextProbeAt {
            if !leaving { probeNext(now: now, &out) }
            nextProbeAt = now + scaled(settings.probe.interval)
        }
        if now >= nextGossipAt && !broadcasts.isEmpty {
            gossipRound(now: now, &out)
            nextGossipAt = now + settings.gossip.interval
        }
        if now >= nextPushPullAt && !pushPullStaggered {
            // Members that start together (a cluster booted at once, a mass restart, a simulated
            // cluster formed in one step) would otherwise sync together, one interval apart for
            // ever: at 10,000 members that is 10^4 full states of 10^4 records in the same second.
            // memberlist staggers its first push-pull over the interval; here the interval is the
            // one scaled to the cluster this member knows by now, not the size-1 one at start.
            pushPullStaggered = true
            nextPushPullAt = now + stagger(pushPullInterval())
        }
        if now >= nextPushPullAt {
            if !leaving, let peer = randomMembers(1, excluding: nil, where: { st, _ in st == .alive }).first {
                sendPushPull(to: peer, now: now, &out)
            }
            nextPushPullAt = now + pushPullInterval()
        }
        if now >= joinDeadline {
            // The candidate being tried did not answer in time (no link, or no push-pull response).
            if let t = joinTarget { joinDials.remove(t) }
            tryNextJoinCandidate(now: now, &out)
        }
        if now >= nextReconnectAt {
            if !leaving { reconnect(now: now, &out) }
            nextReconnectAt = now + settings.reconnect.interval
        }
        if now >= nextReapAt {
            reap(now: now)
            nextReapAt = now + Self.reapInterval
        }
        return
    }

    /// The probe, relay and suspicion deadlines that have come (`tickBody`).
    private mutating func runTimers(now: Instant, _ out: inout Outbox) {
        // Probe phases.
        for seq in probes.keys.sorted() {
            guard let probe = probes[seq] else { continue }
            if !probe.indirectSent && now >= probe.timeoutAt {
                probes[seq]?.indirectSent = true
                let helpers = randomMembers(settings.probe.indirectChecks, excluding: probe.target) { st, _ in st == .alive }
                probes[seq]?.expectedNacks = helpers.count
                probes[seq]?.helpers = helpers
                for h in helpers {
                    var req = MembershipMessage.PingReq()
                    req.sequence = seq
                    req.target = probe.target
                    send(frame(MembershipMessage.FrameType.pingReq) { req.encodeHead(to: &$0) }.frame, to: h, now: now, &out)
                    stats.indirectProbesSent += 1
                }
                if settings.probe.streamFallback && !probe.final {
                    // memberlist's TCP fallback ping: the same ping again over the link's reliable
                    // stream, which loss only delays, so a live member on a lossy path still answers.
                    let ping = makePing(seq: seq, target: probe.target, slot: slot(of: probe.target))
                    send(ping, to: probe.target, reliable: true, now: now, &out)
                    stats.fallbackProbesSent += 1
                }
            }
            if now >= probe.periodEndAt {
                probes[seq] = nil
                probeFailed(probe, seq: seq, now: now, &out)
            }
        }
        // Relays: nack the requester if the target has not answered (Lifeguard).
        for seq in relays.keys.sorted() {
            guard let relay = relays[seq] else { continue }
            if !relay.nacked && now >= relay.nackAt {
                relays[seq]?.nacked = true
                var nack = MembershipMessage.Nack()
                nack.sequence = relay.requesterSequence
                send(.nack(nack), to: relay.requester, now: now, &out)
            }
            if now >= relay.expiresAt { relays[seq] = nil }
        }
        // Suspicions that ran out.
        // The last-chance probe starts one probe period before the deadline, so that its verdict
        // lands on the deadline itself.
        let lead = lastChanceLead
        for slot in suspicions.keys.sorted() {
            guard let timer = suspicions[slot] else { continue }
            if timer.finalFailed {
                // The last chance went unanswered; the verdict was held for the deadline.
                guard now >= timer.deadline else { continue }
                suspicions[slot] = nil
                guard table.status(slot) == .suspect else { continue }
                declareDead(slot, now: now)
                continue
            }
            guard !timer.finalProbe, now >= timer.lastChanceAt(lead: lead) else { continue }
            guard table.status(slot) == .suspect else { suspicions[slot] = nil; continue }
            // Before declaring a member dead, probe it once more, carrying the suspicion: if it
            // answers, its refutation comes back in the ack. This covers the (small, per-update)
            // chance that λ·log N retransmissions never reached us (a GQUIC addition to Lifeguard).
            suspicions[slot]?.finalProbe = true
            startProbe(slot, final: true, now: now, &out)
        }
    }

    /// Recomputes `timersNext` if probes, relays, suspicions or local health changed since.
    private mutating func refreshTimers() {
        guard timersDirty else { return }
        var t = Instant.distantFuture
        for p in probes.values { t = min(t, p.indirectSent ? p.periodEndAt : p.timeoutAt) }
        // (A relay also expires un-nacked if a setting puts its nack after its expiry.)
        for r in relays.values { t = min(t, r.nacked ? r.expiresAt : min(r.nackAt, r.expiresAt)) }
        let lead = lastChanceLead
        for s in suspicions.values {
            if s.finalFailed { t = min(t, s.deadline) } else if !s.finalProbe { t = min(t, s.lastChanceAt(lead: lead)) }
        }
        timersNext = t
        timersDirty = false
    }

    /// Leaves the cluster gracefully: announces `left` with a new incarnation to several members at
    /// once and keeps gossiping it; the shell should keep the node running for a few gossip rounds.
    public mutating func leave(now: Instant) -> Outbox {
        withOutbox { $0.leaveBody(now: now, &$1) }
    }

    private mutating func leaveBody(now: Instant, _ out: inout Outbox) {
        guard started, !leaving else { return }
        leaving = true
        version.incarnation += 1
        let update = MemberUpdate(node: me, address: address, version: version, status: .left, from: me)
        broadcasts.enqueue(BroadcastQueue.me, from: myNumber &+ 1)
        var g = MembershipMessage.Gossip()
        g.updates = [update]
        for peer in randomMembers(max(settings.gossip.fanout * 2, 8), excluding: nil, where: { st, _ in st == .alive }) {
            send(.gossip(g), to: peer, now: now, &out)
        }
        probes.removeAll()
        return
    }

    // MARK: - Probing

    private mutating func probeNext(now: Instant, _ out: inout Outbox) {
        var checked = 0
        var target: Int32?
        while checked < probeOrder.count + 1 {
            if probeCursor >= probeOrder.count {
                // End of a round: drop gone members and reshuffle (SWIM's round-robin order).
                probeOrder = probeOrder.filter { isLive($0) }
                probeOrder.shuffle(using: &rng)
                probeCursor = 0
                if probeOrder.isEmpty { return }
            }
            let candidate = probeOrder[probeCursor]
            probeCursor += 1
            checked += 1
            if isLive(candidate) { target = candidate; break }
        }
        guard let t = target else { return }
        startProbe(t, final: false, now: now, &out)
    }

    private mutating func startProbe(_ slot: Int32, final: Bool, now: Instant, _ out: inout Outbox) {
        let t = id(at: slot)
        sequence &+= 1
        let seq = sequence
        let (timeoutAt, periodEndAt) = probeDeadlines(slot, final: final, from: now)
        probes[seq] = PendingProbe(target: t, sentAt: now, timeoutAt: timeoutAt, periodEndAt: periodEndAt,
                                   final: final, version: version(at: slot))
        if !isLinked(t) { probes[seq]?.awaitingLink = true }
        send(makePing(seq: seq, target: t, slot: slot), to: t, now: now, &out)
        stats.probesSent += 1
        if final && settings.probe.streamFallback {
            // The verdict on a suspect: the stream ping goes at once, not only after the timeout.
            var ping = MembershipMessage.Ping()
            ping.sequence = seq
            ping.target = t
            send(.ping(ping), to: t, reliable: true, now: now, &out)
            stats.fallbackProbesSent += 1
        }
    }

    /// The link to `peer` came up and the pings held for it left: a probe of `peer` that waited for
    /// the dial counts its time from now, as if the link had been there. A probe's timeouts are
    /// round trips on a link, and a dial costs one more (the QUIC handshake): between regions
    /// 220 ms apart a probe that needed a dial could not be answered within the 300 ms timeout,
    /// nor its stream fallback within the indirect phase, and a live member was suspected by
    /// every member (at 3,000 members, ~2 a second after the join). A crashed target never
    /// completes the handshake, so its probe keeps its schedule and detection is not slowed. Only
    /// a probe still in its direct phase restarts (a later link-up would find its ping expired).
    private mutating func startProbeClocks(of peer: NodeID, now: Instant) {
        for seq in probes.keys.sorted() {
            guard let p = probes[seq], p.awaitingLink, p.target == peer else { continue }
            probes[seq]!.awaitingLink = false
            // (A ping held longer than messages are held was dropped, not sent: no restart.)
            guard !p.indirectSent, now > p.sentAt, now - p.sentAt <= Self.holdTime(settings),
                  let s = slot(of: peer) else { continue }
            let (timeoutAt, periodEndAt) = probeDeadlines(s, final: p.final, from: now)
            probes[seq]!.sentAt = now
            probes[seq]!.timeoutAt = timeoutAt
            probes[seq]!.periodEndAt = periodEndAt
        }
    }

    /// When a probe of the member at `slot` whose ping leaves at `now` moves to its indirect phase,
    /// and when it fails. A member that answers slowly gets a longer wait, up to
    /// `probe.maxAdaptiveWait`: late acks (or the handshake) taught us its RTT. A crashed member's
    /// RTT does not grow, so detection is not slowed. The indirect phase gets the same allowance:
    /// its paths also run through that member.
    private func probeDeadlines(_ slot: Int32, final: Bool, from now: Instant) -> (timeoutAt: Instant, periodEndAt: Instant) {
        let timeout = scaled(settings.probe.timeout)
        let indirect = scaled(settings.probe.indirectWait)
        let expected = expectedRTTWait(slot)
        let direct = max(timeout, expected)
        return (now + direct, now + max(direct + max(indirect, expected), final ? lastChanceLead : .zero))
    }

    /// A ping of `target` (at `slot`, if it is a member), its piggyback led by its own suspicion.
    private mutating func makePing(seq: UInt64, target: NodeID, slot: Int32?) -> Frame {
        var ping = MembershipMessage.Ping()
        ping.sequence = seq
        ping.target = target
        return frame(MembershipMessage.FrameType.ping, first: slot.flatMap { table.status($0) == .suspect ? $0 : nil }) { ping.encodeHead(to: &$0) }.frame
    }

    /// This node's verdict on a suspect whose suspicion ran out: dead, gossiped as such.
    private mutating func declareDead(_ slot: Int32, now: Instant) {
        stats.membersDeclaredDead += 1
        let u = update(at: slot, status: .dead, from: me)
        applyDead(u, held: held(u.node), now: now)
    }

    /// How long before a suspicion's deadline its last-chance probe starts, and so how long that
    /// probe may wait for an ack: its verdict lands on the deadline itself.
    private var lastChanceLead: Duration { max(scaled(settings.probe.interval), settings.probe.lastChanceWait) }

    /// Twice the member's recent RTT, capped by `probe.maxAdaptiveWait`; zero if never measured.
    private func expectedRTTWait(_ slot: Int32) -> Duration {
        guard let r = rtts[slot] else { return .zero }
        return min(settings.probe.maxAdaptiveWait, .microseconds(Int64(max(r.smoothed, r.last)) * 2))
    }

    private func expectedRTTWait(_ node: NodeID) -> Duration {
        slot(of: node).map { expectedRTTWait($0) } ?? .zero
    }

    /// The larger of the member's smoothed and last RTT, if it ever answered.
    private func recentRTT(_ slot: Int32) -> Duration? {
        rtts[slot].map { .microseconds(Int64(max($0.smoothed, $0.last))) }
    }

    private mutating func observeRTT(_ sample: Duration, for node: NodeID) {
        guard let slot = slot(of: node) else { return }
        observeRTT(sample, slot: slot)
    }

    private mutating func observeRTT(_ sample: Duration, slot: Int32) {
        guard sample >= .zero else { return }
        let us = UInt32(clamping: sample.nanosecondsClamped / 1_000)
        if let r = rtts[slot] {
            rtts[slot] = RTT(smoothed: UInt32((UInt64(r.smoothed) * 7 + UInt64(us)) / 8), last: us)
        } else {
            rtts[slot] = RTT(smoothed: us, last: us)
        }
    }

    private mutating func probeFailed(_ probe: PendingProbe, seq: UInt64, now: Instant, _ out: inout Outbox) {
        stats.probesFailed += 1
        lateProbes[seq] = (probe.target, probe.sentAt)
        // Lifeguard: missing nacks mean *we* may be the slow one; raise our health multiplier.
        if probe.expectedNacks > 0 {
            if probe.nacks < probe.expectedNacks { adjustHealth(probe.expectedNacks - probe.nacks) }
        } else {
            adjustHealth(1)
        }
        guard let ps = slot(of: probe.target), isLive(ps) else { return }
        if probe.final {
            // A member known to answer slowly gets a second last chance (a lost datagram on its
            // long path is likelier than a crash); a member that answered fast gets none, so
            // detection of a crashed node is not slowed.
            // The verdict only concerns the suspicion this probe was started for: a refutation and
            // a new suspicion may have come in meanwhile.
            guard table.status(ps) == .suspect, version(at: ps) == probe.version, suspicions[ps]?.finalProbe == true else { return }
            if var timer = suspicions[ps], timer.finalAttempts < 2,
               let r = recentRTT(ps), r > settings.probe.timeout {
                timer.finalAttempts += 1
                suspicions[ps] = timer
                startProbe(ps, final: true, now: now, &out)
                return
            }
            if var timer = suspicions[ps], now < timer.deadline {
                // Early (the deadline is still waiting for confirmations): hold the verdict.
                timer.finalProbe = false
                timer.finalFailed = true
                suspicions[ps] = timer
                return
            }
            suspicions[ps] = nil
            declareDead(ps, now: now)
            return
        }
        let u = update(at: ps, status: .suspect, from: me)
        applySuspect(u, held: held(u.node), now: now)
    }

    private mutating func adjustHealth(_ delta: Int) {
        timersDirty = true // the last-chance lead scales with local health
        localHealth = min(max(0, localHealth + delta), settings.lifeguard.maxMultiplier)
    }

    private func scaled(_ d: Duration) -> Duration { d * (1 + localHealth) }

    // MARK: - Member table access

    @inline(__always) private static func words(_ id: NodeID) -> SIMD4<UInt64> {
        withUnsafeBytes(of: id) { raw in
            SIMD4(raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                  raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
        }
    }

    private func isLinked(_ peer: NodeID) -> Bool { links.contains(peer, number: directory.existing(peer)) }

    /// Ends a suspicion if one runs. (Assigning nil to an absent key still runs `suspicions`'
    /// `didSet`, and the next wake-up then scans every running suspicion: while 10,000 nodes join,
    /// hundreds per member, once per alive record received — 8% of a simulation's CPU.)
    @inline(__always) private mutating func dropSuspicion(_ s: Int32) {
        if suspicions[s] != nil { suspicions[s] = nil }
    }

    private func slot(of node: NodeID) -> Int32? {
        directory.existing(node).flatMap { table.slot(ofNode: $0) }
    }

    /// The member `node` as we hold it (its slot, endpoint and version), or nil if we hold none:
    /// one directory lock for what `slot(of:)` and `version(at:)` take two for.
    @inline(__always) private func held(_ node: NodeID) -> Held? {
        guard let (s, e) = directory.member(node, in: table) else { return nil }
        return Held(slot: s, endpoint: e, version: MemberVersion(generation: e.generation, incarnation: table.incarnation(s)))
    }

    @inline(__always) private func isLive(_ slot: Int32) -> Bool {
        let s = table.statuses[Int(slot)]
        return s == MemberStatus.alive.rawValue || s == MemberStatus.suspect.rawValue
    }

    private var usedSlots: [Int32] { (0..<Int32(table.capacity)).filter { table.isUsed($0) } }

    private func id(at slot: Int32) -> NodeID { directory.id(directory.endpoint(table.endpoint(slot)).node) }

    private func version(at slot: Int32) -> MemberVersion {
        MemberVersion(generation: directory.endpoint(table.endpoint(slot)).generation, incarnation: table.incarnation(slot))
    }

    private func address(of node: NodeID) -> PeerAddress? {
        slot(of: node).map { directory.endpoint(table.endpoint($0)).address }
    }

    private func instant(_ ds: UInt32) -> Instant { (epoch ?? .zero) + .milliseconds(Int64(ds) * 100) }

    private func deciseconds(_ now: Instant) -> UInt32 {
        guard let e = epoch, now > e else { return 0 }
        return UInt32(clamping: (now - e).nanosecondsClamped / 100_000_000)
    }

    private func memberAt(_ slot: Int32) -> Member {
        let (node, e) = directory.resolve(table.endpoint(slot))
        return Member(node: node, address: e.address,
                      version: MemberVersion(generation: e.generation, incarnation: table.incarnation(slot)),
                      status: table.status(slot) ?? .dead, since: instant(table.since(slot)), coordinate: coordinates[slot])
    }

    /// The member's current record as an update.
    private func update(at slot: Int32, status: MemberStatus? = nil, from: NodeID? = nil) -> MemberUpdate {
        if slot == BroadcastQueue.me { var u = selfUpdate; u.from = from; return u }
        let (node, e) = directory.resolve(table.endpoint(slot))
        return MemberUpdate(node: node, address: e.address,
                            version: MemberVersion(generation: e.generation, incarnation: table.incarnation(slot)),
                            status: status ?? table.status(slot) ?? .dead, from: from)
    }

    private mutating func setCoordinate(_ c: Coordinate, at slot: Int32) { coordinates[slot] = c }

    /// The endpoint number of (node, generation, address); nil if the directory is full.
    private func endpoint(_ node: UInt32, _ u: MemberUpdate) -> UInt32? {
        directory.intern(MemberDirectory.Endpoint(node: node, generation: u.version.generation, address: u.address))
    }

    // MARK: - Updates

    private var selfUpdate: MemberUpdate {
        MemberUpdate(node: me, address: address, version: version, status: leaving ? .left : .alive, from: nil)
    }

    /// Applies received updates (`bytes`: the message they were read from), at most
    /// `limits.maxUpdatesPerMessage` of them.
    private mutating func apply(_ updates: ArraySlice<RawUpdate>, in bytes: [UInt8], now: Instant) {
        let all = updates.prefix(settings.limits.maxUpdatesPerMessage)
        var at = all.startIndex
        while at < all.endIndex {
            let chunk = all[at..<min(at + Self.warmChunk, all.endIndex)]
            warm(chunk)
            for raw in chunk {
                guard let (u, h) = fresh(raw, in: bytes) else { continue }
                switch u.status {
                case .alive: applyAlive(u, held: h, now: now)
                case .suspect: applySuspect(u, held: h, now: now)
                case .dead, .left: applyDead(u, held: h, now: now)
                }
            }
            at = chunk.endIndex
        }
    }

    /// How many received records `warm` reads ahead of their checks.
    private static let warmChunk = 16

    /// Reads what `fresh` will look up for each record — the member's directory number, its slot
    /// and its table record, all cache misses while thousands of cores take turns — without
    /// acting on it: one record's loads do not wait for another's, so the processor overlaps the
    /// misses of the whole chunk instead of waiting for each record's in turn. Changes nothing
    /// but `warmed` (kept so the reads are not optimised away).
    @inline(__always) private mutating func warm(_ records: ArraySlice<RawUpdate>) {
        warmed &+= directory.touch(records, in: table)
    }

    /// A member as a core holds it, looked up once per received record (`held(_:)`) and handed
    /// on to `applyAlive`, `applySuspect` and `applyDead`, which used to look it up again.
    private struct Held {
        var slot: Int32
        var endpoint: MemberDirectory.Endpoint
        var version: MemberVersion
    }

    /// The received update `raw` decoded, with the member as we hold it (nil if we hold none, or
    /// if the record is about us: the apply functions handle that first), or nil if it is about
    /// another member that we hold at the same version or a newer one (the same or an older one,
    /// for a record that says alive): then `applyAlive`, `applySuspect` and `applyDead` would
    /// return at their version check, having changed nothing, so the record is dropped before its
    /// address is read. Counted in `stats`.
    private mutating func fresh(_ raw: RawUpdate, in bytes: [UInt8]) -> (MemberUpdate, Held?)? {
        stats.updatesReceived += 1
        if raw.node != me, let h = held(raw.node) {
            if raw.status == .alive ? raw.version <= h.version : raw.version < h.version {
                stats.updatesAlreadyHeld += 1
                return nil
            }
            return (raw.update(in: bytes), h)
        }
        return (raw.update(in: bytes), nil)
    }

    private mutating func refute(_ claimed: MemberVersion) {
        guard !leaving else { return }
        // (Incarnations are varints, at most 2^62 − 1: a claim at the ceiling cannot be outbid and
        // is answered with our current record instead of an unencodable one.)
        if claimed.generation == version.generation && claimed.incarnation >= version.incarnation
            && claimed.incarnation < (1 << 62) - 1 {
            version.incarnation = claimed.incarnation + 1
            stats.refutations += 1
            adjustHealth(1) // Lifeguard: being suspected hints that we are the slow one
        }
        // Older generations (a previous run of this node) are answered by re-sending our alive.
        broadcasts.enqueue(BroadcastQueue.me)
    }

    /// - Parameter held: the member `u` is about as we hold it (`held(u.node)`; nil if we hold
    ///   none or `u` is about us).
    private mutating func applyAlive(_ u: MemberUpdate, held: Held?, now: Instant) {
        if u.node == me {
            if u.version > version || (u.version == version && u.address != address) { refute(u.version) }
            return
        }
        if let h = held {
            let s = h.slot, e = h.endpoint, n = e.node
            guard u.version > h.version else { return }
            let oldStatus = table.status(s)!
            let changed = oldStatus != .alive || e.address != u.address
            if e.generation != u.version.generation || e.address != u.address {
                guard let ep = endpoint(n, u) else { return }
                table.set(s, endpoint: ep)
            }
            table.set(s, incarnation: u.version.incarnation)
            setStatus(s, .alive, now: now, old: oldStatus, node: u.node)
            dropSuspicion(s)
            if oldStatus != .alive && oldStatus != .suspect { addToProbeOrder(s) }
            broadcasts.enqueue(s)
            if changed { record(s, now: now) }
        } else {
            guard table.count < settings.limits.maxMembers, let n = directory.intern(u.node), let ep = endpoint(n, u) else { return }
            let s = table.insert(node: n, endpoint: ep, incarnation: u.version.incarnation, status: .alive, since: deciseconds(now),
                                 nodes: directory.count)
            liveCount += 1
            aliveSum &+= Self.words(u.node)
            addToProbeOrder(s)
            broadcasts.enqueue(s)
            record(s, now: now)
        }
    }

    private mutating func applySuspect(_ u: MemberUpdate, held: Held?, now: Instant) {
        if u.node == me { refute(u.version); return }
        guard let h = held, let status = table.status(h.slot) else { return }
        let s = h.slot, current = h.version
        guard u.version >= current else { return }
        let suspector = u.from ?? me
        let suspectorNumber = directory.intern(suspector).map { $0 &+ 1 } ?? 0
        switch status {
        case .dead, .left:
            return
        case .suspect where u.version == current:
            if suspicions[s] != nil, suspicions[s]!.confirm(suspector) {
                broadcasts.enqueue(s, from: suspectorNumber)
            }
        case .alive, .suspect:
            if u.version != current {
                // Same generation and address as we hold, or a new endpoint.
                if u.version.generation != current.generation {
                    guard let ep = endpoint(h.endpoint.node, MemberUpdate(node: u.node, address: h.endpoint.address, version: u.version, status: .suspect, from: nil)) else { return }
                    table.set(s, endpoint: ep)
                }
                table.set(s, incarnation: u.version.incarnation)
            }
            setStatus(s, .suspect, now: now, old: status, node: u.node)
            stats.suspicionsStarted += 1
            let n = Double(max(1, clusterSize))
            let minTimeout = settings.probe.interval * (settings.suspicion.minMultiplier * max(1, log10(n)))
            let maxTimeout = minTimeout * settings.suspicion.maxMultiplier
            // With too few members there is no one to confirm: use the minimum at once (memberlist).
            let k = clusterSize - 2 < settings.suspicion.expectedConfirmations ? 0 : settings.suspicion.expectedConfirmations
            suspicions[s] = SuspicionTimer(start: now, k: k, min: minTimeout, max: maxTimeout, firstSuspector: suspector)
            broadcasts.enqueue(s, from: suspectorNumber)
            record(s, now: now)
        }
    }

    private mutating func applyDead(_ u: MemberUpdate, held: Held?, now: Instant) {
        if u.node == me {
            if u.status == .left && leaving { return }
            refute(u.version)
            return
        }
        guard let h = held, let status = table.status(h.slot) else { return }
        let s = h.slot, current = h.version
        guard u.version >= current else { return }
        if status == .left { return }
        if status == .dead && !(u.status == .left) { return }
        if u.version != current {
            if u.version.generation != current.generation {
                guard let ep = endpoint(h.endpoint.node, MemberUpdate(node: u.node, address: h.endpoint.address, version: u.version, status: u.status, from: nil)) else { return }
                table.set(s, endpoint: ep)
            }
            table.set(s, incarnation: u.version.incarnation)
        }
        setStatus(s, u.status, now: now, old: status, node: u.node)
        dropSuspicion(s)
        broadcasts.enqueue(s, from: u.from.flatMap { directory.intern($0) }.map { $0 &+ 1 } ?? 0)
        record(s, now: now)
    }

    private mutating func setStatus(_ s: Int32, _ status: MemberStatus, now: Instant, old: MemberStatus, node: NodeID) {
        let wasLive = old == .alive || old == .suspect
        let isLive = status == .alive || status == .suspect
        if wasLive && !isLive { liveCount -= 1 }
        if !wasLive && isLive { liveCount += 1 }
        if old == .alive && status != .alive { aliveSum &-= Self.words(node) }
        if old != .alive && status == .alive { aliveSum &+= Self.words(node) }
        table.set(s, status: status, since: old != status ? deciseconds(now) : table.since(s))
    }

    private mutating func record(_ s: Int32, now: Instant) {
        guard logsChanges else { return }
        if changes.count >= 65_536 { changes.removeFirst(32_768) }
        let u = update(at: s)
        changes.append(MembershipChange(node: u.node, status: u.status, version: u.version, address: u.address, at: now))
    }

    /// Drops every record waiting to be gossiped (this member's own included). For a member that
    /// was handed a cluster's whole, already-agreed state at once — a simulated cluster formed in one
    /// step — where gossiping it would re-announce news every other member already holds.
    public mutating func forgetQueuedGossip() { broadcasts = BroadcastQueue(capacity: broadcasts.capacity) }

    private mutating func addToProbeOrder(_ slot: Int32) {
        // A random place in the current round, as memberlist does it: append, then swap with a
        // random position (O(1); an insert in the middle moved ~20 KB per new member at 10,000
        // members, 1% of a 10,000-node simulation). The member displaced to the end is probed at
        // the end of this round.
        let at = Int(rng.next() % UInt64(probeOrder.count + 1))
        MemberTable.grow(&probeOrder, limit: directory.count)
        probeOrder.append(slot)
        probeOrder.swapAt(at, probeOrder.count - 1)
    }

    /// A ping, ping-req, ack or gossip frame carrying updates from the broadcast queue (`first`, if
    /// queued, leading): `head` writes the message's fields before its updates (at most `headBound`
    /// bytes), then the updates are written straight from the member table — the bytes the
    /// message's `encode` would write, without building a `MemberUpdate` for each. Also returns how
    /// many updates it carries.
    private mutating func frame(_ type: UInt64, headBound: Int = 48, first: Int32? = nil,
                                head: (inout WireWriter) -> Void) -> (frame: Frame, updates: Int) {
        let table = self.table, directory = self.directory
        let myAddress = address
        let picked = broadcasts.take(byteBudget: settings.gossip.maxPiggybackBytes, maxCount: settings.limits.maxUpdatesPerMessage,
                                     limit: retransmitLimit, first: first) { slot, from in
            let host: Int, port: UInt16, generation: UInt64, incarnation: UInt64
            if slot == BroadcastQueue.me {
                host = myAddress.host.utf8.count; port = myAddress.port
                generation = 0; incarnation = 0
            } else {
                let e = directory.endpoint(table.endpoint(slot))
                host = e.address.host.utf8.count; port = e.address.port
                generation = e.generation; incarnation = table.incarnation(slot)
            }
            return 32 + VarInt.encodedLength(UInt64(host)) + host + VarInt.encodedLength(UInt64(port))
                + VarInt.encodedLength(generation) + VarInt.encodedLength(incarnation) + 1 + (from == 0 ? 1 : 33)
        }
        stats.updatesSent += picked.items.count
        // (The sizes count our own record's version as 1 + 1 bytes; the writer grows if it is longer.)
        var w = WireWriter(reservingCapacity: headBound + 8 + picked.bytes)
        head(&w)
        precondition(picked.items.count <= 256, "encoding \(picked.items.count) elements into a field limited to 256")
        w.varint(UInt64(picked.items.count))
        for p in picked.items { writeUpdate(at: p.slot, from: p.from == 0 ? nil : directory.id(p.from - 1), to: &w) }
        return (Frame(type: type, payload: w.bytes), picked.items.count)
    }

    /// Writes the record of the member at `slot` (or ours, for `BroadcastQueue.me`) as an update:
    /// the bytes of `update(at: slot, from: from).encode(to:)`, without building the update.
    private func writeUpdate(at slot: Int32, from: NodeID?, to w: inout WireWriter) {
        if slot == BroadcastQueue.me {
            MemberUpdate.encode(node: me, address: address, version: version, status: leaving ? .left : .alive, from: from, to: &w)
            return
        }
        let (node, e) = directory.resolve(table.endpoint(slot))
        MemberUpdate.encode(node: node, address: e.address, version: MemberVersion(generation: e.generation, incarnation: table.incarnation(slot)),
                            status: table.status(slot) ?? .dead, from: from, to: &w)
    }

    private var retransmitLimit: Int {
        settings.gossip.retransmitMultiplier * max(2, Int(log10(Double(clusterSize + 1)).rounded(.up)))
    }

    private mutating func gossipRound(now: Instant, _ out: inout Outbox) {
        guard !broadcasts.isEmpty else { return }
        let window = UInt32(clamping: settings.gossip.toTheDeadTime.nanosecondsClamped / 100_000_000)
        let nowDs = deciseconds(now)
        let targets = randomMembers(settings.gossip.fanout, excluding: nil) { st, since in
            st == .alive || st == .suspect || (st == .dead && nowDs &- since < window)
        }
        for t in targets {
            let g = frame(MembershipMessage.FrameType.gossip, headBound: 0) { _ in }
            if g.updates == 0 { break }
            send(g.frame, to: t, now: now, &out)
        }
    }

    // MARK: - Push-pull

    /// A uniformly random point in `0..<d` (at least 1 ns).
    private mutating func stagger(_ d: Duration) -> Duration {
        .nanoseconds(Int64(rng.next() % UInt64(max(1, d.nanosecondsClamped))) + 1)
    }

    private func pushPullInterval() -> Duration {
        // memberlist's pushPullScale: one extra period per doubling beyond 32 nodes.
        let n = clusterSize
        guard n > 32 else { return settings.pushPull.interval }
        let mult = Int(log2(Double(n)).rounded(.up)) - 5 + 1
        return settings.pushPull.interval * mult
    }

    /// Our full state as a push-pull frame: our own record, then every member's in slot order (at
    /// most `limits.maxMembers` records in all), written straight from the member table.
    private func fullState(kind: MembershipMessage.PushPull.Kind) -> Frame {
        var pp = MembershipMessage.PushPull()
        pp.clusterID = settings.clusterID
        pp.kind = kind
        let n = min(table.count + 1, max(1, settings.limits.maxMembers))
        precondition(n <= 65_536, "encoding \(n) elements into a field limited to 65536")
        // (~50 bytes a record with an IPv4 address; the writer grows for longer ones.)
        var w = WireWriter(reservingCapacity: 32 + settings.clusterID.utf8.count + 56 * n)
        pp.encodeHead(to: &w)
        w.varint(UInt64(n))
        writeUpdate(at: BroadcastQueue.me, from: nil, to: &w)
        var written = 1
        for s in 0..<Int32(table.capacity) where written < n && table.isUsed(s) {
            writeUpdate(at: s, from: nil, to: &w)
            written += 1
        }
        return Frame(type: MembershipMessage.FrameType.pushPull, payload: w.bytes)
    }

    private mutating func sendPushPull(to peer: NodeID, now: Instant, _ out: inout Outbox) {
        pushPullOutstanding[peer] = now + settings.pushPull.timeout
        send(fullState(kind: .request), to: peer, now: now, &out)
    }

    private mutating func onPushPull(_ pp: MembershipMessage.PushPull, members: RawUpdates, from: NodeID, now: Instant, _ out: inout Outbox) throws(MembershipError) {
        guard pp.clusterID == settings.clusterID else { throw .wrongCluster(pp.clusterID) }
        if pp.isResponse {
            guard let deadline = pushPullOutstanding[from], now <= deadline else { throw .unsolicited(from) }
            pushPullOutstanding[from] = nil
        } else {
            let known = slot(of: from).map { table.status($0) != .left } ?? false
            if !known {
                if let allowed = settings.allowedNodes, !allowed.contains(from) { throw .notAllowed(from) }
                // A joiner must speak for itself: its own alive record has to be in the state.
                guard members.contains(where: { $0.node == from && $0.status == .alive }) else { throw .notAMember(from) }
            }
        }
        merge(members, from: from, now: now)
        // An announce is one joiner's own record; a request or a response is a member's view of
        // the cluster: we hold one now, and the join is done, whichever candidate it came through.
        guard pp.kind != .announce else { return }
        joined = true
        endJoin()
        if pp.kind == .request {
            send(fullState(kind: .response), to: from, now: now, &out)
        }
    }

    private mutating func merge(_ records: RawUpdates, from: NodeID, now: Instant) {
        for (i, raw) in records.records.enumerated() {
            if i % Self.warmChunk == 0 { warm(records.records[i..<min(i + Self.warmChunk, records.count)]) }
            // (A record we hold at least as new would change nothing, whatever its status: see `fresh`.)
            guard let (r, h) = fresh(raw, in: records.bytes) else { continue }
            // The sender's own record is authoritative about itself; an allow-list also gates
            // third parties it introduces.
            if r.node != from, r.node != me, let allowed = settings.allowedNodes, !allowed.contains(r.node), h == nil { continue }
            switch r.status {
            case .alive: applyAlive(r, held: h, now: now)
            // memberlist's mergeState: a remote "dead" becomes a local suspicion we verify ourselves.
            case .suspect, .dead:
                applySuspect(MemberUpdate(node: r.node, address: r.address, version: r.version, status: .suspect, from: from), held: h, now: now)
            case .left: applyDead(r, held: h, now: now)
            }
        }
    }

    // MARK: - Reconnect and reaping

    private mutating func reconnect(now: Instant, _ out: inout Outbox) {
        if liveCount == 0 && joinTarget == nil { beginJoin(now: now, &out) }
        // Serf's reconnect loop: try one random failed member, so partitions heal and restarted
        // nodes that joined through someone else still merge with everyone.
        let deadOnes = randomMembers(1, excluding: nil) { st, _ in st == .dead }
        if let d = deadOnes.first, let a = address(of: d) {
            if isLinked(d) {
                sendPushPull(to: d, now: now, &out)
            } else {
                dialForJoin(a, now: now, &out)
            }
        }
    }

    private mutating func reap(now: Instant) {
        for node in pushPullOutstanding.keys.sorted() where now > pushPullOutstanding[node]! { pushPullOutstanding[node] = nil }
        for seq in lateProbes.keys.sorted() where now - lateProbes[seq]!.sentAt > settings.probe.maxAdaptiveWait * 2 { lateProbes[seq] = nil }
        for node in queued.keys.sorted() {
            let kept = queued[node]!.filter { $0.until >= now }
            queued[node] = kept.isEmpty ? nil : kept
        }
        // A dial older than the re-dial pause is as good as none: keep the map to recent ones.
        for a in lastDial.keys.sorted() where now - lastDial[a]! >= .seconds(2) { lastDial[a] = nil }
        let nowDs = deciseconds(now)
        let deadAfter = UInt32(clamping: settings.reconnect.deadTimeout.nanosecondsClamped / 100_000_000)
        let leftAfter = UInt32(clamping: settings.reconnect.tombstoneTimeout.nanosecondsClamped / 100_000_000)
        var gone: [Int32] = []
        for s in 0..<Int32(table.capacity) {
            let st = table.statuses[Int(s)]
            if st == MemberStatus.dead.rawValue && nowDs &- table.since(s) > deadAfter { gone.append(s) }
            if st == MemberStatus.left.rawValue && nowDs &- table.since(s) > leftAfter { gone.append(s) }
        }
        for s in gone { remove(s) }
    }

    private mutating func remove(_ s: Int32) {
        let e = directory.endpoint(table.endpoint(s))
        let node = directory.id(e.node)
        table.remove(s, node: e.node)
        suspicions[s] = nil
        rtts[s] = nil
        coordinates[s] = nil
        broadcasts.remove(s)
        probeOrder.removeAll { $0 == s }
        if probeCursor > probeOrder.count { probeCursor = probeOrder.count }
        vivaldi.forget(node)
    }

    // MARK: - Sending

    /// Starts a join: every seed is dialled and learns of us, but only one at a time is asked for
    /// its state. The seeds are taken in a random order of this node's own; the first gets a
    /// push-pull request, the others an announce (our state, not answered). A candidate fails when
    /// its dial fails or when no push-pull has completed `pushPull.timeout` after it was dialled
    /// (or after its link came up); the next is then asked at once. A push-pull with anyone ends
    /// the join (`endJoin`). When all have failed, the reconnect loop starts again while we know
    /// no one.
    ///
    /// memberlist's `Join` pulls the state of every address it is given, and GQUIC did too until
    /// session 8: while 10,000 nodes joined through 5 seeds, each joiner pulled 5 full states (43%
    /// of all membership records received in the join phase) and the seeds' uplinks could not
    /// carry them (83 joiners/s × 5 × a state of up to 500 KB; the backlog grew without bound).
    /// Pulling from one seed alone is not enough either: gossip cannot carry 83 joins a second to
    /// 10,000 members (each member sends ~15 new updates a second's worth of retransmissions), so
    /// the seeds' states are what joiners learn the cluster from, and each seed must hear of every
    /// joiner itself — hence the announces, one record each.
    private mutating func beginJoin(now: Instant, _ out: inout Outbox) {
        var order = seeds.filter { $0 != address }
        if order.count > 1 {
            for k in stride(from: order.count - 1, to: 0, by: -1) {
                order.swapAt(k, Int(rng.next() % UInt64(k + 1)))
            }
        }
        joinCandidates = order
        joinTarget = nil
        tryNextJoinCandidate(now: now, &out)
        for a in order.dropFirst() {
            announceTo.insert(a)
            dialForJoin(a, now: now, &out)
        }
    }

    private mutating func tryNextJoinCandidate(now: Instant, _ out: inout Outbox) {
        guard !joinCandidates.isEmpty, !leaving else { endJoin(); return }
        let a = joinCandidates.removeFirst()
        joinTarget = a
        joinDeadline = now + settings.pushPull.timeout
        if let peer = joinPeers[a], isLinked(peer) {
            sendPushPull(to: peer, now: now, &out)
        } else {
            dialForJoin(a, now: now, &out)
        }
    }

    private mutating func endJoin() {
        joinCandidates = []
        announceTo = []
        joinPeers = [:]
        joinTarget = nil
        joinDeadline = .distantFuture
    }

    private mutating func dialForJoin(_ a: PeerAddress, now: Instant, _ out: inout Outbox) {
        joinDials.insert(a)
        if let last = lastDial[a], now - last < .seconds(2) { return }
        lastDial[a] = now
        out.dial(a)
    }

    /// How long a message waits for a link to its peer before it is dropped: two probe periods.
    private static func holdTime(_ settings: MembershipSettings) -> Duration { settings.probe.interval * 2 }

    /// Sends `m` to `peer`: over the reliable stream if `reliable` (push-pull always), else as a DATAGRAM.
    private mutating func send(_ m: MembershipMessage, to peer: NodeID, reliable stream: Bool = false, now: Instant, _ out: inout Outbox) {
        send(m.frame, to: peer, reliable: stream, now: now, &out)
    }

    /// Sends a membership frame, as `send(_:to:...)` does a message.
    private mutating func send(_ frame: Frame, to peer: NodeID, reliable stream: Bool = false, now: Instant, _ out: inout Outbox) {
        let reliable = stream || frame.type == MembershipMessage.FrameType.pushPull
        let msg = PeerMessage(peer: peer, traffic: .control, frame: frame, unreliable: !reliable)
        if isLinked(peer) {
            emit(msg, &out)
            return
        }
        // No link yet: ask the shell to dial the member's advertised address, hold the message
        // briefly, and send it once the link is up.
        guard let addr = address(of: peer) else { emit(msg, &out); return }
        var list = queued[peer, default: []]
        if list.count >= 8 { list.removeFirst() }
        list.append((msg, now + Self.holdTime(settings)))
        queued[peer] = list
        if lastDial[addr].map({ now - $0 >= .seconds(2) }) ?? true {
            lastDial[addr] = now
            out.dial(addr)
        }
    }

    private mutating func emit(_ msg: PeerMessage, _ out: inout Outbox) {
        stats.messagesSent += 1
        stats.bytesSent += msg.frame.payload.count + 2 + VarInt.encodedLength(UInt64(msg.frame.payload.count))
        out.send(msg)
    }

    /// Up to `count` distinct random members whose (status, since) pass `ok`, as node IDs.
    private mutating func randomMembers(_ count: Int, excluding: NodeID?, where ok: (MemberStatus, UInt32) -> Bool) -> [NodeID] {
        let cap = table.capacity
        guard count > 0, table.count > 0 else { return [] }
        let excluded = excluding.flatMap { slot(of: $0) } ?? -2
        var picked: [Int32] = []
        var attempts = 0
        func fits(_ s: Int32) -> Bool {
            guard s != excluded, !picked.contains(s), let st = table.status(s) else { return false }
            return ok(st, table.since(s))
        }
        while picked.count < count && attempts < count * 4 + 8 {
            attempts += 1
            let s = Int32(rng.next() % UInt64(cap))
            if fits(s) { picked.append(s) }
        }
        if picked.count < count {
            // Sparse matches: fall back to a scan from a random point.
            let start = Int(rng.next() % UInt64(cap))
            for j in 0..<cap where picked.count < count {
                let s = Int32((start + j) % cap)
                if fits(s) { picked.append(s) }
            }
        }
        return picked.map { id(at: $0) }
    }

    /// Runs one input's handler and adds the next wake-up to what it produced.
    private mutating func withOutbox(_ body: (inout MembershipCore, inout Outbox) -> Void) -> Outbox {
        var out = Outbox()
        body(&self, &out)
        scheduleWake(&out)
        return out
    }

    private mutating func scheduleWake(_ out: inout Outbox) {
        guard started else { return }
        // Gossip rounds wake the node only while there is something to gossip (a round with an
        // empty queue sends nothing; at 10,000 simulated nodes those wake-ups were a third of all events).
        let next = min(nextProbeAt, broadcasts.isEmpty ? .distantFuture : nextGossipAt, nextPushPullAt, nextReconnectAt,
                       nextReapAt, joinDeadline)
        refreshTimers()
        out.wake(at: min(next, timersNext))
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
