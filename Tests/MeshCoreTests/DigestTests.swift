import Testing
@testable import MeshCore

@Suite struct DigestTests {
    @Test func knownAnswers() {
        #expect(Digest.of([UInt8]()).description == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Digest.of(Array("abc".utf8)).description == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // FIPS 180-2 two-block message.
        #expect(Digest.of(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)).hex
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func streamingOneMiBInOddPiecesMatchesOneShot() {
        var rng = SeededRandom(seed: 7)
        let data = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let oneShot = Digest.of(data)
        var h = SHA256Hasher()
        var i = 0
        let sizes = [1, 3, 7, 63, 64, 65, 1000, 4093, 65_537]
        var k = 0
        while i < data.count {
            let n = min(sizes[k % sizes.count], data.count - i)
            h.update(data[i..<i + n])
            i += n; k += 1
        }
        #expect(h.finalize() == oneShot)
        // A million 'a's: the FIPS long-message vector, streamed in odd pieces.
        var million = SHA256Hasher()
        let a = [UInt8](repeating: UInt8(ascii: "a"), count: 9_973)
        var left = 1_000_000
        while left > 0 { let n = min(left, a.count); million.update(a[0..<n]); left -= n }
        #expect(million.finalize().hex == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func hasherResetsAfterFinalize() {
        var h = SHA256Hasher()
        h.update(Array("abc".utf8))
        _ = h.finalize()
        h.update(Array("abc".utf8))
        #expect(h.finalize() == Digest.of(Array("abc".utf8)))
    }

    @Test func parseAndFormatRoundTrip() throws {
        let d = Digest.of(Array("gquic".utf8))
        #expect(try Digest(parsing: d.description) == d)
        #expect(Digest(d.description) == d)
        #expect(try Digest(rawBytes: d.bytes) == d)
        #expect(d.short.count == "sha256:".count + 12)
    }

    @Test(arguments: [
        "", "sha256:", "sha256:abc", "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
        "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ])
    func rejectsMalformed(_ text: String) {
        #expect(throws: DigestError.self) { try Digest(parsing: text) }
    }

    @Test func errorNamesTheProblem() {
        do { _ = try Digest(parsing: "sha512:00"); Issue.record("accepted sha512") } catch {
            #expect(error.description.contains("only sha256"))
        }
    }

    @Test func orderingMatchesBytes() {
        var rng = SeededRandom(seed: 1)
        for _ in 0..<200 {
            let a = Digest.of([UInt8.random(in: 0...255, using: &rng)])
            let b = Digest.of([UInt8.random(in: 0...255, using: &rng), 1])
            #expect((a < b) == a.bytes.lexicographicallyPrecedes(b.bytes) || a == b)
        }
    }
}
