import Dispatch

/// FastCDC 2020 content-defined chunking (Xia et al., "The Design of Fast Content-Defined Chunking for
/// Data Deduplication Based Storage Systems", IEEE TPDS 2020).
///
/// - Gear hashing: `fp = (fp << 1) + GEAR[byte]`; a cut point is where `fp & mask == 0`. Because of the
///   left shift, bit *k* of `fp` depends on the last *k + 1* bytes, so the masks use the **top** bits
///   (a 63-byte sliding window for free, no byte ever has to be "removed").
/// - Cut-point skipping: the first `minSize` bytes of a chunk are never examined.
/// - Normalized chunking (level 2): before the average size the harder mask `maskS` (log2(avg)+2 bits)
///   is used, after it the easier `maskL` (log2(avg)−2 bits), which pulls chunk sizes towards the average.
/// - "Rolling two bytes each time" (the 2020 paper's speed-up): each loop step folds in two bytes, the
///   first through a pre-shifted table `GEAR_LS = GEAR << 1` and a pre-shifted mask, so the test of the
///   first byte costs no extra shift.
///
/// The gear table comes from SplitMix64 with a fixed seed. Chunk boundaries — and so deduplication
/// between stores — depend on it: never change `gearSeed` or the mask layout without a format version.
public struct ChunkingParameters: Hashable, Sendable, CustomStringConvertible {
    public let minSize: Int
    public let averageSize: Int
    public let maxSize: Int

    /// The hard ceiling on any chunk, also the bound a chunk file's declared length is checked against.
    public static let largestAllowedChunk = 16 << 20

    /// Defaults: min 16 KiB, average 64 KiB, max 256 KiB.
    ///
    /// Why: 64 KiB average keeps the manifest of a 1 GiB blob at ~16 k entries (~640 KB) and per-chunk
    /// costs (a file, a zstd frame, a digest in every have-set and swarm message) small, while a Proton
    /// build whose few changed files are a few MB still re-sends only those files' chunks. min = avg/4
    /// skips most of the scanning (FastCDC's cut-point skipping) without hurting dedup; max = 4×avg
    /// bounds the worst case (data with no cut point, e.g. zeros) and a receiver's per-chunk buffer.
    /// The same 64 KiB average is what pyfastcdc's speed anchor is quoted at.
    public static let `default` = ChunkingParameters(unchecked: 16 << 10, 64 << 10, 256 << 10)

    /// Validates: 64 B ≤ min ≤ avg ≤ max ≤ 16 MiB, avg a power of two.
    public init(minSize: Int, averageSize: Int, maxSize: Int) throws(ContentStoreError) {
        guard minSize >= 64, minSize <= averageSize, averageSize <= maxSize,
              maxSize <= ChunkingParameters.largestAllowedChunk,
              averageSize.nonzeroBitCount == 1, averageSize >= 256
        else {
            throw .invalidArgument("chunk sizes must satisfy 64 ≤ min ≤ avg ≤ max ≤ 16 MiB with avg a power of two ≥ 256; got min \(minSize), avg \(averageSize), max \(maxSize)")
        }
        self.init(unchecked: minSize, averageSize, maxSize)
    }

    private init(unchecked minSize: Int, _ averageSize: Int, _ maxSize: Int) {
        self.minSize = minSize; self.averageSize = averageSize; self.maxSize = maxSize
    }

    public var description: String { "min \(minSize) / avg \(averageSize) / max \(maxSize) bytes" }
}

/// Finds FastCDC 2020 cut points. A value type with no state between calls: `nextCut` looks only at
/// the bytes it is given, so any thread may chunk any buffer.
public struct FastCDC: Sendable {
    public let parameters: ChunkingParameters
    private let maskS: UInt64
    private let maskL: UInt64
    private let maskSLS: UInt64
    private let maskLLS: UInt64

    static let gearSeed: UInt64 = 0x6751_5549_4320_4344 // "gQUIC CD"

    /// GEAR and GEAR_LS interleaved: 512 words, allocated once and never freed.
    nonisolated(unsafe) private static let tables: UnsafeMutablePointer<UInt64> = {
        let p = UnsafeMutablePointer<UInt64>.allocate(capacity: 512)
        var state = gearSeed
        for i in 0..<256 {
            // SplitMix64.
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            p[i] = z
            p[256 + i] = z << 1
        }
        return p
    }()

