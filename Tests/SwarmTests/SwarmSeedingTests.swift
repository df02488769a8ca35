import Testing
@testable import Swarm
import MeshCore

/// The seed's unique-first serving and the discovery it relies on, driven message by message.
/// Regressions for the endgame stall seen with real daemons in namespaces: a peer that knew only
/// the seed as a source bounced off busy rejects for chunks the seed had already served twice,
/// because the rest of the swarm never asked the seed for the chunks still at one serving.
@Suite struct SwarmSeedingTests {
    static func node(_ n: Int) -> NodeID { NodeID(digest: Digest.of(Array("seeding-\(n)".utf8))) }

    /// A seed holding a blob of at least three chunks, linked to peers 1...3.
    func seed() -> (SwarmCore, SwarmManifest) {
        let (m, _, _) = makeBlob(size: 300_000, seed: 11)
        #expect(m.chunks.count >= 3)
        var s = SwarmCore(me: Self.node(0), seed: 1)
        #expect(s.settings.uniqueFirstServing)
        for p in 1...3 { _ = s.linkChanged(.up(peer: Self.node(p), address: PeerAddress(host: "p\(p)", port: 1)), now: .zero) }
        _ = s.hold(m, now: .zero)
        return (s, m)
    }

    /// Sends `msg` from peer `p` to the seed; returns what the seed answers: chunks it serves
    /// (effects) and the rejects it sends.
    func ask(_ s: inout SwarmCore, from p: Int, _ msg: SwarmMessage) -> (served: [UInt32], busy: [UInt32]) {
        let out = s.receive(PeerMessage(peer: Self.node(p), traffic: .interactive, frame: msg.frame), now: .zero)
        var served: [UInt32] = [], busy: [UInt32] = []
        for e in s.drainEffects() { if case .serve(let to, _, let i) = e, to == Self.node(p) { served.append(i) } }
        for m in out.messages {
            if let r = try? SwarmMessage(frame: m.frame), case .reject(_, let i, true) = r { busy.append(i) }
        }
        return (served, busy)
    }

