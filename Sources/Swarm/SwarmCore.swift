import MeshCore

/// Tunables of the download planner. Every default says where it comes from.
public struct SwarmSettings: Sendable {
    /// Chunks fetched in random order before switching to rarest-first, so a new node quickly has
    /// something to trade (BitTorrent's "random first piece" policy, Cohen 2003). Default 4.
    public var randomFirst = 4
    /// Requests kept in flight per source at the least, whatever its measured bandwidth-delay
    /// product: two keeps the pipe full across one request's turnaround. Default 2.
    public var minPipelineChunks = 2
    /// In-flight bytes per source at the most. Default 32 MiB (a 1 Gbit/s path at 250 ms RTT).
    public var maxPipelineBytes = 32 << 20
    /// The pipeline target is this many bandwidth-delay products. Default 2.
    public var pipelineBDPs = 2.0
    /// Throughput assumed for a source before any chunk has arrived: 100 Mbit/s, the per-node
    /// uplink the benchmarks use. Default 12.5 MB/s.
    public var initialThroughput = 12_500_000.0
    /// RTT assumed before the transport reports one. Default 10 ms (a LAN with some queueing).
    public var initialRTT: Duration = .milliseconds(10)
    /// A request is abandoned after max(this, 4·RTT + 3·queued bytes/throughput). Default 3 s.
    public var requestTimeoutFloor: Duration = .seconds(3)
    /// Endgame starts when this few chunks (or 2% of the blob) are missing and all are requested.
    /// Default 4: BitTorrent enters endgame when every piece is requested; starting only at the
    /// last few keeps duplicate bytes small while still cutting the tail.
    public var endgameChunks = 4
    /// In endgame, at most this many sources are asked for the same chunk. Default 2
    /// (the original plus one duplicate; more wastes uplink for little gain).
    public var endgameSources = 2
    /// How often progress events are emitted per transfer. Default 250 ms (a progress bar's pace).
    public var progressInterval: Duration = .milliseconds(250)
    /// How often a transfer with idle pipelines asks its links again who holds the blob. Default 1 s.
    public var rediscoverInterval: Duration = .seconds(1)
    /// A node seeding a blob (it held the whole blob before anyone asked) sends every chunk once
    /// before it sends any chunk twice: a request for a chunk already sent gets a busy reject (fetch
    /// it from the peers that have it) and a chunk not sent yet in its place (BitTorrent's
    /// super-seeding, in spirit). The seed's uplink is the scarce resource of a broadcast: spent on
    /// fresh chunks, and never idle while requests bounce, it is what keeps a swarm near the fluid
    /// bound. Once every chunk is out, it serves what is asked. Default on.
    public var uniqueFirstServing = true
    /// Requests in flight to one source at the most, whatever its bandwidth-delay product. Every
    /// request waits in the source's upload queue behind everyone else's, so deep pipelines from
    /// many requesters make queues that outlast request timeouts; shallow pipelines to many sources
    /// keep every uplink busy with fresh choices. Default 2 (measured in gquic-sim's
    /// layer-broadcast: 1.71× the fluid bound at 2, 1.92× at 4, 2.26× at 8).
    public var maxRequestsPerSource = 2
    /// Bytes in flight to one source at the most (one request is always allowed): what every
    /// requester adds to a holder's upload queue, so a fresh chunk's wait per hop is about
    /// requesters × this / uplink. Default 160 KiB: two 64 KiB chunks (the content store's
    /// average), one 256 KiB chunk (gquic-sim swarm-1k: p99 1.96× the bound at one 256 KiB chunk
    /// per source, 2.21× at two).
    public var maxBytesPerSource = 160 << 10
    /// A transfer with at most this many sources (and as many peers fetching the same blob) lifts the two caps above from a source once its
    /// pieces have come back: its pipeline is then its measured throughput × its smallest request
    /// round trip × `pipelineBDPs`, so one fast source is not held to two requests (`gquic-fetch get`
    /// from one peer on loopback: 62.5 MB/s with the caps). With more sources the caps stay: a
    /// broadcast spreads its requests over many sources, and any deeper queue on a shared uplink
    /// costs (gquic-sim layer-broadcast: 1.71× the bound with the caps, 2.00× with measured
    /// pipelines everywhere). Default 2; 0 keeps the caps always.
    public var measuredPipelineSources = 2
    /// A measured pipeline holds this much time's worth of the source's throughput on top of its
    /// bandwidth-delay product: a source's turnaround varies with its scheduling (a busy machine,
    /// a store read), and the smallest round trip alone leaves the pipe empty meanwhile. Default
    /// 10 ms (LEDBAT's queueing target is of that order).
    public var pipelineSlack: Duration = .milliseconds(10)
    /// Holder-side upload queue: at most this many bytes of pieces are in the transport at once
    /// (the host reports each piece sent with `pieceSent`); further requests wait in per-requester
    /// queues served in turn, so the order the uplink serves requesters is this node's choice, and
    /// a cancelled request still queued costs nothing. 0 (the default): every request is served at
    /// once and the transport's queue is the only one (hosts that cannot report sent pieces).
    public var uploadWindow = 0
    /// With the holder-side upload queue: hand the transport the queued piece this node believes
    /// rarest (fewest of its sources hold it, least served by it) first, instead of serving
    /// requesters in turn, so a fresh chunk is passed on at once instead of waiting behind a round
    /// of everyone's requests for chunks already widespread. Default off.
    public var serveRarestFirst = false
    /// New chunks are announced to interested peers in batches: when this many are pending, or
    /// `haveDelay` after the first of them arrived. Default 8 chunks.
    public var haveBatch = 8
    /// The longest a gained chunk waits before it is announced. Default 20 ms (a few chunk times at
    /// 100 Mbit/s; announcing every chunk at once costs one message per chunk per neighbour).
    public var haveDelay: Duration = .milliseconds(20)
    /// After a busy reject, the requester leaves that chunk to other sources for this long. Default 1 s.
    public var busyBackoff: Duration = .seconds(1)
    /// Requests in flight for one transfer across all its sources, at the most. Asking every holder
    /// at once queues requests behind each other on every uplink; a bounded set, refilled from the
    /// fastest sources first, keeps the pick of each next chunk fresh. Default 128 (two per
    /// source for 64 neighbours: with `maxRequestsPerSource` it is the per-source cap that binds).
    public var maxRequestsPerTransfer = 128
    /// Bad pieces tolerated from one source before it is dropped from the transfer. Default 1:
    /// content is verified, so one bad piece is proof of a faulty or lying peer.
    public var badPiecesBeforeDrop = 1

