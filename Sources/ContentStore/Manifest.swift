import MeshCore

/// One chunk of a blob: its SHA-256 (of the uncompressed bytes) and its length.
public struct ChunkRef: WireFields, Hashable, Sendable {
    public var digest = Digest(unchecked: [UInt8](repeating: 0, count: 32))
    public var length: UInt32 = 0

    public init() {}
    public init(digest: Digest, length: Int) { self.digest = digest; self.length = UInt32(length) }

    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.value(&digest)
        try c.uint(&length)
    }
}

/// What a blob is: a single file's bytes, or a directory tree.
public enum BlobKind: UInt8, Sendable, WireCodable {
    case file = 0
    case tree = 1

    public func encode(to writer: inout WireWriter) { writer.u8(rawValue) }
    public init(from reader: inout WireReader) throws(WireError) {
        let at = reader.position
        let raw = try reader.u8()
        guard let k = BlobKind(rawValue: raw) else { throw .malformed("unknown blob kind \(raw)", at: at) }
        self = k
    }
}

/// One entry of a directory tree. Only content goes in: path, type, permission bits, size, the file's
/// SHA-256 or the link target — never times, owners or inode numbers, so the same tree imported twice
/// (or on two machines) has the same digest.
public struct TreeEntry: WireFields, Hashable, Sendable {
    public enum EntryType: UInt8, Sendable, WireCodable {
        case file = 0, directory = 1, symlink = 2
        public func encode(to writer: inout WireWriter) { writer.u8(rawValue) }
        public init(from reader: inout WireReader) throws(WireError) {
            let at = reader.position
            let raw = try reader.u8()
            guard let t = EntryType(rawValue: raw) else { throw .malformed("unknown tree entry type \(raw)", at: at) }
            self = t
        }
    }

    public static let maxPathLength = 4096

    /// Relative path with `/` separators, no `.`/`..`/empty components.
    public var path = ""
    public var type = EntryType.file
    /// Permission bits (`mode & 0o7777`); 0 for symlinks.
    public var mode: UInt32 = 0
    /// File size in bytes (0 for directories and symlinks).
    public var size: UInt64 = 0
    /// SHA-256 of a file's content (nil for directories and symlinks).
    public var digest: Digest?
    /// A symlink's target ("" otherwise). Stored verbatim; export never follows it.
    public var target = ""

    public init() {}
    public init(path: String, type: EntryType, mode: UInt32, size: UInt64 = 0, digest: Digest? = nil, target: String = "") {
        self.path = path; self.type = type; self.mode = mode; self.size = size; self.digest = digest; self.target = target
    }

    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.string(&path, max: TreeEntry.maxPathLength)
        try c.value(&type)
        try c.uint(&mode)
        try c.uint(&size)
        try c.optional(&digest)
        try c.string(&target, max: TreeEntry.maxPathLength)
    }
}

/// The description of one stored blob: its digest, what it is, and its chunks in order.
///
/// - A **file** blob's digest is the SHA-256 of its bytes (so an OCI blob keeps its OCI digest), and
///   its chunks concatenate to those bytes.
/// - A **tree** blob's digest is the SHA-256 of its canonical listing (`TreeListing`, the entries
///   sorted by path); its chunks are each regular file's chunks, file after file in entry order. A
///   chunk never spans two files, so each file's chunks are the next ones whose lengths add up to its
///   size. Range reads on a tree address that concatenation of file contents.
/// - `references` are other blobs this one needs (an OCI image manifest's config and layers): a blob
///   is never evicted while a blob that references it is present.
///
/// Encoded with MeshCore's wire codec; decoding bounds every count (see the limits below).
public struct BlobManifest: WireFields, Hashable, Sendable {
    public static let formatVersion: UInt8 = 1
    /// 16 Mi chunks: 1 TiB at the default 64 KiB average.
    public static let maxChunks = 1 << 24
    public static let maxEntries = 1 << 20
    public static let maxReferences = 4096
    public static let maxMediaTypeLength = 255

    public var version: UInt8 = BlobManifest.formatVersion
    public var digest = Digest(unchecked: [UInt8](repeating: 0, count: 32))
    public var kind = BlobKind.file
    /// Total content bytes: the file's size, or the sum of a tree's file sizes.
    public var size: UInt64 = 0
    /// The OCI media type when the blob came from an image layout ("" otherwise).
    public var mediaType = ""
    public var chunks: [ChunkRef] = []
    public var entries: [TreeEntry] = []
    public var references: [Digest] = []

    public init() {}

