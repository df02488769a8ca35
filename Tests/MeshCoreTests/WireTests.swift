import Testing
@testable import MeshCore

/// A message that uses every kind of field the codec offers.
struct Sample: WireFields, Equatable {
    var id: UInt64 = 0
    var port: UInt16 = 0
    var offset: Int32 = 0
    var flag = false
    var ratio = 0.0
    var name = ""
    var blob: [UInt8] = []
    var digests: [Digest] = []
    var parent: Digest? = nil
    var tags: [String] = []

    mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.varint(&id)
        try c.uint(&port)
        try c.int(&offset)
        try c.bool(&flag)
        try c.double(&ratio)
        try c.string(&name, max: 64)
        try c.bytes(&blob, max: 4096)
        try c.array(&digests, max: 32)
        try c.optional(&parent)
        try c.array(&tags, max: 8)
    }

    static func random(_ rng: inout SeededRandom) -> Sample {
        var s = Sample()
        s.id = UInt64.random(in: 0...VarInt.max, using: &rng) >> UInt64.random(in: 0...62, using: &rng)
        s.port = .random(in: 0...UInt16.max, using: &rng)
        s.offset = .random(in: Int32.min...Int32.max, using: &rng)
        s.flag = .random(using: &rng)
        s.ratio = .random(in: -1e9...1e9, using: &rng)
        s.name = String((0..<Int.random(in: 0...16, using: &rng)).map { _ in "aé🚀z".randomElement(using: &rng)! })
        s.blob = (0..<Int.random(in: 0...300, using: &rng)).map { _ in .random(in: 0...255, using: &rng) }
        s.digests = (0..<Int.random(in: 0...5, using: &rng)).map { Digest.of([UInt8($0)]) }
        s.parent = Bool.random(using: &rng) ? Digest.of(s.blob) : nil
        s.tags = (0..<Int.random(in: 0...3, using: &rng)).map { "t\($0)" }
        return s
    }
}

@Suite struct WireTests {
    @Test func varintBoundaries() throws {
        for (v, len) in [(0, 1), (63, 1), (64, 2), (16383, 2), (16384, 4), ((1 << 30) - 1, 4), (1 << 30, 8), (Int(VarInt.max), 8)] {
            var w = WireWriter()
            w.varint(UInt64(v))
            #expect(w.count == len, "value \(v)")
            var r = WireReader(w.bytes)
            #expect(try r.varint() == UInt64(v))
            #expect(r.isAtEnd)
        }
        // RFC 9000 §A.1 examples.
        var r = WireReader([0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c])
        #expect(try r.varint() == 151_288_809_941_952_652)
        r = WireReader([0x9d, 0x7f, 0x3e, 0x7d])
        #expect(try r.varint() == 494_878_333)
        r = WireReader([0x7b, 0xbd])
        #expect(try r.varint() == 15_293)
    }

    @Test func randomMessagesRoundTrip() throws {
        var rng = SeededRandom(seed: 42)
        for _ in 0..<2_000 {
            let s = Sample.random(&rng)
            let bytes = s.wireBytes()
            #expect(try Sample(wireBytes: bytes) == s)
        }
    }

    @Test func truncatedInputAlwaysFailsWithTypedError() {
        var rng = SeededRandom(seed: 43)
        for _ in 0..<300 {
            let bytes = Sample.random(&rng).wireBytes()
            for cut in 0..<bytes.count {
                #expect(throws: WireError.self) { try Sample(wireBytes: Array(bytes[0..<cut])) }
            }
        }
    }