    public init() {}
}

/// Directives for the shell that involve the store or the user. Drained after each call.
public enum SwarmEffect: Hashable, Sendable {
    /// A manifest arrived for a blob being fetched: say which of its chunks the store already holds
    /// (from other blobs, e.g. an older version) with `localChunks`, so only the rest travel.
    case checkLocal(blob: Digest, manifest: SwarmManifest)
    /// Read chunk `index` of `blob` and hand it to `servePiece` (or `cannotServe`).
    case serve(peer: NodeID, blob: Digest, index: UInt32)
    /// A verified chunk (hashed on arrival, so the store need not hash it again): write it to the store.
    case store(blob: Digest, index: UInt32, data: VerifiedChunk)
    /// Every chunk is present and verified: commit the blob (the store checks the whole digest).
    case completed(blob: Digest, manifest: SwarmManifest)
    case progress(SwarmProgress)
    /// `peer` sent data that failed verification; record it (metrics, cluster-wide reputation).
    case penalize(peer: NodeID, blob: Digest, reason: String)
}

public struct SwarmProgress: Hashable, Sendable {
    public var blob: Digest
    public var bytesDone: UInt64
    public var bytesTotal: UInt64
    public var sources: Int
    /// Bytes per second over the transfer so far.
    public var rate: Double
    public var done: Bool
}

/// Optional knowledge about a peer from cluster state and the transport, used to order sources.
public struct PeerHint: Hashable, Sendable {
    /// The peer runs gaming containers: ask it last.
    public var gaming = false
    /// Load in 0...1 (CPU or uplink utilisation).
    public var load = 0.0
    /// Smoothed RTT from the transport.
    public var rtt: Duration?
    public init(gaming: Bool = false, load: Double = 0, rtt: Duration? = nil) { self.gaming = gaming; self.load = load; self.rtt = rtt }
}

/// The swarm: serves the chunks this node holds and pulls the blobs it wants from many peers at once.
///
/// Sans-IO: it never reads the store or the clock. Chunk bytes come in through `servePiece`, and
/// verified chunks leave as `SwarmEffect.store`.
public struct SwarmCore: MeshProtocolCore, Sendable {
    public let me: NodeID
    public var settings: SwarmSettings
    private var rng: SeededRandom
    /// Every collection the planner walks is ordered by what happened (never by hash order), so a
    /// core's decisions depend only on its inputs and its seed.
    private var links = PeerList()
    private var blobs: [Digest: BlobState] = [:]
    /// `blobs`' keys in the order the blobs became known.
    private var blobOrder: [Digest] = []
    private var hints: [NodeID: PeerHint] = [:]
    /// A random rank per peer, this node's own, to break ties between equally good sources: with a
    /// shared order (say, by NodeID) every requester would pile onto the same few sources.
    private var ranks: [NodeID: UInt64] = [:]
    private var effects: [SwarmEffect] = []
    /// Chunks being served in place of a requested one (seeding): the request to reject once the
    /// substitute has been handed to the transport.
    private var substitutes: [Substitute: UInt32] = [:]
    struct Substitute: Hashable, Sendable { var peer: NodeID; var blob: Digest; var index: UInt32 }
    /// Holder-side upload queue (`SwarmSettings.uploadWindow`): requests accepted but not yet
    /// handed to the shell, per requester, served round-robin; and the bytes handed to the
    /// transport that it has not reported sent (`pieceSent`).
    private var uploads: [NodeID: [Upload]] = [:]
    private var uploaders = PeerList()
    private var lastServed: [NodeID: UInt64] = [:]
    private var uploadTurn: UInt64 = 0
    private var inTransport = 0
    struct Upload: Sendable { var blob: Digest; var index: UInt32; var size: Int }
    /// Bad pieces received, by sender, over this core's life.
    public private(set) var penalties: [NodeID: Int] = [:]
    /// The shell's store is behind: no new requests go out (those in flight still land) until the
    /// shell says it has caught up (`holdRequests`, `resumeRequests`).
    public private(set) var holdingRequests = false

    public init(me: NodeID, settings: SwarmSettings = SwarmSettings(), seed: UInt64) {
        self.me = me
        self.settings = settings
        self.rng = SeededRandom(seed: seed)
    }

    // MARK: Shell API

    /// Registers chunks this node holds (a complete blob, or a partial one after a restart).
    public mutating func hold(_ manifest: SwarmManifest, chunks: Bitfield? = nil, now: Instant) -> Outbox {
        var out = Outbox()
        let b = blobState(manifest.blob, now: now)
        b.setManifest(manifest)
        if let chunks, chunks.count == manifest.chunks.count {
            for i in 0..<chunks.count where chunks[i] { b.markHave(i) }
        } else if chunks == nil {
            for i in 0..<manifest.chunks.count { b.markHave(i) }
        }
        if !b.downloading && b.have!.isComplete { b.seeding = true }
        blobs[manifest.blob] = b
        announceHave(manifest.blob, to: b.interested, &out)
        return out
    }

    /// Starts (or resumes) fetching `blob`. Pass the manifest if known and the chunks already on
    /// disk; otherwise the manifest is fetched from a holder. Holders are found by asking links.
    public mutating func fetch(_ blob: Digest, manifest: SwarmManifest? = nil, have: Bitfield? = nil, now: Instant) -> Outbox {
        var out = Outbox()
        let b = blobState(blob, now: now)
        b.downloading = true
        b.started = now
        if let manifest, b.manifest == nil { b.setManifest(manifest) }
        if let have, let m = b.manifest, have.count == m.chunks.count {
            for i in 0..<have.count where have[i] { b.markHave(i) }
        }
        b.bytesAtStart = b.bytesDone
        blobs[blob] = b
        for peer in links { out.send(to: peer, .interactive, SwarmMessage.interested(blob: blob).frame) }
        blobs[blob]!.nextRediscover = now + settings.rediscoverInterval
        if let m = blobs[blob]!.manifest, blobs[blob]!.have!.isComplete {
            effects.append(.completed(blob: blob, manifest: m))
            blobs[blob]!.downloading = false
        }
        schedule(blob, now: now, &out)
        out.wake(at: now + .milliseconds(100))
        return out
    }

    /// The answer to `.checkLocal`: chunks of `blob` already in the local store. Scheduling resumes.
    public mutating func localChunks(_ blob: Digest, have: Bitfield, now: Instant) -> Outbox {
        var out = Outbox()
        guard let b = blobs[blob], let m = b.manifest, have.count == m.chunks.count else { return out }
        b.awaitingLocalCheck = false
        for i in 0..<have.count where have[i] { b.markHave(i) }
        if b.have!.isComplete {
            b.downloading = false
            effects.append(.completed(blob: blob, manifest: m))
            return out
        }
        announceHave(blob, to: b.interested, &out)
        schedule(blob, now: now, &out)
        return out
    }

