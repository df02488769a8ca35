import MeshCore

/// A blob as the swarm sees it: its digest and its chunks in order. The daemon builds this from the
/// content store's manifest; the swarm never reads the disk itself.
public struct SwarmManifest: Hashable, Sendable, WireFields {
    public struct Chunk: Hashable, Sendable, WireFields {
        public var digest = Digest.of([UInt8]())
        public var size: UInt32 = 0
        public init() {}
        public init(digest: Digest, size: UInt32) { self.digest = digest; self.size = size }
        public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
            try c.value(&digest)
            try c.uint(&size)
        }
    }

    public var blob = Digest.of([UInt8]())
    public var chunks: [Chunk] = []
    /// The store's own manifest for the blob (opaque to the swarm; the receiving shell decodes it,
    /// checks it lists exactly `chunks`, and commits with it).
    public var extra: [UInt8] = []
    public static let maxExtra = 64 << 20

    /// At most 1 Mi chunks per blob (a 64 GiB blob at the 64 KiB minimum chunk size).
    public static let maxChunks = 1 << 20
    /// The largest chunk the swarm accepts (the content store's FastCDC maximum is below it).
    public static let maxChunkSize: UInt32 = 4 << 20

    public init() {}
    public init(blob: Digest, chunks: [Chunk], extra: [UInt8] = []) { self.blob = blob; self.chunks = chunks; self.extra = extra }

    public var totalSize: UInt64 { chunks.reduce(0) { $0 + UInt64($1.size) } }

    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.value(&blob)
        try c.array(&chunks, max: SwarmManifest.maxChunks)
        try c.bytes(&extra, max: SwarmManifest.maxExtra)
        if c.isDecoding, let bad = chunks.first(where: { $0.size == 0 || $0.size > SwarmManifest.maxChunkSize }) {
            throw .malformed("chunk size \(bad.size) outside 1...\(SwarmManifest.maxChunkSize)", at: 0)
        }
    }
}

/// A set of chunk indices, as packed bits.
public struct Bitfield: Hashable, Sendable {
    public private(set) var count: Int
    private var words: [UInt64]
    public private(set) var setCount = 0

    public init(count: Int) {
        self.count = count
        words = Array(repeating: 0, count: (count + 63) / 64)
    }

    public static func full(_ count: Int) -> Bitfield {
        var b = Bitfield(count: count)
        for i in 0..<count { b.insert(i) }
        return b
    }

    public subscript(i: Int) -> Bool { i >= 0 && i < count && words[i >> 6] & (1 << UInt64(i & 63)) != 0 }

    public mutating func insert(_ i: Int) {
        guard i >= 0 && i < count, !self[i] else { return }
        words[i >> 6] |= 1 << UInt64(i & 63)
        setCount += 1
    }

    public var isComplete: Bool { setCount == count }

    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: (count + 7) / 8)
        for i in 0..<count where self[i] { out[i >> 3] |= 1 << UInt8(i & 7) }
        return out
    }

    public init(bytes: [UInt8], count: Int) throws(WireError) {
        guard bytes.count == (count + 7) / 8 else { throw .malformed("bitfield has \(bytes.count) bytes for \(count) chunks", at: 0) }
        self.init(count: count)
        for i in 0..<count where bytes[i >> 3] & (1 << UInt8(i & 7)) != 0 { insert(i) }
    }
}

/// Swarm frames (types 0x50–0x58, in MeshCore's `FrameTypeRange.swarm`).
public enum SwarmMessage: Hashable, Sendable {
    /// "I want this blob; tell me what you hold." Answered with `have` (or nothing).
    case interested(blob: Digest)
    /// The sender's holdings of a blob: a bitfield over the manifest's chunks.
    case have(blob: Digest, chunkCount: UInt32, bits: [UInt8])
    /// Chunks the sender gained since its last `have`.
    case haveMore(blob: Digest, indices: [UInt32])
    case manifestRequest(blob: Digest)
    case manifest(SwarmManifest)
    case request(blob: Digest, index: UInt32)
    case piece(blob: Digest, index: UInt32, data: [UInt8])
    case cancel(blob: Digest, index: UInt32)
    /// The sender will not serve that chunk: it no longer holds it (`busy == false`: evicted), or it
    /// is seeding and wants the chunk fetched from a peer that already has it (`busy == true`).
    case reject(blob: Digest, index: UInt32, busy: Bool)

