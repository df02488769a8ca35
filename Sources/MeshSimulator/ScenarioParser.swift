import MeshCore

extension Scenario {
    /// The largest scenario file accepted, and the most nodes a scenario may ask for.
    public static let maxFileBytes = 1 << 20
    public static let maxNodes = 1_000_000

    /// Parses a scenario from its text. Every line is `KEYWORD [positional …] [key=value …]`;
    /// `#` starts a comment. Errors name the line and say what was expected.
    public init(parsing text: String) throws(ScenarioError) {
        self.init()
        guard text.utf8.count <= Scenario.maxFileBytes else {
            throw .invalid(0, "scenario is \(text.utf8.count) bytes; the limit is \(Scenario.maxFileBytes)")
        }
        var latencyLines: [(Int, String, String, Duration)] = []
        var sawNodes = false
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNo = number + 1
            let content = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let words = content.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            guard let keyword = words.first else { continue }
            var line = Line(number: lineNo, words: Array(words.dropFirst()))
            switch keyword {
            case "name": name = try line.rest()
            case "description": description = try line.rest()
            case "duration": duration = try line.duration(try line.positional("a duration such as 10m"))
            case "seed":
                let s = try line.positional("a number")
                guard let v = UInt64(s) else { throw .invalid(lineNo, "seed must be a non-negative integer, got \"\(s)\"") }
                seed = v
            case "nodes":
                let s = try line.positional("a node count")
                guard let v = Int(s), v > 0, v <= Scenario.maxNodes else {
                    throw .invalid(lineNo, "nodes must be 1...\(Scenario.maxNodes), got \"\(s)\"")
                }
                nodes = v; sawNodes = true
            case "core":
                let n = try line.positional("a core name such as membership")
                cores.append(CoreSpec(name: n, parameters: line.keyValues()))
                line.consumeAll()
            case "seeds": seeds = try NodeSet.parse(try line.positional("a node set"), line: lineNo)
            case "sample": sampleEvery = try line.duration(try line.required("every"))
            case "region":
                var r = RegionSpec(name: try line.positional("a region name"))
                if let w = line.take("weight") {
                    guard let v = Double(w), v > 0 else { throw .invalid(lineNo, "weight must be a positive number") }
                    r.weight = v
                }
                r.up = try line.take("up").map { s throws(ScenarioError) in try line.rate(s) }
                r.down = try line.take("down").map { s throws(ScenarioError) in try line.rate(s) }
                regions.append(r)
            case "latency":
                let a = try line.positional("two region names and a one-way latency")
                let b = try line.positional("two region names and a one-way latency")
                latencyLines.append((lineNo, a, b, try line.duration(try line.positional("a one-way latency such as 20ms"))))
            case "link":
                if let v = line.take("up") { link.up = try line.rate(v) }
                if let v = line.take("down") { link.down = try line.rate(v) }
                if let v = line.take("jitter") { link.jitter = try line.duration(v) }
                if let v = line.take("loss") { link.loss = try line.fraction(v) }
                if let v = line.take("reorder") { link.reorder = try line.fraction(v) }
                if let v = line.take("reorder-delay") { link.reorderDelay = try line.duration(v) }
                if let v = line.take("mtu") { link.mtu = try line.int(v, 100...65_527) }
                if let v = line.take("overhead") { link.overhead = try line.int(v, 0...1000) }
                if let v = line.take("link-timeout") { link.linkTimeout = try line.duration(v) }
                if let v = line.take("idle-timeout") { link.idleTimeout = try line.duration(v) }
                if let v = line.take("dial-timeout") { link.dialTimeout = try line.duration(v) }
                if let v = line.take("fifo") { link.fifo = try line.duration(v) }
            case "cpu":
                var c = CPUSettings()
                if let v = line.take("cores") {
                    guard let n = Double(v), n >= 0.01, n <= 1024 else { throw .invalid(lineNo, "cores= is a number of cores, 0.01…1024 (fractional for a shared machine), got \"\(v)\"") }
                    c.cores = n
                }
                if let v = line.take("machines") { c.machines = try line.int(v, 1...1_000_000) }
                if let v = line.take("send") { c.sendNsPerByte = try line.nsPerByte(v) }
                if let v = line.take("recv") { c.recvNsPerByte = try line.nsPerByte(v) }
                if let v = line.take("slot") {
                    c.slot = try line.duration(v)
                    guard c.slot >= .microseconds(1), c.slot <= .milliseconds(10) else { throw .invalid(lineNo, "slot must be 1us…10ms") }
                }
                link.cpu = c
            case "join":
                let at = try line.duration(try line.required("at"))
                let set = try NodeSet.parse(line.take("nodes") ?? "all", line: lineNo)
                let spread = try line.take("spread").map { s throws(ScenarioError) in try line.duration(s) } ?? .zero
                joins.append(JoinSpec(at: at, nodes: set, spread: spread))
            case "workload":
                let at = try line.duration(try line.required("at"))
                let set = try NodeSet.parse(try line.required("nodes"), line: lineNo)
                let kind = try line.required("kind")
                let core = line.take("core")
                let every = try line.take("every").map { s throws(ScenarioError) in try line.duration(s) }
                let count = try line.take("count").map { s throws(ScenarioError) in try line.int(s, 1...10_000_000) } ?? 1
                workloads.append(WorkloadSpec(at: at, nodes: set, kind: kind, core: core, every: every, count: count,
                                              parameters: line.keyValues()))
                line.consumeAll()
            case "fault":
                let at = try line.duration(try line.required("at"))
                let every = try line.take("every").map { s throws(ScenarioError) in try line.duration(s) }
                let count = try line.take("count").map { s throws(ScenarioError) in try line.int(s, 1...1_000_000) } ?? 1
                let what = try line.positional("a fault: partition, heal, crash, restart, slow, skew or loss")
                let fault: Fault
                switch what {
                case "partition":
                    let groups = try line.required("groups").split(separator: "|").map { g throws(ScenarioError) in
                        try NodeSet.parse(String(g), line: lineNo)
                    }
                    fault = .partition(groups)
                case "heal": fault = .heal
                case "crash": fault = .crash(try NodeSet.parse(try line.required("nodes"), line: lineNo))
                case "restart":
                    let set = try NodeSet.parse(try line.required("nodes"), line: lineNo)
                    let disk = line.take("disk") ?? "keep"
                    guard disk == "keep" || disk == "wipe" else { throw .invalid(lineNo, "disk= is keep or wipe, got \"\(disk)\"") }
                    fault = .restart(set, keepDisk: disk == "keep")
                case "slow":
                    let set = try NodeSet.parse(try line.required("nodes"), line: lineNo)
                    let cpu = try line.take("cpu").map { s throws(ScenarioError) in try line.duration(s) } ?? .zero
                    let bw = try line.take("bandwidth").map { s throws(ScenarioError) in try line.fraction(s) } ?? 1
                    guard bw > 0 else { throw .invalid(lineNo, "bandwidth= is a factor above 0 (0.1 = a tenth of the capacity)") }
                    fault = .slow(set, cpu: cpu, bandwidth: bw)
                case "skew":
                    let set = try NodeSet.parse(try line.required("nodes"), line: lineNo)
                    let offset = try line.take("offset").map { s throws(ScenarioError) in try line.signedDuration(s) } ?? .zero
                    var ppm = 0.0
                    if let d = line.take("drift") {
                        guard d.hasSuffix("ppm"), let v = Double(d.dropLast(3)), abs(v) < 1e5 else {
                            throw .invalid(lineNo, "drift= is parts per million, such as 100ppm or -50ppm")
                        }
                        ppm = v
                    }
                    fault = .skew(set, offset: offset, ppm: ppm)
                case "loss": fault = .loss(try line.fraction(try line.positional("a loss rate such as 1%")))
                default: throw .invalid(lineNo, "unknown fault \"\(what)\": use partition, heal, crash, restart, slow, skew or loss")
                }
                faults.append(FaultSpec(at: at, kind: fault, every: every, count: every == nil ? 1 : count))
            default:
                throw .invalid(lineNo, "unknown keyword \"\(keyword)\"; see simulations/README.md for the scenario format")
            }
            try line.finish()
        }
        guard sawNodes else { throw .invalid(0, "the scenario has no `nodes N` line") }
        guard !cores.isEmpty else { throw .invalid(0, "the scenario has no `core NAME` line (for example `core flood`)") }
        if regions.isEmpty { regions = [RegionSpec(name: "default")] }
        latency = Array(repeating: Array(repeating: nil, count: regions.count), count: regions.count)
        for (lineNo, a, b, d) in latencyLines {
            guard let i = regions.firstIndex(where: { $0.name == a }), let j = regions.firstIndex(where: { $0.name == b }) else {
                throw .invalid(lineNo, "latency names a region that no `region` line declares (\(a) or \(b))")
            }
            latency[i][j] = d
            latency[j][i] = d
        }
        for i in regions.indices {
            for j in regions.indices where latency[i][j] == nil {
                if regions.count == 1 && latencyLines.isEmpty { latency[i][j] = .milliseconds(1); continue }
                throw .invalid(0, "no latency between regions \(regions[i].name) and \(regions[j].name): add `latency \(regions[i].name) \(regions[j].name) 20ms`")
            }
        }
        sampleEvery = max(sampleEvery, .milliseconds(1))
    }
}

