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
    r.register("membership", summary: "SWIM + Lifeguard membership (Membership, issue 6)") { ctx in
        MembershipSimCore(core: MembershipCore(
            me: ctx.nodeID, address: ctx.address,
            generation: UInt64(ctx.incarnation + 1),   // grows across restarts, disk or not
            seeds: ctx.seeds, random: ctx.random))
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
    mutating func start(now: Instant) -> Outbox { core.start(now: now) }
    mutating func receive(_ message: PeerMessage, now: Instant) -> Outbox { core.receive(message, now: now) }
    mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox { core.linkChanged(event, now: now) }
    mutating func tick(now: Instant) -> Outbox { core.tick(now: now) }

    func stateDigest() -> Digest? {
        var alive = core.view.filter { $0.status == .alive }.map(\.node)
        alive.append(core.me)
        alive.sort()
        var h = SHA256Hasher()
        for id in alive { h.update(id.bytes) }
        return h.finalize()
    }

    func gauges() -> [SimGauge] { [SimGauge("live-members", Double(core.liveMemberCount))] }

    mutating func drainCompletions() -> [SimCompletion] { [] }
}
