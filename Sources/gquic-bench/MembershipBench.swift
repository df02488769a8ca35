import ArgumentParser
import Foundation
import Membership
import MembershipLab
import MeshCore

/// Membership at N = 1,000 (and more, if asked) in virtual time: join dissemination, failure
/// detection, false positives — next to Serf's convergence model and memberlist's LAN timings.
struct MembershipBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "membership",
        abstract: "SWIM + Lifeguard at scale, simulated: join spread, failure detection, false positives.",
        discussion: """
        Drives N membership cores in MembershipWorld (virtual time, seeded, 0.25 ms ± 0.1 ms one-way
        latency) and measures, for each loss rate:
          - join: time until 99.99% of members know a new node is alive (anchor: Serf's convergence
            model with its defaults, 2.2 s at 1k, 2.6 s at 10k) and bandwidth per node (budget ~330 kbit/s);
          - detection: after a crash, time until the first member and all members mark it dead
            (p50/p99 over several crashes; anchor: memberlist's LAN defaults need at least 1 s + 12 s of
            suspicion at N = 1,000 — also measured here by running this core with those settings);
          - false positives: live nodes marked dead over simulated minutes with 10% loss and a few
            nodes slowed by 300 ms each way (goal: zero).
        Clusters above --preform-above (2,000) start formed: every member learns the others from one
        push-pull, then 30 s of their gossip drains before measuring. A 10k-node run keeps 10^8 member
        records in one process (peak RSS ~12 GiB with the formation gossip in flight) and takes ~20
        CPU-minutes with --crashes 5; `--nodes 1000 10000` runs both sizes. --explain prints the trace
        behind each false death.
        """
    )

    @Option(parsing: .upToNextOption, help: "Cluster sizes.")
    var nodes: [Int] = [1000]
    @Option(parsing: .upToNextOption, help: "Message loss rates (0...1).")
    var loss: [Double] = [0, 0.10]
    @Option(help: "Crashes per detection measurement.")
    var crashes = 10
    @Option(help: "Simulated minutes for the false-positive run.")
    var minutes: Double = 10
    @Option(help: "Cluster size for the false-positive run (issue 6: 1,000). A size also given to --nodes reuses that cluster.")
    var fpNodes = 1000
    @Option(help: "Largest N at which the same core is also run with memberlist's LAN settings (the detection anchor).")
    var anchorNodes = 1000
    @Option(help: "Seed.")
    var seed: UInt64 = 1
    @Flag(help: "Run only the false-positive measurement.")
    var onlyFalsePositives = false
    @Flag(help: "Skip the false-positive measurement.")
    var noFalsePositives = false
    @Option(help: "Clusters larger than this start already formed (MembershipWorld.startFormed: every member learns the others from one push-pull) instead of joining one by one through 3 seeds; the measurements start from steady state either way.")
    var preformAbove = 2_000
    @Flag(help: "A preformed cluster keeps its members' queued gossip about each other (by default it is dropped: a cluster that formed before the run has no news to spread, and gossiping it swamps the steady-state bandwidth).")
    var formationGossip = false
    @Flag(help: "On each false death, print what the observer saw of the slowed node (its status changes and the probe traffic between them) in the seconds before.")
    var explain = false

    func run() throws {
        var report = BenchReport(area: "membership")
        report.header()
        var reusable: [Int: MembershipWorld] = [:]
        for n in nodes where !onlyFalsePositives {
            // One cluster serves every loss rate (one joiner each) and then the false-positive run:
            // forming N nodes from one seed is the expensive part of the simulation.
            let w = formed(n: n, settings: MembershipSettings(), extra: loss.count)
            for (k, p) in loss.enumerated() {
                w.loss = p
                measureJoinAndDetection(w, n: n, joiner: n + k, loss: p, label: "", report: &report)
            }
            report.add(BenchRow("\(n): process peak RSS so far", Self.peakRSSMiB(), "MiB",
                                note: "N cores x N members in one process (shared MemberDirectory)"))
            if n == fpNodes { reusable[n] = w }
            // memberlist's LAN defaults on the same core and the same world, for the detection anchor.
            if n <= anchorNodes {
                let m = formed(n: n, settings: .memberlistLAN, extra: 1)
                measureJoinAndDetection(m, n: n, joiner: n, loss: 0, label: " memberlist-cfg", report: &report)
            }
        }
        // The false-positive run may reuse a formed cluster (its crashed nodes stay down and dead).
        if !noFalsePositives { falsePositives(reusable[fpNodes] ?? formed(n: fpNodes, settings: MembershipSettings(), extra: 0), n: fpNodes, report: &report) }
        try report.write()
    }

    /// VmHWM of this process, MiB.
    static func peakRSSMiB() -> Double {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kb = Double(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") else { return 0 }
        return kb / 1024
    }

    static func serfConvergence(_ n: Int) -> Double? { n <= 1000 ? 2.2 : (n <= 10_000 ? 2.6 : nil) }

    func progress(_ s: String) {
        FileHandle.standardError.write(Data("  … \(s)\n".utf8))
    }

    func percentile(_ xs: [Double], _ q: Double) -> Double {
        guard !xs.isEmpty else { return .nan }
        let s = xs.sorted()
        return s[min(s.count - 1, Int((Double(s.count - 1) * q).rounded(.up)))]
    }

    func formed(n: Int, settings: MembershipSettings, extra: Int) -> MembershipWorld {
        let wall = Date()
        let w = MembershipWorld(count: n + extra, seed: seed &+ UInt64(n), settings: settings, seedHosts: [0, 1, 2])
        if n > preformAbove {
            progress("N=\(n): starting the cluster formed (> --preform-above \(preformAbove))")
            w.startFormed(count: n, gossipFormation: formationGossip)
        } else {
            for i in 0..<n {
                if i % 50 == 0 { w.run(for: .milliseconds(500)) }
                if i % 200 == 0 { progress("N=\(n): starting node \(i), \(String(format: "%.0f", Date().timeIntervalSince(wall))) s wall") }
                w.start(i)
            }
        }
        let ok = w.run(until: {
            (0..<n).allSatisfy { w.core($0)?.liveMemberCount == n - 1 }
        }, step: .seconds(1), limit: .seconds(300))
        progress("N=\(n): cluster formed in \(ok.map { "\($0.seconds) s" } ?? "> 300 s") virtual, \(String(format: "%.1f", Date().timeIntervalSince(wall))) s wall")
        for k in 1...6 { // let the join gossip drain
            w.run(for: .seconds(5))
            if n > preformAbove { progress("N=\(n): draining the formation gossip, \(k * 5)/30 s, \(String(format: "%.1f", Date().timeIntervalSince(wall))) s wall") }
        }
        return w
    }

    func measureJoinAndDetection(_ w: MembershipWorld, n: Int, joiner: Int, loss: Double, label: String, report: inout BenchReport) {
        let tag = "\(n) \(Int(loss * 100))%\(label)"
        let joinerID = w.hosts[joiner].id
        var learned: [Int: Instant] = [:]
        var deadAt: [Int: Instant] = [:]
        var victim: NodeID? = nil
        w.onChange = { observer, change in
            if change.node == joinerID && change.status == .alive && learned[observer] == nil { learned[observer] = change.at }
            if change.node == victim && change.status == .dead && deadAt[observer] == nil { deadAt[observer] = change.at }
        }
        // Bandwidth in steady state, before the join.
        let bytes0 = w.hosts.reduce(0) { $0 + $1.bytesSent }
        w.run(for: .seconds(20))
        let steady = Double(w.hosts.reduce(0) { $0 + $1.bytesSent } - bytes0) * 8 / 1000 / 20 / Double(w.runningHosts.count)

        let t0 = w.now
        let bytes1 = w.hosts.reduce(0) { $0 + $1.bytesSent }
        w.start(joiner)
        let members = w.runningHosts.count - 1
        w.run(until: { learned.count >= members }, step: .milliseconds(50), limit: .seconds(60))
        let joinWindow = max((w.now - t0).seconds, 0.001)
        let joinKbps = Double(w.hosts.reduce(0) { $0 + $1.bytesSent } - bytes1) * 8 / 1000 / joinWindow / Double(members + 1)
        let times = learned.values.map { ($0 - t0).seconds }
        let target = Int((Double(members) * 0.9999).rounded(.up))
        let t9999 = times.count >= target ? percentile(times, 0.9999) : .infinity
        if label.isEmpty {
            report.add(BenchRow("\(tag): join known by 99.99%", t9999, "s", anchor: "Serf model", anchorValue: Self.serfConvergence(n),
                                note: "p50 \(String(format: "%.2f", percentile(times, 0.5))) s, reached \(times.count)/\(members)"))
            report.add(BenchRow("\(tag): kbit/s/node during join", joinKbps, "kbit/s", anchor: "Serf budget", anchorValue: 330))
            report.add(BenchRow("\(tag): kbit/s/node steady", steady, "kbit/s", anchor: "Serf budget", anchorValue: 330))
        }

        // Detection: crash members one at a time.
        var first: [Double] = [], all: [Double] = []
        var rng = SeededRandom(seed: seed &+ 77)
        for c in 0..<crashes {
            var v = 3 + Int(rng.next() % UInt64(n - 3))
            while !w.hosts[v].running { v = 3 + Int(rng.next() % UInt64(n - 3)) }
            victim = w.hosts[v].id
            deadAt.removeAll()
            let crashAt = w.now
            w.crash(v)
            let observers = w.runningHosts.count
            let done = w.run(until: { deadAt.count >= observers }, step: .milliseconds(100), limit: .seconds(200))
            let ts = deadAt.values.map { ($0 - crashAt).seconds }
            if let m = ts.min() { first.append(m) }
            if done != nil, let m = ts.max() { all.append(m) } else { all.append(.infinity) }
            progress("\(tag): crash \(c + 1)/\(crashes): first \(ts.min() ?? .nan) s, all \(done == nil ? "not reached" : String(format: "%.2f s", ts.max() ?? .nan))")
            w.run(for: .seconds(5))
        }
        let anchorFirst = label.isEmpty ? "memberlist min (1 s + 12 s)" : nil
        report.add(BenchRow("\(tag): detect, first p50", percentile(first, 0.5), "s", anchor: anchorFirst, anchorValue: label.isEmpty ? 13 : nil))
        report.add(BenchRow("\(tag): detect, first p99", percentile(first, 0.99), "s"))
        report.add(BenchRow("\(tag): detect, all p50", percentile(all, 0.5), "s", note: label.isEmpty ? "goal < 5 s" : nil))
        report.add(BenchRow("\(tag): detect, all p99", percentile(all, 0.99), "s"))
    }

    func falsePositives(_ w: MembershipWorld, n: Int, report: inout BenchReport) {
        w.loss = 0.10
        let slow = Array(w.runningHosts.filter { $0 >= 3 }.prefix(5))
        for s in slow { w.slow(s, by: .milliseconds(300)) }
        var falseDead = 0
        var suspicions = 0
        let live = Set(w.runningHosts.map { w.hosts[$0].id })
        var tracer = explain ? FalseDeathTracer(world: w, slow: slow) : nil
        w.onChange = { observer, change in
            if change.status == .dead && live.contains(change.node) {
                falseDead += 1
                tracer?.explain(observer: observer, change: change)
            }
            if change.status == .suspect { suspicions += 1 }
            tracer?.record(observer: observer, change: change)
        }
        if tracer != nil { w.onDeliver = { from, to, msg in tracer?.record(from: from, to: to, msg) } }
        let wall = Date()
        let bytes0 = w.hosts.reduce(0) { $0 + $1.bytesSent }
        let total = Int(minutes * 60)
        var done = 0
        var stepBytes = bytes0
        while done < total {
            let step = min(60, total - done)
            w.run(for: .seconds(Int64(step)))
            done += step
            let sent = w.hosts.reduce(0) { $0 + $1.bytesSent }
            let stepKbps = Double(sent - stepBytes) * 8 / 1000 / Double(step) / Double(live.count)
            stepBytes = sent
            progress("false positives: \(done)/\(total) s simulated, \(falseDead) false deaths, \(suspicions) suspicions, \(String(format: "%.1f", stepKbps)) kbit/s/node this step, \(String(format: "%.0f", Date().timeIntervalSince(wall))) s wall")
        }
        let kbps = Double(w.hosts.reduce(0) { $0 + $1.bytesSent } - bytes0) * 8 / 1000 / Double(total) / Double(live.count)
        let tag = "\(n) 10%+\(slow.count) slow"
        report.add(BenchRow("\(tag): false deaths, \(minutes) min", Double(falseDead), "events",
                            note: "goal 0; slow = +300 ms each way; \(suspicions) suspicion events seen"))
        report.add(BenchRow("\(tag): kbit/s/node", kbps, "kbit/s", anchor: "Serf budget", anchorValue: 330))
    }
}

