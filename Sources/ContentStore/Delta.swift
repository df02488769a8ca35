import MeshCore

/// Which chunks of `target` a receiver lacks.
public struct ChunkDelta: Sendable {
    public let target: BlobManifest
    /// Distinct chunks the receiver does not hold, in first-use order.
    public let missing: [ChunkRef]

    /// Given the set of chunk digests the receiver already holds.
    public init(target: BlobManifest, receiverHas: Set<Digest>) {
        self.target = target
        var seen = receiverHas
        missing = target.chunks.filter { seen.insert($0.digest).inserted }
    }

    /// Given the manifest of a version the receiver already holds.
    public init(target: BlobManifest, receiverHolds old: BlobManifest) {
        self.init(target: target, receiverHas: Set(old.chunks.map(\.digest)))
    }

    /// Raw (uncompressed) bytes of the missing chunks.
    public var missingBytes: UInt64 { missing.reduce(0) { $0 + UInt64($1.length) } }
}

/// A chunk as stored (header + zstd or raw payload), for shipping; the receiver verifies it.
public struct ChunkFrame: WireFields, Sendable {
    public var digest = Digest.of([UInt8]())
    public var frame: [UInt8] = []
    public init() {}
    public init(digest: Digest, frame: [UInt8]) { self.digest = digest; self.frame = frame }
    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.value(&digest)
        try c.bytes(&frame, max: ChunkingParameters.largestAllowedChunk + 1024)
    }
}

/// A `zstd --patch-from` delta of one file: the new bytes compressed with the old file as a prefix
/// dictionary (long-distance matching, a window spanning the old file).
public struct FilePatch: WireFields, Sendable {
    /// Largest file a patch is made for (both versions are held in memory while patching).
    public static let maxFileSize = 1 << 30
    /// Path in the target tree ("" for a file blob).
    public var path = ""
    /// Path of the base file in the base tree ("" for a file blob).
    public var basePath = ""
    public var baseDigest = Digest.of([UInt8]())
    public var targetDigest = Digest.of([UInt8]())
    public var targetSize: UInt64 = 0
    public var frame: [UInt8] = []
    public init() {}
    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.string(&path, max: TreeEntry.maxPathLength)
        try c.string(&basePath, max: TreeEntry.maxPathLength)
        try c.value(&baseDigest)
        try c.value(&targetDigest)
        try c.uint(&targetSize)
        try c.bytes(&frame, max: FilePatch.maxFileSize + (FilePatch.maxFileSize >> 7) + 4096)
    }
}

/// Everything a receiver that holds `base` (or the chunks it named) needs to rebuild `target`'s
/// blob: the missing chunks, plus patches for files where a patch is smaller than their chunks, and
/// the target manifest — whole, or (when the receiver holds `base`) as a `--patch-from` patch of the
/// base's manifest, which is most of the bytes of a small delta otherwise (~40 bytes per chunk).
/// Its `wireBytes()` is the delta as shipped; `ContentStore.applyDelta` verifies it all.
public struct DeltaBundle: WireFields, Sendable {
    public static let maxManifestSize = 64 << 20
    public var base: Digest?
    /// The blob the delta rebuilds.
    public var target = Digest(unchecked: [UInt8](repeating: 0, count: 32))
    /// The target manifest. Empty in a decoded bundle whose manifest travelled as `manifestPatch`
    /// (`applyDelta` rebuilds it).
    public var manifest = BlobManifest()
    /// The target manifest's wire bytes as a zstd patch against the base manifest's (empty: the
    /// manifest travels whole).
    public var manifestPatch: [UInt8] = []
    /// SHA-256 of the base manifest's wire bytes the patch was made against, and the size of the
    /// target manifest's wire bytes.
    public var baseManifestDigest = Digest(unchecked: [UInt8](repeating: 0, count: 32))
    public var manifestSize: UInt64 = 0
    public var chunks: [ChunkFrame] = []
    public var patches: [FilePatch] = []
    public init() {}
    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.optional(&base)
        try c.value(&target)
        try c.bytes(&manifestPatch, max: DeltaBundle.maxManifestSize)
        if manifestPatch.isEmpty {
            try c.value(&manifest)
        } else {
            try c.value(&baseManifestDigest)
            try c.uint(&manifestSize)
        }
        try c.array(&chunks, max: BlobManifest.maxChunks)
        try c.array(&patches, max: BlobManifest.maxEntries)
    }
}