/// One line's words, consumed as the parser reads them; leftovers are an error.
struct Line {
    let number: Int
    private var words: [String]

    init(number: Int, words: [String]) { self.number = number; self.words = words }

    mutating func rest() throws(ScenarioError) -> String {
        guard !words.isEmpty else { throw .invalid(number, "expected text after the keyword") }
        defer { words = [] }
        return words.joined(separator: " ")
    }

    mutating func positional(_ expected: String) throws(ScenarioError) -> String {
        guard let i = words.firstIndex(where: { !$0.contains("=") }) else { throw .invalid(number, "expected \(expected)") }
        return words.remove(at: i)
    }

    mutating func take(_ key: String) -> String? {
        guard let i = words.firstIndex(where: { $0.hasPrefix(key + "=") }) else { return nil }
        return String(words.remove(at: i).dropFirst(key.count + 1))
    }

    mutating func required(_ key: String) throws(ScenarioError) -> String {
        guard let v = take(key) else { throw .invalid(number, "missing \(key)=") }
        return v
    }

    func keyValues() -> [String: String] {
        var out: [String: String] = [:]
        for w in words {
            if let eq = w.firstIndex(of: "=") { out[String(w[..<eq])] = String(w[w.index(after: eq)...]) }
        }
        return out
    }

    mutating func consumeAll() { words = [] }

