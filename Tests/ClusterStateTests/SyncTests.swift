import Testing
import MeshCore
@testable import ClusterState

@Suite("Anti-entropy convergence")
struct SyncTests {
    /// A plain model of the parts of the schema whose outcome a sequential model can predict:
    /// each node's own holdings (single writer) and config keys each owned by one writer.
    struct Model {
        var holdings: [NodeID: Set<Digest>] = [:]
        var config: [String: String] = [:]
    }

    @Test("replicas converge to the model despite dropped, duplicated and reordered deltas", arguments: 0..<6)
    func convergesUnderFaults(seed: UInt64) {
        var net = TestNetwork(count: 4, seed: seed)
        net.dropRate = 0.3; net.dupRate = 0.2; net.reorderRate = 0.5
        var rng = SeededRandom(seed: 77 + seed)
        var model = Model()
        var allDeltas = ClusterData()
        for step in 0..<200 {
            let i = Int.random(in: 0..<4, using: &rng)
            let ms = UInt64(step * 10)
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:
                let b = blob(Int.random(in: 0..<12, using: &rng))
                let add = Bool.random(using: &rng)
                net.write(i) { r in
                    let w = add ? r.addHolding(b) : r.removeHolding(b)
                    allDeltas.join(w.delta)
                    return w
                }
                if add { model.holdings[net.ids[i], default: []].insert(b) } else { model.holdings[net.ids[i]]?.remove(b) }
            case 1:
                let key = "node\(i).k\(Int.random(in: 0..<3, using: &rng))"
                let v = "v\(step)"
                net.write(i) { r in let w = r.setConfig(key, v, wall: wall(ms)); allDeltas.join(w.delta); return w }
                model.config[key] = v
            default:
                var local = rng.fork()
                net.write(i) { r in let w = randomClusterWrite(&r, rng: &local, nodes: 4, at: ms, holdings: false); allDeltas.join(w.delta); return w }
            }
            net.run(for: .milliseconds(Int64.random(in: 0...8, using: &rng)))
        }
        // Heal: links become reliable; anti-entropy (retransmits, heartbeats) repairs the rest.
        net.dropRate = 0; net.dupRate = 0; net.reorderRate = 0
        net.run(for: .seconds(12))
        let first = net.cores[0].replica.data
        for c in net.cores { #expect(c.replica.data == first) }
        #expect(first == allDeltas)
        for (n, blobs) in model.holdings { #expect(net.cores[0].replica.holdings(of: n) == blobs) }
        for (k, v) in model.config { #expect(net.cores[2].replica.config(k) == v) }
    }

    @Test("partition-heal: conflicting writes resolve by each type's rule on every replica")
    func partitionHeal() {
        var net = TestNetwork(count: 4, seed: 3)
        net.write(0) { $0.putContainer("game-1", ContainerSpec(node: nodeID(0), image: "proton:9", workloadClass: .gaming, priority: 5), wall: wall(10)) }
        net.write(0) { $0.setConfig("scheduler", "spread", wall: wall(10)) }
        net.run(for: .seconds(1))
        #expect(net.cores[3].replica.container("game-1") != nil)
        // Partition {0,1} | {2,3}.
        for a in [0, 1] { for b in [2, 3] { net.cut.insert([a, b]) } }
        net.write(0) { $0.setConfig("scheduler", "pack", wall: wall(500)) }        // earlier
        net.write(2) { $0.setConfig("scheduler", "binpack", wall: wall(900)) }     // later: wins
        net.write(1) { $0.removeContainer("game-1") }                               // remove ...
        net.write(3) { $0.setContainerStatus("game-1", .running, wall: wall(600)) } // ... vs concurrent update: update wins
        net.write(0) { $0.setNodeSpec(NodeSpec(addresses: [], region: "eu", zone: "a", cpuMillicores: 1, memoryMiB: 1, diskGiB: 1), for: nodeID(9), wall: wall(700)) }
        net.write(3) { $0.setNodeSpec(NodeSpec(addresses: [], region: "us", zone: "b", cpuMillicores: 2, memoryMiB: 2, diskGiB: 2), for: nodeID(9), wall: wall(650)) }
        net.run(for: .seconds(2))
        #expect(net.cores[1].replica.config("scheduler") == "pack")
        #expect(net.cores[3].replica.config("scheduler") == "binpack")
        #expect(net.cores[0].replica.container("game-1") == nil)
        net.cut = []
        for i in 0..<4 { for j in 0..<4 where i != j { net.linkUp(i, j) } }
        net.run(for: .seconds(3))
        for c in net.cores {
            #expect(c.replica.config("scheduler") == "binpack")
            // Update-wins per field: the removal took the spec it had seen; the concurrent status stays.
            #expect(c.replica.container("game-1")?.status == .running)
            #expect(c.replica.container("game-1")?.spec == nil)
            #expect(c.replica.node(nodeID(9))?.spec?.region == "eu")
            #expect(c.replica.data == net.cores[0].replica.data)
        }
    }

    @Test("a peer behind the delta buffer receives the full state, in size-bounded parts")
    func fullStateFallback() {
        var settings = ClusterSync.Settings()
        settings.maxBufferedDeltas = 8
        settings.maxMessageBytes = 512
        var net = TestNetwork(count: 3, seed: 5, settings: settings)
        net.cut = [[0, 2], [1, 2]]
        for k in 0..<100 { net.write(0) { $0.setConfig("key\(k)", String(repeating: "x", count: 40), wall: wall(UInt64(k))) } }
        net.run(for: .seconds(1))
        #expect(net.cores[1].replica.data == net.cores[0].replica.data)
        #expect(net.cores[0].bufferedDeltas <= 8)
        var largest = 0
        var probe = net
        probe.cut = []
        probe.linkUp(0, 2); probe.linkUp(2, 0)
        // Check the size bound on the messages the full-state transfer uses.
        var out = probe.cores[0].tick(now: probe.now + .seconds(10))
        out.merge(probe.cores[0].receive(PeerMessage(peer: probe.ids[2], traffic: .interactive,
                  frame: Frame(type: ClusterSync.FrameType.ack, message: AckMessage(epoch: 0, received: 0))), now: probe.now + .seconds(10)))
        for m in out.messages where m.frame.type == ClusterSync.FrameType.delta {
            largest = max(largest, m.frame.payload.count)
        }
        #expect(largest > 0 && largest <= 512 + 64)
        net.cut = []
        net.linkUp(0, 2); net.linkUp(2, 0); net.linkUp(1, 2); net.linkUp(2, 1)
        net.run(for: .seconds(3))
        #expect(net.cores[2].replica.data == net.cores[0].replica.data)
        #expect(net.cores[2].replica.config("key99") != nil)
    }

    @Test("a node that restarts (new epoch), with or without its state, catches up; its new writes spread")
    func restartCatchesUp() {
        var settings = ClusterSync.Settings()
        settings.maxBufferedDeltas = 16
        var net = TestNetwork(count: 3, seed: 11, settings: settings)
        for k in 0..<40 { net.write(k % 3) { $0.setConfig("k\(k)", "v\(k)", wall: wall(UInt64(k))) } }
        net.run(for: .seconds(1))
        #expect(net.cores[2].replica.data == net.cores[0].replica.data)
        // Node 2 comes back with its state (from disk) but a new epoch; node 1 with nothing at all.
        net.cores[2] = ClusterSync(replica: ClusterReplica(node: net.ids[2], data: net.cores[2].replica.data), epoch: 2, settings: settings)
        net.cores[1] = ClusterSync(replica: ClusterReplica(node: net.ids[1]), epoch: 2, settings: settings)
        for i in [1, 2] {
            net.handle(i, net.cores[i].start(now: net.now))
            for j in 0..<3 where j != i { net.linkUp(i, j); net.linkUp(j, i) }
        }
        for k in 40..<50 { net.write(0) { $0.setConfig("k\(k)", "late\(k)", wall: wall(UInt64(k))) } }
        net.write(2) { $0.setConfig("from2", "after-restart", wall: wall(100)) }
        net.run(for: .seconds(3))
        for c in net.cores { #expect(c.replica.data == net.cores[0].replica.data) }
        #expect(net.cores[1].replica.config("k3") == "v3")
        #expect(net.cores[1].replica.config("from2") == "after-restart")
        #expect(net.cores[0].replica.config("k45") == "late45")
    }

    @Test("a malformed or oversized delta is refused with a typed error and the replica is untouched")
    func badInputRefused() {
        var settings = ClusterSync.Settings()
        settings.maxDeltaBytes = 4096
        var a = ClusterSync(replica: ClusterReplica(node: nodeID(0)), epoch: 1, settings: settings)
        var b = ClusterReplica(node: nodeID(1))
        _ = a.write(now: .zero) { $0.setConfig("x", "1", wall: wall(1)) }
        let before = a.replica.data
        let good = b.setConfig("y", "2", wall: wall(2)).delta.wireBytes()
        var rng = SeededRandom(seed: 42)
        var refused = 0
        // Truncations and corruptions.
        for cut in 0..<good.count {
            let m = DeltaMessage(epoch: 1, from: 0, to: 1, full: false, part: 0, parts: 1, bytes: Array(good.prefix(cut)))
            _ = a.receive(PeerMessage(peer: nodeID(1), traffic: .interactive, frame: Frame(type: 0x30, message: m)), now: .zero)
        }
        refused = a.refusedCount
        #expect(refused == good.count)
        #expect(a.replica.data == before)
        for _ in 0..<300 {
            var bytes = good
            bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            if (try? ClusterData.decode(bytes, maxBytes: 4096)) == nil {
                let m = DeltaMessage(epoch: 1, from: 0, to: 1, full: false, part: 0, parts: 1, bytes: bytes)
                _ = a.receive(PeerMessage(peer: nodeID(1), traffic: .interactive, frame: Frame(type: 0x30, message: m)), now: .zero)
                #expect(a.replica.data == before)
            }
        }
        // Oversized: refused before decoding, with the typed error saying so.
        var big = ClusterReplica(node: nodeID(1))
        var bigDelta = ClusterData()
        for k in 0..<200 { bigDelta.join(big.setConfig("k\(k)", String(repeating: "y", count: 50), wall: wall(1)).delta) }
        let m = DeltaMessage(epoch: 1, from: 0, to: 1, full: false, part: 0, parts: 1, bytes: bigDelta.wireBytes())
        _ = a.receive(PeerMessage(peer: nodeID(1), traffic: .interactive, frame: Frame(type: 0x30, message: m)), now: .zero)
        #expect(a.lastRefusal?.isOversized == true)
        #expect(a.replica.data == before)
        do {
            _ = try ClusterData.decode(bigDelta.wireBytes(), maxBytes: 4096)
            Issue.record("oversized delta decoded")
        } catch {
            #expect(error.isOversized)
            #expect(error.description.contains("limit is 4096"))
        }
        // Garbage in the message envelope itself.
        _ = a.receive(PeerMessage(peer: nodeID(1), traffic: .interactive, frame: Frame(type: 0x30, payload: [0xff, 0xff])), now: .zero)
        #expect(a.replica.data == before)
    }

    @Test("deltas that break the kernel's invariants are refused")
    func invariantViolationsRefused() throws {
        var b = ClusterReplica(node: nodeID(1))
        let d = b.setConfig("y", "2", wall: wall(2)).delta
        // A store dot outside the context.
        var broken = d
        broken.causal.context = CausalContext()
        do { _ = try ClusterData.decode(broken.wireBytes(), maxBytes: 1 << 20); Issue.record("accepted") } catch {
            #expect(error.wireError?.code == .malformed)
        }
        // A counter or timestamp so high that minting after it could not be encoded.
        let huge = Dot(ReplicaID(rawValue: 9), (1 << 62) - 1)
        let set = Causal(adding: ORSet<UInt32>(inner: DotMap(5, DotSet(huge))))
        #expect(throws: WireError.self) { _ = try Causal<ORSet<UInt32>>(wireBytes: set.wireBytes()) }
        var w = WireWriter(); w.varint((1 << 62) - 1)
        #expect(throws: WireError.self) { _ = try HLCTimestamp(wireBytes: w.bytes) }
        // Holdings of node 2 written by node 1's replica.
        var h = b.addHolding(blob(1)).delta
        let owned = h.causal.store.holdings[nodeID(1)]!
        h.causal.store.holdings = DotMap(nodeID(2), owned)
        do { _ = try ClusterData.decode(h.wireBytes(), maxBytes: 1 << 20); Issue.record("accepted") } catch {
            #expect(error.description.contains("written by another replica"))
        }
    }
}

@Suite("Schema, retirement, events")
struct SchemaTests {
    @Test("typed schema reads back what was written; holders of a blob are found")
    func schemaRoundTrip() throws {
        var r = ClusterReplica(node: nodeID(0))
        let spec = NodeSpec(addresses: [PeerAddress(host: "10.0.0.1", port: 7400)], region: "eu-west", zone: "a",
                            labels: [Label("rack", "r1")], cpuMillicores: 16000, memoryMiB: 65536, diskGiB: 2000,
                            gpu: GPUInfo(model: "RTX 4090", count: 2, memoryMiB: 24576))
        _ = r.setNodeSpec(spec, wall: wall(1))
        _ = r.setNodeLoad(NodeLoad(cpuPermille: 300, memoryPermille: 400, gpuPermille: 900, runningContainers: 4), wall: wall(2))
        _ = r.putContainer("g1", ContainerSpec(node: nodeID(0), image: "proton:9", workloadClass: .gaming, priority: 10), wall: wall(3))
        _ = r.setContainerStatus("g1", .running, wall: wall(4))
        _ = r.addHolding(blob(1)); _ = r.addHolding(blob(2)); _ = r.removeHolding(blob(1))
        var other = ClusterReplica(node: nodeID(5))
        other.apply(r.data)
        _ = other.addHolding(blob(2))
        r.apply(try ClusterData(wireBytes: other.data.wireBytes()))
        #expect(r.node(nodeID(0))?.spec == spec)
        #expect(r.node(nodeID(0))?.load?.gpuPermille == 900)
        #expect(r.container("g1")?.status == .running)
        #expect(r.containers(on: nodeID(0)).map(\.id) == ["g1"])
        #expect(r.holdings(of: nodeID(0)) == [blob(2)])
        #expect(r.holders(of: blob(2)) == [nodeID(0), nodeID(5)].sorted())
        #expect(r.holders(of: blob(1)).isEmpty)
    }

    @Test("retiring a node prunes its dots everywhere; its late writes are ignored")
    func retirement() {
        var a = ClusterReplica(node: nodeID(0)), gone = ClusterReplica(node: nodeID(7))
        _ = gone.setNodeSpec(NodeSpec(addresses: [], region: "eu", zone: "a", cpuMillicores: 1, memoryMiB: 1, diskGiB: 1), wall: wall(1))
        for i in 0..<20 { _ = gone.addHolding(blob(i)) }
        _ = gone.setConfig("owner", "seven", wall: wall(2))
        a.apply(gone.data)
        let late = gone.addHolding(blob(99)).delta
        let w = a.retire(nodeID(7))
        #expect(w.changes.contains(.retired(nodeID(7))))
        #expect(a.node(nodeID(7)) == nil)
        #expect(a.holdings(of: nodeID(7)).isEmpty)
        #expect(a.config("owner") == nil)
        #expect(!a.data.causal.context.replicas.contains(ReplicaID(nodeID(7))))
        a.apply(late)
        a.apply(gone.data)
        #expect(a.holdings(of: nodeID(7)).isEmpty)
        #expect(!a.data.causal.context.replicas.contains(ReplicaID(nodeID(7))))
        var b = ClusterReplica(node: nodeID(1))
        b.apply(gone.data)
        b.apply(w.delta)
        #expect(b.data == a.data)
    }

    @Test("a removal finds its record through the delta's key hint; hints do not stay in a replica")
    func removalHints() throws {
        var a = ClusterReplica(node: nodeID(0)), b = ClusterReplica(node: nodeID(1))
        for c in 0..<300 {
            _ = a.putContainer("c\(c)", ContainerSpec(node: nodeID(0), image: "i", workloadClass: .gaming, priority: 0), wall: wall(1))
        }
        _ = a.setConfig("k", "v", wall: wall(1))
        b.apply(a.data)
        let rm = a.removeContainer("c42").delta
        #expect(rm.causal.store.removedKeys.containers == ["c42"])
        let wire = try ClusterData(wireBytes: rm.wireBytes())
        #expect(wire.causal.store.removedKeys.containers == ["c42"])
        let changes = b.apply(wire)
        #expect(changes == [.container("c42", nil)])
        #expect(b.container("c42") == nil && b.containers.count == 299)
        #expect(b.data.causal.store.removedKeys.isEmpty)
        // A removal without its hint (another implementation) still removes, by scanning.
        var bare = a.removeConfig("k").delta
        bare.causal.store.removedKeys = .init()
        #expect(b.apply(bare) == [.config("k", nil)])
        #expect(b.data == a.data)
    }

    @Test("subscribers receive the changes of local writes and merged deltas")
    func changeStreams() async {
        let events = ClusterEvents()
        let stream = events.subscribe()
        var a = ClusterReplica(node: nodeID(0)), b = ClusterReplica(node: nodeID(1))
        events.publish(a.setConfig("mode", "eco", wall: wall(1)).changes)
        events.publish(a.putContainer("m1", ContainerSpec(node: nodeID(1), image: "ops", workloadClass: .management, priority: 0), wall: wall(2)).changes)
        let d = b.addHolding(blob(3)).delta
        events.publish(a.apply(d))
        events.publish(a.apply(d)) // a duplicate changes nothing and publishes nothing
        events.publish(a.removeContainer("m1").changes)
        events.finish()
        var got: [ClusterChange] = []
        for await c in stream { got.append(c) }
        #expect(got.count == 4)
        #expect(got[0] == .config("mode", "eco"))
        #expect(got[2] == .holdings(nodeID(1)))
        #expect(got[3] == .container("m1", nil))
    }
}