    /// The shell cannot keep up writing verified chunks: stop asking for more (those in flight
    /// still land), so the backlog waits in the senders' stores rather than in this node's memory,
    /// and nothing that shares the shell's thread waits for the disk.
    public mutating func holdRequests() { holdingRequests = true }

    /// The shell's store has caught up: requests resume at once.
    public mutating func resumeRequests(now: Instant) -> Outbox {
        var out = Outbox()
        guard holdingRequests else { return out }
        holdingRequests = false
        for d in blobOrder { schedule(d, now: now, &out) }
        return out
    }

    /// The bytes for a `.serve` effect.
    public mutating func servePiece(to peer: NodeID, blob: Digest, index: UInt32, data: [UInt8], now: Instant) -> Outbox {
        var out = Outbox()
        let instead = substitutes.removeValue(forKey: Substitute(peer: peer, blob: blob, index: index))
        guard links.contains(peer) else {
            uploadFailed(blob, index)
            return out
        }
        out.send(to: peer, .bulk, SwarmMessage.piece(blob: blob, index: index, data: data).frame)
        if let instead {
            // Behind the piece on the same (bulk) stream: the requester's slot stays taken until
            // the substitute has arrived, so substitutes never pile up in this node's uplink.
            out.send(to: peer, .bulk, SwarmMessage.reject(blob: blob, index: instead, busy: true).frame)
        }
        return out
    }

    /// The transport has sent `bytes` of a piece this node served (the host reports every piece it
    /// was handed once it has left; needed only with `SwarmSettings.uploadWindow`).
    public mutating func pieceSent(bytes: Int, now: Instant) -> Outbox {
        inTransport = max(0, inTransport - bytes)
        pumpUploads()
        return Outbox()
    }

    /// A piece counted into the upload window was not sent after all.
    private mutating func uploadFailed(_ blob: Digest, _ index: UInt32) {
        guard settings.uploadWindow > 0, let m = blobs[blob]?.manifest, Int(index) < m.chunks.count else { return }
        inTransport = max(0, inTransport - Int(m.chunks[Int(index)].size))
        pumpUploads()
    }

    /// Serves `index` to `peer` now, or queues it when the upload window is full.
    private mutating func queueUpload(_ peer: NodeID, _ blob: Digest, _ index: UInt32, size: Int) {
        guard settings.uploadWindow > 0 else {
            effects.append(.serve(peer: peer, blob: blob, index: index))
            return
        }
        uploads[peer, default: []].append(Upload(blob: blob, index: index, size: size))
        uploaders.insert(peer)
        pumpUploads()
    }

    /// Hands queued pieces to the shell, the requester served least recently first (with
    /// `serveRarestFirst`, the rarest piece first), while fewer than `uploadWindow` bytes are in the
    /// transport.
    private mutating func pumpUploads() {
        while inTransport < settings.uploadWindow && !uploaders.isEmpty {
            // The requester served least recently (never served first; ties by arrival).
            var peer = uploaders.items[0]
            if settings.serveRarestFirst {
                var best = rarity(uploads[peer]![0])
                for p in uploaders.items.dropFirst() {
                    let r = rarity(uploads[p]![0])
                    if r < best || r == best && lastServed[p, default: 0] < lastServed[peer, default: 0] { peer = p; best = r }
                }
            } else {
                for p in uploaders.items.dropFirst() where lastServed[p, default: 0] < lastServed[peer, default: 0] { peer = p }
            }
            let u = uploads[peer]!.removeFirst()
            if uploads[peer]!.isEmpty {
                uploads[peer] = nil
                uploaders.remove(peer)
            }
            uploadTurn += 1
            lastServed[peer] = uploadTurn
            inTransport += u.size
            effects.append(.serve(peer: peer, blob: u.blob, index: u.index))
        }
    }

    /// How widely this node believes a queued piece is already spread: the sources it knows to hold
    /// the chunk, plus the times it has served it. Fresh chunks score low.
    private func rarity(_ u: Upload) -> Int {
        guard let b = blobs[u.blob], Int(u.index) < b.served.count else { return Int.max }
        return Int(b.availability[Int(u.index)]) + Int(b.served[Int(u.index)])
    }

    /// The store could not produce a chunk it was asked to serve.
    public mutating func cannotServe(_ peer: NodeID, blob: Digest, index: UInt32) -> Outbox {
        var out = Outbox()
        uploadFailed(blob, index)
        if let instead = substitutes.removeValue(forKey: Substitute(peer: peer, blob: blob, index: index)) {
            out.send(to: peer, .interactive, SwarmMessage.reject(blob: blob, index: instead, busy: true).frame)
        }
        out.send(to: peer, .interactive, SwarmMessage.reject(blob: blob, index: index, busy: false).frame)
        return out
    }

    /// The store refused the assembled blob (its whole digest did not match): the manifest was a
    /// lie. Its source is penalised and the transfer starts over with another holder's manifest.
    public mutating func blobCommitFailed(_ blob: Digest, now: Instant) -> Outbox {
        guard let b = blobs[blob] else { return Outbox() }
        if let liar = b.manifestFrom {
            penalties[liar, default: 0] += 1
            effects.append(.penalize(peer: liar, blob: blob, reason: "manifest does not match the blob digest"))
            b.bad.insert(liar)
        }
        let fresh = BlobState(started: now)
        fresh.bad = b.bad
        blobs[blob] = fresh
        return fetch(blob, now: now)
    }

    /// Knowledge about a peer (gaming, load, RTT) from cluster state and the transport.
    public mutating func setHint(_ hint: PeerHint, for peer: NodeID) { hints[peer] = hint }

    public mutating func drainEffects() -> [SwarmEffect] {
        defer { effects.removeAll(keepingCapacity: true) }
        return effects
    }

    public func progress(of blob: Digest) -> SwarmProgress? {
        guard let b = blobs[blob], let m = b.manifest else { return nil }
        return b.progress(blob, m, now: nil)
    }

    /// Blobs currently being fetched.
    public var transfers: [SwarmProgress] {
        blobOrder.compactMap { d in blobs[d].flatMap { b in b.downloading ? b.manifest.map { b.progress(d, $0, now: nil) } : nil } }
    }

    public func holds(_ blob: Digest) -> Bitfield? { blobs[blob]?.have }