extension ContentStore {
    /// Reads a whole file of a blob (a file blob, or one file entry of a tree) into memory.
    func fileBytes(_ m: BlobManifest, path: String) throws -> [UInt8]? {
        let reader = BlobReader(store: self, manifest: m)
        switch m.kind {
        case .file:
            return try reader.bytes(0..<m.size)
        case .tree:
            guard let i = m.entries.firstIndex(where: { $0.path == path && $0.type == .file }) else { return nil }
            let spans = try m.fileChunkSpans(), offsets = m.chunkOffsets
            let span = spans[i]!
            return try reader.bytes(offsets[span.lowerBound]..<offsets[span.upperBound])
        }
    }

    /// Builds the delta from `base` (a blob the receiver holds) to `target`. For each target file,
    /// the chunks the receiver lacks are compared with a `--patch-from` patch against the base file of
    /// the same path (the base blob itself for file blobs), and the smaller is shipped. Pass
    /// `receiverHas` when the receiver's chunk set is known exactly (then no patches are made unless
    /// `base` is given too).
    public func makeDelta(from base: Digest?, to target: Digest, receiverHas: Set<Digest>? = nil,
                          patchLevel: Int32 = 19, usePatches: Bool = true) throws -> DeltaBundle {
        let t = try manifest(for: target)
        let b = try base.map { try manifest(for: $0) }
        var have = receiverHas ?? Set(b?.chunks.map(\.digest) ?? [])
        var bundle = DeltaBundle()
        bundle.base = base
        bundle.target = target
        bundle.manifest = t
        // The files of the target, each with its chunk range and the base file a patch may use.
        struct FileSlot { var path: String; var span: Range<Int>; var digest: Digest; var size: UInt64 }
        var slots: [FileSlot] = []
        switch t.kind {
        case .file: slots = [FileSlot(path: "", span: 0..<t.chunks.count, digest: t.digest, size: t.size)]
        case .tree:
            let spans = try t.fileChunkSpans()
            for (i, e) in t.entries.enumerated() where e.type == .file {
                slots.append(FileSlot(path: e.path, span: spans[i]!, digest: e.digest!, size: e.size))
            }
        }
        var baseFiles: [String: (Digest, UInt64)] = [:]
        if let b {
            switch b.kind {
            case .file: baseFiles[""] = (b.digest, b.size)
            case .tree: for e in b.entries where e.type == .file { baseFiles[e.path] = (e.digest!, e.size) }
            }
        }
        let compressor = compressors.take()
        defer { compressors.give(compressor) }
        if let b {
            let baseBytes = b.wireBytes(), targetBytes = t.wireBytes()
            let patch = try baseBytes.withUnsafeBytes { o in try targetBytes.withUnsafeBytes { n in try compressor.patch(base: o, target: n, level: patchLevel) } }
            if patch.count + 40 < targetBytes.count {
                bundle.manifestPatch = patch
                bundle.baseManifestDigest = Digest.of(baseBytes)
                bundle.manifestSize = UInt64(targetBytes.count)
            }
        }
        var chunkFiles: [FileSlot] = []
        for slot in slots {
            let lacking = t.chunks[slot.span].filter { !have.contains($0.digest) }
            if lacking.isEmpty { continue }
            var chunkCost = 0
            var seen = Set<Digest>()
            for c in lacking where seen.insert(c.digest).inserted { chunkCost += Int(storedSize(ofChunk: c.digest) ?? UInt64(c.length)) }
            let basePath = t.kind == .file ? "" : slot.path
            if usePatches, let b, let baseFile = baseFiles[basePath],
               baseFile.0 != slot.digest, chunkCost > 512,
               baseFile.1 <= UInt64(FilePatch.maxFileSize), slot.size <= UInt64(FilePatch.maxFileSize),
               let old = try fileBytes(b, path: basePath), let new = try fileBytes(t, path: slot.path) {
                let frame = try old.withUnsafeBytes { o in try new.withUnsafeBytes { n in try compressor.patch(base: o, target: n, level: patchLevel) } }
                if frame.count + 200 < chunkCost {
                    var p = FilePatch()
                    p.path = slot.path; p.basePath = basePath; p.baseDigest = baseFile.0
                    p.targetDigest = slot.digest; p.targetSize = slot.size; p.frame = frame
                    bundle.patches.append(p)
                    continue
                }
            }
            chunkFiles.append(slot)
        }
        for slot in chunkFiles {
            for c in t.chunks[slot.span] where have.insert(c.digest).inserted {
                bundle.chunks.append(ChunkFrame(digest: c.digest, frame: try readChunkFrame(c.digest)))
            }
        }
        return bundle
    }