/// `--explain`: keeps, per slowed node, the recent probe traffic to and from it and every observer's
/// status changes about it, and prints the part that concerns an observer when it declares the node
/// dead (a false death), so the cause can be read off a run.
struct FalseDeathTracer {
    struct Delivery { var at: Instant; var from: Int; var to: Int; var text: String }
    let world: MembershipWorld
    let slowIDs: [NodeID: Int]
    var deliveries: [Int: [Delivery]] = [:]
    var changes: [Int: [(Int, MembershipChange)]] = [:]
    let keep = 20_000

    init(world: MembershipWorld, slow: [Int]) {
        self.world = world
        var ids: [NodeID: Int] = [:]
        for s in slow { ids[world.hosts[s].id] = s }
        slowIDs = ids
    }

    mutating func record(observer: Int, change: MembershipChange) {
        guard let s = slowIDs[change.node] else { return }
        changes[s, default: []].append((observer, change))
        if changes[s]!.count > keep * 2 { changes[s]!.removeFirst(keep) }
    }

    mutating func record(from: Int, to: Int, _ msg: PeerMessage) {
        guard let m = try? MembershipMessage(frame: msg.frame) else { return }
        let text: String
        var subject: Int?
        let fromSlow = slowIDs[world.hosts[from].id], toSlow = slowIDs[world.hosts[to].id]
        switch m {
        case .ping(let p): subject = slowIDs[p.target]; text = "ping seq \(p.sequence)\(msg.unreliable ? "" : " (stream)")"
        case .pingReq(let p): subject = slowIDs[p.target]; text = "ping-req seq \(p.sequence) target \(world.index(of: p.target) ?? -1)"
        case .ack(let a): subject = slowIDs[a.responder]; text = "ack seq \(a.sequence) for \(world.index(of: a.responder) ?? -1)\(msg.unreliable ? "" : " (stream)")"
        case .nack(let n): subject = fromSlow ?? toSlow; text = "nack seq \(n.sequence)"
        default: return
        }
        guard let s = subject ?? fromSlow ?? toSlow else { return }
        deliveries[s, default: []].append(Delivery(at: world.now, from: from, to: to, text: text))
        if deliveries[s]!.count > keep * 2 { deliveries[s]!.removeFirst(keep) }
    }

    func explain(observer o: Int, change: MembershipChange) {
        guard let s = slowIDs[change.node] else { return }
        let t0 = change.at - .seconds(25)
        func ts(_ i: Instant) -> String { String(format: "%.3f", Double(i.nanoseconds) / 1e9) }
        var lines = ["false death: host \(o) declared slowed host \(s) dead at \(ts(change.at)) s (\(change.version))"]
        for (obs, c) in changes[s] ?? [] where obs == o && c.at >= t0 {
            lines.append("  \(ts(c.at)) view: \(c.status) \(c.version)")
        }
        let mine = (deliveries[s] ?? []).filter { $0.at >= t0 && ($0.from == o || $0.to == o) }
        let helpers = Set(mine.filter { $0.from == o && $0.text.hasPrefix("ping-req") }.map(\.to))
        for d in deliveries[s] ?? [] where d.at >= t0 && (d.from == o || d.to == o || helpers.contains(d.from) || helpers.contains(d.to)) {
            lines.append("  \(ts(d.at)) \(d.from) -> \(d.to): \(d.text)")
        }
        FileHandle.standardError.write(Data((lines.joined(separator: "\n") + "\n").utf8))
    }
}
