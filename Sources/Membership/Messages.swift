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
        Self.encode(node: node, address: address, version: version, status: status, from: from, to: &w)
    }

    /// The bytes of an update with these fields (a core writes its members' records with it
    /// without building `MemberUpdate`s).
    @inline(__always)
    static func encode(node: NodeID, address: PeerAddress, version: MemberVersion, status: MemberStatus, from: NodeID?,
                       to w: inout WireWriter) {
        node.encode(to: &w)
        w.string(address.host)
        w.varint(UInt64(address.port))
        w.varint(version.generation)
        w.varint(version.incarnation)
        w.varint(UInt64(status.rawValue))
        if let f = from { w.u8(1); f.encode(to: &w) } else { w.u8(0) }
    }

    public init(from r: inout WireReader) throws(WireError) {
        let f = try Self.readFields(&r) { r throws(WireError) in try r.string(maxLength: 255) }
        self.init(node: f.node, address: PeerAddress(host: f.host, port: f.port), version: f.version, status: f.status, from: f.from)
    }

    /// Reads one update's fields in wire order, with every check of the format; `host` reads the
    /// address's host (as a `String`, or checked and left in the bytes: `RawUpdate`).
    @inline(__always)
    static func readFields<Host>(_ r: inout WireReader, host: (inout WireReader) throws(WireError) -> Host) throws(WireError)
        -> (node: NodeID, host: Host, port: UInt16, version: MemberVersion, status: MemberStatus, from: NodeID?) {
        let node = try NodeID(from: &r)
        let h = try host(&r)
        let port = try r.varint(as: UInt16.self)
        let version = MemberVersion(generation: try r.varint(), incarnation: try r.varint())
        let at = r.position
        let raw = try r.varint(as: UInt8.self)
        guard let status = MemberStatus(rawValue: raw) else { throw .malformed("member status \(raw) is not 0...3", at: at) }
        let tagAt = r.position
        let from: NodeID?
        switch try r.u8() {
        case 0: from = nil
        case 1: from = try NodeID(from: &r)
        case let b: throw .malformed("optional tag must be 0 or 1, got \(b)", at: tagAt)
        }
        return (node, h, port, version, status, from)
    }
}

/// One update as read from a received message, its host left in the message's bytes (`host` is a
/// range of them): reading it allocates nothing and builds no string, so a record the receiver
/// already holds at the same or a newer version costs a lookup and a compare. (While 10,000
/// members join, nearly every record a member receives is one it already holds.)
struct RawUpdate {
    var node: NodeID
    var host: Range<Int>
    var port: UInt16
    var version: MemberVersion
    var status: MemberStatus
    var from: NodeID?

    /// Reads an update from `r`, a reader over `bytes`, with the checks `MemberUpdate(from:)` makes.
    @inline(__always)
    init(from r: inout WireReader, in bytes: [UInt8]) throws(WireError) {
        let f = try MemberUpdate.readFields(&r) { r throws(WireError) in
            let at = r.position
            let range = try r.lengthPrefixedRange(maxLength: 255)
            // `WireReader.string`'s check: ASCII as it is, anything else validated as UTF-8.
            let valid = bytes.withUnsafeBufferPointer { all in
                let b = UnsafeBufferPointer(rebasing: all[range])
                var high: UInt8 = 0
                for x in b { high |= x }
                return high < 0x80 || String(validating: b, as: UTF8.self) != nil
            }
            guard valid else { throw .malformed("string is not valid UTF-8", at: at) }
            return range
        }
        (node, host, port, version, status, from) = (f.node, f.host, f.port, f.version, f.status, f.from)
    }

    /// The whole update, its host read from `bytes` (those it was read from).
    func update(in bytes: [UInt8]) -> MemberUpdate {
        let h = bytes.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[host]), as: UTF8.self) }
        return MemberUpdate(node: node, address: PeerAddress(host: h, port: port), version: version, status: status, from: from)
    }
}

/// The updates of a received message (its piggyback, its gossip, a push-pull's members), every one
/// read and checked when the message was read — a malformed message is refused before any of it is
/// applied, as when they were decoded into `[MemberUpdate]` — and kept as `RawUpdate`s, their hosts
/// left in the message's bytes. Each record is parsed once: the apply pass iterates what the check
/// pass read (it used to read every record a second time from the bytes).
struct RawUpdates: Sequence {
    let bytes: [UInt8]
    let records: [RawUpdate]
    var count: Int { records.count }

    /// The smallest encoded update: a node ID, an empty host, one-byte port, generation,
    /// incarnation and status, no suspector.
    private static let minimumSize = 32 + 1 + 1 + 1 + 1 + 1 + 1

    static var none: RawUpdates { RawUpdates() }
    private init() { bytes = []; records = [] }

