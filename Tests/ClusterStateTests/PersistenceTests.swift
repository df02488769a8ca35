import Testing
import Foundation
import MeshCore
@testable import ClusterState

@Suite("Persistence")
struct PersistenceTests {
    func tempDir() -> String {
        let path = NSTemporaryDirectory() + "gquic-state-\(UInt64.random(in: 0...UInt64.max))"
        return path
    }

    @Test("a restart recovers every acknowledged write: snapshot plus delta log")
    func restartRecovers() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var sync: ClusterSync
        do {
            let (disk, rec) = try ClusterStateDisk.open(directory: dir)
            #expect(rec.epoch == 1 && rec.replayedDeltas == 0)
            sync = ClusterSync(replica: ClusterReplica(node: nodeID(0), data: rec.data), epoch: rec.epoch)
            for k in 0..<30 {
                _ = sync.write(now: .zero) { $0.setConfig("k\(k)", "v\(k)", wall: wall(UInt64(k))) }
                try disk.append(sync.takeApplied())   // durable before the write is acknowledged
                if k == 14 { try disk.snapshot(sync.replica.data) }
            }
            var peer = ClusterReplica(node: nodeID(1))
            let remote = peer.addHolding(blob(5)).delta
            _ = sync.receive(PeerMessage(peer: nodeID(1), traffic: .interactive,
                                         frame: Frame(type: ClusterSync.FrameType.delta,
                                                      message: DeltaMessage(epoch: 3, from: 0, to: 1, full: false, part: 0, parts: 1, bytes: remote.wireBytes()))),
                             now: .zero)
            try disk.append(sync.takeApplied())
        }
        let (_, rec) = try ClusterStateDisk.open(directory: dir)
        #expect(rec.epoch == 2)
        #expect(rec.replayedDeltas == 16)
        #expect(rec.data == sync.replica.data)
        let back = ClusterReplica(node: nodeID(0), data: rec.data)
        #expect(back.config("k29") == "v29")
        #expect(back.holders(of: blob(5)) == [nodeID(1)])
    }

    @Test("a torn tail (a crash mid-append) is cut off; earlier records survive")
    func tornTail() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var r = ClusterReplica(node: nodeID(0))
        do {
            let (disk, _) = try ClusterStateDisk.open(directory: dir)
            for k in 0..<5 { try disk.append([r.setConfig("k\(k)", "v", wall: wall(1)).delta]) }
        }
        let log = dir + "/deltas.log"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: log)))
        let whole = bytes.count
        bytes += [0, 0, 0, 40, 1, 2, 3]   // a record header with no body
        try Data(bytes).write(to: URL(fileURLWithPath: log))
        let (_, rec) = try ClusterStateDisk.open(directory: dir)
        #expect(rec.replayedDeltas == 5)
        #expect(rec.discardedTailBytes == 7)
        #expect(rec.data == r.data)
        #expect(try Data(contentsOf: URL(fileURLWithPath: log)).count == whole)
    }

    @Test("a corrupt snapshot is reported with a typed error, not loaded")
    func corruptSnapshot() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data("GQCS\u{1}garbage".utf8).write(to: URL(fileURLWithPath: dir + "/snapshot"))
        #expect(throws: ClusterStateError.self) { _ = try ClusterStateDisk.open(directory: dir) }
    }
}

@Suite("Durable anti-entropy")
struct DurableSyncTests {
    @Test("writes and received deltas are on disk before the outbox leaves; a restart has them all")
    func durableBeforeAck() async throws {
        let dir = NSTemporaryDirectory() + "gquic-durable-\(UInt64.random(in: 0...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let events = ClusterEvents()
        let stream = events.subscribe()
        var expected: ClusterData
        do {
            var node = try DurableClusterSync.open(directory: dir, node: nodeID(0), events: events)
            node.snapshotAfterLogBytes = 200   // force snapshots along the way
            _ = node.start(now: .zero)
            _ = node.linkChanged(.up(peer: nodeID(1), address: PeerAddress(host: "10.0.0.1", port: 7400)), now: .zero)
            for k in 0..<10 { _ = try node.write(now: .zero) { $0.setConfig("k\(k)", "v", wall: wall(UInt64(k))) } }
            var peer = ClusterReplica(node: nodeID(1))
            let d = peer.putContainer("g", ContainerSpec(node: nodeID(1), image: "x", workloadClass: .gaming, priority: 1), wall: wall(5)).delta
            let out = node.receive(PeerMessage(peer: nodeID(1), traffic: .interactive,
                                               frame: Frame(type: ClusterSync.FrameType.delta,
                                                            message: DeltaMessage(epoch: 9, from: 0, to: 1, full: false, part: 0, parts: 1, bytes: d.wireBytes()))),
                                   now: .zero)
            // The ack leaves only now, after the delta was fsynced.
            #expect(out.messages.contains { $0.frame.type == ClusterSync.FrameType.ack })
            expected = node.replica.data
        }
        events.finish()
        var seen = 0
        for await _ in stream { seen += 1 }
        #expect(seen == 11)
        let back = try DurableClusterSync.open(directory: dir, node: nodeID(0))
        #expect(back.replica.data == expected)
        #expect(back.core.epoch == 2)
        #expect(back.replica.container("g")?.spec?.image == "x")
    }
}
