import ContentStore
import Foundation
import MeshCore
import Swarm
import Synchronization

/// Hosts the sans-IO `SwarmCore` next to the real content store: carries out its effects (serve a
/// chunk, store a verified chunk, commit a finished blob) and reports progress. To `CoreHost` it is
/// one more `MeshProtocolCore`.
/// A class: the host keeps one instance, and the manifests it has handed the swarm live with it.
final class SwarmShell: MeshProtocolCore, @unchecked Sendable {
    var swarm: SwarmCore
    let store: ContentStore
    /// Files being written while their blob arrives (`gquic-fetch get -o FILE`): verified chunks go
    /// into them on the writer thread with the store's batch, and they are finished after the commit.
    let outputs: StreamedOutputs
    /// Called with progress and completion while the host's lock is held: keep it short.
    let onEvent: @Sendable (SwarmShellEvent) -> Void
    /// The chunk list of every blob handed to the swarm (held, or being fetched), so serving and
    /// storing a chunk look its digest up here instead of reading the blob's manifest from disk.
    private var manifests: [Digest: SwarmManifest] = [:]
    /// Transferred blobs waiting for blobs they reference, and the reverse map.
    private var awaiting: [Digest: (manifest: BlobManifest, missing: Set<Digest>)] = [:]
    private var referencedBy: [Digest: Set<Digest>] = [:]
    /// Verified chunks not yet written: they go to the store in batches (one flush for many chunks
    /// rather than one per chunk), at `batchBytes`, after `batchDelay`, and before any commit.
    /// A crash loses only these, and a restarted fetch finds what is on disk.
    private var pending: [(blob: Digest, chunk: VerifiedChunk)] = []
    private var pendingIndex: [Digest: Int] = [:]
    private var pendingBytes = 0
    /// Verified chunks for streamed outputs, written with the next batch (also chunks the store
    /// already holds: the output needs them at their offsets all the same).
    private var pendingOutput: [(output: StreamedOutput, chunk: VerifiedChunk)] = []
    static let batchBytes = 8 << 20
    static let batchDelay: Duration = .milliseconds(20)
    /// Full batches are written (appended and fdatasynced; the swarm's hash on arrival is the store's
    /// check, `VerifiedChunk`) on a writer thread, never under the host's lock: a flush takes tens of
    /// milliseconds on a busy disk, behind writeback seconds, and every core — a membership probe,
    /// a control round trip — would wait for it. Until a batch is on disk its chunks are served and
    /// counted from here. Commits run on the same thread, after the batches before them (chunks
    /// durable before the manifest that names them), and come back through `reenter`. When more
    /// than `maxWritingBytes` wait to be written, the swarm stops requesting (`SwarmCore.holdRequests`)
    /// until half of it is written: the disk's pace, without blocking anyone.
    let writer = DispatchQueue(label: "gquic-swarm-chunk-writer")
    private let writing = WriteBacklog()
    let maxWritingBytes: Int
    /// Runs a closure on this shell under the host's lock; the outbox it returns is carried out.
    /// Called from the writer and reader threads, never with the lock held. The owner sets it
    /// before the host starts (it needs the host, which needs the shell).
    var reenter: @Sendable (@escaping @Sendable (SwarmShell, Instant) -> Outbox) -> Void = { _ in
        preconditionFailure("SwarmShell.reenter was not set before the host started")
    }
    /// Blobs whose commit is running on the writer thread.
    private var committing: Set<Digest> = []
    /// Chunks to serve that are not in memory are read on this thread (`serveFromStore`).
    let reader = DispatchQueue(label: "gquic-swarm-chunk-reader")
    struct ReadChunk: Sendable { var peer: NodeID; var blob: Digest; var index: UInt32; var data: [UInt8]? }
    /// Reads done and not yet served; whether a `reenter` to serve them is under way.
    final class DoneReads: Sendable { let state = Mutex<(done: [ReadChunk], reentering: Bool)>(([], false)) }
    private let reads = DoneReads()
    /// Chunks just written stay in memory this long after the swarm last stored or served one, for
    /// serving (`WriteBacklog.recent`); then the memory goes back.
    static let recentIdle: Duration = .seconds(20)
    private var lastChunkActivity = Instant.zero
    /// Chunks were stored since the recent set was last dropped (so it may hold some).
    private var recentHeld = false

