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
    public var refutations = 0
    public var suspicionsStarted = 0
    public var membersDeclaredDead = 0
    public var messagesSent = 0
    public var bytesSent = 0
    public var messagesRefused: [MembershipError.Code: Int] = [:]
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
    private var members: [NodeID: Member] = [:]
    private var memberList: [NodeID] = []
    private var memberIndex: [NodeID: Int] = [:]
    private var liveCount = 0 // alive + suspect, not counting us

    private var probeOrder: [NodeID] = []
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
    }
    private var probes: [UInt64: PendingProbe] = [:]

    private struct Relay: Sendable {
        var requester: NodeID
        var requesterSequence: UInt64
        var target: NodeID
        var nackAt: Instant
        var nacked = false
        var expiresAt: Instant
    }
    private var relays: [UInt64: Relay] = [:]

    private var suspicions: [NodeID: SuspicionTimer] = [:]
    /// Probes that ended without an ack, kept a while so a late ack still teaches us the RTT.
    private var lateProbes: [UInt64: (target: NodeID, sentAt: Instant)] = [:]
    /// Per-member RTT: smoothed and last sample, from acks (late ones too).
    private var rtts: [NodeID: (smoothed: Duration, last: Duration)] = [:]
    private var broadcasts = BroadcastQueue()
    /// Lifeguard's local health multiplier (0...settings.lifeguard.maxMultiplier).
    public private(set) var localHealth = 0

    private var started = false
    private var leaving = false
    private var nextProbeAt: Instant = .distantFuture
    private var nextGossipAt: Instant = .distantFuture
    private var nextPushPullAt: Instant = .distantFuture
    private var nextReconnectAt: Instant = .distantFuture
    private var nextReapAt: Instant = .distantFuture

    private var links: Set<NodeID> = []
    private var queued: [NodeID: [(message: PeerMessage, until: Instant)]] = [:]
    private var lastDial: [PeerAddress: Instant] = [:]
    private var joinDials: Set<PeerAddress> = []
    private var pushPullOutstanding: [NodeID: Instant] = [:]
    /// True once a push-pull with some member completed (we have a view of the cluster).
    public private(set) var joined = false

    public private(set) var vivaldi: VivaldiState
    public private(set) var stats = MembershipStats()
    private var changes: [MembershipChange] = []
    /// The last message refused, and why (for logs and tests).
    public private(set) var lastRefusal: MembershipError?

    /// - Parameters:
    ///   - me: this node's identity (proven to peers by the QUIC link's TLS handshake).
    ///   - address: where others reach this node (advertised in its alive record).
    ///   - generation: a number that grows across restarts of this node (the shell passes, e.g.,
    ///     wall-clock milliseconds at start, or a counter persisted on disk).
    ///   - seeds: addresses or DNS names to join through; dialled at start and while we know no one.
    ///   - random: the core's only source of randomness (seeded in the simulator).
    public init(me: NodeID, address: PeerAddress, generation: UInt64, seeds: [PeerAddress] = [],
                settings: MembershipSettings = MembershipSettings(), random: SeededRandom) {
        self.me = me
        self.address = address
        self.settings = settings
        self.version = MemberVersion(generation: generation, incarnation: 0)
        self.seeds = seeds
        self.rng = random
        self.sequence = rng.next() >> 34
        self.vivaldi = VivaldiState(settings: settings.vivaldi)
    }

    // MARK: - Public view

    public func handles(frameType type: UInt64) -> Bool { FrameTypeRange.membership.contains(type) }

    /// Every member this node knows, itself excluded, in any status.
    public var view: [Member] { memberList.compactMap { members[$0] } }

    public func member(_ node: NodeID) -> Member? { members[node] }

    /// Members currently alive or suspect (the cluster size estimate minus one).
    public var liveMemberCount: Int { liveCount }

    /// Estimated cluster size: live members plus this node.
    public var clusterSize: Int { liveCount + 1 }

    /// Changes since the last call (bounded: the oldest are dropped if no one collects them).
    public mutating func takeChanges() -> [MembershipChange] {
        defer { changes.removeAll(keepingCapacity: true) }
        return changes
    }

    /// Live members ordered by estimated RTT from here (Vivaldi), nearest first.
    public func nearestMembers(_ count: Int) -> [Member] {
        let mine = vivaldi.coordinate
        return memberList.compactMap { members[$0] }
            .filter { $0.status == .alive && $0.coordinate != nil }
            .sorted { mine.distance(to: $0.coordinate!) < mine.distance(to: $1.coordinate!) }
            .prefix(count).map { $0 }
    }

    /// Adds join candidates (mDNS finds, late-configured seeds). Dialled now if we know no one.
    public mutating func addSeeds(_ more: [PeerAddress], now: Instant) -> Outbox {
        var out = Outbox()
        for a in more where !seeds.contains(a) && a != address {
            seeds.append(a)
            if liveCount == 0 && started { dialForJoin(a, now: now, &out) }
        }
        scheduleWake(&out)
        return out
    }

    // MARK: - MeshProtocolCore

    public mutating func start(now: Instant) -> Outbox {
        var out = Outbox()
        started = true
        leaving = false
        let jitter = Duration.nanoseconds(Int64(rng.next() % UInt64(max(1, settings.probe.interval.nanosecondsClamped))))
        nextProbeAt = now + jitter
        nextGossipAt = now + settings.gossip.interval
        nextPushPullAt = now + pushPullInterval()
        nextReconnectAt = now + settings.reconnect.interval
        nextReapAt = now + .seconds(1)
        broadcasts.enqueue(selfUpdate)
        for s in seeds where s != address { dialForJoin(s, now: now, &out) }
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

    private mutating func handleBody(_ message: PeerMessage, now: Instant, _ out: inout Outbox) throws(MembershipError) {
        guard started else { return }
        let decoded = try MembershipMessage(frame: message.frame, maxPushPullBytes: settings.limits.maxPushPullBytes)
        let from = message.peer
        if from == me { return }
        // A message arrived, so the shell has an authenticated link to its sender.
        links.insert(from)
        if case .pushPull(let pp) = decoded {
            try onPushPull(pp, from: from, now: now, &out)
            return
        }
        // Everything but a join request must come from a member: a node outside the cluster cannot
        // inject members or suspicions, whatever it says.
        guard let sender = members[from], sender.status != .left else { throw .notAMember(from) }
        switch decoded {
        case .ping(let ping):
            apply(ping.updates, from: from, now: now)
            guard ping.target == me else { return }
            var ack = MembershipMessage.Ack()
            ack.sequence = ping.sequence
            ack.responder = me
            ack.coordinate = vivaldi.coordinate
            // The prober suspects us (Lifeguard's buddy system put the suspicion in its ping): our
            // refutation goes first in the answer.
            let accused = ping.updates.contains { $0.node == me && $0.status != .alive }
            if accused { broadcasts.enqueue(selfUpdate) }
            ack.updates = piggyback(for: from, first: accused ? me : nil)
            send(.ack(ack), to: from, now: now, &out)
        case .pingReq(let req):
            apply(req.updates, from: from, now: now)
            if req.target == me {
                var ack = MembershipMessage.Ack()
                ack.sequence = req.sequence
                ack.responder = me
                send(.ack(ack), to: from, now: now, &out)
                return
            }
            guard let target = members[req.target], target.status == .alive || target.status == .suspect,
                  relays.count < 4_096 else { return } // bounded: each relay lives at most a few seconds
            sequence &+= 1
            let timeout = scaled(settings.probe.timeout)
            // Late acks are still relayed while the requester may be waiting (slow targets).
            relays[sequence] = Relay(requester: from, requesterSequence: req.sequence, target: req.target,
                                     nackAt: now + .nanoseconds(Int64(Double(timeout.nanosecondsClamped) * settings.probe.nackFraction)),
                                     expiresAt: now + max(timeout * 2, expectedRTTWait(req.target) * 2))
            var ping = MembershipMessage.Ping()
            ping.sequence = sequence
            ping.target = req.target
            ping.updates = piggyback(for: req.target)
            send(.ping(ping), to: req.target, now: now, &out)
        case .ack(let ack):
            apply(ack.updates, from: from, now: now)
            if let probe = probes[ack.sequence] {
                // Only the target itself, or a member we asked to probe it, may answer for it.
                guard ack.responder == probe.target, from == probe.target || probe.helpers.contains(from) else { return }
                probes[ack.sequence] = nil
                adjustHealth(-1)
                if probe.final, let m = members[probe.target], m.status == .suspect, m.version == probe.version,
                   var timer = suspicions[probe.target], timer.finalProbe {
                    // Alive after all, and not yet refuted: give it a fresh suspicion period.
                    timer = SuspicionTimer(start: now, k: timer.k, min: timer.min, max: timer.max, firstSuspector: me)
                    suspicions[probe.target] = timer
                }
                if from == probe.target { observeRTT(now - probe.sentAt, for: from) }
                if from == probe.target, let c = ack.coordinate {
                    vivaldi.observe(rtt: now - probe.sentAt, to: from, coordinate: c, rng: &rng)
                    members[from]?.coordinate = c
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
        case .gossip(let g):
            apply(g.updates, from: from, now: now)
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
        case .up(let peer, let addr):
            guard peer != me else { return }
            links.insert(peer)
            if let pending = queued.removeValue(forKey: peer) {
                for item in pending where item.until >= now { emit(item.message, &out) }
            }
            // A DNS-name seed may come up under its resolved address: while a join dial is
            // outstanding, any link to a node we do not count as live also gets the sync.
            let isLive = members[peer].map { $0.status == .alive || $0.status == .suspect } ?? false
            let wasJoinDial = joinDials.remove(addr) != nil || (!joinDials.isEmpty && !isLive)
            if wasJoinDial, started, !leaving {
                // A seed (or mDNS find, or a dead member we reconnect to) proved its identity: sync.
                sendPushPull(to: peer, now: now, &out)
            }
        case .down(let peer):
            links.remove(peer)
        case .dialFailed(let addr):
            joinDials.remove(addr)
            for (node, _) in queued where members[node]?.address == addr { queued[node] = nil }
        }
        return
    }

    public mutating func tick(now: Instant) -> Outbox {
        withOutbox { $0.tickBody(now: now, &$1) }
    }

    private mutating func tickBody(now: Instant, _ out: inout Outbox) {
        guard started else { return }

        // Probe phases.
        for (seq, probe) in probes {
            if !probe.indirectSent && now >= probe.timeoutAt {
                probes[seq]?.indirectSent = true
                let helpers = randomMembers(settings.probe.indirectChecks, excluding: probe.target) { $0.status == .alive }
                probes[seq]?.expectedNacks = helpers.count
                probes[seq]?.helpers = helpers
                for h in helpers {
                    var req = MembershipMessage.PingReq()
                    req.sequence = seq
                    req.target = probe.target
                    req.updates = piggyback(for: h)
                    send(.pingReq(req), to: h, now: now, &out)
                    stats.indirectProbesSent += 1
                }
            }
            if now >= probe.periodEndAt {
                probes[seq] = nil
                probeFailed(probe, seq: seq, now: now, &out)
            }
        }
        // Relays: nack the requester if the target has not answered (Lifeguard).
        for (seq, relay) in relays {
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
        let lead = scaled(settings.probe.interval)
        for (node, timer) in suspicions where !timer.finalProbe && now >= timer.deadline - lead {
            guard members[node]?.status == .suspect else { suspicions[node] = nil; continue }
            // Before declaring a member dead, probe it once more, carrying the suspicion: if it
            // answers, its refutation comes back in the ack. This covers the (small, per-update)
            // chance that λ·log N retransmissions never reached us (a GQUIC addition to Lifeguard).
            suspicions[node]?.finalProbe = true
            startProbe(node, final: true, now: now, &out)
        }
        if now >= nextProbeAt {
            if !leaving { probeNext(now: now, &out) }
            nextProbeAt = now + scaled(settings.probe.interval)
        }
        if now >= nextGossipAt {
            gossipRound(now: now, &out)
            nextGossipAt = now + settings.gossip.interval
        }
        if now >= nextPushPullAt {
            if !leaving, let peer = randomMembers(1, excluding: nil, where: { $0.status == .alive }).first {
                sendPushPull(to: peer, now: now, &out)
            }
            nextPushPullAt = now + pushPullInterval()
        }
        if now >= nextReconnectAt {
            if !leaving { reconnect(now: now, &out) }
            nextReconnectAt = now + settings.reconnect.interval
        }
        if now >= nextReapAt {
            reap(now: now)
            nextReapAt = now + .seconds(1)
        }
        return
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
        broadcasts.enqueue(update)
        var g = MembershipMessage.Gossip()
        g.updates = [update]
        for peer in randomMembers(max(settings.gossip.fanout * 2, 8), excluding: nil, where: { $0.status == .alive }) {
            send(.gossip(g), to: peer, now: now, &out)
        }
        probes.removeAll()
        return
    }

    // MARK: - Probing

    private mutating func probeNext(now: Instant, _ out: inout Outbox) {
        var checked = 0
        var target: NodeID?
        while checked < probeOrder.count + 1 {
            if probeCursor >= probeOrder.count {
                // End of a round: drop gone members and reshuffle (SWIM's round-robin order).
                probeOrder = probeOrder.filter { members[$0].map { $0.status == .alive || $0.status == .suspect } ?? false }
                probeOrder.shuffle(using: &rng)
                probeCursor = 0
                if probeOrder.isEmpty { return }
            }
            let candidate = probeOrder[probeCursor]
            probeCursor += 1
            checked += 1
            if let m = members[candidate], m.status == .alive || m.status == .suspect { target = candidate; break }
        }
        guard let t = target else { return }
        startProbe(t, final: false, now: now, &out)
    }

    private mutating func startProbe(_ t: NodeID, final: Bool, now: Instant, _ out: inout Outbox) {
        sequence &+= 1
        let seq = sequence
        // A member that answers slowly gets a longer wait, up to `probe.maxAdaptiveWait`: late acks
        // taught us its RTT. A crashed member's RTT does not grow, so detection is not slowed.
        let timeout = scaled(settings.probe.timeout)
        let period = scaled(settings.probe.interval)
        let expected = expectedRTTWait(t)
        // The indirect phase gets the same allowance: its path also runs through the slow member.
        let direct = max(timeout, expected)
        probes[seq] = PendingProbe(target: t, sentAt: now, timeoutAt: now + direct,
                                   periodEndAt: now + direct + max(period - timeout, expected), final: final,
                                   version: members[t]?.version ?? version)
        var ping = MembershipMessage.Ping()
        ping.sequence = seq
        ping.target = t
        ping.updates = piggyback(for: t, first: members[t]?.status == .suspect ? t : nil)
        send(.ping(ping), to: t, now: now, &out)
        stats.probesSent += 1
    }

    /// Twice the member's recent RTT, capped by `probe.maxAdaptiveWait`; zero if never measured.
    private func expectedRTTWait(_ node: NodeID) -> Duration {
        guard let r = rtts[node] else { return .zero }
        return min(settings.probe.maxAdaptiveWait, max(r.smoothed, r.last) * 2)
    }

    private mutating func observeRTT(_ sample: Duration, for node: NodeID) {
        guard sample >= .zero else { return }
        if let r = rtts[node] {
            rtts[node] = ((r.smoothed * 7 + sample) / 8, sample)
        } else {
            rtts[node] = (sample, sample)
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
        guard let m = members[probe.target], m.status == .alive || m.status == .suspect else { return }
        if probe.final {
            // A member known to answer slowly gets a second last chance (a lost datagram on its
            // long path is likelier than a crash); a member that answered fast gets none, so
            // detection of a crashed node is not slowed.
            // The verdict only concerns the suspicion this probe was started for: a refutation and
            // a new suspicion may have come in meanwhile.
            guard m.status == .suspect, m.version == probe.version, suspicions[probe.target]?.finalProbe == true else { return }
            if var timer = suspicions[probe.target], timer.finalAttempts < 2,
               let r = rtts[probe.target], max(r.smoothed, r.last) > settings.probe.timeout {
                timer.finalAttempts += 1
                suspicions[probe.target] = timer
                startProbe(probe.target, final: true, now: now, &out)
                return
            }
            suspicions[probe.target] = nil
            guard m.status == .suspect else { return }
            stats.membersDeclaredDead += 1
            applyDead(MemberUpdate(node: probe.target, address: m.address, version: m.version, status: .dead, from: me), now: now)
            return
        }
        let s = MemberUpdate(node: probe.target, address: m.address, version: m.version, status: .suspect, from: me)
        applySuspect(s, now: now)
    }

    private mutating func adjustHealth(_ delta: Int) {
        localHealth = min(max(0, localHealth + delta), settings.lifeguard.maxMultiplier)
    }

    private func scaled(_ d: Duration) -> Duration { d * (1 + localHealth) }

    // MARK: - Updates

    private var selfUpdate: MemberUpdate {
        MemberUpdate(node: me, address: address, version: version, status: leaving ? .left : .alive, from: nil)
    }

    private mutating func apply(_ updates: [MemberUpdate], from: NodeID, now: Instant) {
        for u in updates.prefix(settings.limits.maxUpdatesPerMessage) {
            switch u.status {
            case .alive: applyAlive(u, now: now)
            case .suspect: applySuspect(u, now: now)
            case .dead, .left: applyDead(u, now: now)
            }
        }
    }

    private mutating func refute(_ claimed: MemberVersion) {
        guard !leaving else { return }
        if claimed.generation == version.generation && claimed.incarnation >= version.incarnation {
            version.incarnation = claimed.incarnation + 1
            stats.refutations += 1
            adjustHealth(1) // Lifeguard: being suspected hints that we are the slow one
        }
        // Older generations (a previous run of this node) are answered by re-sending our alive.
        broadcasts.enqueue(selfUpdate)
    }

    private mutating func applyAlive(_ u: MemberUpdate, now: Instant) {
        if u.node == me {
            if u.version > version || (u.version == version && u.address != address) { refute(u.version) }
            return
        }
        if var m = members[u.node] {
            guard u.version > m.version else { return }
            let changed = m.status != .alive || m.address != u.address
            let oldStatus = m.status
            m.version = u.version
            m.address = u.address
            setStatus(&m, .alive, now: now, old: oldStatus)
            members[u.node] = m
            suspicions[u.node] = nil
            if oldStatus != .alive && oldStatus != .suspect { addToProbeOrder(u.node) }
            var b = u; b.from = nil
            broadcasts.enqueue(b)
            if changed { record(m, now: now) }
        } else {
            guard memberList.count < settings.limits.maxMembers else { return }
            let m = Member(node: u.node, address: u.address, version: u.version, status: .alive, since: now, coordinate: nil)
            members[u.node] = m
            memberIndex[u.node] = memberList.count
            memberList.append(u.node)
            liveCount += 1
            addToProbeOrder(u.node)
            var b = u; b.from = nil
            broadcasts.enqueue(b)
            record(m, now: now)
        }
    }

    private mutating func applySuspect(_ u: MemberUpdate, now: Instant) {
        if u.node == me { refute(u.version); return }
        guard var m = members[u.node], u.version >= m.version else { return }
        let suspector = u.from ?? me
        switch m.status {
        case .dead, .left:
            return
        case .suspect where u.version == m.version:
            if suspicions[u.node]?.confirm(suspector) == true {
                broadcasts.enqueue(MemberUpdate(node: u.node, address: m.address, version: m.version, status: .suspect, from: suspector))
            }
        case .alive, .suspect:
            let old = m.status
            m.version = u.version
            setStatus(&m, .suspect, now: now, old: old)
            members[u.node] = m
            stats.suspicionsStarted += 1
            let n = Double(max(1, clusterSize))
            let minTimeout = settings.probe.interval * (settings.suspicion.minMultiplier * max(1, log10(n)))
            let maxTimeout = minTimeout * settings.suspicion.maxMultiplier
            // With too few members there is no one to confirm: use the minimum at once (memberlist).
            let k = clusterSize - 2 < settings.suspicion.expectedConfirmations ? 0 : settings.suspicion.expectedConfirmations
            suspicions[u.node] = SuspicionTimer(start: now, k: k, min: minTimeout, max: maxTimeout, firstSuspector: suspector)
            broadcasts.enqueue(MemberUpdate(node: u.node, address: m.address, version: m.version, status: .suspect, from: suspector))
            record(m, now: now)
        }
    }

    private mutating func applyDead(_ u: MemberUpdate, now: Instant) {
        if u.node == me {
            if u.status == .left && leaving { return }
            refute(u.version)
            return
        }
        guard var m = members[u.node], u.version >= m.version else { return }
        if m.status == .left { return }
        if m.status == .dead && !(u.status == .left) { return }
        let old = m.status
        m.version = u.version
        setStatus(&m, u.status, now: now, old: old)
        members[u.node] = m
        suspicions[u.node] = nil
        broadcasts.enqueue(MemberUpdate(node: u.node, address: m.address, version: m.version, status: u.status, from: u.from))
        record(m, now: now)
    }

    private mutating func setStatus(_ m: inout Member, _ status: MemberStatus, now: Instant, old: MemberStatus) {
        let wasLive = old == .alive || old == .suspect
        let isLive = status == .alive || status == .suspect
        if wasLive && !isLive { liveCount -= 1 }
        if !wasLive && isLive { liveCount += 1 }
        if old != status { m.since = now }
        m.status = status
    }

    private mutating func record(_ m: Member, now: Instant) {
        if changes.count >= 65_536 { changes.removeFirst(32_768) }
        changes.append(MembershipChange(node: m.node, status: m.status, version: m.version, address: m.address, at: now))
    }

    private mutating func addToProbeOrder(_ node: NodeID) {
        // Insert at a random place in the current round (memberlist does the same for new nodes).
        let at = probeOrder.isEmpty ? 0 : Int(rng.next() % UInt64(probeOrder.count + 1))
        probeOrder.insert(node, at: at)
        if at < probeCursor { probeCursor += 1 }
    }

    private mutating func piggyback(for peer: NodeID, first: NodeID? = nil) -> [MemberUpdate] {
        broadcasts.take(byteBudget: settings.gossip.maxPiggybackBytes, maxCount: settings.limits.maxUpdatesPerMessage,
                        limit: retransmitLimit, first: first)
    }

    private var retransmitLimit: Int {
        settings.gossip.retransmitMultiplier * Int(log10(Double(clusterSize + 1)).rounded(.up))
    }

    private mutating func gossipRound(now: Instant, _ out: inout Outbox) {
        guard !broadcasts.isEmpty else { return }
        let deadWindow = settings.gossip.toTheDeadTime
        let targets = randomMembers(settings.gossip.fanout, excluding: nil) {
            $0.status == .alive || $0.status == .suspect || ($0.status == .dead && now - $0.since < deadWindow)
        }
        for t in targets {
            let updates = piggyback(for: t)
            if updates.isEmpty { break }
            var g = MembershipMessage.Gossip()
            g.updates = updates
            send(.gossip(g), to: t, now: now, &out)
        }
    }

    // MARK: - Push-pull

    private func pushPullInterval() -> Duration {
        // memberlist's pushPullScale: one extra period per doubling beyond 32 nodes.
        let n = clusterSize
        guard n > 32 else { return settings.pushPull.interval }
        let mult = Int(log2(Double(n)).rounded(.up)) - 5 + 1
        return settings.pushPull.interval * mult
    }

    private mutating func fullState() -> MembershipMessage.PushPull {
        var pp = MembershipMessage.PushPull()
        pp.clusterID = settings.clusterID
        pp.members = [selfUpdate]
        for node in memberList.prefix(settings.limits.maxMembers - 1) {
            guard let m = members[node] else { continue }
            pp.members.append(MemberUpdate(node: m.node, address: m.address, version: m.version, status: m.status, from: nil))
        }
        return pp
    }

    private mutating func sendPushPull(to peer: NodeID, now: Instant, _ out: inout Outbox) {
        pushPullOutstanding[peer] = now + settings.pushPull.timeout
        send(.pushPull(fullState()), to: peer, now: now, &out)
    }

    private mutating func onPushPull(_ pp: MembershipMessage.PushPull, from: NodeID, now: Instant, _ out: inout Outbox) throws(MembershipError) {
        guard pp.clusterID == settings.clusterID else { throw .wrongCluster(pp.clusterID) }
        if pp.isResponse {
            guard let deadline = pushPullOutstanding[from], now <= deadline else { throw .unsolicited(from) }
            pushPullOutstanding[from] = nil
        } else {
            let known = members[from].map { $0.status != .left } ?? false
            if !known {
                if let allowed = settings.allowedNodes, !allowed.contains(from) { throw .notAllowed(from) }
                // A joiner must speak for itself: its own alive record has to be in the state.
                guard pp.members.contains(where: { $0.node == from && $0.status == .alive }) else { throw .notAMember(from) }
            }
        }
        merge(pp.members, from: from, now: now)
        joined = true
        if !pp.isResponse {
            var reply = fullState()
            reply.isResponse = true
            send(.pushPull(reply), to: from, now: now, &out)
        }
    }

    private mutating func merge(_ records: [MemberUpdate], from: NodeID, now: Instant) {
        for r in records {
            // The sender's own record is authoritative about itself; an allow-list also gates
            // third parties it introduces.
            if r.node != from, r.node != me, members[r.node] == nil,
               let allowed = settings.allowedNodes, !allowed.contains(r.node) { continue }
            switch r.status {
            case .alive: applyAlive(r, now: now)
            // memberlist's mergeState: a remote "dead" becomes a local suspicion we verify ourselves.
            case .suspect, .dead:
                applySuspect(MemberUpdate(node: r.node, address: r.address, version: r.version, status: .suspect, from: from), now: now)
            case .left: applyDead(r, now: now)
            }
        }
    }

    // MARK: - Reconnect and reaping

    private mutating func reconnect(now: Instant, _ out: inout Outbox) {
        if liveCount == 0 {
            for s in seeds where s != address { dialForJoin(s, now: now, &out) }
        }
        // Serf's reconnect loop: try one random failed member, so partitions heal and restarted
        // nodes that joined through someone else still merge with everyone.
        let deadOnes = randomMembers(1, excluding: nil) { $0.status == .dead }
        if let d = deadOnes.first, let m = members[d] {
            if links.contains(d) {
                sendPushPull(to: d, now: now, &out)
            } else {
                dialForJoin(m.address, now: now, &out)
            }
        }
    }

    private mutating func reap(now: Instant) {
        for (node, deadline) in pushPullOutstanding where now > deadline { pushPullOutstanding[node] = nil }
        for (seq, late) in lateProbes where now - late.sentAt > settings.probe.maxAdaptiveWait * 2 { lateProbes[seq] = nil }
        for (node, items) in queued {
            let kept = items.filter { $0.until >= now }
            queued[node] = kept.isEmpty ? nil : kept
        }
        var gone: [NodeID] = []
        for node in memberList {
            guard let m = members[node] else { continue }
            if m.status == .dead && now - m.since > settings.reconnect.deadTimeout { gone.append(node) }
            if m.status == .left && now - m.since > settings.reconnect.tombstoneTimeout { gone.append(node) }
        }
        for node in gone { remove(node) }
    }

    private mutating func remove(_ node: NodeID) {
        guard let i = memberIndex[node] else { return }
        let last = memberList.removeLast()
        if last != node { memberList[i] = last; memberIndex[last] = i }
        memberIndex[node] = nil
        members[node] = nil
        suspicions[node] = nil
        rtts[node] = nil
        vivaldi.forget(node)
    }

    // MARK: - Sending

    private mutating func dialForJoin(_ a: PeerAddress, now: Instant, _ out: inout Outbox) {
        joinDials.insert(a)
        if let last = lastDial[a], now - last < .seconds(2) { return }
        lastDial[a] = now
        out.dial(a)
    }

    private mutating func send(_ m: MembershipMessage, to peer: NodeID, now: Instant, _ out: inout Outbox) {
        let reliable: Bool
        if case .pushPull = m { reliable = true } else { reliable = false }
        let msg = PeerMessage(peer: peer, traffic: .control, frame: m.frame, unreliable: !reliable)
        if links.contains(peer) {
            emit(msg, &out)
            return
        }
        // No link yet: ask the shell to dial the member's advertised address, hold the message
        // briefly, and send it once the link is up.
        guard let addr = members[peer]?.address else { emit(msg, &out); return }
        var list = queued[peer, default: []]
        if list.count >= 8 { list.removeFirst() }
        list.append((msg, now + settings.probe.interval * 2))
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

    private mutating func randomMembers(_ count: Int, excluding: NodeID?, where ok: (Member) -> Bool) -> [NodeID] {
        guard count > 0, !memberList.isEmpty else { return [] }
        var picked: [NodeID] = []
        var attempts = 0
        while picked.count < count && attempts < count * 4 + 8 {
            attempts += 1
            let node = memberList[Int(rng.next() % UInt64(memberList.count))]
            if node == excluding || picked.contains(node) { continue }
            if let m = members[node], ok(m) { picked.append(node) }
        }
        if picked.count < count {
            // Sparse matches: fall back to a scan from a random point.
            let start = Int(rng.next() % UInt64(memberList.count))
            for j in 0..<memberList.count where picked.count < count {
                let node = memberList[(start + j) % memberList.count]
                if node == excluding || picked.contains(node) { continue }
                if let m = members[node], ok(m) { picked.append(node) }
            }
        }
        return picked
    }

    /// Runs one input's handler and adds the next wake-up to what it produced.
    private mutating func withOutbox(_ body: (inout MembershipCore, inout Outbox) -> Void) -> Outbox {
        var out = Outbox()
        body(&self, &out)
        scheduleWake(&out)
        return out
    }

    private func scheduleWake(_ out: inout Outbox) {
        guard started else { return }
        var next = min(nextProbeAt, nextGossipAt, nextPushPullAt, nextReconnectAt, nextReapAt)
        for p in probes.values { next = min(next, p.indirectSent ? p.periodEndAt : p.timeoutAt) }
        for r in relays.values { next = min(next, r.nacked ? r.expiresAt : r.nackAt) }
        let lead = scaled(settings.probe.interval)
        for s in suspicions.values where !s.finalProbe { next = min(next, s.deadline - lead) }
        out.wake(at: next)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
