import ArgumentParser
import CLinuxIO
import Foundation
import MeshCore
import MeshSimulator

@main
struct GQuicSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gquic-sim",
        abstract: "Runs GQUIC's sans-IO cores on thousands of virtual nodes in a deterministic discrete-event world.",
        discussion: """
        A scenario file says how many nodes, which cores they run, the network (regions, latency,
        capacity, jitter, loss), the workload and the faults (partitions, crashes, restarts, slow
        nodes, clock skew). The format is documented in simulations/README.md.

        The same scenario and seed give the same run, event for event: the last line of `run` is
        `trace-hash: HEX`, a SHA-256 over the event trace. A failing seed is a bug report.

        Examples:
          gquic-sim list
          gquic-sim run link-model
          gquic-sim run simulations/scenarios/partition-heal.sim --seed 7 --out /tmp/ph
        """,
        subcommands: [Run.self, List.self]
    )
}

/// Where the shipped scenarios live: $GQUIC_SCENARIOS, ./simulations/scenarios, or next to the
/// checkout the executable was built in.
func scenarioDirectories() -> [String] {
    var dirs: [String] = []
    if let env = ProcessInfo.processInfo.environment["GQUIC_SCENARIOS"] { dirs.append(env) }
    dirs.append(FileManager.default.currentDirectoryPath + "/simulations/scenarios")
    let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    // .build/<config>/gquic-sim → the checkout is three levels up.
    dirs.append(exe.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("simulations/scenarios").path)
    return dirs
}

func shippedScenarios() -> [(name: String, path: String)] {
    for dir in scenarioDirectories() {
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
        let sims = files.filter { $0.hasSuffix(".sim") }.sorted()
        if !sims.isEmpty { return sims.map { (String($0.dropLast(4)), dir + "/" + $0) } }
    }
    return []
}

func loadScenario(_ nameOrPath: String) throws -> (Scenario, String) {
    var path = nameOrPath
    if !FileManager.default.fileExists(atPath: path) {
        guard let found = shippedScenarios().first(where: { $0.name == nameOrPath }) else {
            let names = shippedScenarios().map(\.name).joined(separator: ", ")
            throw CLIError("no scenario file \"\(nameOrPath)\" and no shipped scenario of that name (shipped: \(names.isEmpty ? "none found" : names))")
        }
        path = found.path
    }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ScenarioError.unreadable(path, errno: errno)
    }
    guard data.count <= Scenario.maxFileBytes else { throw CLIError("\(path) is \(data.count) bytes; a scenario is at most \(Scenario.maxFileBytes)") }
    do {
        return (try Scenario(parsing: String(decoding: data, as: UTF8.self)), path)
    } catch var e {
        e.file = path
        throw e
    }
}