    /// The state of `blob`, created (and put in `blobOrder`) on first use.
    private mutating func blobState(_ blob: Digest, now: Instant) -> BlobState {
        if let b = blobs[blob] { return b }
        let b = BlobState(started: now)
        blobs[blob] = b
        blobOrder.append(blob)
        return b
    }

    // MARK: MeshProtocolCore

    public func handles(frameType type: UInt64) -> Bool { (0x50...0x58).contains(type) }

    public mutating func start(now: Instant) -> Outbox { Outbox() }

    public mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox {
        var out = Outbox()
        switch event {
        case .up(let peer, _, _):
            links.insert(peer)
            for d in blobOrder where blobs[d]!.downloading {
                out.send(to: peer, .interactive, SwarmMessage.interested(blob: d).frame)
            }
        case .down(let peer):
            links.remove(peer)
            uploads[peer] = nil
            uploaders.remove(peer)
            lastServed[peer] = nil
            for d in blobOrder {
                blobs[d]!.interested.remove(peer)
                blobs[d]!.peerHave[peer] = nil
                blobs[d]!.leftToPeers[peer] = nil
                if blobs[d]!.dropSource(peer) { schedule(d, now: now, &out) }
            }
        case .dialFailed: break
        }
        return out
    }

    public mutating func receive(_ message: PeerMessage, now: Instant) -> Outbox {
        var out = Outbox()
        let peer = message.peer
        let msg: SwarmMessage
        do { msg = try SwarmMessage(frame: message.frame) } catch {
            // A malformed frame from a peer: drop it and count it against the sender.
            penalties[peer, default: 0] += 1
            return out
        }
        switch msg {
        case .interested(let blob):
            guard let b = blobs[blob] else { return out }
            b.interested.insert(peer)
            blobs[blob] = b
            if let have = b.have, have.setCount > 0 {
                out.send(to: peer, .interactive, SwarmMessage.have(blob: blob, chunkCount: UInt32(have.count), bits: have.bytes).frame)
            }
        case .have(let blob, let n, let bits):
            if let b = blobs[blob], b.seeding, !b.downloading {
                // What a requester already holds, so a substitute is a chunk it lacks.
                if let m = b.manifest, Int(n) == m.chunks.count, let field = try? Bitfield(bytes: bits, count: Int(n)) {
                    b.peerHave[peer] = field
                }
                return out
            }
            guard let b = blobs[blob], b.downloading, !b.bad.contains(peer) else { return out }
            addInterested(peer, blob, b, &out)
            b.updateSource(peer, count: Int(n), bits: bits, settings: settings, hint: hints[peer])
            if b.manifest == nil, b.manifestAskedAt == nil || now > b.manifestAskedAt! + settings.requestTimeoutFloor {
                b.manifestAskedAt = now
                b.manifestFrom = peer
                out.send(to: peer, .interactive, SwarmMessage.manifestRequest(blob: blob).frame)
            }
            blobs[blob] = b
            schedule(blob, now: now, &out)
        case .haveMore(let blob, let indices):
            if let b = blobs[blob], b.seeding, !b.downloading {
                if let m = b.manifest {
                    var field = b.peerHave[peer] ?? Bitfield(count: m.chunks.count)
                    for i in indices { field.insert(Int(i)) }
                    b.peerHave[peer] = field
                }
                return out
            }
            guard let b = blobs[blob], b.downloading, !b.bad.contains(peer) else { return out }
            // A peer announcing what it gains is fetching the blob too: it hears of this node's
            // chunks as well (its `interested` may have come before this node knew the blob).
            addInterested(peer, blob, b, &out)
            if b.manifest == nil {
                // It asked before it had anything; now it has: ask again for its whole holdings,
                // and for the manifest in the same breath (its `have` and the manifest come back
                // together, one round trip instead of two).
                out.send(to: peer, .interactive, SwarmMessage.interested(blob: blob).frame)
                if b.manifestAskedAt == nil || now > b.manifestAskedAt! + settings.requestTimeoutFloor {
                    b.manifestAskedAt = now
                    b.manifestFrom = peer
                    out.send(to: peer, .interactive, SwarmMessage.manifestRequest(blob: blob).frame)
                }
                return out
            }
            b.addToSource(peer, indices: indices, settings: settings, hint: hints[peer])
            blobs[blob] = b
            schedule(blob, now: now, &out, only: peer)
        case .manifestRequest(let blob):
            // Anyone who has the manifest answers, holding chunks or not: a lying manifest is caught
            // when the assembled blob's digest is checked (`blobCommitFailed`).
            if let m = blobs[blob]?.manifest {
                out.send(to: peer, .interactive, SwarmMessage.manifest(m).frame)
            }
        case .manifest(let m):
            guard let b = blobs[m.blob], b.downloading, b.manifest == nil, b.manifestFrom == peer else { return out }
            b.setManifest(m)
            b.manifestAskedAt = nil
            b.awaitingLocalCheck = true
            effects.append(.checkLocal(blob: m.blob, manifest: m))
        case .request(let blob, let index):
            guard let b = blobs[blob], let have = b.have, have[Int(index)] else {
                out.send(to: peer, .interactive, SwarmMessage.reject(blob: blob, index: index, busy: false).frame)
                return out
            }
            let i = Int(index)
            // A busy reject is advice (others have it), never a refusal: a requester that comes back
            // for the same chunk found no one else to ask (it may not be linked to the peers that
            // have it, or not know of them), and gets it.
            let unique = settings.uniqueFirstServing && b.seeding
            if unique && b.servedRound == 0 && b.served[i] > 0,
               let fresh = b.nextUnserved(lackedBy: b.peerHave[peer]) {
                // Chunk i is already out there: leave it to the peers that have it, and send a
                // chunk that has not left this node yet in its place (the requester takes it:
                // nobody can have it yet).
                substitutes[Substitute(peer: peer, blob: blob, index: UInt32(fresh))] = index
                b.leftToPeers[peer, default: []].insert(i)
                b.countServed(fresh)
                queueUpload(peer, blob, UInt32(fresh), size: Int(b.manifest!.chunks[fresh].size))
                return out
            }
            // (In the first round a fresh chunk always comes in place of the one left to peers, so
            // the requester progresses and the round ends; only a bare reject needs this rule.)
            if unique && !b.wasLeftToPeers(i, by: peer) && Int(b.served[i]) > b.servedRound {
                // Later rounds: some chunk has gone out fewer times; leave this one to peers.
                b.leftToPeers[peer, default: []].insert(i)
                out.send(to: peer, .interactive, SwarmMessage.reject(blob: blob, index: index, busy: true).frame)
                return out
            }
            if b.servedRound == 0 && b.wasLeftToPeers(i, by: peer) { b.round0Comebacks += 1 }
            b.countServed(i)
            b.leftToPeers[peer]?.remove(i)
            queueUpload(peer, blob, index, size: Int(b.manifest!.chunks[i].size))
        case .cancel(let blob, let index):
            // A piece still in this node's upload queue is dropped; one already handed to the
            // transport has nothing left to stop.
            if let q = uploads[peer], let k = q.firstIndex(where: { $0.blob == blob && $0.index == index }),
               substitutes[Substitute(peer: peer, blob: blob, index: index)] == nil {
                uploads[peer]!.remove(at: k)
                if uploads[peer]!.isEmpty { uploads[peer] = nil; uploaders.remove(peer) }
            }
        case .reject(let blob, let index, let busy):
            guard let b = blobs[blob] else { return out }
            b.requestFailed(Int(index), from: peer, now: now)
            if busy {
                b.sources[peer]?.avoid[Int(index)] = now + settings.busyBackoff
            } else {
                b.sources[peer]?.unmark(Int(index))
            }
            blobs[blob] = b
            schedule(blob, now: now, &out, only: peer)
        case .piece(let blob, let index, let data):
            receivePiece(blob, Int(index), data, from: peer, now: now, &out)
        }
        return out
    }

