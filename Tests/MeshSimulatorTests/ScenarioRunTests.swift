import Testing
import MeshCore
@testable import MeshSimulator

/// Whole runs with the built-in flood core: determinism, crash/restart, partitions, transfer time.
@Suite struct ScenarioRunTests {
    static let churn = """
        name churn-test
        duration 20s
        nodes 24
        core flood interval=200ms fanout=2 size=300 window=8 chunk=16KiB
        region a weight=2
        region b weight=1 up=20mbit down=50mbit
        latency a a 2ms
        latency b b 4ms
        latency a b 30ms
        link up=50mbit down=100mbit jitter=3ms loss=0.5% reorder=1% link-timeout=2s idle-timeout=5s
        join at=0s nodes=all spread=2s
        workload at=3s nodes=0 kind=push bytes=1MiB to=all
        workload at=4s nodes=random:3 kind=ping to=0..5 every=500ms count=5
        fault at=6s crash nodes=random:4
        fault at=8s partition groups=region:a|region:b
        fault at=9s slow nodes=1 cpu=2ms bandwidth=0.5
        fault at=10s skew nodes=2 offset=-300ms drift=200ppm
        fault at=11s restart nodes=random:4 disk=keep
        fault at=12s heal
        fault at=13s restart nodes=3..5 disk=wipe
        fault at=14s loss 2%
        sample every=250ms
        """

    func run(_ text: String, seed: UInt64? = nil, lines: Bool = false) throws -> (SimWorld, [String]) {
        var world = try SimWorld(scenario: try Scenario(parsing: text), seed: seed, registry: .builtIn)
        final class Box: @unchecked Sendable { var lines: [String] = [] }
        let box = Box()
        if lines { world.traceLines = { box.lines.append($0) } }
        try world.run()
        return (world, box.lines)
    }

    @Test func sameScenarioAndSeedGiveTheSameTrace() throws {
        let (a, _) = try run(Self.churn)
        let (b, _) = try run(Self.churn)
        let (c, _) = try run(Self.churn, seed: 99)
        #expect(a.traceHash != nil)
        #expect(a.traceHash == b.traceHash)
        #expect(a.traceHash != c.traceHash)
        #expect(a.stats.events == b.stats.events)
        #expect(a.stats.bytesUp == b.stats.bytesUp)
        // The run did exercise what it claims to.
        #expect(a.stats.crashes == 4 && a.stats.restarts == 7)
        #expect(a.stats.dropped(.loss) > 0 && a.stats.dropped(.partition) + a.stats.dropped(.unreachable) > 0)
    }

    @Test func crashAndRestartReproduceExactly() throws {
        let text = """
            duration 30s
            nodes 12
            core flood interval=100ms fanout=1 size=200
            link idle-timeout=10s link-timeout=3s
            workload at=1s nodes=0 kind=push bytes=256KiB to=all chunk=8KiB
            fault at=5s crash nodes=1..4
            fault at=10s restart nodes=1..2 disk=keep
            fault at=10s restart nodes=3..4 disk=wipe
            fault at=15s restart nodes=0..11 disk=keep
            """
        let (a, linesA) = try run(text, lines: true)
        let (b, linesB) = try run(text, lines: true)
        #expect(linesA == linesB)
        #expect(a.traceHash == b.traceHash)
        // Disk kept: the push survives the crash; wiped: it is gone.
        let held = { (w: SimWorld, i: Int) in (w.core(of: i) as! FloodCore).gauges().first { $0.name == "pushes-held" }!.value }
        #expect(held(a, 1) == 1 && held(a, 2) == 1)
        #expect(held(a, 3) == 0 && held(a, 4) == 0)
        #expect(a.liveCount == 12)
    }

    @Test func partitionsDropWhatCrossesThemAndOnlyThat() throws {
        let text = """
            duration 12s
            nodes 10
            core flood interval=50ms fanout=3 size=100 unreliable=no
            latency default default 5ms
            region default
            link idle-timeout=0s link-timeout=1s
            fault at=3s partition groups=0..4|5..9
            fault at=8s heal
            """
        let (world, lines) = try run(text, lines: true)
        var crossDuring = 0, withinDuring = 0, crossAfter = 0
        for line in lines where line.contains(" deliver ") {
            let parts = line.split(separator: " ")
            let t = UInt64(parts[0])!
            let node = Int(parts[2].dropFirst(5))!, peer = Int(parts[3].dropFirst(5))!
            let cross = (node < 5) != (peer < 5)
            if t >= 3_000_000_000 && t < 8_000_000_000 { if cross { crossDuring += 1 } else { withinDuring += 1 } }
            if t >= 8_100_000_000 && cross { crossAfter += 1 }
        }
        #expect(crossDuring == 0)
        #expect(withinDuring > 1000)
        #expect(crossAfter > 100)
        #expect(world.stats.dropped(.partition) + world.stats.dropped(.unreachable) > 0)
    }

