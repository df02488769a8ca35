import MeshCore

/// Anti-entropy for the cluster state: a sans-IO `MeshProtocolCore` that ships delta intervals
/// with acknowledgements (Almeida, Shoker, Baquero, Algorithm 2), batched into size-bounded
/// messages, and falls back to the full state for a peer that fell behind the delta buffer.
///
/// - Every delta joined here (a local write, or one received that taught us something) gets the
///   next sequence number in a buffer. Each peer acknowledges the highest sequence number up to
///   which it has everything; the next message to that peer carries the join of the buffered
///   deltas after it (skipping those the peer itself sent), cut to `maxMessageBytes`.
/// - A peer whose acknowledgement is older than the oldest buffered delta (or who knows nothing of
///   this run, `epoch`) gets the full state, split into parts and reassembled before it is joined.
/// - A lost message is re-sent after `retransmitAfter`; a status (ack) goes out on link-up and
///   every `heartbeat`, so lost acks heal too.
///
/// Durability contract for the shell: after each call, persist `takeApplied()` (for example with
/// `ClusterStateDisk.append`) *before* sending the outbox, so every write a peer saw acknowledged
/// survives a restart.
public struct ClusterSync: MeshProtocolCore {
    /// Tunables; each documents its default.
    public struct Settings: Sendable {
        /// Largest payload of one message. Default 256 KiB.
        public var maxMessageBytes = 256 * 1024
        /// Largest delta or full state accepted after reassembly. Default 512 MiB.
        public var maxDeltaBytes = 512 << 20
        /// Deltas kept for peers that have not acknowledged them. Beyond this, the oldest go, and a
        /// peer that still needed them receives the full state instead. Default 4096.
        public var maxBufferedDeltas = 4096
        /// Local writes are coalesced for this long before they are shipped. Default 5 ms.
        public var batchDelay: Duration = .milliseconds(5)
        /// An unacknowledged message is re-sent after this long. Default 500 ms.
        public var retransmitAfter: Duration = .milliseconds(500)
        /// A status goes to every peer this often, even when idle. Default 5 s.
        public var heartbeat: Duration = .seconds(5)
        /// The class messages travel on. Default `.interactive`.
        public var traffic: TrafficClass = .interactive
        public init() {}
    }

    /// Frame types, from `FrameTypeRange.clusterState`.
    public enum FrameType {
        public static let delta: UInt64 = FrameTypeRange.clusterState.lowerBound       // 0x30
        public static let ack: UInt64 = FrameTypeRange.clusterState.lowerBound + 1     // 0x31
    }

    public let settings: Settings
    /// Identifies this run's sequence numbers; a restart must use a new (larger) epoch.
    public let epoch: UInt64
    public private(set) var replica: ClusterReplica
    public private(set) var seq: UInt64 = 0
    /// Messages refused (malformed or oversized) so far, and the last reason.
    public private(set) var refusedCount = 0
    public private(set) var lastRefusal: ClusterStateError?

    private struct Buffered { var seq: UInt64; var origin: NodeID?; var delta: ClusterData; var size: Int }
    private var buffer: [Buffered] = []
    /// Every delta with a sequence number above `bufferBase` is still in `buffer`.
    private var bufferBase: UInt64 = 0

    private struct Reassembly { var key: DeltaMessage.Key; var parts: [[UInt8]] = []; var bytes = 0 }
    private struct Peer {
        var up = false
        /// Highest sequence number (of our epoch) the peer has everything up to; nil until it says.
        var acked: UInt64?
        /// The last message sent and when to re-send it if it is not acknowledged by then.
        var inFlight: (to: UInt64, resendAt: Instant)?
        /// What we have received from the peer: its epoch and contiguous sequence number.
        var theirEpoch: UInt64 = 0
        var received: UInt64 = 0
        var reassembly: Reassembly?
    }
    private var peers: [NodeID: Peer] = [:]
    private var flushAt: Instant?
    private var nextHeartbeat = Instant.zero
    private var changes: [ClusterChange] = []
    private var applied: [ClusterData] = []

    public init(replica: ClusterReplica, epoch: UInt64, settings: Settings = Settings()) {
        self.replica = replica
        self.epoch = epoch
        self.settings = settings
    }

    // MARK: Local API

    /// Runs a write on the replica; the delta ships after `batchDelay`.
    public mutating func write(now: Instant, _ op: (inout ClusterReplica) -> ClusterReplica.Write) -> Outbox {
        let w = op(&replica)
        changes += w.changes
        guard !w.delta.isBottom else { return Outbox() }
        applied.append(w.delta)
        enqueue(w.delta, origin: nil)
        if flushAt == nil { flushAt = now + settings.batchDelay }
        var out = Outbox()
        scheduleWake(&out, now: now)
        return out
    }

