import MeshCore

/// The simulator's built-in traffic generator (`core flood`): a tool for measuring the link model
/// and the simulator itself, not a model of any GQUIC protocol.
///
/// - **Chatter**: every `interval`, send `size` bytes to `fanout` random nodes (unreliable unless
///   `unreliable=no`); with `echo=yes` the receiver answers and the sender records the round trip
///   as completion `rtt`. This is the message pattern of a gossip/probe protocol at a chosen rate.
/// - **Push** (workload `kind=push bytes=64MiB to=all|SET chunk=64KiB`): send a blob in chunks to
///   each target with at most `window` unacknowledged chunks per target; each target records
///   completion `push` (time since the sender started) when it has every chunk. Its state digest is
///   the set of pushes it holds, so "agreement" shows a push spreading.
/// - **Ping** (workload `kind=ping to=SET size=200`): one echoed message per target → `rtt`.
///
/// Parameters (`core flood k=v …`): `interval` (0 = no chatter), `fanout` (1), `size` (200B),
/// `echo` (yes), `unreliable` (yes), `window` (16), `chunk` (64KiB).
/// Completed pushes survive a crash when the node restarts with `disk=keep`.
public struct FloodCore: SimWorkloadCore, SimObservableCore, SimPersistentCore {
    /// Frame types of the flood core; outside every protocol core's block.
    public enum Frames {
        public static let range: ClosedRange<UInt64> = 0xf0...0xf4
        static let chatter: UInt64 = 0xf0
        static let echo: UInt64 = 0xf1
        static let data: UInt64 = 0xf2
        static let ack: UInt64 = 0xf3
    }

    public struct Settings: Sendable, Hashable {
        public var interval: Duration = .zero
        public var fanout = 1
        public var size = 200
        public var echo = true
        public var unreliable = true
        public var window = 16
        public var chunk = 65_536
    }

    private struct OutgoingPush {
        var id: UInt64
        var startedAt: UInt64
        var chunks: Int
        var chunkBytes: Int
        var lastChunkBytes: Int
        var targets: [NodeID]
        var targetIndex: [NodeID: Int]
        var next: [Int]
        var outstanding: [Int]
    }

    private struct IncomingPush { var got: Int; var total: Int }

    public let settings: Settings
    private let me: NodeID
    private let index: Int
    private let directory: SimDirectory
    private var random: SeededRandom
    private var nextChatter: Instant?
    private var pushes: [UInt64: OutgoingPush] = [:]
    private var incoming: [UInt64: IncomingPush] = [:]
    /// Push IDs this node holds completely, sorted.
    private var held: [UInt64] = []
    private var done: [SimCompletion] = []
    private var chatterSent = 0
    private var seq: UInt64 = 0

    public init(context: SimCoreContext) throws {
        var s = Settings()
        let p = context.parameters
        func get<T>(_ key: String, _ parse: (String) -> T?) throws -> T? {
            guard let v = p[key] else { return nil }
            guard let parsed = parse(v) else { throw SimRunError("core flood: \(key)=\(v) is not valid") }
            return parsed
        }
        func yesNo(_ v: String) -> Bool? { v == "yes" ? true : v == "no" ? false : nil }
        if let v = try get("interval", Units.duration) { s.interval = v }
        if let v = try get("fanout", { Int($0).flatMap { (0...1000).contains($0) ? $0 : nil } }) { s.fanout = v }
        if let v = try get("size", { Units.bytes($0).flatMap { (1...(16 << 20)).contains($0) ? $0 : nil } }) { s.size = v }
        if let v = try get("echo", yesNo) { s.echo = v }
        if let v = try get("unreliable", yesNo) { s.unreliable = v }
        if let v = try get("window", { Int($0).flatMap { (1...1 << 16).contains($0) ? $0 : nil } }) { s.window = v }
        if let v = try get("chunk", { Units.bytes($0).flatMap { (64...(16 << 20)).contains($0) ? $0 : nil } }) { s.chunk = v }
        let known: Set<String> = ["interval", "fanout", "size", "echo", "unreliable", "window", "chunk"]
        if let unknown = p.keys.sorted().first(where: { !known.contains($0) }) {
            throw SimRunError("core flood: unknown parameter \(unknown)=; known: \(known.sorted().joined(separator: ", "))")
        }
        settings = s
        me = context.nodeID
        index = context.index
        directory = context.directory
        random = context.random
        if let bytes = context.persisted {
            var r = WireReader(bytes)
            let count = (try? r.varint()) ?? 0
            for _ in 0..<min(count, UInt64(bytes.count)) {
                guard let id = try? r.varint() else { break }
                held.append(id)
            }
        }
    }