    init(swarm: SwarmCore, store: ContentStore, outputs: StreamedOutputs = StreamedOutputs(), maxWritingBytes: Int = 64 << 20,
         onEvent: @escaping @Sendable (SwarmShellEvent) -> Void) {
        self.swarm = swarm
        self.store = store
        self.outputs = outputs
        self.maxWritingBytes = maxWritingBytes
        self.onEvent = onEvent
    }

    func handles(frameType type: UInt64) -> Bool { swarm.handles(frameType: type) }

    func start(now: Instant) -> Outbox {
        var out = swarm.start(now: now)
        // Everything already in the store is available to the swarm.
        for digest in (try? store.blobs()) ?? [] {
            if let m = try? store.manifest(for: digest) { out.merge(offer(m, now: now)) }
        }
        return settle(out, now: now)
    }

    func receive(_ message: PeerMessage, now: Instant) -> Outbox { settle(swarm.receive(message, now: now), now: now) }
    func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox { settle(swarm.linkChanged(event, now: now), now: now) }
    /// The earliest wake-up the swarm itself asked for. The shell also wakes to write a partial
    /// chunk batch; the swarm is ticked only when its own time has come (a tick before it would
    /// answer with no wake-up, and the host would forget the swarm's timers).
    private var swarmWake: Instant?
    private var lastDump = Instant.zero
    static let debugDump = ProcessInfo.processInfo.environment["GQUIC_SWARM_DEBUG"] != nil

    func tick(now: Instant) -> Outbox {
        flushChunks()
        var resumed = Outbox()
        if swarm.holdingRequests, writing.state.withLock({ $0.bytes }) <= maxWritingBytes / 2 {
            resumed = settle(swarm.resumeRequests(now: now), now: now)
        }
        if recentHeld, now >= lastChunkActivity + SwarmShell.recentIdle {
            writing.forgetRecent()
            recentHeld = false
        }
        guard let due = swarmWake, due <= now else {
            var out = resumed
            if let due = swarmWake { out.wake(at: due) }
            return out
        }
        swarmWake = nil
        resumed.merge(settle(swarm.tick(now: now), now: now))
        return resumed
    }

    /// A blob just added to the local store: offer it to the swarm.
    func hold(_ manifest: BlobManifest, now: Instant) -> Outbox { settle(offer(manifest, now: now), now: now) }

    /// What the cluster state says of peers (gaming, load), for the planner's source choice.
    func setHints(_ hints: [(NodeID, PeerHint)]) {
        for (peer, hint) in hints { swarm.setHint(hint, for: peer) }
    }

    func fetch(_ digest: Digest, now: Instant) -> Outbox { settle(swarm.fetch(digest, now: now), now: now) }

    /// Streams `blob` to `request.target` as it arrives (see `StreamedOutput`), if it is still to be
    /// fetched: at once when its chunk list is known already, else when it arrives. Returns false when
    /// the store holds it (the caller exports it the ordinary way).
    @discardableResult
    func stream(_ blob: Digest, _ request: StreamedOutputs.Request) -> Bool {
        guard !store.hasBlob(blob), !committing.contains(blob) else { return false }
        outputs.request(blob, request)
        if let m = manifests[blob] { openOutputs(m) }
        return true
    }

    /// `m`'s chunk list is known: opens the outputs asked for it, if it is a single file's blob.
    private func openOutputs(_ m: SwarmManifest) {
        guard outputs.wants(m.blob) else { return }
        guard let manifest = try? BlobManifest(wireBytes: m.extra), manifest.kind == .file else {
            outputs.drop(m.blob)   // a tree (or no usable manifest): exported after the commit
            return
        }
        for (r, why) in outputs.open(m.blob, chunks: m.chunks.map { ($0.digest, Int($0.size)) }) {
            onEvent(.streamFailed(m.blob, r.target, why))
        }
    }

