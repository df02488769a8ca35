import ArgumentParser
import Foundation
import MeshCore
import ClusterState

/// ClusterState: merge speed, the crdt-benchmarks B3.1 workload against Loro and Yrs (run in the
/// same invocation through simulations/bench/crdt_b31.py), delta size against change size, and the
/// size of a whole cluster's state.
struct StateBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "Cluster-state CRDTs: merges/s, B3.1 vs Loro and Yrs, delta and state sizes.",
        discussion: """
        The B3.1 anchors need a Python with `loro` and `pycrdt` (make bench-state builds one in
        .build-venv/state); without it the anchor columns stay empty. The cluster-size row builds
        nodes × 100 containers × 1,000 blobs per node at --scale of the 10,000-node target and
        extrapolates linearly (state grows linearly in each of the three counts).
        """)

    @Option(help: "Python interpreter with loro and pycrdt installed, for the B3.1 anchors.")
    var python: String = ".build-venv/state/bin/python"

    @Option(help: "Fraction of the 10,000-node cluster to build for the size row (1 = full scale).")
    var scale: Double = 0.1

    @Option(help: "Run only these parts (comma-separated: merge, b31, delta, size); the JSON is written only for a full run.")
    var only: String = "merge,b31,delta,size"

    func run() throws {
        var report = BenchReport(area: "state")
        report.header()
        let parts = Set(only.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        if parts.contains("merge") { mergeRate(&report) }
        if parts.contains("b31") { try b31(&report) }
        if parts.contains("delta") { deltaSizes(&report) }
        if parts.contains("size") { clusterSize(&report) }
        if parts.count == 4 { try report.write() }
    }

    // MARK: merges per second

    /// A replica with `count` containers written by `writer`, plus that writer.
    func baseState(containers count: Int) -> (target: ClusterReplica, writer: ClusterReplica) {
        var writer = ClusterReplica(node: NodeID(publicKey: Array("writer".utf8)))
        let host = NodeID(publicKey: Array("host".utf8))
        for c in 0..<count {
            _ = writer.putContainer("c\(c)", ContainerSpec(node: host, image: "proton:9", workloadClass: .gaming, priority: 1), wall: wallClock(0))
        }
        var target = ClusterReplica(node: NodeID(publicKey: Array("target".utf8)))
        target.apply(writer.data)
        return (target, writer)
    }

    func mergeRate(_ report: inout BenchReport) {
        let base = 10_000
        for (entries, deltas) in [(1, 20_000), (100, 400), (10_000, 8)] {
            var (target, writer) = baseState(containers: base)
            var batch: [ClusterData] = []
            var k = 0
            for _ in 0..<deltas {
                var d = ClusterData()
                for _ in 0..<entries {
                    d.join(writer.setContainerStatus("c\(k % base)", k % 2 == 0 ? .running : .stopped, wall: wallClock(UInt64(k))).delta)
                    k += 1
                }
                batch.append(d)
            }
            let bytes = batch.map { $0.wireBytes() }
            var decodeCopy = target
            let clock = ContinuousClock()
            let t0 = clock.now
            for d in batch { target.apply(d) }
            let merge = (clock.now - t0).seconds
            let t1 = clock.now
            for b in bytes { decodeCopy.apply(try! ClusterData.decode(b, maxBytes: 1 << 30)) }
            let both = (clock.now - t1).seconds
            precondition(decodeCopy.data == target.data && target.data == writer.data, "merge bench diverged")
            report.add(BenchRow("merge OR-Map delta of \(entries) entr\(entries == 1 ? "y" : "ies") (into 10k)",
                                Double(deltas) / merge, "merges/s",
                                note: "\(Int(Double(deltas * entries) / merge)) entries/s; with decode \(Int(Double(deltas) / both)) merges/s"))
        }
    }

    // MARK: B3.1

    typealias B31Map = ORMap<String, LWWRegister<UInt64>>

    func b31Once(writers n: Int) -> (total: Double, merge: Double, updateBytes: Int, docBytes: Int, winner: UInt64?) {
        let clock = ContinuousClock()
        let t0 = clock.now
        var updates: [[UInt8]] = []
        updates.reserveCapacity(n)
        for i in 0..<n {
            // A real node's replica ID (a hash of its key), not a small integer.
            let r = ReplicaID(NodeID(publicKey: [UInt8(i & 0xff), UInt8(i >> 8), 7]))
            var doc = Causal<B31Map>()
            var hlc = HybridLogicalClock()
            let d = doc.store.update("v", by: r, context: doc.context) { reg, r, ctx in
                reg.assign(UInt64(i), clock: &hlc, physical: wallClock(UInt64(i % 7)), by: r, context: ctx)
            }
            doc.join(d)
            updates.append(d.wireBytes())
        }
        let t1 = clock.now
        var merged = Causal<B31Map>()
        for u in updates { merged.join(try! Causal<B31Map>(wireBytes: u)) }
        let t2 = clock.now
        return ((t2 - t0).seconds, (t2 - t1).seconds, updates.reduce(0) { $0 + $1.count },
                merged.wireBytes().count, merged.store["v"]?.value)
    }

    func b31(_ report: inout BenchReport) throws {
        let n = 20 * Int(Double(6000).squareRoot())  // 1540
        _ = b31Once(writers: n)
        let runs = (0..<7).map { _ in b31Once(writers: n) }
        let total = runs.map(\.total).sorted()[3], merge = runs.map(\.merge).sorted()[3]
        var loro: [String: Double]? = nil, yrs: [String: Double]? = nil
        if FileManager.default.isExecutableFile(atPath: python) {
            print("running the Loro and Yrs anchors (\(python) simulations/bench/crdt_b31.py) ...")
            let out = (try? shell("\(python) simulations/bench/crdt_b31.py \(n) 7")) ?? ""
            if let data = out.data(using: .utf8),
               let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
                loro = obj["loro"] as? [String: Double]
                yrs = obj["yrs"] as? [String: Double]
            }
        } else {
            print("no \(python): run `make bench-state` to get the Loro and Yrs anchors")
        }
        let r = runs[0]
        report.add(BenchRow("B3.1 time (1540 writers, create+merge)", total * 1e3, "ms", anchor: "Loro", anchorValue: loro?["time_ms"],
                            note: yrs.map { "Yrs \(BenchReport.number($0["time_ms"] ?? 0)) ms" }))
        report.add(BenchRow("B3.1 merge only (decode + join all)", merge * 1e3, "ms", anchor: "Loro", anchorValue: loro?["merge_ms"],
                            note: yrs.map { "Yrs \(BenchReport.number($0["merge_ms"] ?? 0)) ms" }))
        report.add(BenchRow("B3.1 merged document encoded", Double(r.docBytes), "B", anchor: "Loro", anchorValue: loro?["doc_bytes"],
                            note: yrs.map { "Yrs \(Int($0["doc_bytes"] ?? 0)) B" }))
        report.add(BenchRow("B3.1 all updates encoded", Double(r.updateBytes), "B", anchor: "Loro", anchorValue: loro?["update_bytes"],
                            note: yrs.map { "Yrs \(Int($0["update_bytes"] ?? 0)) B" }))
    }

    // MARK: delta size vs change size

    func deltaSizes(_ report: inout BenchReport) {
        var (target, writer) = baseState(containers: 10_000)
        let stateBytes = target.data.wireBytes().count
        report.add(BenchRow("state of 10k containers, encoded", Double(stateBytes), "B"))
        var k = 0
        for changes in [1, 10, 100, 1000, 10_000] {
            var d = ClusterData()
            for _ in 0..<changes {
                d.join(writer.setContainerStatus("c\(k % 10_000)", .running, wall: wallClock(UInt64(k))).delta)
                k += 1
            }
            let size = d.wireBytes().count
            target.apply(d)
            report.add(BenchRow("delta for \(changes) status change\(changes == 1 ? "" : "s")", Double(size), "B",
                                note: "\(size / changes) B/change; \(String(format: "%.2f", Double(size) * 100 / Double(stateBytes)))% of the state"))
        }
    }

    // MARK: cluster state size

    func clusterSize(_ report: inout BenchReport) {
        let nodes = max(1, Int(10_000 * scale))
        let containersPerNode = 100, blobsPerNode = 1000
        print("building \(nodes) nodes × \(containersPerNode) containers × \(blobsPerNode) blobs (scale \(scale)) ...")
        let rssBefore = residentBytes()
        var cluster = ClusterData()
        let spec = NodeSpec(addresses: [PeerAddress(host: "10.1.2.3", port: 7400)], region: "eu-west", zone: "a",
                            labels: [Label("tier", "edge")], cpuMillicores: 32000, memoryMiB: 131072, diskGiB: 4000,
                            gpu: GPUInfo(model: "RTX 4090", count: 1, memoryMiB: 24576))
        let clock = ContinuousClock()
        let t0 = clock.now
        for n in 0..<nodes {
            let id = NodeID(publicKey: Array("bench-node-\(n)".utf8))
            var r = ClusterReplica(node: id)
            _ = r.setNodeSpec(spec, wall: wallClock(0))
            _ = r.setNodeLoad(NodeLoad(cpuPermille: 420, memoryPermille: 300, gpuPermille: 800, runningContainers: 100), wall: wallClock(1))
            for c in 0..<containersPerNode {
                let cid = "n\(n)-c\(c)"
                _ = r.putContainer(cid, ContainerSpec(node: id, image: "registry.local/proton:9.0-\(c % 5)", workloadClass: c % 4 == 0 ? .management : .gaming, priority: Int32(c % 10)), wall: wallClock(2))
                _ = r.setContainerStatus(cid, .running, wall: wallClock(3))
            }
            // Blobs are shared across nodes (a popular base layer is everywhere): 1000 of 20000.
            for b in 0..<blobsPerNode {
                _ = r.addHolding(Digest.of(Array("blob-\((n * 37 + b * 13) % 20_000)".utf8)))
            }
            cluster.join(r.data)
            if n % max(1, nodes / 10) == 0 { print("  \(n)/\(nodes) nodes"); fflush(nil) }
        }
        let build = (clock.now - t0).seconds
        let rss = residentBytes() - rssBefore
        let t1 = clock.now
        let encoded = cluster.wireBytes()
        let encodeTime = (clock.now - t1).seconds
        let factor = 1 / scale
        report.add(BenchRow("cluster state encoded, \(nodes) nodes (scale \(scale))", Double(encoded.count) / 1e6, "MB",
                            note: "→ \(String(format: "%.0f", Double(encoded.count) * factor / 1e6)) MB at 10,000 nodes; \(String(format: "%.1f", Double(encoded.count) / Double(nodes * (containersPerNode * 2 + blobsPerNode)))) B per record"))
        report.add(BenchRow("cluster state memory (RSS growth)", Double(rss) / 1e6, "MB",
                            note: "→ \(String(format: "%.1f", Double(rss) * factor / 1e9)) GB at 10,000 nodes (linear extrapolation)"))
        report.add(BenchRow("cluster state build (all writes, joins)", Double(nodes * (containersPerNode * 2 + blobsPerNode + 2)) / build, "writes/s",
                            note: "encode \(String(format: "%.2f", encodeTime)) s"))
    }
}

private func wallClock(_ ms: UInt64) -> WallTime { WallTime(nanosecondsSinceEpoch: (1_767_225_600_000 + ms) * 1_000_000) }

/// Resident set size from /proc/self/statm.
private func residentBytes() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let parts = s.split(separator: " ")
    guard parts.count > 1, let pages = Int(parts[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}
