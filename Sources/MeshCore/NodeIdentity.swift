#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import COpenSSLCrypto

/// A node's Ed25519 key pair. The public key's SHA-256 is the `NodeID`; the same key signs the
/// node's TLS certificate (QUICTransport) and its membership messages.
///
/// The private key never leaves this type except as PEM written to a file with mode 0600.
public final class NodeIdentity: @unchecked Sendable {
    // Immutable after init; OpenSSL EVP_PKEY is safe to use for signing from several threads.
    private let pkey: OpaquePointer
    /// The 32-byte raw Ed25519 public key.
    public let publicKey: [UInt8]
    public let nodeID: NodeID

    private init(pkey: OpaquePointer) throws(IdentityError) {
        self.pkey = pkey
        var len = 32
        var pub = [UInt8](repeating: 0, count: 32)
        guard EVP_PKEY_get_raw_public_key(pkey, &pub, &len) == 1, len == 32 else {
            EVP_PKEY_free(pkey)
            throw .openssl("reading the Ed25519 public key", OpenSSLError.lastCode())
        }
        publicKey = pub
        nodeID = NodeID(publicKey: pub)
    }

    deinit { EVP_PKEY_free(pkey) }

    /// A fresh key pair from OpenSSL's CSPRNG.
    public static func generate() throws(IdentityError) -> NodeIdentity {
        guard let ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nil) else {
            throw .openssl("creating an Ed25519 key context", OpenSSLError.lastCode())
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_keygen(ctx, &key) == 1, let key else {
            throw .openssl("generating an Ed25519 key", OpenSSLError.lastCode())
        }
        return try NodeIdentity(pkey: key)
    }

    /// Reads a PKCS#8 PEM private key. It must be Ed25519.
    public static func fromPEM(_ pem: String) throws(IdentityError) -> NodeIdentity {
        let bytes = Array(pem.utf8)
        let key: OpaquePointer? = bytes.withUnsafeBytes { buf in
            guard let bio = BIO_new_mem_buf(buf.baseAddress, Int32(buf.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        }
        guard let key else { throw .notAKey(OpenSSLError.lastCode()) }
        guard EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519 else {
            EVP_PKEY_free(key)
            throw .notEd25519
        }
        return try NodeIdentity(pkey: key)
    }

    /// The private key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    public func privateKeyPEM() throws(IdentityError) -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw .openssl("allocating a memory BIO", 0) }
        defer { BIO_free(bio) }
        guard PEM_write_bio_PrivateKey(bio, pkey, nil, nil, 0, nil, nil) == 1 else {
            throw .openssl("encoding the key as PEM", OpenSSLError.lastCode())
        }
        var data: UnsafeMutablePointer<CChar>?
        let n = gq_BIO_get_mem_data(bio, &data)
        guard let data, n > 0 else { throw .openssl("reading the PEM buffer", 0) }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: n), as: UTF8.self)
    }

    /// Signs `message` (Ed25519, 64-byte signature).
    public func sign(_ message: some Collection<UInt8>) -> [UInt8] {
        let msg = Array(message)
        guard let md = EVP_MD_CTX_new() else { fatalError("EVP_MD_CTX_new failed: out of memory") }
        defer { EVP_MD_CTX_free(md) }
        var sig = [UInt8](repeating: 0, count: 64)
        var sigLen = 64
        guard EVP_DigestSignInit(md, nil, nil, nil, pkey) == 1,
              EVP_DigestSign(md, &sig, &sigLen, msg, msg.count) == 1, sigLen == 64
        else { fatalError("Ed25519 signing failed: \(OpenSSLError.drain())") }
        return sig
    }

    /// Checks an Ed25519 signature by the holder of `publicKey`.
    public static func verify(signature: [UInt8], of message: some Collection<UInt8>, publicKey: [UInt8]) -> Bool {
        guard signature.count == 64, publicKey.count == 32 else { return false }
        guard let key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, publicKey, 32) else {
            _ = OpenSSLError.lastCode()
            return false
        }
        defer { EVP_PKEY_free(key) }
        guard let md = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(md) }
        let msg = Array(message)
        let ok = EVP_DigestVerifyInit(md, nil, nil, nil, key) == 1
            && EVP_DigestVerify(md, signature, 64, msg, msg.count) == 1
        if !ok { _ = OpenSSLError.lastCode() }
        return ok
    }

    // MARK: Key files

    /// Loads the key at `path`. Refuses a file that group or others can read or write, since anyone
    /// who reads it can impersonate this node.
    public static func load(path: String) throws(IdentityError) -> NodeIdentity {
        var st = stat()
        guard stat(path, &st) == 0 else { throw .file(path, "cannot stat", errno) }
        let mode = st.st_mode & 0o777
        guard mode & 0o077 == 0 else { throw .permissions(path, mode: mode) }
        guard let f = fopen(path, "r") else { throw .file(path, "cannot open", errno) }
        defer { fclose(f) }
        var data = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n == 0 { break }
            data += buf[0..<n]
            guard data.count < 64 * 1024 else { throw .notAKey(0) }
        }
        return try fromPEM(String(decoding: data, as: UTF8.self))
    }

    /// Writes the key to `path` with mode 0600, atomically (temp file, fsync, rename). Refuses to
    /// overwrite an existing file.
    public func save(path: String) throws(IdentityError) {
        if access(path, F_OK) == 0 { throw .file(path, "refusing to overwrite existing key file", EEXIST) }
        let pem = Array(try privateKeyPEM().utf8)
        let tmp = path + ".tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .file(tmp, "cannot create", errno) }
        var ok = pem.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) == $0.count }
        ok = ok && fchmod(fd, 0o600) == 0 && fsync(fd) == 0
        let err = errno
        close(fd)
        guard ok else { unlink(tmp); throw .file(tmp, "cannot write", err) }
        guard rename(tmp, path) == 0 else { let e = errno; unlink(tmp); throw .file(path, "cannot rename into place", e) }
        FileSystemSync.syncParentDirectory(of: path)
    }
}