    public mutating func tick(now: Instant) -> Outbox {
        var out = Outbox()
        var anyActive = false
        for d in blobOrder {
            let b = blobs[d]!
            if !b.unannounced.isEmpty {
                if now >= b.unannouncedSince + settings.haveDelay { announceNew(d, b, &out) } else { out.wake(at: b.unannouncedSince + settings.haveDelay) }
            }
            guard b.downloading else { continue }
            anyActive = true
            for (peer, index) in b.expireRequests(now: now, settings: settings) {
                out.send(to: peer, .interactive, SwarmMessage.cancel(blob: d, index: UInt32(index)).frame)
            }
            // Ask again who holds the blob when nothing is in flight: with no sources or no
            // manifest, and also when every known source is idle (the chunks still missing may be
            // held by peers whose announcements this node never got).
            if now >= b.nextRediscover && (b.sources.isEmpty || b.manifest == nil || b.sources.values.allSatisfy { $0.inflight.isEmpty }) {
                for peer in links where !b.bad.contains(peer) {
                    out.send(to: peer, .interactive, SwarmMessage.interested(blob: d).frame)
                }
                b.nextRediscover = now + settings.rediscoverInterval
            }
            if let m = b.manifest, now >= b.lastProgress + settings.progressInterval {
                b.lastProgress = now
                effects.append(.progress(b.progress(d, m, now: now)))
            }
            schedule(d, now: now, &out)
        }
        if anyActive { out.wake(at: now + .milliseconds(50)) }
        return out
    }

    // MARK: Planner

    private mutating func receivePiece(_ blob: Digest, _ index: Int, _ data: [UInt8], from peer: NodeID, now: Instant, _ out: inout Outbox) {
        guard let b = blobs[blob], let m = b.manifest, index < m.chunks.count else { return }
        let wasRequested = b.sources[peer]?.inflight[index] != nil
        // Unsolicited pieces are taken only from a source, and only when still missing (a seed
        // sends a fresh chunk in place of one it leaves to others); anything else is dropped
        // before it costs a hash.
        guard wasRequested || b.downloading && b.sources[peer] != nil && !b.have![index] else { return }
        let chunk = m.chunks[index]
        guard data.count == Int(chunk.size), let verified = VerifiedChunk(data, expected: chunk.digest) else {
            penalties[peer, default: 0] += 1
            effects.append(.penalize(peer: peer, blob: blob, reason: "chunk \(index) failed verification"))
            b.sources[peer]!.badPieces += 1
            b.requestFailed(index, from: peer, now: now)
            if b.sources[peer]!.badPieces >= settings.badPiecesBeforeDrop {
                b.bad.insert(peer)
                _ = b.dropSource(peer)
            }
            blobs[blob] = b
            schedule(blob, now: now, &out)
            return
        }
        b.delivered(index, from: peer, bytes: data.count, now: now, measured: b.fewPeers(settings))
        let wasHave = b.have![index]
        if !wasHave {
            b.markHave(index)
            effects.append(.store(blob: blob, index: UInt32(index), data: verified))
            // Endgame duplicates: tell the others to stop.
            for other in b.requested[index] ?? [] where other != peer {
                b.sources[other]?.cancel(index)
                out.send(to: other, .interactive, SwarmMessage.cancel(blob: blob, index: UInt32(index)).frame)
            }
            b.requested[index] = nil
            if b.unannounced.isEmpty { b.unannouncedSince = now }
            b.unannounced.append(UInt32(index))
            // A node's first chunks are announced at once: until it holds a few, its uplink has
            // nothing to offer, and each batching delay there slows the whole swarm's start.
            if b.unannounced.count >= settings.haveBatch || b.have!.isComplete || b.have!.setCount <= settings.randomFirst {
                announceNew(blob, b, &out)
            } else {
                out.wake(at: now + settings.haveDelay)
            }
        }
        if b.have!.isComplete && b.downloading {
            b.downloading = false
            effects.append(.progress(b.progress(blob, m, now: now)))
            effects.append(.completed(blob: blob, manifest: m))
            for p in b.sourceOrder {
                for i in b.sources[p]!.inflight.keys.sorted() { out.send(to: p, .interactive, SwarmMessage.cancel(blob: blob, index: UInt32(i)).frame) }
            }
            b.removeAllSources()
            b.requested = [:]
        }
        blobs[blob] = b
        if b.downloading { schedule(blob, now: now, &out, only: peer) }
    }

    /// Records that `peer` wants `blob`; a peer new to the list is told what this node holds.
    private func addInterested(_ peer: NodeID, _ blob: Digest, _ b: BlobState, _ out: inout Outbox) {
        guard b.interested.insert(peer), let have = b.have, have.setCount > 0, links.contains(peer) else { return }
        out.send(to: peer, .interactive, SwarmMessage.have(blob: blob, chunkCount: UInt32(have.count), bits: have.bytes).frame)
    }

    /// Sends the pending batch of gained chunks to every interested peer.
    private func announceNew(_ blob: Digest, _ b: BlobState, _ out: inout Outbox) {
        guard !b.unannounced.isEmpty else { return }
        let frame = SwarmMessage.haveMore(blob: blob, indices: b.unannounced).frame
        for p in b.interested where links.contains(p) { out.send(to: p, .interactive, frame) }
        b.unannounced.removeAll(keepingCapacity: true)
    }