    private func offer(_ manifest: BlobManifest, now: Instant) -> Outbox {
        let m = SwarmShell.swarmManifest(manifest)
        manifests[m.blob] = m
        return swarm.hold(m, now: now)
    }

    /// Adds what carrying out the swarm's pending effects sends to `out`; writes the chunk batch
    /// when it is full, and asks to be woken to write a partial one.
    private func settle(_ out: Outbox, now: Instant) -> Outbox {
        var out = out
        out.merge(drain(now: now))
        if SwarmShell.debugDump, now >= lastDump + .seconds(2) {
            lastDump = now
            FileHandle.standardError.write(("swarm state at \(now):\n" + swarm.debugDescription + "\n").data(using: .utf8)!)
        }
        if let w = out.wakeAt { swarmWake = min(swarmWake ?? w, w) }   // all of it came from the swarm
        if pendingBytes >= SwarmShell.batchBytes { flushChunks() }
        if !pending.isEmpty || !pendingOutput.isEmpty { out.wake(at: now + SwarmShell.batchDelay) }
        if swarm.holdingRequests { out.wake(at: now + SwarmShell.batchDelay) }   // to see the backlog shrink
        if recentHeld { out.wake(at: lastChunkActivity + SwarmShell.recentIdle) }
        return out
    }

    /// Hands the pending chunks to the writer thread as one batch, and holds the swarm's requests
    /// when too much waits to be written. On failure every blob with a chunk in the batch fails.
    private func flushChunks() {
        guard !pending.isEmpty || !pendingOutput.isEmpty else { return }
        let batch = pending.map(\.chunk)
        let blobs = pending.map(\.blob)
        let toOutputs = pendingOutput
        pendingOutput = []
        let backlog = writing.state.withLock { w in
            for c in batch { w.chunks[c.digest] = c.bytes }
            w.bytes += pendingBytes
            return w.bytes
        }
        let bytes = pendingBytes
        pending = []
        pendingIndex = [:]
        pendingBytes = 0
        let store = store, onEvent = onEvent, writing = writing
        let write: @Sendable () -> Void = {
            for (o, c) in toOutputs { o.write(c) }
            if !batch.isEmpty {
                do { try store.putChunks(batch) } catch {
                    var seen = Set<Digest>()
                    for b in blobs where seen.insert(b).inserted { onEvent(.failed(b, "storing chunks: \(error)")) }
                }
            }
            writing.written(batch, bytes: bytes)
            writing.advanceHashes(blobs, store: store)
        }
        writer.async(execute: write)
        if backlog > maxWritingBytes { swarm.holdRequests() }
    }

    /// A chunk verified and on its way to the store (pending or being written).
    private func inFlight(_ digest: Digest) -> Bool {
        pendingIndex[digest] != nil || writing.state.withLock { $0.chunks[digest] != nil }
    }

    /// A chunk's bytes if they are in memory: in the batch not yet written, being written, or
    /// written lately.
    private func chunkInMemory(_ digest: Digest) -> [UInt8]? {
        if let i = pendingIndex[digest] { return pending[i].chunk.bytes }
        return writing.state.withLock { $0.chunks[digest] ?? $0.recent[digest] }
    }

    /// Serves chunk `index` of `blob` to `peer` from the store (read back and hashed again) on the
    /// reader thread: a read from a busy disk takes tens of milliseconds, and under the host's lock
    /// it would hold up every core — a seed's control round trips waited for its reads. Finished
    /// reads come back through `reenter`, as many as are done at a time.
    private func serveFromStore(_ peer: NodeID, _ blob: Digest, _ index: UInt32, _ digest: Digest) {
        let store = store, reads = reads, reenter = reenter
        reader.async {
            let data = try? store.readChunk(digest)
            let first = reads.state.withLock { r in
                r.done.append(ReadChunk(peer: peer, blob: blob, index: index, data: data))
                defer { r.reentering = true }
                return !r.reentering
            }
            if first { reenter { shell, now in shell.serveReads(now: now) } }
        }
    }