    public func handles(frameType type: UInt64) -> Bool { Frames.range.contains(type) }

    public mutating func start(now: Instant) -> Outbox {
        var out = Outbox()
        if settings.interval > .zero && directory.count > 1 {
            // Spread first chatters over one interval so nodes do not fire in lockstep.
            let first = now + .nanoseconds(Int64(random.next() % UInt64(max(1, settings.interval.nanosecondsClamped))))
            nextChatter = first
            out.wake(at: first)
        }
        return out
    }

    public mutating func tick(now: Instant) -> Outbox {
        var out = Outbox()
        if let t = nextChatter, t <= now {
            for _ in 0..<settings.fanout {
                var peer = Int(random.next() % UInt64(directory.count - 1))
                if peer >= index { peer += 1 }
                out.send(to: directory.ids[peer], .telemetry, chatterFrame(now), unreliable: settings.unreliable)
                chatterSent += 1
            }
            nextChatter = t + settings.interval
        }
        if let t = nextChatter { out.wake(at: t) }
        return out
    }

    private mutating func chatterFrame(_ now: Instant) -> Frame {
        var w = WireWriter(reservingCapacity: settings.size + 16)
        w.varint(now.nanoseconds & VarInt.max)
        seq += 1
        w.varint(seq)
        let pad = max(0, settings.size - w.count)
        w.raw([UInt8](repeating: 0, count: pad))
        return Frame(type: Frames.chatter, payload: w.bytes)
    }

    public mutating func receive(_ message: PeerMessage, now: Instant) -> Outbox {
        var out = Outbox()
        var r = WireReader(message.frame.payload)
        switch message.frame.type {
        case Frames.chatter:
            guard settings.echo, let sentAt = try? r.varint() else { break }
            var w = WireWriter(reservingCapacity: 8)
            w.varint(sentAt)
            out.send(to: message.peer, message.traffic, Frame(type: Frames.echo, payload: w.bytes), unreliable: message.unreliable)
        case Frames.echo:
            guard let sentAt = try? r.varint() else { break }
            done.append(SimCompletion(label: "rtt", elapsed: now - Instant(nanoseconds: sentAt)))
        case Frames.data:
            guard let id = try? r.varint(), let chunk = try? r.varint(), let total = try? r.varint(),
                  let started = try? r.varint(), total > 0, total <= 1 << 24, chunk < total else { break }
            var ack = WireWriter(reservingCapacity: 16)
            ack.varint(id); ack.varint(chunk)
            out.send(to: message.peer, .control, Frame(type: Frames.ack, payload: ack.bytes))
            if held.contains(id) { break }
            var p = incoming[id] ?? IncomingPush(got: 0, total: Int(total))
            p.got += 1
            if p.got >= p.total {
                incoming[id] = nil
                hold(id)
                done.append(SimCompletion(label: "push", elapsed: now - Instant(nanoseconds: started)))
            } else {
                incoming[id] = p
            }
        case Frames.ack:
            guard let id = try? r.varint(), var push = pushes[id],
                  let t = push.targetIndex[message.peer] else { break }
            push.outstanding[t] -= 1
            fill(&push, target: t, into: &out)
            pushes[id] = push
            if push.next.allSatisfy({ $0 >= push.chunks }) && push.outstanding.allSatisfy({ $0 <= 0 }) {
                pushes[id] = nil
                done.append(SimCompletion(label: "push-sent", elapsed: now - Instant(nanoseconds: push.startedAt)))
            }
        default: break
        }
        return out
    }

    private mutating func hold(_ id: UInt64) {
        let at = held.firstIndex { $0 > id } ?? held.count
        held.insert(id, at: at)
    }

