import Foundation
import MeshCore
import MeshSimulator
import Swarm

/// The real `SwarmCore` hosted in the simulator (`core swarm`), with a synthetic chunk store.
///
/// The planner, its messages and its verification are the daemon's own; only the store is virtual:
/// a chunk's bytes are generated from a 64-bit content key when the node serves it, and a node's
/// store is a bit per chunk it holds (1,000 nodes holding a 1 GiB blob each would not fit in memory
/// otherwise). Every piece still crosses the simulated links at its full size and is SHA-256
/// verified by the receiving core.
///
/// Core parameters (`core swarm degree=24`): `degree` — links each node dials to random others at
/// start (default 24; links are two-way, so nodes average about twice that).
/// Workload (`workload … kind=publish blob=NAME size=1GiB chunk=64KiB [base=NAME change=5%]`,
/// `workload … kind=fetch blob=NAME`): see simulations/README.md.
struct SwarmSimCore: SimWorkloadCore, SimObservableCore {
    /// GQUIC_SWARM_TIMELINE set: print when each node gets the manifest.
    static let timeline = ProcessInfo.processInfo.environment["GQUIC_SWARM_TIMELINE"] != nil
    var core: SwarmCore
    let ledger: SwarmSimLedger
    let index: Int
    let directory: SimDirectory
    var random: SeededRandom
    let degree: Int
    /// Global chunk ids (`SwarmSimLedger`) this node holds, as bits.
    var held: [UInt64] = []
    /// Fetches in progress: blob digest → (name, start).
    var fetching: [Digest: (name: String, started: Instant)] = [:]
    var completions: [SimCompletion] = []
    /// Chunk bytes this node has handed to its uplink (for the upload-over-time gauge).
    var uploaded = 0
    /// With a holder-side upload queue (`upload-window=KiB uplink=Mbit`): when the modelled uplink
    /// is free, and the pieces handed to it with when each will have left.
    let uplinkBytesPerSecond: Double?
    var upFree = Instant.zero
    var unsent: [(at: Instant, bytes: Int)] = []
    /// The core's own next wake-up.
    var coreWake: Instant?

    init(context ctx: SimCoreContext, ledger: SwarmSimLedger) throws {
        ledger.nodeCount = ctx.directory.count
        self.ledger = ledger
        index = ctx.index
        directory = ctx.directory
        random = ctx.random
        var p = ctx.parameters
        if let d = p.removeValue(forKey: "degree") {
            guard let v = Int(d), v >= 1 else { throw SimRunError("core swarm: degree= is a number of links ≥ 1, got \"\(d)\"") }
            degree = v
        } else {
            degree = 24
        }
        var settings = SwarmSettings()
        func count(_ key: String, _ apply: (Int) -> Void) throws {
            guard let text = p.removeValue(forKey: key) else { return }
            guard let v = Int(text), v >= 1, v <= 1_000_000 else { throw SimRunError("core swarm: \(key)= is a count ≥ 1, got \"\(text)\"") }
            apply(v)
        }
        try count("max-requests") { settings.maxRequestsPerTransfer = $0 }
        try count("per-source") { settings.maxRequestsPerSource = $0 }
        try count("have-batch") { settings.haveBatch = $0 }
        try count("random-first") { settings.randomFirst = $0 }
        if let v = p.removeValue(forKey: "unique-first") {
            // The seed's unique-first serving; the daemon ships with it on (MeshNode.swarmSettings).
            guard v == "on" || v == "off" else { throw SimRunError("core swarm: unique-first= is on or off, got \"\(v)\"") }
            settings.uniqueFirstServing = v == "on"
        }
        if let v = p.removeValue(forKey: "serve-rarest") {
            guard v == "on" || v == "off" else { throw SimRunError("core swarm: serve-rarest= is on or off, got \"\(v)\"") }
            settings.serveRarestFirst = v == "on"
        }
        try count("measured-sources") { settings.measuredPipelineSources = $0 }
        try count("upload-window") { settings.uploadWindow = $0 << 10 }
        var uplink: Double?
        try count("uplink") { uplink = Double($0) * 1e6 / 8 }
        if settings.uploadWindow > 0 && uplink == nil { throw SimRunError("core swarm: upload-window= needs uplink=MBIT (the rate the host models its uplink at)") }
        uplinkBytesPerSecond = uplink
        guard p.isEmpty else {
            throw SimRunError("core swarm: unknown parameter(s) \(p.keys.sorted().joined(separator: ", ")); it takes degree, max-requests, per-source, measured-sources, upload-window, uplink, serve-rarest, have-batch, random-first, unique-first")
        }
        core = SwarmCore(me: ctx.nodeID, settings: settings, seed: random.next())
    }