    /// Hands the swarm the chunks the reader has read since the last call.
    private func serveReads(now: Instant) -> Outbox {
        let done = reads.state.withLock { r in
            defer { r.done = []; r.reentering = false }
            return r.done
        }
        var out = Outbox()
        for r in done {
            if let data = r.data {
                out.merge(swarm.servePiece(to: r.peer, blob: r.blob, index: r.index, data: data, now: now))
            } else {
                out.merge(swarm.cannotServe(r.peer, blob: r.blob, index: r.index))
            }
        }
        return settle(out, now: now)
    }

    static func swarmManifest(_ m: BlobManifest) -> SwarmManifest {
        SwarmManifest(blob: m.digest, chunks: m.chunks.map { .init(digest: $0.digest, size: $0.length) }, extra: m.wireBytes())
    }

    /// Carries out the swarm's effects until none are left (serving can produce more).
    private func drain(now: Instant) -> Outbox {
        var out = Outbox()
        while true {
            let effects = swarm.drainEffects()
            if effects.isEmpty { return out }
            for e in effects {
                switch e {
                case .serve(let peer, let blob, let index):
                    lastChunkActivity = now
                    if let digest = chunkDigest(blob, index) {
                        if let data = chunkInMemory(digest) {
                            out.merge(swarm.servePiece(to: peer, blob: blob, index: index, data: data, now: now))
                        } else {
                            serveFromStore(peer, blob, index, digest)
                        }
                    } else {
                        out.merge(swarm.cannotServe(peer, blob: blob, index: index))
                    }
                case .store(let blob, let index, let chunk):
                    lastChunkActivity = now
                    recentHeld = true
                    // Hashed by the swarm on arrival: the store takes it as verified.
                    for o in outputs.writing(blob) { pendingOutput.append((o, chunk)) }
                    if let digest = chunkDigest(blob, index), digest == chunk.digest, !inFlight(digest), !store.hasChunk(digest) {
                        pendingIndex[digest] = pending.count
                        pending.append((blob, chunk))
                        pendingBytes += chunk.bytes.count
                    }
                case .checkLocal(let blob, let m):
                    var have = Bitfield(count: m.chunks.count)
                    for (i, c) in m.chunks.enumerated() where inFlight(c.digest) || store.hasChunk(c.digest) { have.insert(i) }
                    manifests[blob] = m
                    if let bm = try? BlobManifest(wireBytes: m.extra), bm.kind == .file, bm.digest == blob { writing.hashContent(of: bm) }
                    openOutputs(m)
                    out.merge(swarm.localChunks(blob, have: have, now: now))
                case .completed(let blob, let m):
                    guard !committing.contains(blob) else { break }   // its commit reports when done
                    do {
                        let manifest = try BlobManifest(wireBytes: m.extra)
                        guard manifest.digest == blob,
                              manifest.chunks.map({ SwarmManifest.Chunk(digest: $0.digest, size: $0.length) }) == m.chunks else {
                            throw PeerError.protocolError("the manifest's chunk list does not match what was transferred")
                        }
                        // A blob that references others (an OCI index or image manifest) is complete
                        // only with them: fetch what is missing first, commit it when they are in.
                        let missing = manifest.references.filter { !store.hasBlob($0) }
                        if missing.isEmpty {
                            commit(manifest, now: now, &out)
                        } else {
                            awaiting[blob] = (manifest, Set(missing))
                            for child in missing {
                                referencedBy[child, default: []].insert(blob)
                                if !committing.contains(child) { out.merge(swarm.fetch(child, now: now)) }
                            }
                            onEvent(.awaitingReferences(blob, missing))
                        }
                    } catch {
                        failed(blob, "\(error)", now: now, &out)
                    }
                case .progress(let p):
                    onEvent(.progress(p))
                case .penalize(let peer, let blob, let reason):
                    onEvent(.penalized(peer, blob, reason))
                }
            }
        }
    }

