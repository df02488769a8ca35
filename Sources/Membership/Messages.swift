import MeshCore

/// What a member is, as far as one node knows.
public enum MemberStatus: UInt8, Sendable, Hashable, CustomStringConvertible {
    case alive = 0
    case suspect = 1
    case dead = 2
    /// Left gracefully: never suspected, never reconnected to (until a newer generation appears).
    case left = 3

    public var description: String {
        switch self {
        case .alive: "alive"
        case .suspect: "suspect"
        case .dead: "dead"
        case .left: "left"
        }
    }
}

/// The version of a member's record. Ordered by restart generation first, then incarnation.
///
/// The generation is chosen by the node at each start (the shell passes a value that grows across
/// restarts, e.g. wall-clock milliseconds); the incarnation grows within one run, each time the node
/// refutes a suspicion. Because a restarted node carries a newer generation, its first alive
/// outranks every "dead" anyone holds about its previous run — the memberlist failure where a
/// restarted node restarts at incarnation 0 and stays dead in old views cannot happen.
public struct MemberVersion: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var generation: UInt64
    public var incarnation: UInt64
    public init(generation: UInt64, incarnation: UInt64) {
        self.generation = generation
        self.incarnation = incarnation
    }
    public static func < (a: MemberVersion, b: MemberVersion) -> Bool {
        (a.generation, a.incarnation) < (b.generation, b.incarnation)
    }
    public var description: String { "g\(generation).i\(incarnation)" }
}

/// One piece of gossip (and one row of a push-pull state): node X is `status` at `version`,
/// reachable at `address`; `from` names who suspected or declared it, for suspicion confirmations.
public struct MemberUpdate: Hashable, Sendable, WireFields {
    public var node: NodeID = NodeID(digest: .zero)
    public var address = PeerAddress()
    public var version = MemberVersion(generation: 0, incarnation: 0)
    public var status: MemberStatus = .alive
    public var from: NodeID? = nil

    public init() {}
    public init(node: NodeID, address: PeerAddress, version: MemberVersion, status: MemberStatus, from: NodeID?) {
        self.node = node; self.address = address; self.version = version; self.status = status; self.from = from
    }

    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.value(&node)
        try c.value(&address)
        try c.varint(&version.generation)
        try c.varint(&version.incarnation)
        var raw = status.rawValue
        let at = (c as? WireDecodingCoder)?.reader.position ?? 0
        try c.uint(&raw)
        guard let s = MemberStatus(rawValue: raw) else { throw .malformed("member status \(raw) is not 0...3", at: at) }
        status = s
        try c.optional(&from)
    }

    // The same bytes as `wireFields`, written out by hand: a message carries a dozen updates and
    // this is the simulator's hottest path (ProtocolTests checks the two agree).
    public func encode(to w: inout WireWriter) {
        node.encode(to: &w)
        w.string(address.host)
        w.varint(UInt64(address.port))
        w.varint(version.generation)
        w.varint(version.incarnation)
        w.varint(UInt64(status.rawValue))
        if let f = from { w.u8(1); f.encode(to: &w) } else { w.u8(0) }
    }

    public init(from r: inout WireReader) throws(WireError) {
        node = try NodeID(from: &r)
        address = PeerAddress(host: try r.string(maxLength: 255), port: try r.varint(as: UInt16.self))
        version = MemberVersion(generation: try r.varint(), incarnation: try r.varint())
        let at = r.position
        let raw = try r.varint(as: UInt8.self)
        guard let s = MemberStatus(rawValue: raw) else { throw .malformed("member status \(raw) is not 0...3", at: at) }
        status = s
        let tagAt = r.position
        switch try r.u8() {
        case 0: from = nil
        case 1: from = try NodeID(from: &r)
        case let b: throw .malformed("optional tag must be 0 or 1, got \(b)", at: tagAt)
        }
    }
}

/// Vivaldi coordinate as carried in acks (Serf's `coordinate.Coordinate`).
public struct Coordinate: Hashable, Sendable, WireFields {
    public static let maxDimensions = 16
    public var vector: [Double] = []
    public var error: Double = 0
    public var adjustment: Double = 0
    public var height: Double = 0

    public init() {}
    public init(dimensions: Int, error: Double, height: Double) {
        vector = Array(repeating: 0, count: dimensions); self.error = error; self.height = height
    }

    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.array(&vector, max: Coordinate.maxDimensions)
        try c.double(&error)
        try c.double(&adjustment)
        try c.double(&height)
    }

    /// Finite and non-negative where it must be; anything else from the wire is refused.
    var isValid: Bool {
        vector.allSatisfy { $0.isFinite && abs($0) < 1e6 } && error.isFinite && error >= 0
            && adjustment.isFinite && height.isFinite && height >= 0
    }

    /// Estimated RTT to `other`, seconds (Serf's `DistanceTo`, with adjustments).
    public func distance(to other: Coordinate) -> Double {
        guard vector.count == other.vector.count else { return .infinity }
        var sum = 0.0
        for i in vector.indices { let d = vector[i] - other.vector[i]; sum += d * d }
        let raw = sum.squareRoot() + height + other.height
        let adjusted = raw + adjustment + other.adjustment
        return adjusted > 0 ? adjusted : raw
    }
}