    func finish() throws(ScenarioError) {
        if !words.isEmpty { throw .invalid(number, "unexpected \(words.map { "\"\($0)\"" }.joined(separator: " "))") }
    }

    func int(_ s: String, _ range: ClosedRange<Int>) throws(ScenarioError) -> Int {
        guard let v = Int(s), range.contains(v) else { throw .invalid(number, "expected a whole number in \(range), got \"\(s)\"") }
        return v
    }

    func duration(_ s: String) throws(ScenarioError) -> Duration {
        guard let d = Units.duration(s), d >= .zero else {
            throw .invalid(number, "\"\(s)\" is not a duration: use a number and ns, us, ms, s, m or h (250ms, 1.5s, 10m)")
        }
        return d
    }

    func signedDuration(_ s: String) throws(ScenarioError) -> Duration {
        let negative = s.hasPrefix("-")
        let d = try duration(negative || s.hasPrefix("+") ? String(s.dropFirst()) : s)
        return negative ? .zero - d : d
    }

    /// CPU cost per byte: "8.3ns" or "8.3ns/B" (nanoseconds per wire byte), 0…1,000,000.
    func nsPerByte(_ s: String) throws(ScenarioError) -> Double {
        var t = Substring(s)
        if t.hasSuffix("/B") { t = t.dropLast(2) }
        guard t.hasSuffix("ns"), let v = Double(t.dropLast(2)), v >= 0, v <= 1_000_000 else {
            throw .invalid(number, "expected CPU nanoseconds per byte such as 8.3ns, got \"\(s)\"")
        }
        return v
    }

    func rate(_ s: String) throws(ScenarioError) -> Double {
        guard let r = Units.rate(s), r > 0 else {
            throw .invalid(number, "\"\(s)\" is not a rate: use 100mbit, 1gbit, 512kbit or 10MB/s")
        }
        return r
    }

    func fraction(_ s: String) throws(ScenarioError) -> Double {
        guard let f = Units.fraction(s), f >= 0, f <= 1 else {
            throw .invalid(number, "\"\(s)\" is not a fraction: use 1%, 0.5% or 0.01")
        }
        return f
    }
}

/// Unit parsing shared by the scenario parser and workload parameters.
public enum Units {
    /// `250ms`, `1.5s`, `10m`, `2h`, `500us`, `100ns`.
    public static func duration(_ s: String) -> Duration? {
        let table: [(String, Double)] = [("ns", 1), ("us", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
        for (suffix, scale) in table where s.hasSuffix(suffix) {
            let number = s.dropLast(suffix.count)
            // "ms" also ends in "s": only accept when the rest is a number.
            if let v = Double(number), v.isFinite, v >= 0, v * scale < 9e18 {
                return .nanoseconds(Int64((v * scale).rounded()))
            }
        }
        return nil
    }

    /// Bytes: `512`, `64KiB`, `1MiB`, `2GiB`, `10KB`, `5MB`, `1GB`.
    public static func bytes(_ s: String) -> Int? {
        let table: [(String, Double)] = [("KiB", 1024), ("MiB", 1_048_576), ("GiB", 1_073_741_824), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("B", 1)]
        for (suffix, scale) in table where s.hasSuffix(suffix) {
            if let v = Double(s.dropLast(suffix.count)), v >= 0, v * scale < 1e15 { return Int(v * scale) }
        }
        if let v = Int(s), v >= 0 { return v }
        return nil
    }

    /// Bytes per second: `100mbit`, `1gbit`, `512kbit`, `800bit`, `10MB/s`, `1GB/s`, `500KB/s`.
    public static func rate(_ s: String) -> Double? {
        let table: [(String, Double)] = [("gbit", 1e9 / 8), ("mbit", 1e6 / 8), ("kbit", 1e3 / 8), ("bit", 1.0 / 8),
                                         ("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3), ("B/s", 1)]
        for (suffix, scale) in table where s.hasSuffix(suffix) {
            if let v = Double(s.dropLast(suffix.count)), v.isFinite, v >= 0 { return v * scale }
        }
        return nil
    }

    /// `1%` → 0.01, or a plain number.
    public static func fraction(_ s: String) -> Double? {
        if s.hasSuffix("%") { return Double(s.dropLast()).map { $0 / 100 } }
        return Double(s)
    }
}