    private mutating func announceHave(_ blob: Digest, to peers: PeerList, _ out: inout Outbox) {
        guard let have = blobs[blob]?.have, have.setCount > 0 else { return }
        for p in peers where links.contains(p) {
            out.send(to: p, .interactive, SwarmMessage.have(blob: blob, chunkCount: UInt32(have.count), bits: have.bytes).frame)
        }
    }

    /// Fills every source's pipeline for one blob.
    private mutating func schedule(_ blob: Digest, now: Instant, _ out: inout Outbox, only: NodeID? = nil) {
        guard !holdingRequests, let b = blobs[blob], b.downloading, !b.awaitingLocalCheck, let m = b.manifest else { return }
        // After a piece, a reject or new holdings from one source, only that source's pipeline
        // changed, unless this is endgame, when a freed chunk may go to anyone.
        for p in b.sourceOrder where ranks[p] == nil { ranks[p] = rng.next() }
        let order: [NodeID]
        if let only, !b.unrequested.isEmpty { order = [only] } else { order = b.sourceOrder.sorted { a, c in
            let ha = hints[a] ?? PeerHint(), hc = hints[c] ?? PeerHint()
            if ha.gaming != hc.gaming { return !ha.gaming }
            let sa = b.sources[a]!.throughput * (1 - min(ha.load, 0.9)), sc = b.sources[c]!.throughput * (1 - min(hc.load, 0.9))
            return sa != sc ? sa > sc : ranks[a]! < ranks[c]!
        } }
        let avgChunk = max(1, Int(m.totalSize / UInt64(max(m.chunks.count, 1))))
        var total = b.sources.values.reduce(0) { $0 + $1.inflight.count }
        for peer in order where links.contains(peer) {
            while total < settings.maxRequestsPerTransfer {
                guard let s = b.sources[peer] else { break }
                let measured = s.rated && b.fewPeers(settings)
                let bdp = s.throughput * (max(s.rtt.seconds, 0.001) * settings.pipelineBDPs + (measured ? settings.pipelineSlack.seconds : 0))
                let target = min(max(Int(bdp), settings.minPipelineChunks * avgChunk), settings.maxPipelineBytes)
                if s.inflightBytes >= target && s.inflight.count >= settings.minPipelineChunks { break }
                if !measured {
                    // Until pieces have come back, the shallow caps: every request joins a queue
                    // the source shares with everyone else who asks it.
                    if s.inflight.count >= settings.maxRequestsPerSource { break }
                    if !s.inflight.isEmpty && s.inflightBytes + avgChunk > settings.maxBytesPerSource { break }
                }
                guard let index = pick(b, for: peer, m, now: now) else { break }
                b.sources[peer]!.request(index, size: Int(m.chunks[index].size), now: now)
                total += 1
                b.requested[index, default: []].append(peer)
                b.removeUnrequested(index)
                out.send(to: peer, .interactive, SwarmMessage.request(blob: blob, index: UInt32(index)).frame)
            }
        }
        blobs[blob] = b
    }

    /// Random first, then (sampled) rarest first; in endgame, a chunk already asked of someone else.
    private mutating func pick(_ b: BlobState, for peer: NodeID, _ m: SwarmManifest, now: Instant) -> Int? {
        guard let src = b.sources[peer], let have = src.have else { return nil }
        if !b.unrequested.isEmpty {
            let rarest = b.have!.setCount >= settings.randomFirst
            var best: Int? = nil
            var tries = 0
            while tries < 48 {
                tries += 1
                let i = b.unrequested[Int.random(in: 0..<b.unrequested.count, using: &rng)]
                guard have[i], src.allowed(i, now: now) else { continue }
                if !rarest { return i }
                if best == nil || b.availability[i] < b.availability[best!] { best = i }
                if tries >= 12 && best != nil { break }
            }
            if let best { return best }
            // Sampling missed: scan (rare, when this source holds few of the wanted chunks).
            return b.unrequested.filter { have[$0] && src.allowed($0, now: now) }.min { b.availability[$0] < b.availability[$1] }
        }
        // Endgame: every missing chunk is requested somewhere. Near the very end only, duplicate the
        // ones with fewest askers, so one slow source does not hold up the finish.
        let missing = m.chunks.count - b.have!.setCount
        guard missing <= max(settings.endgameChunks, m.chunks.count / 50) else { return nil }
        var candidate: Int? = nil
        var fewest = Int.max
        // The chunk with the fewest askers, the lowest index among equals (deterministic without sorting).
        for (i, askers) in b.requested {
            guard askers.count < settings.endgameSources && have[i] && !askers.contains(peer) && src.allowed(i, now: now) else { continue }
            if askers.count < fewest || (askers.count == fewest && i < candidate!) { candidate = i; fewest = askers.count }
        }
        return candidate
    }
}

/// Per-blob transfer state. A class so that per-message updates mutate in place instead of copying
/// the whole state out of the core's dictionary (which cost O(sources + chunks) per message).
final class BlobState: @unchecked Sendable {
    var manifest: SwarmManifest?
    var have: Bitfield?
    var downloading = false
    /// Waiting for the shell's `localChunks` answer before requesting anything.
    var awaitingLocalCheck = false
    var interested = PeerList()
    var sources: [NodeID: Source] = [:]
    /// `sources`' keys in the order the sources appeared.
    var sourceOrder = PeerList()
    var requested: [Int: [NodeID]] = [:]
    var unrequested: [Int] = []
    var unrequestedPos: [Int: Int] = [:]
    var availability: [UInt16] = []
    var bad: Set<NodeID> = []
    var manifestFrom: NodeID?
    var manifestAskedAt: Instant?
    var started: Instant
    var lastProgress = Instant.zero
    var nextRediscover = Instant.zero
    var bytesDone: UInt64 = 0
    var bytesAtStart: UInt64 = 0
    /// `have` messages that arrived before the manifest.
    var pendingHave: [NodeID: (Int, [UInt8])] = [:]
    /// Upload side: how often each chunk was served, and how many chunks were served at least once.
    var served: [UInt16] = []
    /// Every chunk has been served at least this many times; `atRound` chunks exactly that many.
    var servedRound = 0
    var atRound = 0
    var serveCursor = 0
    /// Chunks this seed sent again before it had sent every chunk once (round 0), and how many of
    /// those went to a requester coming back after a busy reject (for `debugDescription`).
    var round0Repeats = 0
    var round0Comebacks = 0
    /// Seeding: what each requester said it holds (its `have` and `haveMore` to this node).
    var peerHave: [NodeID: Bitfield] = [:]
    /// Seeding: chunks each requester was told to fetch from peers (a busy reject) and has not
    /// been served since. Asked again, the chunk is served.
    var leftToPeers: [NodeID: Set<Int>] = [:]