extension Double: WireCodable {
    public func encode(to writer: inout WireWriter) { writer.fixed(bitPattern) }
    public init(from reader: inout WireReader) throws(WireError) { self = Double(bitPattern: try reader.fixed(UInt64.self)) }
}

/// The membership wire messages. Frame types come from `FrameTypeRange.membership` (0x10–0x2f).
public enum MembershipMessage: Hashable, Sendable {
    /// Direct probe. `target` is the node the sender means to reach, so an ack cannot come from a
    /// link that now leads somewhere else.
    case ping(Ping)
    /// Ask the receiver to probe `target` for us (SWIM indirect probe).
    case pingReq(PingReq)
    /// Answer to a ping (direct, or relayed by an intermediary for a ping-req).
    case ack(Ack)
    /// Lifeguard: the intermediary got no answer from the target in time.
    case nack(Nack)
    /// Updates only (gossip rounds, leave).
    case gossip(Gossip)
    /// Full state exchange (join and anti-entropy). Rides a reliable stream.
    case pushPull(PushPull)

    public enum FrameType {
        public static let ping: UInt64 = 0x10
        public static let pingReq: UInt64 = 0x11
        public static let ack: UInt64 = 0x12
        public static let nack: UInt64 = 0x13
        public static let gossip: UInt64 = 0x14
        public static let pushPull: UInt64 = 0x15
    }

    /// A ping (probe `target` directly) or a ping-req (ask the receiver to probe `target` for us):
    /// the same fields, told apart by the frame type.
    public struct Probe: Hashable, Sendable, WireFields {
        public var sequence: UInt64 = 0
        public var target = NodeID(digest: .zero)
        public var updates: [MemberUpdate] = []
        public init() {}
        public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
            try c.varint(&sequence); try c.value(&target); try c.array(&updates, max: 256)
        }
    }
    public typealias Ping = Probe
    public typealias PingReq = Probe

    public struct Ack: Hashable, Sendable, WireFields {
        public var sequence: UInt64 = 0
        /// The node that answered (the target, also when relayed).
        public var responder = NodeID(digest: .zero)
        public var coordinate: Coordinate? = nil
        public var updates: [MemberUpdate] = []
        public init() {}
        public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
            try c.varint(&sequence); try c.value(&responder); try c.optional(&coordinate); try c.array(&updates, max: 256)
        }
    }

    public struct Nack: Hashable, Sendable, WireFields {
        public var sequence: UInt64 = 0
        public init() {}
        public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) { try c.varint(&sequence) }
    }

    public struct Gossip: Hashable, Sendable, WireFields {
        public var updates: [MemberUpdate] = []
        public init() {}
        public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) { try c.array(&updates, max: 256) }
    }

    public struct PushPull: Hashable, Sendable, WireFields {
        public var clusterID = ""
        /// False for a request (join or periodic sync), true for the answer.
        public var isResponse = false
        public var members: [MemberUpdate] = []
        public init() {}
        public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
            try c.string(&clusterID, max: 255); try c.bool(&isResponse); try c.array(&members, max: 65_536)
        }
    }

    public var frame: Frame {
        switch self {
        case .ping(let m): Frame(type: FrameType.ping, message: m)
        case .pingReq(let m): Frame(type: FrameType.pingReq, message: m)
        case .ack(let m): Frame(type: FrameType.ack, message: m)
        case .nack(let m): Frame(type: FrameType.nack, message: m)
        case .gossip(let m): Frame(type: FrameType.gossip, message: m)
        case .pushPull(let m): Frame(type: FrameType.pushPull, message: m)
        }
    }

    /// The member updates the message carries (piggybacked, gossiped or the push-pull state).
    public var updates: [MemberUpdate] {
        switch self {
        case .ping(let m), .pingReq(let m): m.updates
        case .ack(let m): m.updates
        case .nack: []
        case .gossip(let m): m.updates
        case .pushPull(let m): m.members
        }
    }

    /// Decodes a frame; every failure is a typed `MembershipError`.
    public init(frame: Frame, maxPushPullBytes: Int = 8 << 20) throws(MembershipError) {
        do {
            switch frame.type {
            case FrameType.ping: self = .ping(try Ping(wireBytes: frame.payload))
            case FrameType.pingReq: self = .pingReq(try PingReq(wireBytes: frame.payload))
            case FrameType.ack:
                let ack = try Ack(wireBytes: frame.payload)
                if let c = ack.coordinate, !c.isValid { throw MembershipError.invalidCoordinate }
                self = .ack(ack)
            case FrameType.nack: self = .nack(try Nack(wireBytes: frame.payload))
            case FrameType.gossip: self = .gossip(try Gossip(wireBytes: frame.payload))
            case FrameType.pushPull:
                guard frame.payload.count <= maxPushPullBytes else {
                    throw MembershipError.tooLarge(frame.payload.count, limit: maxPushPullBytes)
                }
                self = .pushPull(try PushPull(wireBytes: frame.payload))
            default: throw MembershipError.malformed(.unknownType(frame.type, at: 0))
            }
        } catch let e as MembershipError {
            throw e
        } catch let e as WireError {
            throw .malformed(e)
        } catch {
            throw .malformed(.malformed("\(error)", at: 0))
        }
    }
}