    /// Changes readers have not been told of yet (feed `ClusterEvents.publish`).
    public mutating func takeChanges() -> [ClusterChange] { defer { changes = [] }; return changes }
    /// Deltas joined since the last call, to persist before the outbox is sent.
    public mutating func takeApplied() -> [ClusterData] { defer { applied = [] }; return applied }

    /// Peers and how far behind each is (for status pages).
    public var peerLag: [NodeID: UInt64?] { peers.mapValues { p in p.acked.map { seq - min($0, seq) } } }
    public var bufferedDeltas: Int { buffer.count }

    // MARK: MeshProtocolCore

    public func handles(frameType type: UInt64) -> Bool { FrameTypeRange.clusterState.contains(type) }

    public mutating func start(now: Instant) -> Outbox {
        nextHeartbeat = now + settings.heartbeat
        var out = Outbox()
        scheduleWake(&out, now: now)
        return out
    }

    public mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox {
        var out = Outbox()
        switch event {
        case .up(let peer, _, _):
            var p = peers[peer] ?? Peer()
            p.up = true
            p.inFlight = nil
            peers[peer] = p
            sendStatus(to: peer, &out)
        case .down(let peer):
            peers[peer]?.up = false
            peers[peer]?.inFlight = nil
            peers[peer]?.reassembly = nil
        case .dialFailed:
            break
        }
        scheduleWake(&out, now: now)
        return out
    }

    public mutating func receive(_ message: PeerMessage, now: Instant) -> Outbox {
        var out = Outbox()
        let peer = message.peer
        if peers[peer] == nil { peers[peer] = Peer(up: true) }
        switch message.frame.type {
        case FrameType.delta:
            if let m = try? DeltaMessage(wireBytes: message.frame.payload) {
                receiveDelta(m, from: peer, &out)
            } else {
                refuse(.malformed(.malformed("undecodable delta message", at: 0)))
            }
        case FrameType.ack:
            if let m = try? AckMessage(wireBytes: message.frame.payload) {
                receiveAck(m, from: peer, now: now, &out)
            } else {
                refuse(.malformed(.malformed("undecodable ack message", at: 0)))
            }
        default:
            break
        }
        scheduleWake(&out, now: now)
        return out
    }

    public mutating func tick(now: Instant) -> Outbox {
        var out = Outbox()
        if let f = flushAt, f <= now { flushAt = nil }
        // Sends what is due: new deltas once the batch delay is over, retransmissions, full states.
        for peer in peers.keys.sorted() { flush(to: peer, now: now, &out) }
        if now >= nextHeartbeat {
            nextHeartbeat = now + settings.heartbeat
            for (peer, p) in peers.sorted(by: { $0.key < $1.key }) where p.up { sendStatus(to: peer, &out) }
        }
        scheduleWake(&out, now: now)
        return out
    }

    // MARK: Sending

    private mutating func enqueue(_ delta: ClusterData, origin: NodeID?) {
        seq += 1
        buffer.append(Buffered(seq: seq, origin: origin, delta: delta, size: delta.wireBytes().count))
        trim()
    }

    /// Drops deltas every peer has, and the oldest beyond the cap.
    private mutating func trim() {
        // Peers that are down keep their place (they will want the interval when they return),
        // up to the cap; peers that never acknowledged anything get the full state anyway.
        let floor = peers.values.compactMap(\.acked).min() ?? seq
        var drop = buffer.prefix { $0.seq <= floor }.count
        drop = max(drop, buffer.count - settings.maxBufferedDeltas)
        if drop > 0 {
            bufferBase = buffer[drop - 1].seq
            buffer.removeFirst(drop)
        }
    }

    private mutating func flush(to peer: NodeID, now: Instant, _ out: inout Outbox) {
        guard var p = peers[peer], p.up, let acked = p.acked, acked < seq else { return }
        if let f = p.inFlight, f.to > acked, now < f.resendAt { return }
        let bytes: [UInt8]
        let from: UInt64, to: UInt64, full: Bool
        if acked < bufferBase {
            bytes = replica.data.wireBytes()
            (from, to, full) = (0, seq, true)
        } else {
            var delta = ClusterData()
            var size = 0
            var last = acked
            let start = buffer.firstIndex { $0.seq > acked } ?? buffer.count
            for b in buffer[start...] {
                if size > 0 && size + b.size > settings.maxMessageBytes { break }
                last = b.seq
                if b.origin == peer { continue }
                delta.join(b.delta)
                size += b.size
            }
            if delta.isBottom {
                // Everything in the interval came from the peer itself.
                p.acked = last
                peers[peer] = p
                if last < seq { flush(to: peer, now: now, &out) }
                return
            }
            bytes = delta.wireBytes()
            (from, to, full) = (acked, last, false)
        }
        let chunk = settings.maxMessageBytes
        let parts = max(1, (bytes.count + chunk - 1) / chunk)
        for i in 0..<parts {
            let slice = Array(bytes[(i * chunk)..<min(bytes.count, (i + 1) * chunk)])
            let m = DeltaMessage(epoch: epoch, from: from, to: to, full: full, part: UInt32(i), parts: UInt32(parts), bytes: slice)
            out.send(to: peer, settings.traffic, Frame(type: FrameType.delta, message: m))
        }
        // A big transfer (a full state in many parts) gets longer before it is sent again.
        p.inFlight = (to, now + settings.retransmitAfter * (1 + parts / 8))
        peers[peer] = p
    }