    /// Reads a count (at most `max`, and at most the bytes left) and that many updates from `r`, a
    /// reader over `bytes`.
    init(reading r: inout WireReader, in bytes: [UInt8], max: Int) throws(WireError) {
        let count = try r.length(max: max, unitSize: 1)
        var records: [RawUpdate] = []
        // (Bounded by what the bytes left can hold, not by the count a sender claims.)
        records.reserveCapacity(Swift.min(count, r.remaining / Self.minimumSize))
        for _ in 0..<count { records.append(try RawUpdate(from: &r, in: bytes)) }
        self.records = records
        self.bytes = bytes
    }

    var underestimatedCount: Int { records.count }

    func makeIterator() -> IndexingIterator<[RawUpdate]> { records.makeIterator() }

    /// All of them as `MemberUpdate`s.
    var decoded: [MemberUpdate] {
        var out: [MemberUpdate] = []
        out.reserveCapacity(count)
        for u in self { out.append(u.update(in: bytes)) }
        return out
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
        /// What the state is for (one byte on the wire: 0, 1 or 2).
        public enum Kind: UInt8, Sendable {
            /// A join or periodic sync: the receiver merges it and answers with its own state.
            case request = 0
            /// The answer to a request.
            case response = 1
            /// A joiner's state for a seed it does not pull from: merged, not answered (so every
            /// seed learns each joiner first-hand while only one sends it a full state back).
            case announce = 2
        }
        public var kind: Kind = .request
        /// True for the answer to a request.
        public var isResponse: Bool {
            get { kind == .response }
            set { kind = newValue ? .response : .request }
        }
        public var members: [MemberUpdate] = []
        public init() {}
        public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
            try c.string(&clusterID, max: 255)
            var raw = kind.rawValue
            try c.uint(&raw)
            guard let k = Kind(rawValue: raw) else { throw .malformed("push-pull kind must be 0, 1 or 2, got \(raw)", at: 0) }
            kind = k
            try c.array(&members, max: 65_536)
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
        let (message, updates) = try Self.decodeLeavingUpdates(frame, maxPushPullBytes: maxPushPullBytes)
        self = updates.count == 0 ? message : message.with(updates: updates.decoded)
    }

    /// Decodes a frame as `init(frame:)` does — the same checks in the same order, the same errors —
    /// but returns the message without its updates (a ping's, ping-req's or ack's piggyback, a
    /// gossip's updates, a push-pull's members) and those apart, checked but left in the bytes.
    static func decodeLeavingUpdates(_ frame: Frame, maxPushPullBytes: Int) throws(MembershipError) -> (MembershipMessage, RawUpdates) {
        do {
            var r = WireReader(frame.payload)
            let message: MembershipMessage
            var max = 256
            switch frame.type {
            case FrameType.ping: message = .ping(try Ping(head: &r))
            case FrameType.pingReq: message = .pingReq(try PingReq(head: &r))
            case FrameType.ack: message = .ack(try Ack(head: &r))
            case FrameType.nack: return (.nack(try Nack(wireBytes: frame.payload)), .none)
            case FrameType.gossip: message = .gossip(Gossip())
            case FrameType.pushPull:
                guard frame.payload.count <= maxPushPullBytes else {
                    throw MembershipError.tooLarge(frame.payload.count, limit: maxPushPullBytes)
                }
                message = .pushPull(try PushPull(head: &r))
                max = 65_536
            default: throw MembershipError.malformed(.unknownType(frame.type, at: 0))
            }
            let updates = try RawUpdates(reading: &r, in: frame.payload, max: max)
            try r.expectEnd()
            if case .ack(let ack) = message, let c = ack.coordinate, !c.isValid { throw MembershipError.invalidCoordinate }
            return (message, updates)
        } catch let e as MembershipError {
            throw e
        } catch let e as WireError {
            throw .malformed(e)
        } catch {
            throw .malformed(.malformed("\(error)", at: 0))
        }
    }

    /// The same message carrying `updates` (a nack carries none).
    func with(updates: [MemberUpdate]) -> MembershipMessage {
        switch self {
        case .ping(var m): m.updates = updates; return .ping(m)
        case .pingReq(var m): m.updates = updates; return .pingReq(m)
        case .ack(var m): m.updates = updates; return .ack(m)
        case .nack: return self
        case .gossip(var m): m.updates = updates; return .gossip(m)
        case .pushPull(var m): m.members = updates; return .pushPull(m)
        }
    }
}

// MARK: - Hand-written codecs
//
// The same bytes as each message's `wireFields`, written out by hand: the generic coder went
// through unspecialised generics (metadata lookups, an array of updates built through a protocol)
// for every message, a fifth of a 10,000-node simulation. ProtocolTests checks both agree.

extension MemberUpdate {
    /// An array of updates: a count (at most `max`, and at most the bytes left), then each update.
    static func decodeArray(_ r: inout WireReader, max: Int) throws(WireError) -> [MemberUpdate] {
        let n = try r.length(max: max, unitSize: 1)
        var out: [MemberUpdate] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try MemberUpdate(from: &r)) }
        return out
    }

    static func encodeArray(_ updates: [MemberUpdate], max: Int, to w: inout WireWriter) {
        precondition(updates.count <= max, "encoding \(updates.count) elements into a field limited to \(max)")
        w.varint(UInt64(updates.count))
        for u in updates { u.encode(to: &w) }
    }

    /// An upper bound on the encoded size (for reserving a message's buffer once).
    var encodedSizeBound: Int { 32 + 9 + address.host.utf8.count + 3 + 8 + 8 + 1 + 33 }
}

