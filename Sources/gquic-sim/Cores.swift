import MeshSimulator

/// The cores this build of gquic-sim can host, by the name scenarios use (`core NAME`).
///
/// Each protocol core registers here once its module has landed, with a factory that builds it from
/// a `SimCoreContext` (node ID, seeds, randomness, persisted state, the scenario's parameters):
///
///     r.register("membership", summary: "SWIM + Lifeguard") { ctx in try Membership.simCore(ctx) }
///
/// A scenario that names a core missing here fails before running, naming the core.
func simCoreRegistry() -> SimCoreRegistry {
    SimCoreRegistry.builtIn
}