    // MARK: MeshProtocolCore

    func handles(frameType type: UInt64) -> Bool { core.handles(frameType: type) }

    mutating func start(now: Instant) -> Outbox {
        var out = core.start(now: now)
        // Dial `degree` distinct random others (all of them in a small world).
        let n = directory.count
        let k = min(degree, n - 1)
        var picked: [Int] = []
        while picked.count < k {
            let j = Int(random.next() % UInt64(n))
            if j != index && !picked.contains(j) { picked.append(j) }
        }
        for j in picked { out.dial(SimDirectory.address(of: j)) }
        return out
    }

    mutating func receive(_ message: PeerMessage, now: Instant) -> Outbox {
        settle(core.receive(message, now: now), now: now)
    }

    mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox { settle(core.linkChanged(event, now: now), now: now) }
    mutating func tick(now: Instant) -> Outbox {
        var out = Outbox()
        // Pieces the modelled uplink has sent by now (upload-window): tell the core.
        while let first = unsent.first, first.at <= now {
            unsent.removeFirst()
            out.merge(core.pieceSent(bytes: first.bytes, now: now))
        }
        // The core is ticked only when its own wake-up is due (not at every piece sent).
        if let due = coreWake, due <= now {
            coreWake = nil
            out.merge(core.tick(now: now))
        }
        return settle(out, now: now)
    }

    mutating func workload(_ event: SimWorkload, now: Instant) throws -> Outbox {
        var p = event.parameters
        guard let name = p.removeValue(forKey: "blob") else { throw SimRunError("kind=\(event.kind) needs blob=NAME") }
        switch event.kind {
        case "publish":
            let blob = try ledger.blob(named: name, parameters: p)
            for id in blob.chunkIDs { hold(id) }
            ledger.published(name, by: index)
            return settle(core.hold(blob.manifest, now: now), now: now)
        case "fetch":
            guard p.isEmpty else { throw SimRunError("kind=fetch takes only blob=NAME, not \(p.keys.sorted().joined(separator: ", "))") }
            guard let blob = ledger.blobs[name] else {
                throw SimRunError("kind=fetch blob=\(name): no node has published \(name) yet (a publish line must come first)")
            }
            fetching[blob.manifest.blob] = (name, now)
            ledger.fetchStarted(name, by: index, missing: blob.manifest.chunks.indices.reduce(UInt64(0)) {
                $0 + (holds(blob.chunkIDs[$1]) ? 0 : UInt64(blob.manifest.chunks[$1].size))
            })
            return settle(core.fetch(blob.manifest.blob, now: now), now: now)
        default:
            throw SimRunError("core swarm understands kind=publish and kind=fetch, not kind=\(event.kind)")
        }
    }

    // MARK: SimObservableCore

    func stateDigest() -> Digest? { nil }
    func gauges() -> [SimGauge] {
        // Share of its current fetches each node has (1 when idle), for progress over time.
        let done = core.transfers.reduce((0.0, 0.0)) { ($0.0 + Double($1.bytesDone), $0.1 + Double($1.bytesTotal)) }
        return [SimGauge("fetches-in-progress", Double(fetching.count)),
                SimGauge("fetched-fraction", done.1 > 0 ? done.0 / done.1 : 1),
                // Cumulative: its growth between samples is the node's upload rate (uplink use).
                SimGauge("uploaded-mib", Double(uploaded) / 1_048_576)]
    }
    mutating func drainCompletions() -> [SimCompletion] {
        defer { completions.removeAll() }
        return completions
    }

    // MARK: The synthetic store

    func holds(_ id: Int32) -> Bool {
        let w = Int(id) >> 6
        return w < held.count && held[w] & (1 << UInt64(id & 63)) != 0
    }

    mutating func hold(_ id: Int32) {
        let w = Int(id) >> 6
        if w >= held.count { held.append(contentsOf: repeatElement(0, count: w + 1 - held.count)) }
        held[w] |= 1 << UInt64(id & 63)
    }

