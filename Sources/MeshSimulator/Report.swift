import MeshCore

/// Turns a finished run into what people read: a terminal table, a JSON document and SVG plots.
public struct SimReport {
    public let world: SimWorld
    /// Wall-clock seconds the run took and peak resident memory (filled in by the caller).
    public var wallSeconds: Double
    public var peakRSSBytes: UInt64
    /// CPU seconds the process used (user + system); on a shared machine wall time can be far more.
    public var cpuSeconds: Double

    public init(world: SimWorld, wallSeconds: Double, peakRSSBytes: UInt64, cpuSeconds: Double = 0) {
        self.world = world; self.wallSeconds = wallSeconds; self.peakRSSBytes = peakRSSBytes; self.cpuSeconds = cpuSeconds
    }

    private var stats: SimStats { world.stats }

    static func fmt(_ v: Double, _ digits: Int = 1) -> String {
        guard v.isFinite else { return "-" }
        let scale = pow10(digits)
        let r = (v * scale).rounded() / scale
        var s = String(r)
        if digits == 0, s.hasSuffix(".0") { s.removeLast(2) }
        return s
    }

    private static func pow10(_ d: Int) -> Double { (0..<d).reduce(1.0) { a, _ in a * 10 } }

    static func bytes(_ b: Double) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = b, u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(Int(v)) B" : "\(fmt(v, 2)) \(units[u])"
    }

    static func ms(_ ns: UInt64) -> String { fmt(Double(ns) / 1e6, 2) + " ms" }

    private func percentile(_ xs: [UInt64], _ q: Double) -> UInt64 {
        guard !xs.isEmpty else { return 0 }
        let s = xs.sorted()
        return s[min(s.count - 1, Int((q * Double(s.count - 1)).rounded()))]
    }

    /// The summary table (ends without the trace-hash line; the CLI prints that last).
    public func table() -> String {
        let s = stats
        var rows: [(String, String)] = []
        let virtual = Double(world.endTime) / 1e9
        rows.append(("scenario", "\(world.scenario.name) (seed \(world.seed))"))
        rows.append(("nodes / cores", "\(world.scenario.nodes) / \(s.coreNames.joined(separator: ", "))"))
        rows.append(("virtual time", "\(Self.fmt(virtual, 1)) s"))
        rows.append(("wall time", "\(Self.fmt(wallSeconds, 2)) s (\(Self.fmt(virtual / max(wallSeconds, 1e-9), 1))x real time)"))
        if cpuSeconds > 0 { rows.append(("cpu time", "\(Self.fmt(cpuSeconds, 2)) s")) }
        rows.append(("events", "\(s.events) (\(Self.fmt(Double(s.events) / max(wallSeconds, 1e-9) / 1e6, 2)) M/s)"))
        let kinds = zip(SimWorld.eventKindNames, s.eventsByKind).filter { $1 > 0 }.sorted { $0.1 > $1.1 }.prefix(6)
        rows.append(("  by kind", kinds.map { "\($0) \($1)" }.joined(separator: ", ")))
        if peakRSSBytes > 0 { rows.append(("peak RSS", Self.bytes(Double(peakRSSBytes)))) }
        rows.append(("live nodes at end", "\(world.liveCount)"))
        rows.append(("messages sent / delivered", "\(s.sent) / \(s.delivered)"))
        let drops = SimWorld.DropReason.allCases.filter { s.dropped($0) > 0 }.map { "\($0.name) \(s.dropped($0))" }
        rows.append(("messages dropped", drops.isEmpty ? "0" : drops.joined(separator: ", ")))
        let up = s.bytesUp.reduce(0, +)
        rows.append(("bytes sent (all nodes)", Self.bytes(Double(up))))
        rows.append(("bytes sent per node p50/p99/max",
                     [0.5, 0.99, 1.0].map { Self.bytes(Double(percentile(s.bytesUp, $0))) }.joined(separator: " / ")))
        rows.append(("faults", "\(s.partitions) partitions, \(s.crashes) crashes, \(s.restarts) restarts"))
        for label in s.completionLabels {
            let h = s.completions[label]!
            rows.append(("\(label) completions", "\(h.total): p50 \(Self.ms(h.quantile(0.5))), p90 \(Self.ms(h.quantile(0.9))), "
                         + "p99 \(Self.ms(h.quantile(0.99))), max \(Self.ms(h.maxValue))"))
        }
        if let last = s.samples.last {
            for name in s.coreNames { if let a = last.agreement[name] { rows.append(("\(name) agreement at end", "\(Self.fmt(a * 100, 1))% of live nodes")) } }
            for (key, g) in last.gauges.sorted(by: { $0.key < $1.key }) {
                rows.append((key, "min \(Self.fmt(g.min, 1)), mean \(Self.fmt(g.mean, 1)), max \(Self.fmt(g.max, 1))"))
            }
        }
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { $0.0 + String(repeating: " ", count: width - $0.0.count) + "  " + $0.1 }.joined(separator: "\n")
    }

    // MARK: JSON (hand-written: stable key order, no Foundation)

    private static func json(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: if c.value < 0x20 { out += "\\u00" + String(c.value, radix: 16).leftPad(2) } else { out.unicodeScalars.append(c) }
            }
        }
        return out + "\""
    }

    private static func num(_ v: Double) -> String { v.isFinite ? String(v) : "null" }

    public func jsonDocument() -> String {
        let s = stats
        var o: [String] = []
        o.append("\"scenario\": \(Self.json(world.scenario.name))")
        o.append("\"seed\": \(world.seed)")
        o.append("\"nodes\": \(world.scenario.nodes)")
        o.append("\"cores\": [\(s.coreNames.map(Self.json).joined(separator: ", "))]")
        o.append("\"virtual_seconds\": \(Self.num(Double(world.endTime) / 1e9))")
        o.append("\"wall_seconds\": \(Self.num(wallSeconds))")
        o.append("\"cpu_seconds\": \(Self.num(cpuSeconds))")
        o.append("\"events\": \(s.events)")
        o.append("\"events_per_second\": \(Self.num(Double(s.events) / max(wallSeconds, 1e-9)))")
        o.append("\"events_by_kind\": {" + zip(SimWorld.eventKindNames, s.eventsByKind).map { "\(Self.json($0)): \($1)" }.joined(separator: ", ") + "}")
        o.append("\"peak_rss_bytes\": \(peakRSSBytes)")
        o.append("\"trace_hash\": \(Self.json(world.traceHash?.hex ?? ""))")
        o.append("\"live_at_end\": \(world.liveCount)")
        let drops = SimWorld.DropReason.allCases.map { "\(Self.json($0.name)): \(s.dropped($0))" }.joined(separator: ", ")
        o.append("\"messages\": {\"sent\": \(s.sent), \"delivered\": \(s.delivered), \"dropped\": {\(drops)}}")
        let classes = TrafficClass.allCases.map { "\(Self.json($0.description)): \(s.bytesUpByClass[Int($0.rawValue)])" }.joined(separator: ", ")
        o.append("\"bytes_sent_by_class\": {\(classes)}")
        o.append("\"faults\": {\"partitions\": \(s.partitions), \"crashes\": \(s.crashes), \"restarts\": \(s.restarts)}")
        var comps: [String] = []
        for label in s.completionLabels {
            let h = s.completions[label]!
            comps.append("\(Self.json(label)): {\"count\": \(h.total), \"mean_ms\": \(Self.num(h.mean / 1e6)), "
                + ["p50", "p90", "p99"].enumerated().map { i, k in "\"\(k)_ms\": \(Self.num(Double(h.quantile([0.5, 0.9, 0.99][i])) / 1e6))" }.joined(separator: ", ")
                + ", \"max_ms\": \(Self.num(Double(h.maxValue) / 1e6))}")
        }
        o.append("\"completions\": {\(comps.joined(separator: ", "))}")
        var samples: [String] = []
        for (k, sample) in s.samples.enumerated() {
            let agree = sample.agreement.sorted { $0.key < $1.key }.map { "\(Self.json($0.key)): \(Self.num($0.value))" }.joined(separator: ", ")
            let gauges = sample.gauges.sorted { $0.key < $1.key }
                .map { "\(Self.json($0.key)): {\"min\": \(Self.num($0.value.min)), \"mean\": \(Self.num($0.value.mean)), \"max\": \(Self.num($0.value.max))}" }
                .joined(separator: ", ")
            let done = (k < s.completionsSoFar.count ? s.completionsSoFar[k] : [:]).sorted { $0.key < $1.key }
                .map { "\(Self.json($0.key)): \($0.value)" }.joined(separator: ", ")
            let kinds = zip(SimWorld.eventKindNames, sample.eventsByKind).map { "\(Self.json($0)): \($1)" }.joined(separator: ", ")
            samples.append("    {\"t\": \(Self.num(sample.t)), \"live\": \(sample.live), \"agreement\": {\(agree)}, \"completions\": {\(done)}, \"gauges\": {\(gauges)}, \"events_so_far\": {\(kinds)}}")
        }
        o.append("\"samples\": [\n\(samples.joined(separator: ",\n"))\n  ]")
        o.append("\"bytes_sent_per_node\": [\(s.bytesUp.map(String.init).joined(separator: ","))]")
        o.append("\"bytes_received_per_node\": [\(s.bytesDown.map(String.init).joined(separator: ","))]")
        return "{\n  " + o.joined(separator: ",\n  ") + "\n}\n"
    }

    // MARK: SVG plots

    /// True when positive x values span more than two decades (then a log axis reads better).
    private func wideRange(_ series: [SVGPlot.Series]) -> Bool {
        let xs = series.flatMap(\.points).map(\.0).filter { $0 > 0 }
        guard let lo = xs.min(), let hi = xs.max() else { return false }
        return hi / lo > 100
    }

    /// `cdf.svg`, `convergence.svg`, `bytes.svg`: name → SVG text.
    public func plots() -> [(String, String)] {
        let s = stats
        var out: [(String, String)] = []
        var cdfSeries: [SVGPlot.Series] = []
        for label in s.completionLabels {
            let pts = s.completions[label]!.cdf().map { (max(Double($0.0) / 1e6, 0.001), $0.1) }
            cdfSeries.append(.init(name: label, points: [(pts.first?.0 ?? 0.001, 0)] + pts))
        }
        out.append(("cdf.svg", SVGPlot(title: "\(world.scenario.name): completion time CDF", xLabel: "completion time (ms)",
                                       yLabel: "fraction completed", series: cdfSeries, yRange: 0...1,
                                       xLog: wideRange(cdfSeries)).render()))
        var conv: [SVGPlot.Series] = []
        for name in s.coreNames {
            let pts = s.samples.compactMap { smp in smp.agreement[name].map { (smp.t, $0) } }
            if !pts.isEmpty { conv.append(.init(name: "\(name) agreement", points: pts)) }
        }
        let n = Double(max(1, world.scenario.nodes))
        conv.append(.init(name: "live nodes (fraction)", points: s.samples.map { ($0.t, Double($0.live) / n) }))
        out.append(("convergence.svg", SVGPlot(title: "\(world.scenario.name): convergence over time", xLabel: "virtual time (s)",
                                               yLabel: "fraction of nodes", series: conv, yRange: 0...1).render()))
        let up = s.bytesUp.sorted(by: >).enumerated().map { (Double($0.offset), Double($0.element) / 1_048_576) }
        let down = s.bytesDown.sorted(by: >).enumerated().map { (Double($0.offset), Double($0.element) / 1_048_576) }
        out.append(("bytes.svg", SVGPlot(title: "\(world.scenario.name): bytes per node (ranked)", xLabel: "node rank",
                                         yLabel: "MiB", series: [.init(name: "sent", points: up), .init(name: "received", points: down)]).render()))
        return out
    }
}

