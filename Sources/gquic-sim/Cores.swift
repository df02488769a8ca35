import MeshCore
import MeshSimulator
import Membership
import Swarm

/// The cores this build of gquic-sim can host, by the name scenarios use (`core NAME`).
///
/// Each protocol core registers here with a factory that builds it from a `SimCoreContext` (node ID,
/// address, seeds, randomness, persisted state, incarnation, the scenario's `k=v` parameters). The
/// simulator drives the very same core the daemon runs; the adapters below only add what the
/// simulator measures (`SimObservableCore`). A scenario that names a core missing here fails before
/// running, naming the core.
func simCoreRegistry(swarmLedger: SwarmSimLedger = SwarmSimLedger()) -> SimCoreRegistry {
    var r = SimCoreRegistry.builtIn
    // One directory for every hosted membership core: each member ID and address is stored once,
    // not once per node that knows it (10^8 records at 10,000 nodes).
    let directory = MemberDirectory()
    r.register("membership", summary: "SWIM + Lifeguard membership (Membership, issue 6)") { ctx in
        var core = MembershipCore(
            me: ctx.nodeID, address: ctx.address,
            generation: UInt64(ctx.incarnation + 1),   // grows across restarts, disk or not
            seeds: ctx.seeds, random: ctx.random, directory: directory)
        core.logsChanges = false // the simulator reads no change log
        return MembershipSimCore(core: core)
    }
    r.register("swarm", summary: "swarm download planner with a synthetic chunk store (Swarm, issue 8)") { ctx in
        try SwarmSimCore(context: ctx, ledger: swarmLedger)
    }
    return r
}

/// `MembershipCore` as the simulator sees it: the same core, plus a digest of its view of who is
/// alive (itself included, so nodes that agree produce equal digests) and its view size.
struct MembershipSimCore: SimObservableCore {
    var core: MembershipCore

    func handles(frameType type: UInt64) -> Bool { core.handles(frameType: type) }
    // The core is built with `logsChanges = false`: the simulator reads no change log.
    mutating func start(now: Instant) -> Outbox { core.start(now: now) }
    mutating func receive(_ message: PeerMessage, now: Instant) -> Outbox { core.receive(message, now: now) }
    mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox { core.linkChanged(event, now: now) }
    mutating func tick(now: Instant) -> Outbox { core.tick(now: now) }

    /// The core's order-independent alive-set digest (kept up to date as the view changes, so
    /// sampling 10,000 nodes costs nothing), widened to a `Digest`.
    func stateDigest() -> Digest? {
        let d = core.aliveSetDigest
        var w = WireWriter(reservingCapacity: 32)
        for i in 0..<4 { w.fixed(d[i]) }
        return Digest(unchecked: w.bytes)
    }

    /// The view's size, and running totals of the core's traffic (their mean times the live nodes
    /// is the cluster's total; differences between samples give rates per virtual second).
    func gauges() -> [SimGauge] {
        let s = core.stats
        return [SimGauge("live-members", Double(core.liveMemberCount)), SimGauge("messages-sent", Double(s.messagesSent)),
                SimGauge("updates-sent", Double(s.updatesSent)), SimGauge("updates-received", Double(s.updatesReceived)),
                SimGauge("updates-already-held", Double(s.updatesAlreadyHeld)),
                SimGauge("probes-sent", Double(s.probesSent)), SimGauge("probes-failed", Double(s.probesFailed)),
                SimGauge("indirect-probes-sent", Double(s.indirectProbesSent)),
                SimGauge("suspicions-started", Double(s.suspicionsStarted)), SimGauge("refutations", Double(s.refutations)),
                SimGauge("local-health", Double(core.localHealth))]
            + statusGauges()
    }

    /// Members held suspect and dead, and running suspicion timers.
    private func statusGauges() -> [SimGauge] {
        let c = core.statusCounts
        return [SimGauge("members-suspect", Double(c.byStatus[Int(MemberStatus.suspect.rawValue)])),
                SimGauge("members-dead", Double(c.byStatus[Int(MemberStatus.dead.rawValue)])),
                SimGauge("suspicion-timers", Double(c.suspicionTimers))]
    }

    mutating func drainCompletions() -> [SimCompletion] { [] }
}