    private func sendStatus(to peer: NodeID, _ out: inout Outbox) {
        let p = peers[peer] ?? Peer()
        out.send(to: peer, settings.traffic, Frame(type: FrameType.ack, message: AckMessage(epoch: p.theirEpoch, received: p.received)))
    }

    private func scheduleWake(_ out: inout Outbox, now: Instant) {
        out.wake(at: nextHeartbeat)
        if let f = flushAt { out.wake(at: f) }
        for p in peers.values where p.up {
            if let f = p.inFlight, let a = p.acked, a < f.to { out.wake(at: f.resendAt) }
        }
    }

    // MARK: Receiving

    private mutating func refuse(_ e: ClusterStateError) {
        refusedCount += 1
        lastRefusal = e
    }

    private mutating func receiveAck(_ m: AckMessage, from peer: NodeID, now: Instant, _ out: inout Outbox) {
        var p = peers[peer]!
        p.acked = m.epoch == epoch ? min(m.received, seq) : 0
        if let f = p.inFlight, p.acked! >= f.to { p.inFlight = nil }
        peers[peer] = p
        trim()
        flush(to: peer, now: now, &out)
    }

    private mutating func receiveDelta(_ m: DeltaMessage, from peer: NodeID, _ out: inout Outbox) {
        var p = peers[peer]!
        if m.epoch != p.theirEpoch {
            p.theirEpoch = m.epoch
            p.received = 0
            p.reassembly = nil
        }
        guard m.parts >= 1, m.part < m.parts, m.to >= m.from,
              Int(m.parts) <= settings.maxDeltaBytes / max(1, settings.maxMessageBytes) + 1 else {
            peers[peer] = p
            refuse(.malformed(.malformed("delta message with bad part numbers", at: 0)))
            return
        }
        var bytes = m.bytes
        if m.parts > 1 {
            var r = p.reassembly ?? Reassembly(key: m.key)
            if r.key != m.key || Int(m.part) != r.parts.count { r = Reassembly(key: m.key) }
            guard Int(m.part) == r.parts.count else { p.reassembly = nil; peers[peer] = p; return }
            r.parts.append(m.bytes)
            r.bytes += m.bytes.count
            if r.bytes > settings.maxDeltaBytes {
                p.reassembly = nil
                peers[peer] = p
                refuse(.oversized(r.bytes, limit: settings.maxDeltaBytes))
                return
            }
            if r.parts.count < Int(m.parts) { p.reassembly = r; peers[peer] = p; return }
            p.reassembly = nil
            bytes = r.parts.flatMap { $0 }
        }
        let delta: ClusterData
        do {
            delta = try ClusterData.decode(bytes, maxBytes: settings.maxDeltaBytes)
        } catch {
            peers[peer] = p
            refuse(error)
            return
        }
        // Only a delta that taught us something is passed on; a redundant one stops here, so
        // deltas do not circle the mesh.
        let result = replica.applyDetectingChange(delta)
        changes += result.changes
        if result.changed {
            applied.append(delta)
            enqueue(delta, origin: peer)
        }
        if m.full || m.from <= p.received { p.received = max(p.received, m.to) }
        peers[peer] = p
        sendStatus(to: peer, &out)
    }
}

// MARK: - Messages

/// Frame 0x30: the join of the sender's deltas `(from, to]`, or its full state, possibly in parts.
struct DeltaMessage: WireFields, Equatable {
    var epoch: UInt64 = 0
    var from: UInt64 = 0
    var to: UInt64 = 0
    var full = false
    var part: UInt32 = 0
    var parts: UInt32 = 1
    var bytes: [UInt8] = []

    struct Key: Equatable { var epoch, from, to: UInt64; var full: Bool; var parts: UInt32 }
    var key: Key { Key(epoch: epoch, from: from, to: to, full: full, parts: parts) }

    /// No part is larger than this, whatever the settings (64 MiB).
    static let maxPartBytes = 64 << 20

    mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.varint(&epoch); try c.varint(&from); try c.varint(&to); try c.bool(&full)
        try c.uint(&part); try c.uint(&parts)
        try c.bytes(&bytes, max: DeltaMessage.maxPartBytes)
    }
}

/// Frame 0x31: "from your run `epoch`, I have everything up to `received`".
struct AckMessage: WireFields, Equatable {
    var epoch: UInt64 = 0
    var received: UInt64 = 0
    mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.varint(&epoch); try c.varint(&received)
    }
}