/// A line plot written by hand as SVG (axes, ticks, legend), thinned to at most 2,000 points a series.
struct SVGPlot {
    struct Series { var name: String; var points: [(Double, Double)] }
    var title: String
    var xLabel: String
    var yLabel: String
    var series: [Series]
    var yRange: ClosedRange<Double>? = nil
    /// Logarithmic x axis (decades), for times spanning orders of magnitude. Needs x > 0.
    var xLog = false

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

    static func niceStep(_ span: Double) -> Double {
        guard span > 0 else { return 1 }
        var step = 1.0
        while span / step > 8 { step *= 10 }
        while span / step < 2 { step /= 10 }
        if span / step > 5 { step *= 2 }
        return step
    }

    static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e9 { return String(Int(v)) }
        return SimReport.fmt(v, 3)
    }

    static func escape(_ s: String) -> String {
        s.replacingAll("&", "&amp;").replacingAll("<", "&lt;").replacingAll(">", "&gt;")
    }

    func render() -> String {
        let w = 760.0, h = 440.0, left = 70.0, right = 20.0, top = 40.0, bottom = 60.0
        let tx: (Double) -> Double = xLog ? { log10(max($0, 1e-9)) } : { $0 }
        let series = self.series.map { Series(name: $0.name, points: $0.points.map { (tx($0.0), $0.1) }) }
        let all = series.flatMap(\.points)
        var x0 = all.map(\.0).min() ?? 0, x1 = all.map(\.0).max() ?? 1
        var y0 = yRange?.lowerBound ?? min(0, all.map(\.1).min() ?? 0)
        var y1 = yRange?.upperBound ?? (all.map(\.1).max() ?? 1)
        if x1 <= x0 { x1 = x0 + 1 }
        if y1 <= y0 { y1 = y0 + 1 }
        x0 = min(x0, 0) == 0 && x0 >= 0 ? x0 : x0
        y0 = min(y0, y1)
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * (w - left - right) }
        func py(_ y: Double) -> Double { h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(w / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(Self.escape(title))</text>\n"
        let xs = xLog ? 1 : Self.niceStep(x1 - x0), ys = Self.niceStep(y1 - y0)
        var t = (x0 / xs).rounded(.up) * xs
        while t <= x1 + xs * 1e-9 {
            svg += "<line x1=\"\(px(t))\" y1=\"\(top)\" x2=\"\(px(t))\" y2=\"\(h - bottom)\" stroke=\"#eee\"/>"
            let shown = xLog ? Self.label(pow10(t)) : Self.label(t)
            svg += "<text x=\"\(px(t))\" y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(shown)</text>\n"
            t += xs
        }
        t = (y0 / ys).rounded(.up) * ys
        while t <= y1 + ys * 1e-9 {
            svg += "<line x1=\"\(left)\" y1=\"\(py(t))\" x2=\"\(w - right)\" y2=\"\(py(t))\" stroke=\"#eee\"/>"
            svg += "<text x=\"\(left - 6)\" y=\"\(py(t) + 4)\" text-anchor=\"end\">\(Self.label(t))</text>\n"
            t += ys
        }
        svg += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(w - left - right)\" height=\"\(h - top - bottom)\" fill=\"none\" stroke=\"#333\"/>\n"
        svg += "<text x=\"\((left + w - right) / 2)\" y=\"\(h - 18)\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        svg += "<text x=\"16\" y=\"\((top + h - bottom) / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 16 \((top + h - bottom) / 2))\">\(Self.escape(yLabel))</text>\n"
        for (k, s) in series.enumerated() {
            let color = Self.colors[k % Self.colors.count]
            let stride = max(1, s.points.count / 2000)
            var pts: [(Double, Double)] = []
            for (i, p) in s.points.enumerated() where i % stride == 0 || i == s.points.count - 1 { pts.append(p) }
            if pts.isEmpty {
                svg += "<text x=\"\(left + 10)\" y=\"\(top + 20 + Double(k) * 16)\" fill=\"\(color)\">\(Self.escape(s.name)): no data</text>\n"
                continue
            }
            let path = pts.map { "\(SimReport.fmt(px($0.0), 1)),\(SimReport.fmt(py($0.1), 1))" }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\" points=\"\(path)\"/>\n"
            svg += "<rect x=\"\(w - right - 190)\" y=\"\(top + 8 + Double(k) * 18)\" width=\"12\" height=\"3\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(w - right - 172)\" y=\"\(top + 14 + Double(k) * 18)\">\(Self.escape(s.name))</text>\n"
        }
        if series.isEmpty {
            svg += "<text x=\"\(w / 2)\" y=\"\(h / 2)\" text-anchor=\"middle\" fill=\"#888\">no data in this run</text>\n"
        }
        return svg + "</svg>\n"
    }
}

/// 10^x without Foundation.
func pow10(_ x: Double) -> Double {
    var r = 1.0
    let n = Int(x.rounded())
    for _ in 0..<abs(n) { r *= 10 }
    return n >= 0 ? r : 1 / r
}

/// log10 for positive x without Foundation (frexp-free: bit-level exponent plus a series).
func log10(_ x: Double) -> Double {
    guard x > 0 else { return -.infinity }
    let e = Double(x.exponent)
    let m = x.significand // in [1, 2)
    // ln(m) via atanh series: ln(m) = 2 atanh((m-1)/(m+1)).
    let z = (m - 1) / (m + 1), z2 = z * z
    var term = z, sum = 0.0
    for k in stride(from: 1, through: 19, by: 2) { sum += term / Double(k); term *= z2 }
    return (2 * sum + e * 0.6931471805599453) / 2.302585092994046
}

extension String {
    func leftPad(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
    func replacingAll(_ a: Character, _ b: String) -> String {
        var out = ""
        for c in self { if c == a { out += b } else { out.append(c) } }
        return out
    }
}