    public init(_ parameters: ChunkingParameters = .default) {
        self.parameters = parameters
        let bits = parameters.averageSize.trailingZeroBitCount
        func topMask(_ n: Int) -> UInt64 {
            let all: UInt64 = ~0
            if n <= 0 { return 0 }
            if n >= 64 { return all }
            return all << UInt64(64 - n)
        }
        // Bit 63 is left out so that shifting a mask left by one loses nothing: the pre-shifted masks
        // then test exactly the same bits as the plain ones, one step earlier.
        maskS = topMask(bits + 2) >> 1
        maskL = topMask(max(bits - 2, 1)) >> 1
        maskSLS = maskS << 1
        maskLLS = maskL << 1
    }

    /// The length of the first chunk of `buffer` (the whole buffer if it is shorter than `minSize`,
    /// at most `maxSize`). Pass `isEnd: false` while more data follows; the result is then only final
    /// when it is below `buffer.count` or equals `maxSize`.
    @inline(__always)
    public func nextCut(_ buffer: UnsafeRawBufferPointer) -> Int {
        let count = buffer.count
        let minSize = parameters.minSize
        if count <= minSize { return count }
        let end = min(count, parameters.maxSize)
        let normal = min(parameters.averageSize, end)
        guard let base = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return count }
        if let cut = FastCDC.scan(base, from: minSize, to: normal, origin: minSize, mask: maskS, maskLS: maskSLS) { return cut }
        if let cut = FastCDC.scan(base, from: normal, to: end, origin: minSize, mask: maskL, maskLS: maskLLS) { return cut }
        return end
    }

    /// Bytes each of the two lanes of `scan` covers per round.
    static let laneWidth = 8192

    /// The first position `i` in `from..<to` where `fp(i) & mask == 0`, `fp(i)` being the gear hash of
    /// the bytes `origin...i` (`fp = (fp << 1) + GEAR[byte]` from 0 at `origin`).
    ///
    /// Speed: one gear hash is a chain of dependent shift-adds (3 cycles per 2 bytes with the
    /// two-bytes trick), so one lane leaves the CPU idle. Because of the shift, `fp(i)` depends only
    /// on the last 64 bytes, so a second lane can start anywhere: it hashes the 64 bytes before its
    /// start (untested) and from there on holds exactly the same values as the sequential hash.
    /// Each round, lane A scans `[p, p + W)` and lane B `[p + W, p + 2W)` in one loop, eight bytes
    /// per lane per pass, each byte pair compiled to seven instructions (two byte loads, a shift, two
    /// table adds, two test-and-branch). On any hit the loop stops, and each lane is scanned again
    /// from the start of that pass, in data order (lane A's rest with `rescan`, then lane B's pass):
    /// the first cut found is the answer, so the cut points are exactly those of a sequential scan.
    ///
    /// Not inlined on purpose: as its own function the loop keeps both masks and both hashes in
    /// registers (inlined into `nextCut`, the masks were spilled and reloaded on every test, −10 %).
    @inline(never)
    static func scan(_ base: UnsafePointer<UInt8>, from: Int, to: Int, origin: Int, mask: UInt64, maskLS: UInt64) -> Int? {
        let gear = UnsafePointer(tables)
        let width = laneWidth
        var p = from
        var fa = warm(base, from: max(origin, p - 64), to: p, gear)
        while to - p >= 2 * width {
            var fb = warm(base, from: p + width - 64, to: p + width, gear)
            let pa = base + p, pb = pa + width
            var k = 0
            while k < width {
                if pair(&fa, pa + k, gear, mask, maskLS) || pair(&fb, pb + k, gear, mask, maskLS)
                    || pair(&fa, pa + k + 2, gear, mask, maskLS) || pair(&fb, pb + k + 2, gear, mask, maskLS)
                    || pair(&fa, pa + k + 4, gear, mask, maskLS) || pair(&fb, pb + k + 4, gear, mask, maskLS)
                    || pair(&fa, pa + k + 6, gear, mask, maskLS) || pair(&fb, pb + k + 6, gear, mask, maskLS) {
                    break
                }
                k &+= 8
            }
            if k < width {
                // A lane hit in the pass at k: lane A's rest first (in two lanes), then lane B's pass.
                if let cut = rescan(base, from: p + k, to: p + width, origin: origin, mask: mask, maskLS: maskLS) { return cut }
                let sb = p + width + k
                var f = warm(base, from: sb - 64, to: sb, gear)
                if let cut = single(base, from: sb, to: p + 2 * width, fp: &f, mask: mask, maskLS: maskLS, gear) { return cut }
                preconditionFailure("FastCDC lane scan: a hit that a sequential rescan does not find")
            }
            p += 2 * width
            fa = fb
        }
        return single(base, from: p, to: to, fp: &fa, mask: mask, maskLS: maskLS, gear)
    }

    /// The first cut in `from..<to` (hash from 0 at `origin`), for what remains of lane A after a
    /// hit in lane B: that rest is scanned as two lanes of half its length (a single lane runs at
    /// half the speed, and this rest is ~5 % of all bytes scanned).
    @inline(never)
    static func rescan(_ base: UnsafePointer<UInt8>, from: Int, to: Int, origin: Int, mask: UInt64, maskLS: UInt64) -> Int? {
        let gear = UnsafePointer(tables)
        let half = ((to - from) / 2) & ~1
        var fa = warm(base, from: max(origin, from - 64), to: from, gear)
        if half < 256 { return single(base, from: from, to: to, fp: &fa, mask: mask, maskLS: maskLS, gear) }
        let q = from + half
        var fb = warm(base, from: q - 64, to: q, gear)
        let pa = base + from, pb = base + q
        var k = 0
        while k < half {
            if pair(&fa, pa + k, gear, mask, maskLS) || pair(&fb, pb + k, gear, mask, maskLS) { break }
            k &+= 2
        }
        if k < half {
            var f = warm(base, from: max(origin, from + k - 64), to: from + k, gear)
            if let cut = single(base, from: from + k, to: q, fp: &f, mask: mask, maskLS: maskLS, gear) { return cut }
            var g = warm(base, from: q + k - 64, to: q + k, gear)
            return single(base, from: q + k, to: q + half, fp: &g, mask: mask, maskLS: maskLS, gear)
        }
        return single(base, from: q + half, to: to, fp: &fb, mask: mask, maskLS: maskLS, gear)
    }

    /// Folds in the two bytes at `p` (the first through the pre-shifted table); true if either
    /// position is a cut (the first tested against the pre-shifted mask, so it costs no shift).
    @inline(__always)
    static func pair(_ f: inout UInt64, _ p: UnsafePointer<UInt8>, _ gear: UnsafePointer<UInt64>, _ mask: UInt64, _ maskLS: UInt64) -> Bool {
        let h = gear[256 &+ Int(p[0])] &+ (f &<< 2)
        if h & maskLS == 0 { return true }
        f = h &+ gear[Int(p[1])]
        return f & mask == 0
    }

    /// The gear hash of `from..<to` (at most 64 bytes matter), without testing.
    @inline(__always)
    static func warm(_ base: UnsafePointer<UInt8>, from: Int, to: Int, _ gear: UnsafePointer<UInt64>) -> UInt64 {
        var fp: UInt64 = 0
        var i = from
        while i < to { fp = (fp &<< 1) &+ gear[Int(base[i])]; i &+= 1 }
        return fp
    }

    /// One lane, two bytes per step: the first byte goes through the pre-shifted table and is
    /// tested against the pre-shifted mask, so it costs no extra shift.
    @inline(__always)
    static func single(_ base: UnsafePointer<UInt8>, from: Int, to: Int, fp: inout UInt64, mask: UInt64, maskLS: UInt64, _ gear: UnsafePointer<UInt64>) -> Int? {
        let gearLS = gear + 256
        var i = from
        let stop = from + max(0, (to - from) & ~1)
        var h = fp
        while i < stop {
            let h1 = (h &<< 2) &+ gearLS[Int(base[i])]
            h = h1 &+ gear[Int(base[i &+ 1])]
            if h1 & maskLS == 0 { fp = h; return i }
            if h & mask == 0 { fp = h; return i &+ 1 }
            i &+= 2
        }
        if i < to {
            h = (h &<< 1) &+ gear[Int(base[i])]
            if h & mask == 0 { fp = h; return i }
        }
        fp = h
        return nil
    }

    /// Every chunk boundary of a complete buffer, as the end offset of each chunk.
    public func cutPoints(_ buffer: UnsafeRawBufferPointer) -> [Int] {
        cutPoints(buffer, from: 0, until: buffer.count)
    }

    /// The cut points of `buffer[from...]` for a chunker that starts a chunk at `from`, up to and
    /// including the first cut at or after `until` (or the end of the buffer).
    func cutPoints(_ buffer: UnsafeRawBufferPointer, from: Int, until: Int) -> [Int] {
        var ends: [Int] = []
        ends.reserveCapacity((until - from) / parameters.averageSize + 2)
        var offset = from
        while offset < buffer.count {
            offset += nextCut(UnsafeRawBufferPointer(rebasing: buffer[offset...]))
            ends.append(offset)
            if offset >= until { break }
        }
        return ends
    }

    /// Every chunk boundary of a complete buffer, computed on up to `threads` threads; exactly the
    /// same list as `cutPoints`.
    ///
    /// The buffer is split into segments, each chunked on its own as if a chunk started at its first
    /// byte, running on past its end to the first cut at or after it. FastCDC keeps no state across a
    /// cut, so once the true sequence (which starts at 0) reaches a cut that a segment's chunker also
    /// made, the two agree from there on. Stitching walks the true sequence: it takes a segment's cuts
    /// as they are while riding it; at its end it chunks on sequentially from the last true cut until
    /// it lands on a cut of a following segment, and rides that one. If it never lands on one (data
    /// whose cuts never line up again, such as long runs that only ever cut at the maximum size), the
    /// sequential walk simply covers the rest: slower, never different. Segments start at multiples
    /// of the maximum chunk size, so such runs from the start of the buffer do line up.
    public func cutPointsParallel(_ buffer: UnsafeRawBufferPointer, threads: Int = 2, segmentSize: Int? = nil) -> [Int] {
        let count = buffer.count
        let maxSize = parameters.maxSize
        // A few segments per thread, so one slow thread (a shared machine) does not hold the rest up.
        var size = segmentSize ?? max(16 << 20, count / max(1, threads * 4))
        if segmentSize == nil { size = (size + maxSize - 1) / maxSize * maxSize }
        guard threads > 1, size > 0, count > size else { return cutPoints(buffer) }
        let starts = Array(stride(from: 0, to: count, by: size))
        let lists = UnsafeMutableBufferPointer<[Int]>.allocate(capacity: starts.count)
        lists.initialize(repeating: [])
        defer { lists.deinitialize(); lists.deallocate() }
        let listsBase = lists.baseAddress!
        nonisolated(unsafe) let shared = listsBase
        nonisolated(unsafe) let input = buffer
        DispatchQueue.concurrentPerform(iterations: starts.count) { j in
            let until = j + 1 < starts.count ? starts[j + 1] : count
            shared[j] = cutPoints(input, from: starts[j], until: until)
        }
        return FastCDC.stitch(Array(lists)) { from in from + nextCut(UnsafeRawBufferPointer(rebasing: buffer[from...])) }
    }

    /// Joins per-segment cut lists (segment 0 starting at 0) into the true sequence; `next(pos)`
    /// is the sequential chunker's next cut after a true cut `pos`.
    static func stitch(_ lists: [[Int]], next: (Int) -> Int) -> [Int] {
        guard let end = lists.last?.last else { return [] }
        var out: [Int] = []
        out.reserveCapacity(lists.reduce(0) { $0 + $1.count })
        out += lists[0]
        var pos = out.last ?? 0
        var k = 1
        while pos < end {
            // Skip segments whose cuts all lie at or before `pos`.
            while k < lists.count, (lists[k].last ?? 0) <= pos { k += 1 }
            if k < lists.count, let at = binarySearch(lists[k], pos) {
                // `pos` is a cut of segment k too: from here on its cuts are the true ones.
                out += lists[k][(at + 1)...]
                pos = out.last!
                k += 1
                continue
            }
            pos = next(pos)
            out.append(pos)
        }
        return out
    }

    private static func binarySearch(_ a: [Int], _ x: Int) -> Int? {
        var lo = 0, hi = a.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if a[mid] < x { lo = mid + 1 } else { hi = mid }
        }
        return lo < a.count && a[lo] == x ? lo : nil
    }

    /// Chunk lengths of a byte array (convenience for tests and small inputs).
    public func chunkLengths(_ bytes: [UInt8]) -> [Int] {
        bytes.withUnsafeBytes { buf in
            var prev = 0
            return cutPoints(buf).map { e in defer { prev = e }; return e - prev }
        }
    }
}
