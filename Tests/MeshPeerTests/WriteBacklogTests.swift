import MeshCore
import Testing
@testable import MeshPeer

/// Chunks on their way to the store, and the ones written last, kept for serving.
@Suite struct WriteBacklogTests {
    /// A chunk of `size` bytes unique to `i` (its first 8 bytes), cheap to make in a debug build.
    static func chunk(_ i: Int, size: Int) -> VerifiedChunk {
        var bytes = [UInt8](repeating: 0x5A, count: size)
        withUnsafeBytes(of: UInt64(i).littleEndian) { for (k, b) in $0.enumerated() where k < size { bytes[k] = b } }
        return VerifiedChunk(hashing: bytes)
    }

    @Test("a chunk just written stays in memory for serving, until newer ones push it out past the limit")
    func writtenChunksStayUntilTheLimit() {
        let w = WriteBacklog()
        let size = 1 << 20
        let n = WriteBacklog.recentLimit / size
        let first = (0..<n).map { WriteBacklogTests.chunk($0, size: size) }
        w.state.withLock { s in for c in first { s.chunks[c.digest] = c.bytes }; s.bytes = n * size }
        w.written(first, bytes: n * size)
        w.state.withLock { s in
            #expect(s.chunks.isEmpty && s.bytes == 0)
            #expect(s.recent.count == n && s.recentBytes == n * size)
            #expect(s.recent[first[0].digest] == first[0].bytes)
        }
        // Two more chunks: the two oldest go, in the order they were written.
        let more = (n..<n + 2).map { WriteBacklogTests.chunk($0, size: size) }
        w.written(more, bytes: 0)
        w.state.withLock { s in
            #expect(s.recentBytes <= WriteBacklog.recentLimit)
            #expect(s.recent[first[0].digest] == nil && s.recent[first[1].digest] == nil)
            #expect(s.recent[first[2].digest] == first[2].bytes)
            #expect(s.recent[more[1].digest] == more[1].bytes)
        }
        w.forgetRecent()
        w.state.withLock { s in #expect(s.recent.isEmpty && s.recentOrder.isEmpty && s.recentBytes == 0) }
    }

    @Test("the same chunk written twice is counted once")
    func rewrittenChunkCountsOnce() {
        let w = WriteBacklog()
        let c = WriteBacklogTests.chunk(1, size: 1000)
        w.written([c], bytes: 0)
        w.written([c], bytes: 0)
        w.state.withLock { s in #expect(s.recent.count == 1 && s.recentBytes == 1000 && s.recentOrder.count == 1) }
    }

    @Test("the order list is compacted as old entries leave, so it does not grow with every chunk ever written")
    func orderListStaysBounded() {
        let w = WriteBacklog()
        let size = 16 << 10
        for i in 0..<20_000 { w.written([WriteBacklogTests.chunk(i, size: size)], bytes: 0) }
        w.state.withLock { s in
            #expect(s.recentBytes <= WriteBacklog.recentLimit)
            #expect(s.recentOrder.count - s.recentHead == s.recent.count)
            #expect(s.recentOrder.count <= 2 * (WriteBacklog.recentLimit / size) + 1025)
        }
    }
}
