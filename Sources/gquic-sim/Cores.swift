import MeshSimulator

/// The cores this build of gquic-sim can host, by the name scenarios use (`core NAME`).
///
/// Each protocol core registers here once its module has landed, with a factory that builds it from
/// a `SimCoreContext` (node ID, address, seeds, randomness, persisted state, incarnation, the
/// scenario's `k=v` parameters). For Membership (issue 6), at merge time:
///
///     import Membership
///     r.register("membership", summary: "SWIM + Lifeguard (issue 6)") { ctx in
///         MembershipSimCore(core: MembershipCore(
///             me: ctx.nodeID, address: ctx.address,
///             generation: UInt64(ctx.incarnation + 1),   // grows across restarts, disk or not
///             seeds: ctx.seeds, random: ctx.random))
///     }
///
/// where `MembershipSimCore` forwards the four `MeshProtocolCore` calls and adds
/// `SimObservableCore`: `stateDigest()` = SHA-256 over the sorted IDs of the members it believes
/// alive *plus its own ID* (so agreeing nodes produce equal digests), and `gauges()` =
/// `[SimGauge("live-members", Double(core.liveMemberCount))]`.
///
/// A scenario that names a core missing here fails before running, naming the core.
func simCoreRegistry() -> SimCoreRegistry {
    SimCoreRegistry.builtIn
}