    /// The target manifest of a delta: as carried, or rebuilt from its patch against this store's
    /// manifest of the base; either way it must describe `bundle.target` and be valid.
    func deltaManifest(_ bundle: DeltaBundle) throws -> BlobManifest {
        var t = bundle.manifest
        if !bundle.manifestPatch.isEmpty {
            guard let baseDigest = bundle.base else {
                throw ContentStoreError.badManifest("delta", "its manifest is a patch but it names no base blob")
            }
            guard bundle.manifestSize <= UInt64(DeltaBundle.maxManifestSize) else {
                throw ContentStoreError.badManifest("delta", "its manifest would be \(bundle.manifestSize) bytes, over the \(DeltaBundle.maxManifestSize)-byte limit")
            }
            let baseBytes = try manifest(for: baseDigest).wireBytes()
            guard Digest.of(baseBytes) == bundle.baseManifestDigest else {
                throw ContentStoreError.badManifest("delta", "this store's manifest of base \(baseDigest) differs from the sender's (other chunking parameters?); ask for a delta without a base")
            }
            let d = decompressors.take()
            defer { decompressors.give(d) }
            let bytes: [UInt8]
            do {
                bytes = try baseBytes.withUnsafeBytes { o in
                    try bundle.manifestPatch.withUnsafeBytes { p in try d.applyPatch(base: o, patch: p, expectedSize: Int(bundle.manifestSize)) }
                }
                t = try BlobManifest(wireBytes: bytes)
            } catch {
                throw ContentStoreError.badManifest("delta", "its manifest patch does not apply to base \(baseDigest) (\(error))")
            }
        }
        guard t.digest == bundle.target else {
            throw ContentStoreError.badManifest("delta", "its manifest describes \(t.digest), the delta is for \(bundle.target)")
        }
        try t.validate()
        return t
    }

    /// Applies a delta: stores each chunk after verifying it, rebuilds patched files from the base
    /// blob (which must be stored here) and verifies each against its digest, then commits the target
    /// manifest — which re-verifies every chunk and the blob's digest. Nothing is visible on failure.
    @discardableResult
    public func applyDelta(_ bundle: DeltaBundle) throws -> BlobManifest {
        let t = try deltaManifest(bundle)
        for c in bundle.chunks { try putChunkFrame(c.frame, digest: c.digest) }
        var produced: [Digest] = []
        defer { endInFlight(produced) }
        if !bundle.patches.isEmpty {
            guard let baseDigest = bundle.base else {
                throw ContentStoreError.badManifest("delta", "it carries patches but names no base blob")
            }
            let b = try manifest(for: baseDigest)
            let decompressor = decompressors.take()
            defer { decompressors.give(decompressor) }
            for p in bundle.patches {
                guard p.targetSize <= UInt64(FilePatch.maxFileSize) else {
                    throw ContentStoreError.badManifest("delta", "patch target \"\(p.path)\" is \(p.targetSize) bytes, over the \(FilePatch.maxFileSize)-byte limit")
                }
                guard let old = try fileBytes(b, path: p.basePath) else {
                    throw ContentStoreError.badManifest("delta", "base \(baseDigest) has no file \"\(p.basePath)\" to patch")
                }
                let new = try old.withUnsafeBytes { o in
                    try p.frame.withUnsafeBytes { f in try decompressor.applyPatch(base: o, patch: f, expectedSize: Int(p.targetSize)) }
                }
                let session = PackSession(store: self)
                let (digest, chunks) = try withSession(session) { try new.withUnsafeBytes { try ingest($0, session: session, progress: nil) } }
                produced += chunks.map(\.digest)
                guard digest == p.targetDigest else {
                    throw ContentStoreError.digestMismatch("patched file \"\(p.path)\"", expected: p.targetDigest, actual: digest)
                }
            }
        }
        try commitBlob(t)
        return t
    }
}