    private func fill(_ push: inout OutgoingPush, target t: Int, into out: inout Outbox) {
        while push.outstanding[t] < settings.window && push.next[t] < push.chunks {
            let c = push.next[t]
            var w = WireWriter(reservingCapacity: push.chunkBytes + 32)
            w.varint(push.id); w.varint(UInt64(c)); w.varint(UInt64(push.chunks)); w.varint(push.startedAt)
            let size = c == push.chunks - 1 ? push.lastChunkBytes : push.chunkBytes
            w.raw([UInt8](repeating: 0, count: size))
            out.send(to: push.targets[t], .bulk, Frame(type: Frames.data, payload: w.bytes))
            push.next[t] += 1
            push.outstanding[t] += 1
        }
    }

    public mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox { Outbox() }

    public mutating func workload(_ event: SimWorkload, now: Instant) throws -> Outbox {
        var out = Outbox()
        let targets = try resolveTargets(event.parameters["to"] ?? "all")
        switch event.kind {
        case "push":
            guard let bytes = event.parameters["bytes"].flatMap(Units.bytes), bytes > 0 else {
                throw SimRunError("workload kind=push needs bytes=SIZE (such as 64MiB)")
            }
            let chunk = try event.parameters["chunk"].map { v throws -> Int in
                guard let c = Units.bytes(v), c >= 64 else { throw SimRunError("workload chunk=\(v) is not a size of at least 64 B") }
                return c
            } ?? settings.chunk
            let chunks = (bytes + chunk - 1) / chunk
            guard chunks <= 1 << 24 else { throw SimRunError("workload push: \(bytes) B in \(chunk) B chunks is over 16M chunks") }
            // A push ID unique per run: the sender's index and a per-node counter.
            seq += 1
            let id = UInt64(index) << 32 | (seq & 0xffff_ffff)
            var push = OutgoingPush(id: id, startedAt: now.nanoseconds, chunks: chunks, chunkBytes: chunk,
                                    lastChunkBytes: bytes - (chunks - 1) * chunk, targets: targets,
                                    targetIndex: Dictionary(targets.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a }),
                                    next: Array(repeating: 0, count: targets.count),
                                    outstanding: Array(repeating: 0, count: targets.count))
            hold(id)
            for t in targets.indices { fill(&push, target: t, into: &out) }
            pushes[id] = push
        case "ping":
            let size = event.parameters["size"].flatMap(Units.bytes) ?? settings.size
            for t in targets {
                var w = WireWriter(reservingCapacity: size + 16)
                w.varint(now.nanoseconds & VarInt.max); w.varint(0)
                w.raw([UInt8](repeating: 0, count: max(0, size - w.count)))
                out.send(to: t, .interactive, Frame(type: Frames.chatter, payload: w.bytes))
            }
        default:
            throw SimRunError("core flood knows workload kinds push and ping, not \"\(event.kind)\"")
        }
        return out
    }

    private func resolveTargets(_ text: String) throws -> [NodeID] {
        guard let set = try? NodeSet.parse(text, line: 0) else { throw SimRunError("workload to=\(text) is not a node set") }
        var indexes: [Int]
        switch set {
        case .all: indexes = Array(0..<directory.count)
        case .none, .down: indexes = []
        case .list(let ranges): indexes = ranges.flatMap { Array($0) }
        case .random(let k):
            var r = random
            indexes = (0..<k).map { _ in Int(r.next() % UInt64(directory.count)) }
        case .region: throw SimRunError("core flood: to=region:… is not supported; list node indexes")
        }
        guard indexes.allSatisfy({ $0 < directory.count }) else { throw SimRunError("workload to=\(text) names a node past \(directory.count - 1)") }
        var seen = Set<Int>()
        return indexes.filter { $0 != index && seen.insert($0).inserted }.map { directory.ids[$0] }
    }

    public func stateDigest() -> Digest? {
        var w = WireWriter(reservingCapacity: held.count * 8 + 8)
        for id in held { w.varint(id) }
        return Digest.of(w.bytes)
    }

    public func gauges() -> [SimGauge] { [SimGauge("pushes-held", Double(held.count)), SimGauge("chatter-sent", Double(chatterSent))] }

    public mutating func drainCompletions() -> [SimCompletion] {
        defer { done.removeAll() }
        return done
    }

    public func persistentState() -> [UInt8] {
        var w = WireWriter()
        w.varint(UInt64(held.count))
        for id in held { w.varint(id) }
        return w.bytes
    }
}