    @Test func chunkLeftToPeersIsServedWhenTheRequesterComesBack() {
        var (s, m) = seed()
        // Peer 1 takes every chunk once (round 0 over) and says so; peer 2 takes chunk 0 again.
        _ = ask(&s, from: 1, .interested(blob: m.blob))
        for i in 0..<m.chunks.count { #expect(ask(&s, from: 1, .request(blob: m.blob, index: UInt32(i))).served == [UInt32(i)]) }
        _ = ask(&s, from: 1, .haveMore(blob: m.blob, indices: (0..<m.chunks.count).map(UInt32.init)))
        #expect(ask(&s, from: 2, .request(blob: m.blob, index: 0)).served == [0])
        // Chunk 0 has gone out twice and the others once: peer 3 is pointed at the peers first...
        let first = ask(&s, from: 3, .request(blob: m.blob, index: 0))
        #expect(first.served.isEmpty && first.busy == [0])
        // ...but peer 3 knows no one else who has it (nobody asks the seed for the chunks still at
        // one serving, so the round never ends): asked again, the seed serves it.
        #expect(ask(&s, from: 3, .request(blob: m.blob, index: 0)).served == [0])
        // And the advice holds again for a fresh requester.
        #expect(ask(&s, from: 2, .request(blob: m.blob, index: 1)).served == [1])
        #expect(ask(&s, from: 1, .request(blob: m.blob, index: 1)).busy == [1])
    }

    @Test func chunkServedToAPeerThatVanishedComesOnceTheFirstRoundIsOver() {
        var (s, m) = seed()
        // Peer 1 got chunk 0 and vanished without announcing it.
        #expect(ask(&s, from: 1, .request(blob: m.blob, index: 0)).served == [0])
        _ = s.linkChanged(.down(peer: Self.node(1)), now: .zero)
        // Peer 2 (holding nothing) asks for chunk 0: a fresh chunk comes instead, chunk 0 is left to peers.
        _ = ask(&s, from: 2, .have(blob: m.blob, chunkCount: UInt32(m.chunks.count), bits: Bitfield(count: m.chunks.count).bytes))
        let first = ask(&s, from: 2, .request(blob: m.blob, index: 0))
        #expect(first.served.count == 1 && first.served != [0])
        let out = s.servePiece(to: Self.node(2), blob: m.blob, index: first.served[0], data: [1], now: .zero)
        #expect(out.messages.compactMap { try? SwarmMessage(frame: $0.frame) }.contains(.reject(blob: m.blob, index: 0, busy: true)))
        // Nobody else has it. While chunks not yet out remain, each ask brings one of those (the
        // seed's uplink stays on fresh chunks, peer 2 progresses); then the round is over and the
        // chunk comes itself.
        var asks = 1
        while asks <= m.chunks.count && !ask(&s, from: 2, .request(blob: m.blob, index: 0)).served.contains(0) { asks += 1 }
        #expect(asks <= m.chunks.count, "chunk 0 never came")
    }

    @Test func peerWhoseInterestArrivedTooEarlyStillHearsOfChunks() {
        // Peer 1 starts fetching first; its `interested` reaches peer 2 before peer 2 knows the blob
        // (and is dropped there); when peer 2 asks, peer 1 holds nothing yet, so it does not answer.
        // Peer 2 must still tell peer 1 what it gains, or peer 1 can fetch only from the seed.
        let (m, chunks, data) = makeBlob(size: 2 << 20, seed: 12)
        let net = TestSwarmNet(count: 3)
        net.nodes[0].store[m.blob] = Dictionary(uniqueKeysWithValues: chunks.enumerated().map { ($0, $1) })
        net.apply(0, net.nodes[0].core.hold(m, now: net.now))
        net.apply(1, net.nodes[1].core.fetch(m.blob, now: net.now))
        net.run(until: Instant(nanoseconds: 3_000_000))
        #expect(net.sentBetween[[1, 2, 0x50]] == 1 && net.nodes[2].core.holds(m.blob) == nil)
        net.apply(2, net.nodes[2].core.fetch(m.blob, now: net.now))
        net.run(until: Instant(nanoseconds: 60_000_000_000)) { net.nodes[1].completedAt != nil && net.nodes[2].completedAt != nil }
        let toPeer1 = (net.sentBetween[[2, 1, 0x51]] ?? 0) + (net.sentBetween[[2, 1, 0x52]] ?? 0)
        #expect(toPeer1 > 0, "peer 2 never announced its chunks to peer 1")
        // Both fetch from two sources: peer 1 is not left to the seed's leftovers (1.19 s before).
        #expect(net.nodes[1].completedAt.map { $0 < Instant(nanoseconds: 400_000_000) } ?? false)
        for i in 1...2 {
            let s = net.nodes[i].store[m.blob] ?? [:]
            #expect(s.count == m.chunks.count && (0..<m.chunks.count).flatMap { s[$0]! } == data)
        }
    }

    @Test func oneFastSourceIsNotHeldToTwoRequests() {
        // One holder, one requester, 1 Gbit/s and 10 ms round trip: two 64 KiB requests in flight
        // would cap the transfer at ~13 MB/s (0.6 s for 8 MiB); a pipeline by measured
        // bandwidth-delay product fills the link.
        let (m, chunks, data) = makeBlob(size: 8 << 20, seed: 13)
        let net = TestSwarmNet(count: 2, uplinkBytesPerSecond: 125_000_000, latency: .milliseconds(5))
        net.nodes[0].store[m.blob] = Dictionary(uniqueKeysWithValues: chunks.enumerated().map { ($0, $1) })
        net.apply(0, net.nodes[0].core.hold(m, now: net.now))
        net.apply(1, net.nodes[1].core.fetch(m.blob, now: net.now))
        net.run(until: Instant(nanoseconds: 10_000_000_000)) { net.nodes[1].completedAt != nil }
        let done = net.nodes[1].completedAt.map { Double($0.nanoseconds) / 1e9 } ?? .infinity
        #expect(done < 0.3, "8 MiB from one 1 Gbit/s source took \(done) s")
        let s = net.nodes[1].store[m.blob] ?? [:]
        #expect(s.count == m.chunks.count && (0..<m.chunks.count).flatMap { s[$0]! } == data)
    }

    /// A holder with a one-byte upload window (one piece in the transport at a time), not serving
    /// unique-first, linked to peers 1...`peers`.
    func queuedHolder(peers: Int, rarestFirst: Bool = false) -> (SwarmCore, SwarmManifest) {
        let (m, _, _) = makeBlob(size: 400_000, seed: 14)
        var settings = SwarmSettings()
        settings.uniqueFirstServing = false
        settings.uploadWindow = 1
        settings.serveRarestFirst = rarestFirst
        var s = SwarmCore(me: Self.node(0), settings: settings, seed: 1)
        for p in 1...peers { _ = s.linkChanged(.up(peer: Self.node(p), address: PeerAddress(host: "p\(p)", port: 1)), now: .zero) }
        _ = s.hold(m, now: .zero)
        return (s, m)
    }

    /// The holder's transport reports `chunk` sent; returns what the holder hands it next.
    func sent(_ s: inout SwarmCore, _ m: SwarmManifest, _ chunk: Int) -> [SwarmEffect] {
        _ = s.pieceSent(bytes: Int(m.chunks[chunk].size), now: .zero)
        return s.drainEffects()
    }

    @Test func holderQueueServesRequestersInTurnAndDropsCancelledRequests() {
        var (s, m) = queuedHolder(peers: 2)
        // Peer 1 asks for chunks 0, 1, 2, then peer 2 for 3: chunk 0 goes out, the rest wait.
        #expect(ask(&s, from: 1, .request(blob: m.blob, index: 0)).served == [0])
        #expect(ask(&s, from: 1, .request(blob: m.blob, index: 1)).served.isEmpty)
        #expect(ask(&s, from: 1, .request(blob: m.blob, index: 2)).served.isEmpty)
        #expect(ask(&s, from: 2, .request(blob: m.blob, index: 3)).served.isEmpty)
        // Peer 1 no longer wants chunk 2.
        #expect(ask(&s, from: 1, .cancel(blob: m.blob, index: 2)).served.isEmpty)
        // As each piece leaves, the requester served least recently gets the next: peer 2 before
        // peer 1's second; peer 1's cancelled chunk 2 never goes.
        #expect(sent(&s, m, 0) == [.serve(peer: Self.node(2), blob: m.blob, index: 3)])
        #expect(sent(&s, m, 3) == [.serve(peer: Self.node(1), blob: m.blob, index: 1)])
        #expect(sent(&s, m, 1).isEmpty)
    }

    @Test func holderQueueServesTheRarestPieceFirstWhenAskedTo() {
        var (s, m) = queuedHolder(peers: 3, rarestFirst: true)
        // Chunk 0 goes to peer 1 at once; peer 2 asks for chunk 0 too (its second serving), then
        // peer 3 for chunk 1 (its first): both wait.
        #expect(ask(&s, from: 1, .request(blob: m.blob, index: 0)).served == [0])
        #expect(ask(&s, from: 2, .request(blob: m.blob, index: 0)).served.isEmpty)
        #expect(ask(&s, from: 3, .request(blob: m.blob, index: 1)).served.isEmpty)
        // In turn, peer 2 (asked first) would be next; rarest first, chunk 1 (served once) goes
        // before chunk 0 (served twice already).
        #expect(sent(&s, m, 0) == [.serve(peer: Self.node(3), blob: m.blob, index: 1)])
        #expect(sent(&s, m, 1) == [.serve(peer: Self.node(2), blob: m.blob, index: 0)])
    }

    @Test(arguments: [false, true]) func swarmWithHolderQueuesDeliversEveryCopy(rarestFirst: Bool) {
        let (m, chunks, data) = makeBlob(size: 3 << 20, seed: 15)
        var settings = SwarmSettings()
        settings.uploadWindow = 256 << 10
        settings.serveRarestFirst = rarestFirst
        let net = TestSwarmNet(count: 9, settings: settings)
        net.nodes[0].store[m.blob] = Dictionary(uniqueKeysWithValues: chunks.enumerated().map { ($0, $1) })
        net.apply(0, net.nodes[0].core.hold(m, now: net.now))
        for i in 1...8 { net.apply(i, net.nodes[i].core.fetch(m.blob, now: net.now)) }
        net.run(until: Instant(nanoseconds: 60_000_000_000)) { (1...8).allSatisfy { net.nodes[$0].completedAt != nil } }
        for i in 1...8 {
            let st = net.nodes[i].store[m.blob] ?? [:]
            #expect(st.count == m.chunks.count && (0..<m.chunks.count).flatMap { st[$0]! } == data, "peer \(i)")
        }
    }
}