    static let base: UInt64 = 0x50
    public static let maxIndices = 65_536
    /// The frame type of `.piece`, for hosts that meter piece bytes on their way out.
    public static let pieceFrameType: UInt64 = 0x56

    public var frameType: UInt64 {
        switch self {
        case .interested: 0x50
        case .have: 0x51
        case .haveMore: 0x52
        case .manifestRequest: 0x53
        case .manifest: 0x54
        case .request: 0x55
        case .piece: Self.pieceFrameType
        case .cancel: 0x57
        case .reject: 0x58
        }
    }

    public var frame: Frame {
        var w = WireWriter()
        switch self {
        case .interested(let b), .manifestRequest(let b):
            w.value(b)
        case .have(let b, let n, let bits):
            w.value(b); w.varint(UInt64(n)); w.lengthPrefixed(bits)
        case .haveMore(let b, let idx):
            w.value(b); w.varint(UInt64(idx.count)); idx.forEach { w.varint(UInt64($0)) }
        case .manifest(let m):
            w.value(m)
        case .request(let b, let i), .cancel(let b, let i):
            w.value(b); w.varint(UInt64(i))
        case .reject(let b, let i, let busy):
            w.value(b); w.varint(UInt64(i)); w.u8(busy ? 1 : 0)
        case .piece(let b, let i, let data):
            w.value(b); w.varint(UInt64(i)); w.lengthPrefixed(data)
        }
        return Frame(type: frameType, payload: w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        var r = WireReader(frame.payload)
        switch frame.type {
        case 0x50: self = .interested(blob: try r.value())
        case 0x51:
            let b: Digest = try r.value()
            let n = try r.varint(as: UInt32.self, max: UInt32(SwarmManifest.maxChunks))
            let bits = try r.lengthPrefixed(maxLength: (SwarmManifest.maxChunks + 7) / 8)
            guard bits.count == (Int(n) + 7) / 8 else { throw .malformed("bitfield length does not match chunk count", at: r.position) }
            self = .have(blob: b, chunkCount: n, bits: bits)
        case 0x52:
            let b: Digest = try r.value()
            let n = try r.length(max: SwarmMessage.maxIndices, unitSize: 1)
            var idx: [UInt32] = []
            idx.reserveCapacity(n)
            for _ in 0..<n { idx.append(try r.varint(as: UInt32.self)) }
            self = .haveMore(blob: b, indices: idx)
        case 0x53: self = .manifestRequest(blob: try r.value())
        case 0x54: self = .manifest(try r.value())
        case 0x55, 0x57:
            let b: Digest = try r.value()
            let i = try r.varint(as: UInt32.self)
            self = frame.type == 0x55 ? .request(blob: b, index: i) : .cancel(blob: b, index: i)
        case 0x58:
            let b: Digest = try r.value()
            let i = try r.varint(as: UInt32.self)
            let busy = try r.u8()
            guard busy <= 1 else { throw .malformed("reject flag must be 0 or 1", at: r.position - 1) }
            self = .reject(blob: b, index: i, busy: busy == 1)
        case 0x56:
            let b: Digest = try r.value()
            let i = try r.varint(as: UInt32.self)
            self = .piece(blob: b, index: i, data: try r.lengthPrefixed(maxLength: Int(SwarmManifest.maxChunkSize)))
        default:
            throw .unknownType(frame.type, at: 0)
        }
        try r.expectEnd()
    }

    /// Pieces travel on the bulk class; everything else is small and interactive.
    public var traffic: TrafficClass {
        if case .piece = self { return .bulk }
        return .interactive
    }
}
