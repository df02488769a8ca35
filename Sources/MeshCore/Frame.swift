/// Framing for byte streams: `type (varint) | length (varint) | payload`.
///
/// Stream transports (QUIC streams, files) carry a sequence of frames. `FrameDecoder` accepts bytes in
/// any pieces and yields whole frames; it refuses a frame whose declared length is above its limit
/// as soon as the header is read, before buffering the payload.
public struct Frame: Hashable, Sendable {
    public var type: UInt64
    public var payload: [UInt8]

    public init(type: UInt64, payload: [UInt8]) {
        self.type = type
        self.payload = payload
    }

    /// A frame whose payload is a message's wire bytes.
    public init(type: UInt64, message: some WireCodable) {
        self.init(type: type, payload: message.wireBytes())
    }

    public func encode(to writer: inout WireWriter) {
        writer.varint(type)
        writer.lengthPrefixed(payload)
    }

    /// The frame's header (type and payload length): `header + payload` is `encoded`. A stream
    /// transport can queue the two as they are instead of copying the payload into one array.
    public var header: [UInt8] {
        var w = WireWriter(reservingCapacity: 16)
        w.varint(type)
        w.varint(UInt64(payload.count))
        return w.bytes
    }

    /// `encoded.count`, without encoding.
    public var encodedCount: Int {
        VarInt.encodedLength(type) + VarInt.encodedLength(UInt64(payload.count)) + payload.count
    }

    public var encoded: [UInt8] {
        var w = WireWriter(reservingCapacity: payload.count + 16)
        encode(to: &w)
        return w.bytes
    }
}

public struct FrameDecoder: Sendable {
    /// The largest payload accepted; a bigger declared length fails the stream.
    public let maxPayload: Int
    private var buffer: [UInt8] = []
    private var start = 0
    private var consumedTotal = 0
    /// A large frame whose header has been read: its payload is gathered here, in an array sized for
    /// it, and the bytes that follow go straight into it — not into `buffer` and then copied out of it
    /// again (one copy of every bulk byte fewer, and no reallocation of `buffer` as a frame grows).
    private var large: (type: UInt64, length: Int, payload: [UInt8])?
    /// Frames at least this long are gathered in their own array (see `large`).
    public static let directPayload = 16 << 10

    public init(maxPayload: Int) { self.maxPayload = maxPayload }

    /// Bytes received but not yet returned as a frame.
    public var bufferedCount: Int { buffer.count - start + (large?.payload.count ?? 0) }

    public mutating func append(_ bytes: [UInt8]) { appendAny(bytes) }
    public mutating func append(_ bytes: some Collection<UInt8>) { appendAny(bytes) }

    private mutating func appendAny<C: Collection<UInt8>>(_ bytes: C) {
        if var l = large {
            large = nil   // `l` holds the only reference: appending does not copy the payload
            let take = min(bytes.count, l.length - l.payload.count)
            l.payload.append(contentsOf: bytes.prefix(take))
            large = l
            if take == bytes.count { return }
            appendToBuffer(bytes.dropFirst(take))
        } else {
            appendToBuffer(bytes)
        }
    }

    private mutating func appendToBuffer(_ bytes: some Collection<UInt8>) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next whole frame, nil if more bytes are needed, or an error if the stream is malformed.
    /// After an error the stream must be closed: the decoder does not resynchronise.
    public mutating func next() throws(WireError) -> Frame? {
        if let l = large {
            guard l.payload.count == l.length else { return nil }
            large = nil
            return Frame(type: l.type, payload: l.payload)
        }
        var r = WireReader(buffer, range: start..<buffer.count)
        // A header is at most two 8-byte varints; wait until it is complete.
        guard let type = try? r.varint() else { return nil }
        let lengthAt = r.position
        guard let length = try? r.varint() else { return nil }
        guard length <= UInt64(maxPayload) else {
            throw WireError.lengthOverLimit(length, limit: maxPayload, at: consumedTotal + lengthAt - start)
        }
        guard r.remaining >= Int(length) else {
            if Int(length) >= FrameDecoder.directPayload {
                // Move what has come of the payload into an array of its own; the rest follows it there.
                var payload = [UInt8]()
                payload.reserveCapacity(Int(length))
                payload.append(contentsOf: buffer[r.position...])
                consumedTotal += r.position - start + Int(length)
                buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
                start = 0
                large = (type, Int(length), payload)
            }
            return nil
        }
        let payload = try r.raw(count: Int(length))
        consumedTotal += r.position - start
        start = r.position
        return Frame(type: type, payload: payload)
    }

    /// How many more bytes the next frame needs before `next()` can return it (at least 1): the rest
    /// of a frame whose header is in, else 1. A stream reader can wait for that many before waking
    /// (one wake-up per frame instead of one per packet).
    public var bytesWanted: Int {
        if let l = large { return max(1, l.length - l.payload.count) }
        var r = WireReader(buffer, range: start..<buffer.count)
        guard (try? r.varint()) != nil, let length = try? r.varint(), length <= UInt64(maxPayload) else { return 1 }
        return max(1, r.position - start + Int(length) - bufferedCount)
    }

    /// True when no partial frame is buffered (a clean place for the stream to end).
    public var isIdle: Bool { large == nil && bufferedCount == 0 }
}