    /// Carries out the core's effects until none are left, as the daemon's SwarmShell does.
    private mutating func settle(_ first: Outbox, now: Instant) -> Outbox {
        var out = first
        if let w = out.wakeAt { coreWake = min(coreWake ?? w, w) }
        while true {
            let effects = core.drainEffects()
            if effects.isEmpty {
                if let first = unsent.first { out.wake(at: first.at) }
                if let due = coreWake { out.wake(at: due) }
                return out
            }
            for e in effects {
                switch e {
                case .serve(let peer, let blob, let i):
                    if let id = ledger.chunkID(blob, Int(i)), holds(id) {
                        ledger.served(by: index, bytes: Int(ledger.chunkSize(id)))
                        let data = ledger.content(of: id)
                        uploaded += data.count
                        let served = core.servePiece(to: peer, blob: blob, index: i, data: data, now: now)
                        if let up = uplinkBytesPerSecond {
                            // The uplink as the core's host sees it: pieces leave one after another.
                            for m in served.messages where m.frame.type == SwarmMessage.pieceFrameType {
                                let at = max(now, upFree) + .seconds(Double(m.frame.payload.count) / up)
                                upFree = at
                                unsent.append((at, data.count))
                            }
                        }
                        if let w = served.wakeAt { coreWake = min(coreWake ?? w, w) }
                        out.merge(served)
                    } else {
                        out.merge(core.cannotServe(peer, blob: blob, index: i))
                    }
                case .store(let blob, let i, _):
                    if let id = ledger.chunkID(blob, Int(i)) { hold(id) }
                case .checkLocal(let blob, let m):
                    if Self.timeline { print("node \(index) manifest at \(now)") }
                    var have = Bitfield(count: m.chunks.count)
                    for k in m.chunks.indices {
                        if let id = ledger.chunkID(blob, k), holds(id) { have.insert(k) }
                    }
                    out.merge(core.localChunks(blob, have: have, now: now))
                case .completed(let blob, _):
                    if let f = fetching.removeValue(forKey: blob) {
                        let elapsed = now - f.started
                        completions.append(SimCompletion(label: "fetch \(f.name)", elapsed: elapsed))
                        ledger.fetchDone(f.name, by: index, elapsed: elapsed)
                    }
                case .progress, .penalize:
                    break
                }
            }
        }
    }
}

/// What the swarm nodes of one run share: the synthetic blobs (built once, not once per node) and
/// what happened to each (who published, who fetched, how long it took, who uploaded what). The
/// simulator is single-threaded; the class is handed to the core factory, hence `@unchecked`.
final class SwarmSimLedger: @unchecked Sendable {
    struct Blob {
        var name: String
        var manifest: SwarmManifest
        var chunkIDs: [Int32]
    }
    struct Fetch {
        var node: Int
        var missing: UInt64
        var elapsed: Duration?
    }

    var nodeCount = 0
    private(set) var blobs: [String: Blob] = [:]
    private(set) var blobNames: [String] = []
    private var byDigest: [Digest: String] = [:]
    /// Per global chunk id: its content key and size.
    private var keys: [UInt64] = []
    private var sizes: [UInt32] = []
    private var idByKey: [UInt64: Int32] = [:]
    private(set) var publishers: [String: [Int]] = [:]
    private(set) var fetches: [String: [Fetch]] = [:]
    private var fetchSlot: [String: [Int: Int]] = [:]
    /// Bytes each node served (piece payloads).
    private(set) var uploaded: [Int: UInt64] = [:]

    static let maxBlobBytes: UInt64 = 64 << 30

    func chunkSize(_ id: Int32) -> UInt32 { sizes[Int(id)] }

    func chunkID(_ blob: Digest, _ index: Int) -> Int32? {
        guard let name = byDigest[blob], let b = blobs[name], index < b.chunkIDs.count else { return nil }
        return b.chunkIDs[index]
    }

    /// A chunk's bytes: 256 pseudo-random bytes from its content key, repeated to its size.
    func content(of id: Int32) -> [UInt8] {
        var r = SeededRandom(seed: keys[Int(id)])
        let size = Int(sizes[Int(id)])
        var pattern = [UInt8](repeating: 0, count: 256)
        pattern.withUnsafeMutableBytes { raw in
            for k in 0..<32 { raw.storeBytes(of: r.next(), toByteOffset: k * 8, as: UInt64.self) }
        }
        var out = [UInt8]()
        out.reserveCapacity(size)
        while out.count + 256 <= size { out.append(contentsOf: pattern) }
        out.append(contentsOf: pattern[0..<(size - out.count)])
        return out
    }