enum FileSystemSync {
    /// fsyncs the directory holding `path` so a rename into it survives a crash.
    static func syncParentDirectory(of path: String) {
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let fd = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }
}

/// Why an identity key could not be made, read or written.
public struct IdentityError: Error, Hashable, CustomStringConvertible {
    private enum Kind: Hashable {
        case openssl(String)
        case notAKey
        case notEd25519
        case permissions(path: String, mode: UInt32)
        case file(path: String, what: String)
    }
    private let kind: Kind
    /// OpenSSL's packed error code (`ERR_get_error`), when OpenSSL reported one.
    public let opensslCode: UInt?
    /// The `errno` of a failed system call, when there was one.
    public let errnoCode: Int32?

    static func openssl(_ what: String, _ code: UInt) -> IdentityError { .init(kind: .openssl(what), opensslCode: code, errnoCode: nil) }
    static func notAKey(_ code: UInt) -> IdentityError { .init(kind: .notAKey, opensslCode: code, errnoCode: nil) }
    static let notEd25519 = IdentityError(kind: .notEd25519, opensslCode: nil, errnoCode: nil)
    static func permissions(_ path: String, mode: mode_t) -> IdentityError {
        .init(kind: .permissions(path: path, mode: UInt32(mode)), opensslCode: nil, errnoCode: nil)
    }
    static func file(_ path: String, _ what: String, _ err: Int32) -> IdentityError {
        .init(kind: .file(path: path, what: what), opensslCode: nil, errnoCode: err)
    }

    /// True when the key file was refused because others may read it.
    public var isPermissionProblem: Bool { if case .permissions = kind { true } else { false } }

    public var description: String {
        switch kind {
        case .openssl(let what): return "OpenSSL failed \(what) (error \(opensslCode ?? 0))"
        case .notAKey: return "not a PEM private key"
        case .notEd25519: return "the key is not Ed25519; GQUIC node identities are Ed25519 keys"
        case .permissions(let path, let mode):
            return "identity key \(path) has mode \(String(mode, radix: 8)) and may be read by group or others; "
                + "run `chmod 600 \(path)` (and check who else has seen it)"
        case .file(let path, let what):
            let reason = errnoCode.map { String(cString: strerror($0)) } ?? "unknown error"
            return "\(what) \(path): \(reason)"
        }
    }
}