    @Test func randomAndMutatedBytesNeverCrash() {
        var rng = SeededRandom(seed: 44)
        var failures = 0, successes = 0
        for i in 0..<50_000 {
            var bytes: [UInt8]
            if i % 2 == 0 {
                bytes = (0..<Int.random(in: 0...200, using: &rng)).map { _ in .random(in: 0...255, using: &rng) }
            } else {
                bytes = Sample.random(&rng).wireBytes()
                for _ in 0..<Int.random(in: 1...4, using: &rng) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = .random(in: 0...255, using: &rng)
                }
            }
            do { _ = try Sample(wireBytes: bytes); successes += 1 } catch { failures += 1 }
        }
        #expect(failures + successes == 50_000)
        #expect(failures > 25_000)
    }

    @Test func lengthAboveLimitIsRefusedBeforeReading() throws {
        // A 4 KiB limit on `blob`; claim a length of 2^40 with only a few bytes behind it.
        var w = WireWriter()
        w.varint(1); w.varint(2); w.varint(0); w.u8(0); w.fixed(UInt64(0))
        w.string("n")
        w.varint(1 << 40)
        w.raw([1, 2, 3])
        do {
            _ = try Sample(wireBytes: w.bytes)
            Issue.record("accepted a 2^40-byte field")
        } catch {
            #expect(error.code == .lengthOverLimit)
            #expect(error.description.contains("exceeds the limit of 4096"))
        }
        // Within the field limit but beyond the input: refused as truncated, nothing allocated.
        var r = WireReader([0x80, 0x00, 0x10, 0x00, 1, 2])
        #expect(throws: WireError.self) { _ = try r.lengthPrefixed(maxLength: 1 << 20) }
        // An array count beyond the bytes that remain.
        var r2 = WireReader([0x7f, 0xff, 0x00])
        #expect(throws: WireError.self) { _ = try r2.length(max: 100_000, unitSize: 1) }
    }

    @Test func trailingBytesAreRejected() {
        var bytes = Sample().wireBytes()
        bytes.append(0)
        do { _ = try Sample(wireBytes: bytes); Issue.record("accepted trailing byte") } catch {
            #expect(error.code == .trailingBytes)
        }
    }

    @Test func invalidUTF8AndBadBooleansAreMalformed() {
        var w = WireWriter()
        w.varint(0); w.varint(0); w.varint(0); w.u8(2)
        #expect(throws: WireError.self) { try Sample(wireBytes: w.bytes) }
        var r = WireReader([2, 0xff, 0xfe])
        do { _ = try r.string(maxLength: 10); Issue.record("accepted invalid UTF-8") } catch {
            #expect(error.code == .malformed)
        }
    }

    @Test func narrowIntegersAreRangeChecked() {
        var w = WireWriter()
        w.varint(0); w.varint(70_000) // port is UInt16
        #expect(throws: WireError.self) { try Sample(wireBytes: w.bytes) }
    }

    @Test func frameDecoderReassemblesAndBoundsFrames() throws {
        var rng = SeededRandom(seed: 5)
        let frames = (0..<100).map { i in Frame(type: UInt64(i % 7), payload: (0..<Int.random(in: 0...3000, using: &rng)).map { UInt8(truncatingIfNeeded: $0) }) }
        let stream = frames.flatMap(\.encoded)
        var dec = FrameDecoder(maxPayload: 4096)
        var got: [Frame] = []
        var i = 0
        while i < stream.count {
            let n = min(Int.random(in: 1...5000, using: &rng), stream.count - i)
            dec.append(stream[i..<i + n]); i += n
            while let f = try dec.next() { got.append(f) }
        }
        #expect(got == frames)
        #expect(dec.isIdle)

        // bytesWanted: what the next frame still lacks (1 while its header is incomplete).
        var want = FrameDecoder(maxPayload: 1 << 20)
        let big = Frame(type: 0x56, payload: [UInt8](repeating: 7, count: 70_000)).encoded
        #expect(want.bytesWanted == 1)
        want.append(big.prefix(1))
        #expect(want.bytesWanted == 1)
        want.append(big[1..<1000])
        #expect(want.bytesWanted == big.count - 1000)
        want.append(big[1000...])
        #expect(want.bytesWanted == 1)
        #expect(try want.next()?.payload.count == 70_000)

        // Frames of FrameDecoder.directPayload and more are gathered in their own array: the same
        // frames come out, whatever the pieces the stream delivers, and bytesWanted stays exact.
        let bigFrames = (0..<40).map { i in
            Frame(type: UInt64(0x50 + i % 9), payload: (0..<Int.random(in: 0...300_000, using: &rng)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ i) })
        }
        let bigStream = bigFrames.flatMap(\.encoded)
        // What a transport counts and queues without encoding: the same bytes as `encoded`.
        for f in bigFrames + [Frame(type: 0, payload: []), Frame(type: 1 << 40, payload: [1, 2, 3])] {
            #expect(f.encodedCount == f.encoded.count)
            #expect(f.header + f.payload == f.encoded)
        }
        var bigDec = FrameDecoder(maxPayload: 1 << 20)
        var bigGot: [Frame] = []
        i = 0
        while i < bigStream.count {
            let n = min(Int.random(in: 1...70_000, using: &rng), bigStream.count - i)
            let wanted = bigDec.bytesWanted
            bigDec.append(Array(bigStream[i..<i + n])); i += n
            if n < wanted { #expect(bigDec.bytesWanted == wanted - n) }
            while let f = try bigDec.next() { bigGot.append(f) }
        }
        #expect(bigGot == bigFrames)
        #expect(bigDec.isIdle && bigDec.bufferedCount == 0)
        var partial = FrameDecoder(maxPayload: 1 << 20)
        partial.append(big.prefix(30_000))
        #expect(try partial.next() == nil)
        #expect(!partial.isIdle && partial.bytesWanted == big.count - 30_000)

        var small = FrameDecoder(maxPayload: 100)
        small.append(Frame(type: 1, payload: [UInt8](repeating: 0, count: 101)).encoded.prefix(4))
        #expect(throws: WireError.self) { _ = try small.next() }
    }
}