    /// The blob `name`, built from the publish line's parameters the first time it is published.
    func blob(named name: String, parameters p: [String: String]) throws -> Blob {
        if let b = blobs[name] { return b }
        var p = p
        var chunk = 64 << 10
        if let c = p.removeValue(forKey: "chunk") {
            guard let v = Units.bytes(c), v >= 1024, v <= Int(SwarmManifest.maxChunkSize) else {
                throw SimRunError("chunk= is a size in 1KiB...\(SwarmManifest.maxChunkSize >> 20)MiB, got \"\(c)\"")
            }
            chunk = v
        }
        var sizeWords: [UInt32] = []
        var keyBase: [UInt64] = []
        let seedOf = { (text: String) -> UInt64 in
            Digest.of(Array(text.utf8)).bytes.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        if let baseName = p.removeValue(forKey: "base") {
            guard let base = blobs[baseName] else {
                throw SimRunError("publish blob=\(name) base=\(baseName): \(baseName) must be published first")
            }
            let changeText = p.removeValue(forKey: "change") ?? "5%"
            guard let change = Units.fraction(changeText), change >= 0, change <= 1 else {
                throw SimRunError("change= is a fraction of chunks such as 5% or 0.05, got \"\(changeText)\"")
            }
            var r = SeededRandom(seed: seedOf("change " + name))
            for id in base.chunkIDs {
                sizeWords.append(sizes[Int(id)])
                let changed = Double(r.next() >> 11) * 0x1p-53 < change
                keyBase.append(changed ? r.next() : keys[Int(id)])
            }
        } else {
            guard let s = p.removeValue(forKey: "size"), let size = Units.bytes(s), size > 0, UInt64(size) <= Self.maxBlobBytes else {
                throw SimRunError("publish blob=\(name) needs size= (1 B...64 GiB), such as size=1GiB")
            }
            var r = SeededRandom(seed: seedOf("blob " + name))
            var left = size
            while left > 0 {
                let n = min(chunk, left)
                sizeWords.append(UInt32(n))
                keyBase.append(r.next())
                left -= n
            }
        }
        guard p.isEmpty else {
            throw SimRunError("publish blob=\(name): unknown parameter(s) \(p.keys.sorted().joined(separator: ", ")) (takes size, chunk, base, change)")
        }
        guard sizeWords.count <= SwarmManifest.maxChunks else {
            throw SimRunError("publish blob=\(name): \(sizeWords.count) chunks; the swarm takes at most \(SwarmManifest.maxChunks) (raise chunk=)")
        }
        var ids: [Int32] = []
        var chunks: [SwarmManifest.Chunk] = []
        var whole = SHA256Hasher()
        for k in sizeWords.indices {
            let id: Int32
            if let known = idByKey[keyBase[k]] { id = known } else {
                id = Int32(keys.count)
                keys.append(keyBase[k])
                sizes.append(sizeWords[k])
                idByKey[keyBase[k]] = id
            }
            ids.append(id)
            let bytes = content(of: id)
            whole.update(bytes)
            chunks.append(.init(digest: Digest.of(bytes), size: sizeWords[k]))
        }
        let b = Blob(name: name, manifest: SwarmManifest(blob: whole.finalize(), chunks: chunks), chunkIDs: ids)
        blobs[name] = b
        blobNames.append(name)
        byDigest[b.manifest.blob] = name
        return b
    }

    func published(_ name: String, by node: Int) {
        if !(publishers[name]?.contains(node) ?? false) { publishers[name, default: []].append(node) }
    }

    func fetchStarted(_ name: String, by node: Int, missing: UInt64) {
        if let k = fetchSlot[name]?[node] { fetches[name]![k] = Fetch(node: node, missing: missing); return }
        fetchSlot[name, default: [:]][node] = fetches[name, default: []].count
        fetches[name, default: []].append(Fetch(node: node, missing: missing))
    }

    func fetchDone(_ name: String, by node: Int, elapsed: Duration) {
        guard let k = fetchSlot[name]?[node] else { return }
        fetches[name]![k].elapsed = elapsed
    }

    func served(by node: Int, bytes: Int) { uploaded[node, default: 0] += UInt64(bytes) }
}

/// The swarm part of a run's report: per fetched blob, completion times against the fluid lower
/// bound max(F/u_s, N·F/(u_s + Σu_i), F/d_min) — F the bytes each fetcher lacked, u_s the
/// publishers' upload capacity, u_i the fetchers', d_min the slowest fetcher's download.
struct SwarmSummary {
    struct Entry {
        var label: String
        var fetchers: Int
        var done: Int
        var bytes: UInt64
        var bound: Double
        var p50: Double?
        var p99: Double?
        var max: Double?
        /// What the publishers uploaded, in copies of the blob's missing bytes.
        var seedCopies: Double
    }
    var entries: [Entry] = []
    /// Uplink use over time: per sample interval, the mean over nodes of chunk bytes uploaded
    /// (the `swarm.uploaded-mib` gauge's growth) as a share of the scenario's uplink rate.
    var uplinkUse: [(t: Double, share: Double)] = []