    /// Commits a transferred blob to the store, then any blob that was waiting only for it.
    ///
    /// The disk work — the last batch, the rest of the content hash, the commit's writes and fsyncs —
    /// runs on the writer thread after every batch before it; `finishCommit` then runs under the
    /// host's lock again (through `reenter`), so a commit behind a busy disk stalls no core.
    private func commit(_ manifest: BlobManifest, now: Instant, _ out: inout Outbox) {
        let blob = manifest.digest
        guard committing.insert(blob).inserted else { return }
        flushChunks()   // queued ahead of the commit: chunks durable before the manifest
        let store = store, writing = writing, outputs = outputs
        let work: @Sendable () -> CommitOutcome = {
            // How much of the content's hash the writer took while the blob arrived; the rest now.
            let hasher = writing.takeHasher(blob)
            let early = hasher?.bytesHashed ?? 0
            hasher?.advance(store: store, memory: writing.recentChunk)
            let hashedEarly = hasher.flatMap { h in h.result.map { _ in (early, h.bytesHashed - early) } }
            do {
                if !store.hasBlob(blob) { try store.commitBlob(manifest, hashed: hasher) }
            } catch {
                return .failed("\(error)")
            }
            outputs.finish(blob, committed: manifest.chunks.map { ($0.digest, Int($0.length)) }) { d in
                guard let c = VerifiedChunk(try store.readChunk(d), expected: d) else { throw PeerError.protocolError("chunk \(d) read back corrupt") }
                return c
            }
            return .committed(hashedEarly)
        }
        let reenter = reenter
        writer.async {
            let outcome = work()
            reenter { shell, now in
                var out = Outbox()
                shell.finishCommit(manifest, outcome, now: now, &out)
                return shell.settle(out, now: now)
            }
        }
    }

    enum CommitOutcome: Sendable {
        /// Committed; how many bytes of the content hash were taken before the commit and at it.
        case committed((early: Int, atCommit: Int)?)
        case failed(String)
    }

    /// Back under the host's lock after the writer committed `manifest` (or failed to).
    private func finishCommit(_ manifest: BlobManifest, _ outcome: CommitOutcome, now: Instant, _ out: inout Outbox) {
        let blob = manifest.digest
        committing.remove(blob)
        guard case .committed(let hashedEarly) = outcome else {
            if case .failed(let why) = outcome { failed(blob, why, now: now, &out) }
            return
        }
        onEvent(.completed(blob, hashed: hashedEarly))
        for parent in (referencedBy.removeValue(forKey: blob) ?? []).sorted() {
            guard var waiting = awaiting[parent] else { continue }
            waiting.missing.remove(blob)
            if waiting.missing.isEmpty {
                awaiting[parent] = nil
                commit(waiting.manifest, now: now, &out)
            } else {
                awaiting[parent] = waiting
            }
        }
    }

    /// A blob could not be completed: so can no blob waiting for it.
    private func failed(_ blob: Digest, _ why: String, now: Instant, _ out: inout Outbox) {
        manifests[blob] = nil
        _ = writing.takeHasher(blob)   // (if the writer is advancing it still, that ends harmlessly)
        awaiting[blob] = nil
        onEvent(.failed(blob, why))
        out.merge(swarm.blobCommitFailed(blob, now: now))
        for parent in (referencedBy.removeValue(forKey: blob) ?? []).sorted() where awaiting[parent] != nil {
            failed(parent, "a blob it references, \(blob), failed: \(why)", now: now, &out)
        }
    }

    /// The digest of chunk `index` of `blob`, from the chunk lists the swarm was given.
    private func chunkDigest(_ blob: Digest, _ index: UInt32) -> Digest? {
        guard let m = manifests[blob], Int(index) < m.chunks.count else { return nil }
        return m.chunks[Int(index)].digest
    }
}

