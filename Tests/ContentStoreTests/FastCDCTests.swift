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
