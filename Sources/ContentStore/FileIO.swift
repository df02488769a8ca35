import Glibc
import MeshCore

/// Thin POSIX helpers: every failure becomes a `ContentStoreError` with the errno and the path.
enum FileIO {
    static func openRead(_ path: String) throws(ContentStoreError) -> Int32 {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ContentStoreError.io("open", path) }
        return fd
    }

    static func fileSize(fd: Int32, path: String) throws(ContentStoreError) -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw ContentStoreError.io("fstat", path) }
        return Int(st.st_size)
    }

    static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Reads a whole file, refusing one larger than `maxSize` before allocating.
    static func readFile(_ path: String, maxSize: Int) throws(ContentStoreError) -> [UInt8] {
        let fd = try openRead(path)
        defer { close(fd) }
        let size = try fileSize(fd: fd, path: path)
        guard size <= maxSize else { throw ContentStoreError.sizeMismatch(path, expected: UInt64(maxSize), actual: UInt64(size)) }
        var out = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            if n < 0 { if errno == EINTR { continue }; throw ContentStoreError.io("read", path) }
            if n == 0 { throw ContentStoreError.sizeMismatch(path, expected: UInt64(size), actual: UInt64(done)) }
            done += n
        }
        return out
    }

    static func writeAll(fd: Int32, _ buf: UnsafeRawBufferPointer, path: String) throws(ContentStoreError) {
        var done = 0
        while done < buf.count {
            let n = write(fd, buf.baseAddress! + done, buf.count - done)
            if n < 0 { if errno == EINTR { continue }; throw ContentStoreError.io("write", path) }
            done += n
        }
    }

    static func fsyncDirectory(_ path: String) throws(ContentStoreError) {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ContentStoreError.io("open directory", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw ContentStoreError.io("fsync directory", path) }
    }

    static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws(ContentStoreError) {
        if mkdir(path, mode) != 0 && errno != EEXIST { throw ContentStoreError.io("mkdir", path) }
    }

    /// Names in a directory (not `.`/`..`), sorted by byte order; empty if it does not exist.
    static func list(_ path: String) throws(ContentStoreError) -> [String] {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return [] }
            throw ContentStoreError.io("opendir", path)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    static func removeTree(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in (try? list(path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    static func modificationTime(_ path: String) -> Int64 {
        var st = stat()
        guard stat(path, &st) == 0 else { return 0 }
        return Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
    }

    /// Disk space a file takes: its allocated blocks (so holes punched in a pack count as freed),
    /// or its size on file systems that report no blocks.
    static func allocatedOrSize(_ path: String) -> UInt64 {
        var st = stat()
        guard stat(path, &st) == 0 else { return 0 }
        return st.st_blocks > 0 ? UInt64(st.st_blocks) * 512 : UInt64(st.st_size)
    }
}

/// Read-only memory map of a whole file (pages are read on demand, so a large import never holds the
/// whole file in memory).
final class MappedFile {
    let path: String
    let size: Int
    private let base: UnsafeMutableRawPointer?

    init(path: String) throws(ContentStoreError) {
        self.path = path
        let fd = try FileIO.openRead(path)
        defer { close(fd) }
        size = try FileIO.fileSize(fd: fd, path: path)
        if size == 0 { base = nil; return }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else { throw ContentStoreError.io("mmap", path) }
        madvise(p, size, MADV_SEQUENTIAL)
        base = p
    }

    deinit { if let base { munmap(base, size) } }

    var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }
}
