import Testing
@testable import ContentStore
import MeshCore

@Suite struct FastCDCTests {
    @Test func chunksRespectBoundsAndCoverTheInput() throws {
        let p = try ChunkingParameters(minSize: 2048, averageSize: 8192, maxSize: 32768)
        let cdc = FastCDC(p)
        let data = randomBytes(2 << 20, seed: 1)
        let lengths = cdc.chunkLengths(data)
        #expect(lengths.reduce(0, +) == data.count)
        #expect(lengths.dropLast().allSatisfy { $0 >= 2048 && $0 <= 32768 })
        let avg = Double(data.count) / Double(lengths.count)
        // Normalized chunking keeps the mean near the target average.
        #expect(avg > 8192 * 0.6 && avg < 8192 * 1.6, "mean chunk \(avg)")
        // Zeros have no cut point: every chunk is max-sized.
        let zeros = cdc.chunkLengths([UInt8](repeating: 0, count: 100_000))
        #expect(zeros.dropLast().allSatisfy { $0 == 32768 })
    }

    @Test func boundariesResynchroniseAfterAnInsertion() {
        let cdc = FastCDC(.default)
        let data = randomBytes(4 << 20, seed: 2)
        var edited = data
        edited.insert(contentsOf: [1, 2, 3, 4, 5], at: 100_000)
        func chunks(_ b: [UInt8]) -> Set<Digest> {
            var at = 0
            return Set(cdc.chunkLengths(b).map { n in defer { at += n }; return Digest.of(b[at..<at + n]) })
        }
        let a = chunks(data), b = chunks(edited)
        // Only the chunk(s) around the edit differ.
        #expect(a.subtracting(b).count <= 2)
        #expect(b.subtracting(a).count <= 2)
    }

    @Test func invalidParametersAreRefused() {
        #expect(throws: ContentStoreError.self) { try ChunkingParameters(minSize: 4096, averageSize: 3000, maxSize: 8192) }
        #expect(throws: ContentStoreError.self) { try ChunkingParameters(minSize: 4096, averageSize: 8192, maxSize: 64 << 20) }
    }
}

/// Cut points are part of the store's format (they decide chunk digests, so dedup between peers):
/// these fingerprints were taken from the reference implementation and must never change silently.
@Suite struct FastCDCStabilityTests {
    static func fingerprint(_ p: ChunkingParameters, _ data: [UInt8]) -> String {
        var w = WireWriter()
        let lengths = FastCDC(p).chunkLengths(data)
        for n in lengths { w.varint(UInt64(n)) }
        return "\(lengths.count):\(Digest.of(w.bytes).short)"
    }

    @Test func cutPointsAreStable() throws {
        let random = randomBytes(8 << 20, seed: 11)
        let mixed = textBytes(3 << 20, seed: 12) + randomBytes(1 << 20, seed: 13) + [UInt8](repeating: 7, count: 300_000)
        let small = try ChunkingParameters(minSize: 4096, averageSize: 16384, maxSize: 65536)
        let odd = try ChunkingParameters(minSize: 1001, averageSize: 4096, maxSize: 10007)
        let oddLarge = try ChunkingParameters(minSize: 1001, averageSize: 65536, maxSize: 300_007)
        let got = [Self.fingerprint(.default, random), Self.fingerprint(.default, mixed),
                   Self.fingerprint(small, random), Self.fingerprint(small, mixed), Self.fingerprint(odd, mixed),
                   Self.fingerprint(oddLarge, random), Self.fingerprint(oddLarge, mixed)]
        #expect(got == Self.expected)
    }

    static let expected = ["114:sha256:25e8c86be32f", "59:sha256:f89518e3f95f", "453:sha256:2951688dc86b",
                            "224:sha256:5fa087a4afa2", "933:sha256:3294f8809118", "117:sha256:2f5a6226c765",
                            "60:sha256:85d91d053e0a"]
}

/// Parallel chunking must give exactly the sequential cut list, whatever the data does at the
/// segment boundaries.
@Suite struct FastCDCParallelTests {
    static func check(_ data: [UInt8], _ p: ChunkingParameters = .default, segmentSize: Int? = nil, threads: Int = 2) {
        let cdc = FastCDC(p)
        data.withUnsafeBytes { buf in
            let sequential = cdc.cutPoints(buf)
            let parallel = cdc.cutPointsParallel(buf, threads: threads, segmentSize: segmentSize)
            #expect(parallel == sequential, "segment size \(segmentSize.map(String.init) ?? "auto"), \(data.count) bytes")
        }
    }

    @Test func randomDataGivesTheSequentialCuts() {
        let data = randomBytes(24 << 20, seed: 21)
        Self.check(data)                                    // automatic segments (aligned to max size)
        for size in [1 << 20, 999_983, 300_001, 70_000] {   // many stitches, unaligned boundaries
            Self.check(data, segmentSize: size, threads: 3)
        }
    }

    @Test func lowEntropyDataGivesTheSequentialCuts() throws {
        let text = textBytes(6 << 20, seed: 22)
        var runs: [UInt8] = []
        for i in 0..<40 {
            runs += [UInt8](repeating: UInt8(i % 3), count: 50_000 + i * 977)
            runs += randomBytes(3000, seed: UInt64(i))
        }
        let small = try ChunkingParameters(minSize: 1024, averageSize: 4096, maxSize: 16384)
        for data in [text, runs] {
            Self.check(data, segmentSize: 777_777)
            Self.check(data, small, segmentSize: 123_457, threads: 4)
        }
    }

    @Test func dataThatNeverResynchronisesFallsBackToTheSequentialWalk() {
        // Zeros cut only at the maximum size, counted from the chunk start: a segment starting off
        // a multiple of it never shares a cut with the true sequence, so the stitch must walk it all.
        let zeros = [UInt8](repeating: 0, count: 5 << 20)
        Self.check(zeros, segmentSize: 1_000_003)
        Self.check(zeros)                                    // aligned segments line up at once
        // A random prefix shifts the zeros' cuts off every segment start.
        Self.check(randomBytes(100_001, seed: 23) + zeros, segmentSize: 1 << 20)
        // Tiny inputs and a single segment.
        Self.check([], segmentSize: 10)
        Self.check(randomBytes(5, seed: 24), segmentSize: 1)
        Self.check(randomBytes(300_000, seed: 25), segmentSize: 300_000)
    }
}

/// The SHA-NI lanes must give OpenSSL's digests for every length (padding at 55/56/63/64 bytes).
@Suite struct SHA256LaneTests {
    @Test func digestsMatchOpenSSL() throws {
        try #require(SHA256Lane.available, "this CPU has no SHA extensions; the import uses OpenSSL instead")
        let data = randomBytes(300_000, seed: 31)
        data.withUnsafeBytes { buf in
            for n in Array(0...200) + [1000, 4095, 4096, 65_536, 65_599, 299_999] {
                let m = UnsafeRawBufferPointer(rebasing: buf[0..<n])
                #expect(SHA256Lane.digest(m) == Digest.of(m), "length \(n)")
                let other = UnsafeRawBufferPointer(rebasing: buf[(buf.count - n / 2 - 7)...])
                let (a, b) = SHA256Lane.digests(m, other)
                #expect(a == Digest.of(m) && b == Digest.of(other), "pair of \(n) and \(other.count)")
            }
        }
    }
}
