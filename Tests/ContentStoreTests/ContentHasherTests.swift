import Foundation
import MeshCore
import Testing
@testable import ContentStore

/// A blob's content hash taken while its chunks arrive (`BlobContentHasher`), and the commit that
/// uses it instead of reading the blob back.
@Suite struct ContentHasherTests {
    /// A blob imported into a source store, and its chunks as a receiver would hold them.
    static func blob(_ t: TempDir, seed: UInt64) throws -> (manifest: BlobManifest, chunks: [Digest: [UInt8]]) {
        let src = try ContentStore.open(path: t.sub("src-\(seed)"), options: testOptions())
        let m = try src.importBytes(randomBytes(400_000, seed: seed))
        var chunks: [Digest: [UInt8]] = [:]
        for c in m.chunks { chunks[c.digest] = try src.readChunk(c.digest) }
        return (m, chunks)
    }

    @Test("chunks arriving out of order are hashed as far as they run from the start, and the result is the blob's digest")
    func hashesTheRunFromTheStart() throws {
        let t = TempDir(); defer { t.cleanup() }
        let (m, chunks) = try ContentHasherTests.blob(t, seed: 31)
        #expect(m.chunks.count >= 8)
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let h = BlobContentHasher(m)
        // Every chunk but the third arrives (and is stored) first: the hash stops before it.
        let missing = m.chunks[2].digest
        try store.putChunks(m.chunks.filter { $0.digest != missing }.map { VerifiedChunk(hashing: chunks[$0.digest]!) })
        #expect(!h.advance(store: store, memory: { _ in nil }))
        #expect(h.next == 2 && h.result == nil)
        // It arrives, and is still in the receiver's memory: the rest is read from the store.
        #expect(h.advance(store: store, memory: { $0 == missing ? chunks[missing] : nil }))
        #expect(h.result == m.digest)
        #expect(h.bytesFromMemory == chunks[missing]!.count)
        #expect(h.bytesHashed == Int(m.size))
        try store.putChunks([VerifiedChunk(hashing: chunks[missing]!)])
        try store.commitBlob(m, hashed: h)
        #expect(store.hasBlob(m.digest))
        try store.export(m.digest, to: t.sub("out"))
        #expect(readFile(t.sub("out")) == m.chunks.flatMap { chunks[$0.digest]! })
    }

    @Test("a manifest that claims a blob's digest over other chunks is refused, whatever hash is handed to the commit")
    func aLyingManifestIsRefusedDespiteAFinishedHash() throws {
        let t = TempDir(); defer { t.cleanup() }
        let (m, chunks) = try ContentHasherTests.blob(t, seed: 41)
        let (other, otherChunks) = try ContentHasherTests.blob(t, seed: 42)
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        try store.putChunks(m.chunks.map { VerifiedChunk(hashing: chunks[$0.digest]!) })
        try store.putChunks(other.chunks.map { VerifiedChunk(hashing: otherChunks[$0.digest]!) })
        // An honest hash of the real blob, finished: its result is m.digest.
        let h = BlobContentHasher(m)
        #expect(h.advance(store: store, memory: { _ in nil }) && h.result == m.digest)
        // A peer's manifest: m's digest, the other blob's chunks. The hash does not cover these chunks.
        var lie = other
        lie.digest = m.digest
        #expect(throws: ContentStoreError.self) { try store.commitBlob(lie, hashed: h) }
        #expect(!store.hasBlob(m.digest))
        // The honest manifest commits with it.
        try store.commitBlob(m, hashed: h)
        #expect(store.hasBlob(m.digest))
    }

    @Test("an unfinished hash leaves the commit to hash the blob itself")
    func anUnfinishedHashIsNotUsed() throws {
        let t = TempDir(); defer { t.cleanup() }
        let (m, chunks) = try ContentHasherTests.blob(t, seed: 51)
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let h = BlobContentHasher(m)
        #expect(!h.advance(store: store, memory: { _ in nil }) && h.next == 0)
        try store.putChunks(m.chunks.map { VerifiedChunk(hashing: chunks[$0.digest]!) })
        try store.commitBlob(m, hashed: h)
        #expect(store.hasBlob(m.digest))
    }
}