extension Coordinate {
    public func encode(to w: inout WireWriter) {
        precondition(vector.count <= Coordinate.maxDimensions, "encoding \(vector.count) elements into a field limited to \(Coordinate.maxDimensions)")
        w.varint(UInt64(vector.count))
        for x in vector { w.fixed(x.bitPattern) }
        w.fixed(error.bitPattern)
        w.fixed(adjustment.bitPattern)
        w.fixed(height.bitPattern)
    }

    public init(from r: inout WireReader) throws(WireError) {
        self.init()
        let n = try r.length(max: Coordinate.maxDimensions, unitSize: 1)
        vector.reserveCapacity(n)
        for _ in 0..<n { vector.append(Double(bitPattern: try r.fixed(UInt64.self))) }
        error = Double(bitPattern: try r.fixed(UInt64.self))
        adjustment = Double(bitPattern: try r.fixed(UInt64.self))
        height = Double(bitPattern: try r.fixed(UInt64.self))
    }
}

extension MembershipMessage.Probe {
    public func encode(to w: inout WireWriter) {
        w.reserveCapacity(48 + updates.reduce(0) { $0 + $1.encodedSizeBound })
        encodeHead(to: &w)
        MemberUpdate.encodeArray(updates, max: 256, to: &w)
    }

    /// The fields before the updates.
    func encodeHead(to w: inout WireWriter) {
        w.varint(sequence)
        target.encode(to: &w)
    }

    public init(from r: inout WireReader) throws(WireError) {
        try self.init(head: &r)
        updates = try MemberUpdate.decodeArray(&r, max: 256)
    }

    /// The fields before the updates.
    init(head r: inout WireReader) throws(WireError) {
        self.init()
        sequence = try r.varint()
        target = try NodeID(from: &r)
    }
}

extension MembershipMessage.Ack {
    public func encode(to w: inout WireWriter) {
        w.reserveCapacity(headBound + updates.reduce(0) { $0 + $1.encodedSizeBound })
        encodeHead(to: &w)
        MemberUpdate.encodeArray(updates, max: 256, to: &w)
    }

    /// An upper bound on the size of the fields before the updates.
    var headBound: Int { 48 + 8 * (5 + (coordinate?.vector.count ?? 0)) }

    /// The fields before the updates.
    func encodeHead(to w: inout WireWriter) {
        w.varint(sequence)
        responder.encode(to: &w)
        if let c = coordinate { w.u8(1); c.encode(to: &w) } else { w.u8(0) }
    }

    public init(from r: inout WireReader) throws(WireError) {
        try self.init(head: &r)
        updates = try MemberUpdate.decodeArray(&r, max: 256)
    }

    /// The fields before the updates.
    init(head r: inout WireReader) throws(WireError) {
        self.init()
        sequence = try r.varint()
        responder = try NodeID(from: &r)
        let at = r.position
        switch try r.u8() {
        case 0: coordinate = nil
        case 1: coordinate = try Coordinate(from: &r)
        case let b: throw .malformed("optional tag must be 0 or 1, got \(b)", at: at)
        }
    }
}

extension MembershipMessage.Gossip {
    public func encode(to w: inout WireWriter) {
        w.reserveCapacity(8 + updates.reduce(0) { $0 + $1.encodedSizeBound })
        MemberUpdate.encodeArray(updates, max: 256, to: &w)
    }

    public init(from r: inout WireReader) throws(WireError) {
        self.init()
        updates = try MemberUpdate.decodeArray(&r, max: 256)
    }
}

extension MembershipMessage.PushPull {
    public func encode(to w: inout WireWriter) {
        precondition(clusterID.utf8.count <= 255, "encoding a \(clusterID.utf8.count)-byte string into a field limited to 255")
        w.reserveCapacity(16 + clusterID.utf8.count + members.reduce(0) { $0 + $1.encodedSizeBound })
        encodeHead(to: &w)
        MemberUpdate.encodeArray(members, max: 65_536, to: &w)
    }

    /// The fields before the members.
    func encodeHead(to w: inout WireWriter) {
        w.string(clusterID)
        w.u8(kind.rawValue)
    }

    public init(from r: inout WireReader) throws(WireError) {
        try self.init(head: &r)
        members = try MemberUpdate.decodeArray(&r, max: 65_536)
    }

    /// The fields before the members.
    init(head r: inout WireReader) throws(WireError) {
        self.init()
        clusterID = try r.string(maxLength: 255)
        let at = r.position
        let b = try r.u8()
        guard let k = Kind(rawValue: b) else { throw .malformed("push-pull kind must be 0, 1 or 2, got \(b)", at: at) }
        kind = k
    }
}
