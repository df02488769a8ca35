import Glibc
import MeshCore

extension ContentStore {
    /// Imports a directory tree (a Proton build, a Workshop item) as one tree blob. Deterministic: the
    /// digest depends only on relative paths, types, permission bits, file contents and link targets,
    /// so importing the same tree twice, anywhere, gives the same digest. Refuses device files, FIFOs
    /// and sockets.
    @discardableResult
    public func importTree(at path: String, progress: ProgressHandler? = nil) throws -> BlobManifest {
        var root = path
        while root.count > 1 && root.hasSuffix("/") { root.removeLast() }
        guard FileIO.isDirectory(root) else { throw ContentStoreError.invalidArgument("\(root) is not a directory") }
        var entries: [TreeEntry] = []
        try Self.walk(root: root, relative: "", into: &entries)
        entries.sort { Array($0.path.utf8).lexicographicallyPrecedes(Array($1.path.utf8)) }
        let total = entries.reduce(UInt64(0)) { $0 + $1.size }
        var chunks: [ChunkRef] = []
        var done: UInt64 = 0
        defer { endInFlight(chunks.map(\.digest)) }
        // One pack session for the whole tree: one commit (one pair of fdatasyncs) for all its files.
        let session = PackSession(store: self)
        try withSession(session) {
            for i in entries.indices where entries[i].type == .file {
                let file = try MappedFile(path: root + "/" + entries[i].path)
                guard UInt64(file.size) == entries[i].size else {
                    throw ContentStoreError.sizeMismatch("\(entries[i].path) (it changed during the import)", expected: entries[i].size, actual: UInt64(file.size))
                }
                let (digest, fileChunks) = try ingest(file.buffer, session: session, progress: progress, base: done, total: total)
                entries[i].digest = digest
                chunks += fileChunks
                done += UInt64(file.size)
            }
        }
        var m = BlobManifest()
        m.kind = .tree
        m.entries = entries
        m.chunks = chunks
        m.size = total
        m.digest = TreeListing(entries: entries).digest
        try m.validate()
        try writeManifest(m)
        return m
    }