    /// At most `measuredPipelineSources` sources and as few peers fetching the same blob: a
    /// transfer nobody else shares (a broadcast's first moments, when only the seed has announced
    /// anything, count all the other fetchers).
    func fewPeers(_ settings: SwarmSettings) -> Bool {
        max(sources.count, interested.count) <= settings.measuredPipelineSources
    }

    func wasLeftToPeers(_ i: Int, by peer: NodeID) -> Bool { leftToPeers[peer]?.contains(i) ?? false }
    /// The node held the whole blob before fetching any of it: it serves in rounds.
    var seeding = false
    /// Chunks gained but not yet announced, and when the first of them arrived.
    var unannounced: [UInt32] = []
    var unannouncedSince = Instant.zero

    init(started: Instant) { self.started = started }

    func setManifest(_ m: SwarmManifest) {
        guard manifest == nil else { return }
        manifest = m
        have = Bitfield(count: m.chunks.count)
        availability = Array(repeating: 0, count: m.chunks.count)
        served = Array(repeating: 0, count: m.chunks.count)
        atRound = m.chunks.count
        unrequested = Array(0..<m.chunks.count)
        unrequestedPos = Dictionary(uniqueKeysWithValues: unrequested.map { ($0, $0) })
        for (peer, (n, bits)) in pendingHave { applyHave(peer, count: n, bits: bits) }
        pendingHave = [:]
    }

    /// A chunk not served yet in the current round that the requester lacks, if any.
    /// Looks at most 512 chunks on from a round-robin cursor: a blob whose unserved chunks are
    /// mostly ones the requester holds (a new version sharing most chunks) is left to plain serving.
    func nextUnserved(lackedBy holdings: Bitfield?) -> Int? {
        guard atRound > 0, !served.isEmpty, let holdings else { return nil }
        for _ in 0..<min(served.count, 512) {
            let i = serveCursor
            serveCursor = (serveCursor + 1) % served.count
            if Int(served[i]) == servedRound && !holdings[i] { return i }
        }
        return nil
    }

    func countServed(_ i: Int) {
        if servedRound == 0 && served[i] > 0 { round0Repeats += 1 }
        if Int(served[i]) == servedRound {
            atRound -= 1
            if atRound == 0 { servedRound += 1; atRound = served.count }
        }
        served[i] &+= 1
    }

    func markHave(_ i: Int) {
        guard let m = manifest, !(have![i]) else { return }
        have!.insert(i)
        bytesDone += UInt64(m.chunks[i].size)
        removeUnrequested(i)
    }

    func removeUnrequested(_ i: Int) {
        guard let pos = unrequestedPos.removeValue(forKey: i) else { return }
        let last = unrequested.removeLast()
        if pos < unrequested.count {
            unrequested[pos] = last
            unrequestedPos[last] = pos
        }
    }

    func addUnrequested(_ i: Int) {
        guard unrequestedPos[i] == nil, let have, !have[i] else { return }
        unrequestedPos[i] = unrequested.count
        unrequested.append(i)
    }

    func updateSource(_ peer: NodeID, count: Int, bits: [UInt8], settings: SwarmSettings, hint: PeerHint?) {
        addSource(peer, settings: settings, hint: hint)
        if manifest == nil { pendingHave[peer] = (count, bits); return }
        applyHave(peer, count: count, bits: bits)
    }

    private func applyHave(_ peer: NodeID, count: Int, bits: [UInt8]) {
        guard let m = manifest, count == m.chunks.count, let field = try? Bitfield(bytes: bits, count: count) else { return }
        let old = sources[peer]?.have
        for i in 0..<count where field[i] && !(old?[i] ?? false) { availability[i] &+= 1 }
        sources[peer]?.have = field
    }

    func addToSource(_ peer: NodeID, indices: [UInt32], settings: SwarmSettings, hint: PeerHint?) {
        guard let m = manifest else { return }
        addSource(peer, settings: settings, hint: hint)
        if sources[peer]!.have == nil { sources[peer]!.have = Bitfield(count: m.chunks.count) }
        for i in indices.map(Int.init) where i < m.chunks.count && !sources[peer]!.have![i] {
            sources[peer]!.have!.insert(i)
            availability[i] &+= 1
        }
    }

    func addSource(_ peer: NodeID, settings: SwarmSettings, hint: PeerHint?) {
        guard sources[peer] == nil else { return }
        sources[peer] = Source(settings: settings, hint: hint)
        sourceOrder.insert(peer)
    }

    func removeAllSources() {
        sources = [:]
        sourceOrder = PeerList()
    }

    /// Removes a source; returns true if it had requests in flight (now re-queued).
    func dropSource(_ peer: NodeID) -> Bool {
        guard let s = sources.removeValue(forKey: peer) else { return false }
        sourceOrder.remove(peer)
        if let h = s.have { for i in 0..<h.count where h[i] && availability[i] > 0 { availability[i] -= 1 } }
        for i in s.inflight.keys.sorted() { forget(i, peer) }
        return !s.inflight.isEmpty
    }

    func requestFailed(_ i: Int, from peer: NodeID, now: Instant) {
        sources[peer]?.cancel(i)
        forget(i, peer)
    }

    private func forget(_ i: Int, _ peer: NodeID) {
        requested[i]?.removeAll { $0 == peer }
        if requested[i]?.isEmpty ?? false { requested[i] = nil; addUnrequested(i) }
    }

    /// `measured`: the source's pipeline follows its measured throughput (few sources), so the
    /// estimate rises as fast as the pipeline lets the throughput grow.
    func delivered(_ i: Int, from peer: NodeID, bytes: Int, now: Instant, measured: Bool) {
        guard var s = sources[peer], let sent = s.inflight[i] else { return }
        // Rate over a window of at least 100 ms (and two deliveries): single inter-arrival gaps
        // say nothing when pieces from a shared queue arrive in bursts. A measured pipeline uses
        // a window of 4 round trips (at least 20 ms) and takes any higher sample at once: its
        // throughput grows with its pipeline, and a smoothed estimate would slow the ramp.
        s.windowBytes += bytes
        s.windowCount += 1
        let span = (now - s.windowStart).seconds
        let window = measured ? max(0.02, 4 * s.rtt.seconds) : 0.1
        if span >= window && s.windowCount >= 2 || s.deliveries == 0 && span > 0 {
            let sample = Double(s.windowBytes) / max(span, 1e-6)
            s.throughput = !s.rated || measured && sample > s.throughput ? sample : 0.7 * s.throughput + 0.3 * sample
            s.rated = true
            s.windowStart = now
            s.windowBytes = 0
            s.windowCount = 0
        }
        s.deliveries += 1
        let rttSample = now - sent
        if s.deliveries == 1 || rttSample < s.rtt { s.rtt = max(rttSample, .microseconds(100)) }
        s.lastDelivery = now
        s.cancel(i)
        sources[peer] = s
    }

