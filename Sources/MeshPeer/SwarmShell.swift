import ContentStore
import Foundation
import MeshCore
import Swarm

/// Hosts the sans-IO `SwarmCore` next to the real content store: carries out its effects (serve a
/// chunk, store a verified chunk, commit a finished blob) and reports progress. To `CoreHost` it is
/// one more `MeshProtocolCore`.
/// A class: the host keeps one instance, and the manifests it has handed the swarm live with it.
final class SwarmShell: MeshProtocolCore, @unchecked Sendable {
    var swarm: SwarmCore
    let store: ContentStore
    /// Called with progress and completion while the host's lock is held: keep it short.
    let onEvent: @Sendable (SwarmShellEvent) -> Void
    /// The chunk list of every blob handed to the swarm (held, or being fetched), so serving and
    /// storing a chunk look its digest up here instead of reading the blob's manifest from disk.
    private var manifests: [Digest: SwarmManifest] = [:]

    init(swarm: SwarmCore, store: ContentStore, onEvent: @escaping @Sendable (SwarmShellEvent) -> Void) {
        self.swarm = swarm
        self.store = store
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
    func tick(now: Instant) -> Outbox { settle(swarm.tick(now: now), now: now) }

    /// A blob just added to the local store: offer it to the swarm.
    func hold(_ manifest: BlobManifest, now: Instant) -> Outbox { settle(offer(manifest, now: now), now: now) }

    func fetch(_ digest: Digest, now: Instant) -> Outbox { settle(swarm.fetch(digest, now: now), now: now) }

    private func offer(_ manifest: BlobManifest, now: Instant) -> Outbox {
        let m = SwarmShell.swarmManifest(manifest)
        manifests[m.blob] = m
        return swarm.hold(m, now: now)
    }

    /// Adds what carrying out the swarm's pending effects sends to `out`.
    private func settle(_ out: Outbox, now: Instant) -> Outbox {
        var out = out
        out.merge(drain(now: now))
        return out
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
                    if let digest = chunkDigest(blob, index), let data = try? store.readChunk(digest) {
                        out.merge(swarm.servePiece(to: peer, blob: blob, index: index, data: data, now: now))
                    } else {
                        out.merge(swarm.cannotServe(peer, blob: blob, index: index))
                    }
                case .store(let blob, let index, let data):
                    if let digest = chunkDigest(blob, index) {
                        do { try store.putChunk(data, digest: digest) } catch {
                            onEvent(.failed(blob, "storing a chunk: \(error)"))
                        }
                    }
                case .checkLocal(let blob, let m):
                    var have = Bitfield(count: m.chunks.count)
                    for (i, c) in m.chunks.enumerated() where store.hasChunk(c.digest) { have.insert(i) }
                    manifests[blob] = m
                    out.merge(swarm.localChunks(blob, have: have, now: now))
                case .completed(let blob, let m):
                    do {
                        let manifest = try BlobManifest(wireBytes: m.extra)
                        guard manifest.digest == blob,
                              manifest.chunks.map({ SwarmManifest.Chunk(digest: $0.digest, size: $0.length) }) == m.chunks else {
                            throw PeerError.protocolError("the manifest's chunk list does not match what was transferred")
                        }
                        if !store.hasBlob(blob) { try store.commitBlob(manifest) }
                        onEvent(.completed(blob))
                    } catch {
                        manifests[blob] = nil
                        onEvent(.failed(blob, "\(error)"))
                        out.merge(swarm.blobCommitFailed(blob, now: now))
                    }
                case .progress(let p):
                    onEvent(.progress(p))
                case .penalize(let peer, let blob, let reason):
                    onEvent(.penalized(peer, blob, reason))
                }
            }
        }
    }

    /// The digest of chunk `index` of `blob`, from the chunk lists the swarm was given.
    private func chunkDigest(_ blob: Digest, _ index: UInt32) -> Digest? {
        guard let m = manifests[blob], Int(index) < m.chunks.count else { return nil }
        return m.chunks[Int(index)].digest
    }
}

enum SwarmShellEvent: Sendable {
    case progress(SwarmProgress)
    case completed(Digest)
    case failed(Digest, String)
    case penalized(NodeID, Digest, String)
}