    private static func walk(root: String, relative: String, into entries: inout [TreeEntry]) throws {
        let dir = relative.isEmpty ? root : root + "/" + relative
        for name in try FileIO.list(dir) {
            let rel = relative.isEmpty ? name : relative + "/" + name
            let full = root + "/" + rel
            var st = stat()
            guard lstat(full, &st) == 0 else { throw ContentStoreError.io("lstat", full) }
            let mode = UInt32(st.st_mode) & 0o7777
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                entries.append(TreeEntry(path: rel, type: .directory, mode: mode))
                try walk(root: root, relative: rel, into: &entries)
            case S_IFREG:
                entries.append(TreeEntry(path: rel, type: .file, mode: mode, size: UInt64(st.st_size)))
            case S_IFLNK:
                var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlink(full, &buf, buf.count - 1)
                guard n >= 0 else { throw ContentStoreError.io("readlink", full) }
                let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                entries.append(TreeEntry(path: rel, type: .symlink, mode: 0, target: target))
            default:
                throw ContentStoreError.invalidArgument("\(full) is not a regular file, directory or symlink; trees may only hold those")
            }
        }
    }

    /// Writes a stored blob out: a file blob to the file `path`, a tree blob to the new directory
    /// `path`. Every chunk is verified as it is read and every file against its digest; the result
    /// appears (by rename) only when complete, so a failure leaves nothing at `path`. `sync` (default:
    /// the store's `durable` option) fsyncs every file before the rename; without it the output is
    /// as durable as any file written by `cp` or a downloader (the store's own copy stays durable).
    public func export(_ digest: Digest, to path: String, progress: ProgressHandler? = nil, sync: Bool? = nil) throws {
        let reader = try reader(for: digest)
        var dest = path
        while dest.count > 1 && dest.hasSuffix("/") { dest.removeLast() }
        let sync = sync ?? options.durable
        switch reader.manifest.kind {
        case .file: try exportFile(reader, to: dest, progress: progress, sync: sync)
        case .tree: try exportTree(reader, to: dest, progress: progress, sync: sync)
        }
    }

    /// Where an export to `dest` is written before it is renamed onto `dest`: next to it (same file
    /// system), hidden, `.NAME.gquic-partial-PID-RAND`.
    public static func partialName(_ dest: String) -> String {
        let (dir, prefix) = partialPrefix(dest)
        return "\(dir)/\(prefix)\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// The directory `partialName(dest)` is in, and what its file name starts with
    /// (`.NAME.gquic-partial-`; the PID and a random number follow, dash-separated).
    public static func partialPrefix(_ dest: String) -> (dir: String, prefix: String) {
        let slash = dest.lastIndex(of: "/")
        let dir = slash.map { String(dest[..<$0]) } ?? "."
        let base = slash.map { String(dest[dest.index(after: $0)...]) } ?? dest
        return (dir.isEmpty ? "/" : dir, ".\(base).gquic-partial-")
    }

    private func exportFile(_ reader: BlobReader, to dest: String, progress: ProgressHandler?, sync: Bool) throws {
        let tmp = ContentStore.partialName(dest)
        let fd = Glibc.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ContentStoreError.io("create", tmp) }
        do {
            try writeVerified(reader, range: 0..<reader.size, expected: reader.manifest.digest, what: "blob", fd: fd, path: tmp, progress: progress, base: 0)
            if sync && fsync(fd) != 0 { throw ContentStoreError.io("fsync", tmp) }
            Glibc.close(fd)
            guard rename(tmp, dest) == 0 else { throw ContentStoreError.io("rename into", dest) }
        } catch {
            Glibc.close(fd); unlink(tmp)
            throw error
        }
    }

    private func writeVerified(_ reader: BlobReader, range: Range<UInt64>, expected: Digest, what: String, fd: Int32, path: String,
                               progress: ProgressHandler?, base: UInt64) throws {
        // One hash pass over the bytes written: chunks are not hashed one by one on the way (the whole
        // hash covers them, and the temp file is used only if it matches). On a mismatch a second,
        // verifying read names the corrupt chunk.
        var h = SHA256Hasher()
        var done = base
        try reader.read(range: range, hashingChunks: false) { piece in
            h.update(piece)
            try FileIO.writeAll(fd: fd, piece, path: path)
            done += UInt64(piece.count)
            progress?(done, reader.size)
        }
        let actual = h.finalize()
        guard actual == expected else {
            try reader.read(range: range) { _ in }
            throw ContentStoreError.digestMismatch(what, expected: expected, actual: actual)
        }
    }

    private func exportTree(_ reader: BlobReader, to dest: String, progress: ProgressHandler?, sync: Bool) throws {
        guard !FileIO.exists(dest) else {
            throw ContentStoreError.invalidArgument("\(dest) already exists; export a tree into a new directory")
        }
        let m = reader.manifest
        let spans = try m.fileChunkSpans()
        let offsets = m.chunkOffsets
        let tmp = ContentStore.partialName(dest)
        try FileIO.makeDirectory(tmp, mode: 0o700)
        do {
            var done: UInt64 = 0
            for (i, e) in m.entries.enumerated() {
                // validate() already refused unsafe paths and entries whose parent is not a directory
                // listed earlier, so nothing here can be written through a symlink or outside `tmp`.
                let full = tmp + "/" + e.path
                switch e.type {
                case .directory:
                    guard mkdir(full, 0o700) == 0 else { throw ContentStoreError.io("mkdir", full) }
                case .symlink:
                    guard symlink(e.target, full) == 0 else { throw ContentStoreError.io("symlink", full) }
                case .file:
                    let fd = Glibc.open(full, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
                    guard fd >= 0 else { throw ContentStoreError.io("create", full) }
                    defer { Glibc.close(fd) }
                    let span = spans[i]!
                    try writeVerified(reader, range: offsets[span.lowerBound]..<offsets[span.upperBound], expected: e.digest!,
                                      what: "file \"\(e.path)\"", fd: fd, path: full, progress: progress, base: done)
                    done += e.size
                    guard fchmod(fd, mode_t(e.mode)) == 0 else { throw ContentStoreError.io("chmod", full) }
                    if sync && fsync(fd) != 0 { throw ContentStoreError.io("fsync", full) }
                }
            }
            // Directory modes last (deepest first), so a read-only directory does not block its children.
            for e in m.entries.reversed() where e.type == .directory {
                guard chmod(tmp + "/" + e.path, mode_t(e.mode)) == 0 else { throw ContentStoreError.io("chmod", tmp + "/" + e.path) }
            }
            guard chmod(tmp, 0o755) == 0 else { throw ContentStoreError.io("chmod", tmp) }
            guard rename(tmp, dest) == 0 else { throw ContentStoreError.io("rename into", dest) }
        } catch {
            FileIO.removeTree(tmp)
            throw error
        }
    }
}