    @Test func aPushTakesHandshakePlusLatencyPlusSizeOverCapacity() throws {
        let text = """
            duration 10s
            nodes 2
            core flood window=1000 chunk=64KiB
            region r
            latency r r 20ms
            link up=100mbit down=100mbit idle-timeout=0s
            workload at=1s nodes=0 kind=push bytes=4MiB to=1
            """
        let (world, _) = try run(text)
        let h = world.stats.completions["push"]!
        #expect(h.total == 1)
        let chunks = 64.0, chunkFrame = 65536.0 + 16 // payload + push header + frame header (≤ 16 B)
        let wire = chunks * (chunkFrame + Double((Int(chunkFrame) + 1199) / 1200) * 48)
        let expected = 3 * 0.020 + wire / 12_500_000 // 1 RTT handshake + one-way latency + serialisation
        let got = Double(h.maxValue) / 1e9
        // Within one 1248-byte packet's time per... plus the header bytes we estimated (≤ 16 B a chunk).
        #expect(abs(got - expected) <= (1248 + 16 * chunks) / 12_500_000, "took \(got) s, model says \(expected) s")
    }

    @Test func shippedScenariosParse() throws {
        let dir = String(#filePath.split(separator: "/").dropLast(3).joined(separator: "/"))
        for name in ["link-model", "membership-1k", "membership-10k", "churn", "partition-heal", "mass-restart", "flood-10k"] {
            let path = "/" + dir + "/simulations/scenarios/\(name).sim"
            let text = try readText(path)
            let sc = try Scenario(parsing: text)
            #expect(sc.name == name)
            if sc.cores.contains(where: { $0.name == "membership" }) {
                do { _ = try SimWorld(scenario: sc, registry: .builtIn); Issue.record("ran without the membership core") }
                catch { #expect(error.missingCoreName == "membership") }
            }
        }
    }
}

/// Reads a small text file without Foundation.
func readText(_ path: String) throws -> String {
    guard let f = fopen(path, "r") else { throw SimRunError("cannot open \(path)") }
    defer { fclose(f) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ReportTests {
    @Test func reportHasTableJSONAndThreePlots() throws {
        var world = try SimWorld(scenario: try Scenario(parsing: ScenarioRunTests.churn), registry: .builtIn)
        try world.run()
        let report = SimReport(world: world, wallSeconds: 1, peakRSSBytes: 0)
        let table = report.table()
        #expect(table.contains("rtt completions"))
        #expect(table.contains("flood agreement at end"))
        let json = report.jsonDocument()
        #expect(json.hasPrefix("{") && json.hasSuffix("}\n"))
        for key in ["\"trace_hash\": \"\(world.traceHash!.hex)\"", "\"completions\"", "\"samples\"", "\"bytes_sent_per_node\""] {
            #expect(json.contains(key), "missing \(key)")
        }
        // Events by kind add up to all events, and the churn scenario has joins, faults, messages and links.
        let s = world.stats
        #expect(s.eventsByKind.reduce(0, +) == s.events)
        for kind in ["join", "deliver", "arrive", "tick", "link-up", "fault", "sample"] {
            let k = try #require(SimWorld.eventKindNames.firstIndex(of: kind))
            #expect(s.eventsByKind[k] > 0, "no \(kind) events counted")
        }
        #expect(s.eventsByKind[SimWorld.eventKindNames.firstIndex(of: "join")!] == 24)
        #expect(json.contains("\"events_by_kind\": {\"join\": 24, "))
        #expect(s.samples.last?.eventsByKind.reduce(0, +) ?? 0 > 0)
        let plots = report.plots()
        #expect(plots.map(\.0) == ["cdf.svg", "convergence.svg", "bytes.svg"])
        for (_, svg) in plots {
            #expect(svg.hasPrefix("<svg") && svg.hasSuffix("</svg>\n"))
            #expect(svg.contains("<polyline"))
        }
    }

    @Test func histogramQuantilesAreWithinABucket() {
        var h = LatencyHistogram()
        for v in 1...100_000 { h.record(UInt64(v) * 1000) }
        for q in [0.5, 0.9, 0.99] {
            let exact = q * 100_000_000
            #expect(abs(Double(h.quantile(q)) - exact) / exact < 0.04)
        }
        #expect(h.maxValue == 100_000_000)
    }
}
