import CZstd

/// The one file that calls libzstd. Contexts are reused (one per thread) because creating one costs
/// more than compressing a small chunk; no zstd type leaves this file.
final class ZstdCompressor {
    private let cctx: OpaquePointer

    init() {
        guard let c = ZSTD_createCCtx() else { fatalError("ZSTD_createCCtx: out of memory") }
        cctx = c
    }
    deinit { ZSTD_freeCCtx(cctx) }

    static func bound(_ n: Int) -> Int { ZSTD_compressBound(n) }

    /// Compresses `src` into `dst` (capacity at least `bound(src.count)`); returns the frame length.
    func compress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer, level: Int32) throws(ContentStoreError) -> Int {
        let n = ZSTD_compressCCtx(cctx, dst.baseAddress, dst.count, src.baseAddress, src.count, level)
        guard ZSTD_isError(n) == 0 else { throw .compression("compress", zstdErrorName(n)) }
        return n
    }

    /// A `zstd --patch-from` delta: `target` compressed with `base` as a raw-content prefix, long
    /// distance matching on, and a window large enough to reach back across all of `base`.
    func patch(base: UnsafeRawBufferPointer, target: UnsafeRawBufferPointer, level: Int32) throws(ContentStoreError) -> [UInt8] {
        ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters)
        defer { ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters) }
        let windowLog = Int32(min(31, max(10, Self.log2Ceil(base.count + target.count))))
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level), "set level")
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, windowLog), "set windowLog")
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_enableLongDistanceMatching, 1), "enable long-distance matching")
        try check(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1), "enable checksum")
        try check(ZSTD_CCtx_setPledgedSrcSize(cctx, UInt64(target.count)), "pledge size")
        if base.count > 0 { try check(ZSTD_CCtx_refPrefix(cctx, base.baseAddress, base.count), "refPrefix") }
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(target.count))
        let n = out.withUnsafeMutableBytes { ZSTD_compress2(cctx, $0.baseAddress, $0.count, target.baseAddress, target.count) }
        try check(n, "compress with prefix")
        out.removeSubrange(n...)
        return out
    }

    static func log2Ceil(_ n: Int) -> Int { n <= 1 ? 0 : Int.bitWidth - (n - 1).leadingZeroBitCount }
}

final class ZstdDecompressor {
    private let dctx: OpaquePointer

    init() {
        guard let d = ZSTD_createDCtx() else { fatalError("ZSTD_createDCtx: out of memory") }
        dctx = d
    }
    deinit { ZSTD_freeDCtx(dctx) }

    /// The content size a frame declares, or nil when it declares none or is not a frame.
    static func declaredSize(_ frame: UnsafeRawBufferPointer) -> UInt64? {
        let s = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
        if s == gq_zstd_content_size_unknown() || s == gq_zstd_content_size_error() { return nil }
        return s
    }

    /// Decompresses one frame into `dst`, which must be exactly the expected size.
    func decompress(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) throws(ContentStoreError) -> Int {
        let n = ZSTD_decompressDCtx(dctx, dst.baseAddress, dst.count, src.baseAddress, src.count)
        guard ZSTD_isError(n) == 0 else { throw .compression("decompress", zstdErrorName(n)) }
        return n
    }

    /// Applies a patch made by `ZstdCompressor.patch`, producing exactly `expectedSize` bytes.
    func applyPatch(base: UnsafeRawBufferPointer, patch: UnsafeRawBufferPointer, expectedSize: Int) throws(ContentStoreError) -> [UInt8] {
        ZSTD_DCtx_reset(dctx, ZSTD_reset_session_and_parameters)
        defer { ZSTD_DCtx_reset(dctx, ZSTD_reset_session_and_parameters) }
        try check(ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 31), "set windowLogMax")
        if base.count > 0 { try check(ZSTD_DCtx_refPrefix(dctx, base.baseAddress, base.count), "refPrefix") }
        guard let declared = Self.declaredSize(patch), declared == UInt64(expectedSize) else {
            throw .badManifest("patch", "the zstd frame does not declare the \(expectedSize)-byte target size")
        }
        var out = [UInt8](repeating: 0, count: expectedSize)
        let n = out.withUnsafeMutableBytes { ZSTD_decompressDCtx(dctx, $0.baseAddress, $0.count, patch.baseAddress, patch.count) }
        try check(n, "decompress with prefix")
        guard n == expectedSize else { throw .sizeMismatch("patched file", expected: UInt64(expectedSize), actual: UInt64(n)) }
        return out
    }
}

private func zstdErrorName(_ code: Int) -> String { String(cString: ZSTD_getErrorName(code)) }

@inline(__always)
private func check(_ code: Int, _ op: String) throws(ContentStoreError) {
    guard ZSTD_isError(code) == 0 else { throw .compression(op, zstdErrorName(code)) }
}