/// Chunks handed to the writer thread and not yet on disk, and their bytes; and the chunks written
/// last, kept in memory up to `recentLimit` bytes (oldest dropped first).
///
/// A chunk a peer has just received is the one its neighbours ask it for next (it is rare in the
/// swarm): served from here, it costs no read back from the store — a `pread`, a copy out of the
/// pack frame and a second SHA-256 pass (`readChunk` was 2.7% of the daemons' CPU in the 8-peer
/// namespace swarm, 0.6% with this: the seed's reads). The bytes are the ones the swarm hashed on
/// arrival, the same the store holds. Up to 64 MiB, dropped 20 s after the swarm's last chunk.
final class WriteBacklog: Sendable {
    struct State {
        var chunks: [Digest: [UInt8]] = [:]
        var bytes = 0
        var recent: [Digest: [UInt8]] = [:]
        var recentOrder: [(Digest, Int)] = []
        var recentHead = 0
        var recentBytes = 0
        /// Content hashes of the file blobs being fetched, advanced by the writer after each batch.
        var hashers: [Digest: BlobContentHasher] = [:]
    }
    static let recentLimit = 64 << 20
    let state = Mutex(State())

    /// A batch is on disk: its chunks move to the recent set.
    func written(_ batch: [VerifiedChunk], bytes: Int) {
        state.withLock { w in
            for c in batch {
                w.chunks[c.digest] = nil
                if w.recent.updateValue(c.bytes, forKey: c.digest) == nil {
                    w.recentOrder.append((c.digest, c.bytes.count))
                    w.recentBytes += c.bytes.count
                }
            }
            w.bytes -= bytes
            while w.recentBytes > WriteBacklog.recentLimit, w.recentHead < w.recentOrder.count {
                let (d, n) = w.recentOrder[w.recentHead]
                w.recentHead += 1
                w.recent[d] = nil
                w.recentBytes -= n
            }
            if w.recentHead > 1024, w.recentHead * 2 > w.recentOrder.count {
                w.recentOrder.removeFirst(w.recentHead)
                w.recentHead = 0
            }
        }
    }

    func recentChunk(_ d: Digest) -> [UInt8]? { state.withLock { $0.recent[d] } }

    /// Starts hashing `m`'s content as its chunks arrive (unless that has begun already).
    func hashContent(of m: BlobManifest) {
        state.withLock { w in if w.hashers[m.digest] == nil { w.hashers[m.digest] = BlobContentHasher(m) } }
    }

    /// Hashes what the last batch made contiguous, for each of `blobs` (on the writer thread).
    func advanceHashes(_ blobs: some Sequence<Digest>, store: ContentStore) {
        let hs = state.withLock { w in Set(blobs).compactMap { w.hashers[$0] } }
        for h in hs { h.advance(store: store, memory: recentChunk) }
    }

    /// Removes and returns `blob`'s content hasher (at its commit, or when it failed).
    func takeHasher(_ blob: Digest) -> BlobContentHasher? { state.withLock { $0.hashers.removeValue(forKey: blob) } }

    func forgetRecent() {
        state.withLock { w in
            w.recent = [:]
            w.recentOrder = []
            w.recentHead = 0
            w.recentBytes = 0
        }
    }
}

enum SwarmShellEvent: Sendable {
    case progress(SwarmProgress)
    /// `hashed`: content bytes hashed while the blob arrived, and at its commit (nil: not hashed early).
    case completed(Digest, hashed: (early: Int, atCommit: Int)?)
    case failed(Digest, String)
    /// `blob` arrived, and is committed once the blobs it references (fetched now) are in.
    case awaitingReferences(Digest, [Digest])
    case penalized(NodeID, Digest, String)
    /// The file `get -o` asked for could not be opened for streaming (it is exported after the commit).
    case streamFailed(Digest, String, String)
}