    public mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
        try c.uint(&version)
        if c.isDecoding, version != BlobManifest.formatVersion {
            throw .malformed("manifest format version \(version) is not supported (this build reads \(BlobManifest.formatVersion))", at: 0)
        }
        try c.value(&digest)
        try c.value(&kind)
        try c.uint(&size)
        try c.string(&mediaType, max: BlobManifest.maxMediaTypeLength)
        try c.array(&chunks, max: BlobManifest.maxChunks)
        try c.array(&entries, max: BlobManifest.maxEntries)
        try c.array(&references, max: BlobManifest.maxReferences)
    }

    /// Distinct chunk digests, in first-use order.
    public var distinctChunks: [ChunkRef] {
        var seen = Set<Digest>()
        return chunks.filter { seen.insert($0.digest).inserted }
    }

    /// Byte offset where each chunk starts, plus the total at the end (`chunks.count + 1` values).
    public var chunkOffsets: [UInt64] {
        var out = [UInt64](); out.reserveCapacity(chunks.count + 1)
        var at: UInt64 = 0
        for c in chunks { out.append(at); at += UInt64(c.length) }
        out.append(at)
        return out
    }

    /// For a tree: the chunk index range of each regular-file entry, keyed by entry index.
    /// Throws if the chunk lengths do not line up with the file sizes.
    public func fileChunkSpans() throws(ContentStoreError) -> [Int: Range<Int>] {
        var spans: [Int: Range<Int>] = [:]
        var next = 0
        for (i, e) in entries.enumerated() where e.type == .file {
            var sum: UInt64 = 0
            let start = next
            while sum < e.size {
                guard next < chunks.count else { throw .badManifest(digest.description, "file \"\(e.path)\" runs past the last chunk") }
                sum += UInt64(chunks[next].length)
                next += 1
            }
            guard sum == e.size else { throw .badManifest(digest.description, "chunks of \"\(e.path)\" add up to \(sum) bytes, not its size \(e.size)") }
            spans[i] = start..<next
        }
        guard next == chunks.count else { throw .badManifest(digest.description, "\(chunks.count - next) chunks are not part of any file") }
        return spans
    }

    /// Checks everything that can be checked without the chunk data: chunk lengths, sizes, a tree's
    /// paths and its listing digest. `commitBlob` and every manifest read run this.
    public func validate() throws(ContentStoreError) {
        let what = digest.description
        var total: UInt64 = 0
        for c in chunks {
            guard c.length > 0, Int(c.length) <= ChunkingParameters.largestAllowedChunk else {
                throw .badManifest(what, "chunk \(c.digest) has length \(c.length), outside 1…\(ChunkingParameters.largestAllowedChunk)")
            }
            total += UInt64(c.length)
        }
        guard total == size else { throw .badManifest(what, "chunks add up to \(total) bytes but the manifest says \(size)") }
        switch kind {
        case .file:
            guard entries.isEmpty else { throw .badManifest(what, "a file blob has tree entries") }
        case .tree:
            try TreeListing.checkEntries(entries)
            _ = try fileChunkSpans()
            var fileTotal: UInt64 = 0
            for e in entries where e.type == .file { fileTotal += e.size }
            guard fileTotal == size else { throw .badManifest(what, "file sizes add up to \(fileTotal), not \(size)") }
            let listing = TreeListing(entries: entries).digest
            guard listing == digest else { throw .digestMismatch("tree listing of \(what)", expected: digest, actual: listing) }
        }
    }
}

/// The canonical bytes a tree's digest is computed over: a domain-separating magic line, then the
/// entries (sorted by the byte order of their paths) in the wire codec.
public struct TreeListing: Sendable {
    public static let magic = Array("gquic-tree-v1\n".utf8)
    public var entries: [TreeEntry]

    public init(entries: [TreeEntry]) { self.entries = entries }

    public var bytes: [UInt8] {
        var w = WireWriter(reservingCapacity: 64 * entries.count + 32)
        w.raw(TreeListing.magic)
        w.varint(UInt64(entries.count))
        for e in entries { e.encode(to: &w) }
        return w.bytes
    }

    public var digest: Digest { Digest.of(bytes) }

    /// A safe relative path: non-empty components, none `.` or `..`, no NUL, not absolute.
    public static func checkRelativePath(_ path: String) throws(ContentStoreError) {
        guard !path.isEmpty, !path.hasPrefix("/") else { throw .pathTraversal(path, "tree paths must be relative and non-empty") }
        guard !path.utf8.contains(0) else { throw .pathTraversal(path, "tree paths must not contain NUL") }
        for comp in path.split(separator: "/", omittingEmptySubsequences: false) {
            guard !comp.isEmpty, comp != ".", comp != ".." else {
                throw .pathTraversal(path, "component \"\(comp)\" is not allowed (no empty, \".\" or \"..\" components)")
            }
        }
    }

    /// Paths safe and strictly sorted (so unique), every parent a directory entry listed before it,
    /// file/link fields consistent.
    static func checkEntries(_ entries: [TreeEntry]) throws(ContentStoreError) {
        var dirs = Set<String>()
        var previous: [UInt8]? = nil
        for e in entries {
            try checkRelativePath(e.path)
            let p = Array(e.path.utf8)
            if let prev = previous, !prev.lexicographicallyPrecedes(p) {
                throw .badManifest("tree", "entries are not strictly sorted by path at \"\(e.path)\"")
            }
            previous = p
            if let slash = e.path.lastIndex(of: "/") {
                let parent = String(e.path[..<slash])
                guard dirs.contains(parent) else {
                    throw .pathTraversal(e.path, "its parent \"\(parent)\" is not a directory of the tree")
                }
            }
            switch e.type {
            case .directory:
                dirs.insert(e.path)
                guard e.digest == nil, e.size == 0 else { throw .badManifest("tree", "directory \"\(e.path)\" has content") }
            case .file:
                guard e.digest != nil else { throw .badManifest("tree", "file \"\(e.path)\" has no digest") }
            case .symlink:
                guard !e.target.isEmpty, !e.target.utf8.contains(0), e.digest == nil, e.size == 0 else {
                    throw .badManifest("tree", "symlink \"\(e.path)\" has an empty or invalid target")
                }
            }
        }
    }
}

/// Chunk file format on disk: `encoding (u8) | raw length (varint) | payload`, where encoding 0 is
/// the raw bytes and 1 is one zstd frame. The chunk's name is the SHA-256 of the raw bytes.
enum ChunkEncoding: UInt8 {
    case raw = 0
    case zstd = 1
}