    /// Abandons requests that are overdue; returns them (to cancel at their sources).
    func expireRequests(now: Instant, settings: SwarmSettings) -> [(NodeID, Int)] {
        var expired: [(NodeID, Int)] = []
        for peer in sourceOrder {
            let s = sources[peer]!
            let timeout = max(settings.requestTimeoutFloor,
                              s.rtt * 4 + .seconds(3 * Double(s.inflightBytes) / max(s.throughput, 1)))
            for (i, sent) in s.inflight.sorted(by: { $0.key < $1.key }) where now - sent > timeout {
                sources[peer]!.throughput /= 2
                requestFailed(i, from: peer, now: now)
                expired.append((peer, i))
            }
        }
        return expired
    }

    func progress(_ blob: Digest, _ m: SwarmManifest, now: Instant?) -> SwarmProgress {
        let elapsed = now.map { ($0 - started).seconds } ?? 0
        let rate = elapsed > 0 ? Double(bytesDone - min(bytesDone, bytesAtStart)) / elapsed : 0
        return SwarmProgress(blob: blob, bytesDone: bytesDone, bytesTotal: m.totalSize,
                             sources: sources.values.filter { $0.deliveries > 0 || !$0.inflight.isEmpty }.count,
                             rate: rate, done: have?.isComplete ?? false)
    }
}

struct Source: Sendable {
    var have: Bitfield?
    var inflight: [Int: Instant] = [:]
    var inflightBytes = 0
    var sizes: [Int: Int] = [:]
    var throughput: Double
    var rtt: Duration
    var lastDelivery: Instant?
    var deliveries = 0
    /// Bytes delivered since `windowStart` (restarted when the source goes from idle to busy).
    var windowStart = Instant.zero
    var windowBytes = 0
    var windowCount = 0
    var rated = false
    var badPieces = 0
    /// Chunks this source said it is too busy to serve, until when.
    var avoid: [Int: Instant] = [:]

    func allowed(_ i: Int, now: Instant) -> Bool { avoid[i].map { now >= $0 } ?? true }

    init(settings: SwarmSettings, hint: PeerHint?) {
        throughput = settings.initialThroughput
        rtt = hint?.rtt ?? settings.initialRTT
    }

    mutating func request(_ i: Int, size: Int, now: Instant) {
        if inflight.isEmpty {
            windowStart = now
            windowBytes = 0
            windowCount = 0
        }
        inflight[i] = now
        sizes[i] = size
        inflightBytes += size
    }

    mutating func cancel(_ i: Int) {
        guard inflight.removeValue(forKey: i) != nil else { return }
        inflightBytes -= sizes.removeValue(forKey: i) ?? 0
        if inflight.isEmpty { inflightBytes = 0 }
    }

    mutating func unmark(_ i: Int) {
        // The source said it does not have chunk i after all (evicted): stop asking it for it.
        guard have?[i] ?? false else { return }
        var copy = Bitfield(count: have!.count)
        for j in 0..<have!.count where have![j] && j != i { copy.insert(j) }
        have = copy
    }
}

/// Peers in the order they were added: membership by hash, iteration by array, so walking it never
/// depends on a hash seed. Removal moves the last peer into the gap (deterministic, O(1)).
struct PeerList: Sequence, Sendable {
    private(set) var items: [NodeID] = []
    private var position: [NodeID: Int] = [:]

    var isEmpty: Bool { items.isEmpty }
    var count: Int { items.count }
    func contains(_ peer: NodeID) -> Bool { position[peer] != nil }

    @discardableResult
    mutating func insert(_ peer: NodeID) -> Bool {
        guard position[peer] == nil else { return false }
        position[peer] = items.count
        items.append(peer)
        return true
    }

    mutating func remove(_ peer: NodeID) {
        guard let i = position.removeValue(forKey: peer) else { return }
        let last = items.removeLast()
        if i < items.count {
            items[i] = last
            position[last] = i
        }
    }

    func makeIterator() -> IndexingIterator<[NodeID]> { items.makeIterator() }
}

extension SwarmCore {
    /// A one-screen account of a transfer for diagnosis (`GQUIC_SWARM_TIMELINE=1 gquic-sim run …`):
    /// the missing chunks, who is asked for each, and what each source has in flight.
    public func debugDescription(of blob: Digest) -> String {
        guard let b = blobs[blob], let have = b.have else { return "no state" }
        var lines: [String] = []
        let missing = (0..<have.count).filter { !have[$0] }
        lines.append("  missing \(missing.count): " + missing.prefix(12).map { i in
            "\(i)[avail \(b.availability[i]), asked \(b.requested[i]?.count ?? 0), unreq \(b.unrequestedPos[i] != nil)]"
        }.joined(separator: " "))
        for p in b.sourceOrder {
            let s = b.sources[p]!
            lines.append("  src \(p.description.prefix(8)): has \(s.have?.setCount ?? -1), inflight \(s.inflight.keys.sorted().prefix(6)), thr \(Int(s.throughput)), rtt \(s.rtt), avoid \(s.avoid.count), link \(links.contains(p))")
        }
        lines.append("  links \(links.count); served round \(b.servedRound), \(b.atRound) chunks left in it, seeding \(b.seeding), downloading \(b.downloading), interested \(b.interested.count), substitutes \(substitutes.count), round-0 repeats \(b.round0Repeats) (comebacks \(b.round0Comebacks))")
        for p in b.interested {
            lines.append("  peer \(p.description.prefix(8)): peerHave \(b.peerHave[p]?.setCount ?? -1), link \(links.contains(p))")
        }
        return lines.joined(separator: "\n")
    }

    /// `debugDescription(of:)` for every blob this core knows.
    public var debugDescription: String {
        blobOrder.map { "blob \($0.description.prefix(16)):\n" + debugDescription(of: $0) }.joined(separator: "\n")
    }
}