/// A failure to report as one readable line (no usage text: the command line was fine).
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func writeErr(_ text: String) {
    var t = text
    t.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// Peak resident set size of this process (VmHWM), in bytes.
func peakRSS() -> UInt64 {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { UInt64($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a scenario; print a summary and `trace-hash: HEX`; write JSON and SVG plots.",
        discussion: """
        SCENARIO is a path to a .sim file or the name of a shipped scenario (see `gquic-sim list`).
        Writes report.json, cdf.svg (completion times), convergence.svg (agreement and live nodes over time) and bytes.svg (bytes per node) into --out (default simulations/results/tmp/NAME).

        The same scenario and seed reproduce the run exactly; the last line, trace-hash: HEX, proves it.
        """
    )

    @Argument(help: "A .sim file or the name of a shipped scenario.")
    var scenario: String

    @Option(help: "Seed for every random choice (overrides the scenario's `seed` line).")
    var seed: UInt64?

    @Option(help: "Directory for report.json and the SVG plots.")
    var out: String?

    @Option(help: "Also write the event trace as text, one event a line, to this file (large for big runs).")
    var trace: String?

    @Flag(help: "No progress line, even on a terminal.")
    var quiet = false

    func run() throws {
        let (sc, _) = try loadScenario(scenario)
        var world: SimWorld
        let swarmLedger = SwarmSimLedger()
        do {
            world = try SimWorld(scenario: sc, seed: seed, registry: simCoreRegistry(swarmLedger: swarmLedger))
        } catch {
            throw CLIError(error.description)
        }
        var traceFile: UnsafeMutablePointer<FILE>?
        if let trace {
            guard let f = fopen(trace, "w") else { throw CLIError("cannot write the trace to \(trace) (errno \(errno))") }
            traceFile = f
            world.traceLines = { line in fputs(line + "\n", f) }
        }
        let tty = isatty(2) == 1 && !quiet
        let clock = ContinuousClock()
        let start = clock.now
        var lastShown = start
        var calls = 0
        world.progress = { w in
            // Give freed heap pages back every ~1 M events: tens of thousands of member tables grow
            // by copying while a large cluster forms, and glibc keeps the pages the old copies
            // freed (see docs/benchmarks.md, sim, session 8, for what it saves at 10,000 nodes).
            calls += 1
            if calls % 16 == 0 { _ = gq_return_freed_memory() }
            if tty {
                let t = clock.now
                guard (t - lastShown) >= .milliseconds(250) else { return }
                lastShown = t
                let wall = (t - start).seconds
                let line = String(format: "\r  t=%.1f/%.0fs virtual  %.2fM events  %.2fM ev/s  live %d  queue %d   ",
                                  Double(w.now) / 1e9, Double(w.endTime) / 1e9, Double(w.stats.events) / 1e6,
                                  Double(w.stats.events) / max(wall, 1e-9) / 1e6, w.liveCount, w.pendingEvents)
                writeErr(line)
            }
        }
        do {
            try world.run()
        } catch {
            if tty { writeErr("\n") }
            throw CLIError("the run stopped at t=\(Double(world.now) / 1e9)s: \(error)")
        }
        if tty { writeErr("\r" + String(repeating: " ", count: 100) + "\r") }
        if let f = traceFile { fclose(f) }
        let wall = (clock.now - start).seconds
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        let report = SimReport(world: world, wallSeconds: wall, peakRSSBytes: peakRSS(), cpuSeconds: cpu)
        let dir = out ?? "simulations/results/tmp/\(sc.name)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let swarm = SwarmSummary(ledger: swarmLedger, scenario: sc, samples: world.stats.samples)
        var json = report.jsonDocument()
        if !swarm.entries.isEmpty, json.hasSuffix("\n}\n") {
            json = String(json.dropLast(3)) + ",\n  " + swarm.json() + "\n}\n"
        }
        try json.write(toFile: dir + "/report.json", atomically: true, encoding: .utf8)
        for (name, svg) in report.plots() {
            try svg.write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
        }
        print(report.table())
        if !swarm.entries.isEmpty { print(swarm.table()) }
        if ProcessInfo.processInfo.environment["GQUIC_SWARM_TIMELINE"] != nil {
            for i in 0..<sc.nodes {
                if i == 0, let c = world.core(of: i) as? SwarmSimCore, let d = swarmLedger.blobs.values.first?.manifest.blob { print("node 0:\n" + c.core.debugDescription(of: d)) }
                guard let c = world.core(of: i) as? SwarmSimCore else { continue }
                for t in c.core.transfers {
                    print("node \(i): \(t.bytesDone)/\(t.bytesTotal) bytes, \(t.sources) sources")
                    print(c.core.debugDescription(of: t.blob))
                }
            }
        }
        print("report".padding(toLength: 6, withPad: " ", startingAt: 0) + "  \(dir)/report.json, cdf.svg, convergence.svg, bytes.svg")
        print("trace-hash: \(world.traceHash?.hex ?? "")")
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the shipped scenarios and whether this build can run them.")

    func run() throws {
        let registry = simCoreRegistry()
        let all = shippedScenarios()
        guard !all.isEmpty else {
            throw CLIError("no scenarios found in \(scenarioDirectories().joined(separator: " or ")); run from the checkout or set GQUIC_SCENARIOS")
        }
        let width = all.map(\.name.count).max() ?? 0
        for (name, path) in all {
            let line = name.padding(toLength: width, withPad: " ", startingAt: 0)
            guard let data = FileManager.default.contents(atPath: path),
                  let sc = try? Scenario(parsing: String(decoding: data, as: UTF8.self)) else {
                print("\(line)  (does not parse: run it to see why)")
                continue
            }
            let missing = sc.cores.map(\.name).filter { registry.factory(named: $0) == nil }
            let status = missing.isEmpty ? "" : "  [needs core: \(missing.joined(separator: ", "))]"
            print("\(line)  \(sc.nodes) nodes, \(sc.cores.map(\.name).joined(separator: "+")), \(Int(sc.duration.seconds))s — \(sc.description)\(status)")
        }
        print("cores in this build: \(registry.names.joined(separator: ", "))")
    }
}