    init(ledger: SwarmSimLedger, scenario: Scenario, samples: [SimStats.Sample]) {
        var previous: (t: Double, mib: Double)?
        for s in samples {
            guard let g = s.gauges["swarm.uploaded-mib"] else { continue }
            if let p = previous, s.t > p.t, g.mean > p.mib {
                uplinkUse.append((s.t, (g.mean - p.mib) * 1_048_576 / (s.t - p.t) / scenario.link.up))
            }
            previous = (s.t, g.mean)
        }
        var up = Array(repeating: scenario.link.up, count: scenario.nodes)
        var down = Array(repeating: scenario.link.down, count: scenario.nodes)
        for (r, range) in scenario.regionRanges().enumerated() {
            for i in range {
                up[i] = scenario.regions[r].up ?? scenario.link.up
                down[i] = scenario.regions[r].down ?? scenario.link.down
            }
        }
        for name in ledger.blobNames {
            guard let fs = ledger.fetches[name], !fs.isEmpty else { continue }
            let fetchers = Set(fs.map(\.node))
            let seeds = (ledger.publishers[name] ?? []).filter { !fetchers.contains($0) }
            let f = Double(fs.map(\.missing).max() ?? 0)
            let us = seeds.reduce(0.0) { $0 + up[$1] }
            let sumU = fs.reduce(0.0) { $0 + up[$1.node] }
            let dmin = fs.map { down[$0.node] }.min() ?? 1
            let n = Double(fs.count)
            let bound = Swift.max(us > 0 ? f / us : .infinity, n * f / (us + sumU), f / dmin)
            let times = fs.compactMap(\.elapsed).map(\.seconds).sorted()
            func q(_ p: Double) -> Double? {
                times.isEmpty ? nil : times[Swift.min(times.count - 1, Swift.max(0, Int((p * Double(times.count)).rounded(.up)) - 1))]
            }
            let seedBytes = seeds.reduce(UInt64(0)) { $0 + (ledger.uploaded[$1] ?? 0) }
            entries.append(Entry(label: "fetch \(name)", fetchers: fs.count, done: times.count, bytes: UInt64(f), bound: bound,
                                 p50: q(0.5), p99: q(0.99), max: times.last, seedCopies: f > 0 ? Double(seedBytes) / f : 0))
        }
    }

    static func fmt(_ v: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", v) }

    func timeAndRatio(_ t: Double?, _ bound: Double) -> String {
        guard let t else { return "—" }
        return "\(Self.fmt(t, 2)) s (\(Self.fmt(t / bound, 2))×)"
    }

    /// Rows for the terminal summary, aligned like the simulator's own table.
    func table() -> String {
        var rows: [(String, String)] = []
        for e in entries {
            rows.append(("swarm \(e.label)", "\(e.done) of \(e.fetchers) done, \(Self.fmt(Double(e.bytes) / 1_048_576, 1)) MiB each; fluid bound \(Self.fmt(e.bound, 2)) s"))
            rows.append(("  completion p50 / p99 / max", "\(timeAndRatio(e.p50, e.bound)) / \(timeAndRatio(e.p99, e.bound)) / \(timeAndRatio(e.max, e.bound))"))
            rows.append(("  seed uploaded", "\(Self.fmt(e.seedCopies, 2)) copies of the missing bytes"))
        }
        if !uplinkUse.isEmpty {
            rows.append(("  uplink use (mean node)", uplinkUse.map { "\(Self.fmt($0.t, 0))s \(Int(($0.share * 100).rounded()))%" }.joined(separator: " ")))
        }
        let width = rows.map(\.0.count).max() ?? 0
        return rows.map { $0.0 + String(repeating: " ", count: Swift.max(0, width - $0.0.count)) + "  " + $0.1 }.joined(separator: "\n")
    }

    /// `"swarm": {…}` for report.json.
    func json() -> String {
        func num(_ v: Double?) -> String { v.map { $0.isFinite ? String($0) : "null" } ?? "null" }
        let items = entries.map { e in
            "\"\(e.label)\": {\"fetchers\": \(e.fetchers), \"done\": \(e.done), \"bytes\": \(e.bytes), \"bound_s\": \(num(e.bound)), "
                + "\"p50_s\": \(num(e.p50)), \"p99_s\": \(num(e.p99)), \"max_s\": \(num(e.max)), "
                + "\"p50_ratio\": \(num(e.p50.map { $0 / e.bound })), \"p99_ratio\": \(num(e.p99.map { $0 / e.bound })), "
                + "\"max_ratio\": \(num(e.max.map { $0 / e.bound })), \"seed_copies\": \(num(e.seedCopies))}"
        }
        return "\"swarm\": {\(items.joined(separator: ", "))}"
    }
}
