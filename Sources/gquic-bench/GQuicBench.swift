import ArgumentParser

/// `gquic-bench AREA`: side-by-side benchmarks. Each area prints a table and writes
/// `simulations/results/bench-AREA.json`. The Makefile's `bench-<area>` targets call these.
@main
struct GQuicBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gquic-bench",
        abstract: "Benchmarks GQUIC against the anchors named in its issues, side by side in one run.",
        discussion: """
        Every area prints a table (ours next to the anchor measured in the same run) and writes
        simulations/results/bench-<area>.json with rows {name, value, unit, anchor, anchor_value}.
        Build in release mode first: `make bench` and `make bench-<area>` do.
        """,
        subcommands: benchAreas
    )
}
