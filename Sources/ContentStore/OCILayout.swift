import Foundation
import Glibc
import MeshCore

/// OCI image layout import and export (image-spec v1.1 `image-layout.md`): an `oci-layout` file,
/// an `index.json`, and content-addressed `blobs/sha256/<hex>` files.
public enum OCIMediaType {
    public static let imageManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let imageIndex = "application/vnd.oci.image.index.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"

    static func isIndex(_ t: String) -> Bool { t == imageIndex || t == dockerManifestList }
    static func isManifest(_ t: String) -> Bool { t == imageManifest || t == dockerManifest }
}

/// A descriptor as it appears in `index.json` and image manifests.
public struct OCIDescriptor: Codable, Hashable, Sendable {
    public var mediaType: String?
    public var digest: String
    public var size: Int64
    public var annotations: [String: String]?

    public init(mediaType: String?, digest: String, size: Int64, annotations: [String: String]? = nil) {
        self.mediaType = mediaType; self.digest = digest; self.size = size; self.annotations = annotations
    }

    /// `org.opencontainers.image.ref.name`, the tag an image layout gives a manifest.
    public var refName: String? { annotations?["org.opencontainers.image.ref.name"] }
}

/// The fields of an image index or image manifest that the layout walk needs.
struct OCIDocument: Decodable {
    var mediaType: String?
    var manifests: [OCIDescriptor]?
    var config: OCIDescriptor?
    var layers: [OCIDescriptor]?
}

/// One image (manifest or index) found at the top of an imported layout's `index.json`.
public struct OCIImportedImage: Sendable {
    public let digest: Digest
    public let mediaType: String
    public let refName: String?
    /// Every blob stored for this image (manifests, configs, layers), the image's own digest last.
    public let blobs: [Digest]
}

extension ContentStore {
    static let maxJSONSize = 4 << 20
    static let maxOCIDepth = 4

    /// Imports an OCI image layout directory. Every descriptor's digest must be `sha256:<64 hex>`
    /// (anything else, such as `sha256:../../etc`, is refused as a path traversal), every blob must be a
    /// regular file under `blobs/sha256/` whose size and SHA-256 match its descriptor, and every blob a
    /// manifest or index names must be present. Each blob is stored under its OCI digest; an image
    /// manifest references its config and layers, an index its manifests, so they stay together.
    public func importOCILayout(at path: String, progress: ProgressHandler? = nil) throws -> [OCIImportedImage] {
        var dir = path
        while dir.count > 1 && dir.hasSuffix("/") { dir.removeLast() }
        let layoutText = try readLayoutJSON(dir + "/oci-layout", what: "oci-layout")
        guard let layout = try? JSONSerialization.jsonObject(with: Data(layoutText)) as? [String: Any],
              let version = layout["imageLayoutVersion"] as? String else {
            throw ContentStoreError.badOCILayout("oci-layout", "it is not a JSON object with an imageLayoutVersion")
        }
        guard version.hasPrefix("1.") else { throw ContentStoreError.badOCILayout("oci-layout", "imageLayoutVersion \(version) is not 1.x") }
        let index = try decodeDocument(try readLayoutJSON(dir + "/index.json", what: "index.json"), what: "index.json")
        guard let manifests = index.manifests else { throw ContentStoreError.badOCILayout("index.json", "it has no \"manifests\" array") }
        var images: [OCIImportedImage] = []
        var stored: [Digest: [Digest]] = [:]
        for (i, desc) in manifests.enumerated() {
            var blobs: [Digest] = []
            let d = try importDescriptor(desc, layout: dir, what: "index.json manifests[\(i)]", depth: 0, stored: &stored, blobs: &blobs, progress: progress)
            images.append(OCIImportedImage(digest: d, mediaType: desc.mediaType ?? "", refName: desc.refName, blobs: blobs))
        }
        return images
    }

    private func readLayoutJSON(_ path: String, what: String) throws -> [UInt8] {
        var st = stat()
        guard lstat(path, &st) == 0 else { throw ContentStoreError.badOCILayout(what, "\(path) is missing") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ContentStoreError.pathTraversal(path, "\(what) must be a regular file, not a link or directory") }
        guard st.st_size <= Self.maxJSONSize else { throw ContentStoreError.badOCILayout(what, "it is \(st.st_size) bytes, over the \(Self.maxJSONSize)-byte limit") }
        return try FileIO.readFile(path, maxSize: Self.maxJSONSize)
    }

    private func decodeDocument(_ bytes: [UInt8], what: String) throws -> OCIDocument {
        do { return try JSONDecoder().decode(OCIDocument.self, from: Data(bytes)) } catch {
            throw ContentStoreError.badOCILayout(what, "it is not a valid OCI JSON document (\(error))")
        }
    }

    /// Checks a descriptor's digest text and size, refusing anything that could name a path.
    static func parseDescriptorDigest(_ desc: OCIDescriptor, what: String) throws -> Digest {
        let text = desc.digest
        if text.contains("/") || text.contains("..") || text.contains("\0") {
            throw ContentStoreError.pathTraversal(text, "digest of \(what) would point outside blobs/")
        }
        let d: Digest
        do { d = try Digest(parsing: text) } catch {
            throw ContentStoreError.badOCILayout(what, "\(error)")
        }
        guard desc.size >= 0 else { throw ContentStoreError.badOCILayout(what, "negative size \(desc.size)") }
        return d
    }

    private func importDescriptor(_ desc: OCIDescriptor, layout: String, what: String, depth: Int,
                                  stored: inout [Digest: [Digest]], blobs: inout [Digest], progress: ProgressHandler?) throws -> Digest {
        let digest = try Self.parseDescriptorDigest(desc, what: what)
        if let done = stored[digest] { blobs += done; return digest }
        guard depth <= Self.maxOCIDepth else { throw ContentStoreError.badOCILayout(what, "indexes nest deeper than \(Self.maxOCIDepth) levels") }
        let path = "\(layout)/blobs/sha256/\(digest.hex)"
        var st = stat()
        guard lstat(path, &st) == 0 else { throw ContentStoreError.badOCILayout(what, "blob \(digest) is missing (no \(path))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ContentStoreError.pathTraversal(path, "blob \(digest) of \(what) is not a regular file") }
        guard UInt64(st.st_size) == UInt64(desc.size) else {
            throw ContentStoreError.sizeMismatch("blob \(digest) of \(what)", expected: UInt64(desc.size), actual: UInt64(st.st_size))
        }
        let mediaType = desc.mediaType ?? ""
        var references: [Digest] = []
        var children: [Digest] = []
        if OCIMediaType.isIndex(mediaType) || OCIMediaType.isManifest(mediaType) {
            let bytes = try FileIO.readFile(path, maxSize: Self.maxJSONSize)
            let actual = Digest.of(bytes)
            guard actual == digest else { throw ContentStoreError.digestMismatch("blob of \(what)", expected: digest, actual: actual) }
            let doc = try decodeDocument(bytes, what: "\(what) (\(digest.short))")
            var subs: [(OCIDescriptor, String)] = []
            if OCIMediaType.isIndex(mediaType) {
                for (i, m) in (doc.manifests ?? []).enumerated() { subs.append((m, "\(digest.short) manifests[\(i)]")) }
            } else {
                guard let config = doc.config else { throw ContentStoreError.badOCILayout(what, "image manifest \(digest) has no config") }
                subs.append((config, "\(digest.short) config"))
                for (i, l) in (doc.layers ?? []).enumerated() { subs.append((l, "\(digest.short) layers[\(i)]")) }
            }
            for (sub, subWhat) in subs {
                let child = try importDescriptor(sub, layout: layout, what: subWhat, depth: depth + 1, stored: &stored, blobs: &children, progress: progress)
                if !references.contains(child) { references.append(child) }
            }
        }
        _ = try importFile(at: path, expectedDigest: digest, expectedSize: UInt64(desc.size), mediaType: mediaType,
                           references: references, progress: progress)
        children.append(digest)
        stored[digest] = children
        blobs += children
        return digest
    }

    /// Writes a stored image manifest or index, and every blob it needs, as a new OCI image layout
    /// directory that `skopeo inspect oci:DIR` and other OCI tools read. Every blob is verified as it is
    /// written; the directory appears (by rename) only when complete.
    public func exportOCILayout(_ digest: Digest, to path: String, refName: String? = nil, progress: ProgressHandler? = nil) throws {
        var dest = path
        while dest.count > 1 && dest.hasSuffix("/") { dest.removeLast() }
        let m = try manifest(for: digest)
        guard OCIMediaType.isManifest(m.mediaType) || OCIMediaType.isIndex(m.mediaType) else {
            throw ContentStoreError.invalidArgument("blob \(digest) is not an OCI image manifest or index (media type \"\(m.mediaType)\"); use get to export plain blobs")
        }
        if FileIO.exists(dest) {
            guard FileIO.isDirectory(dest), try FileIO.list(dest).isEmpty else {
                throw ContentStoreError.invalidArgument("\(dest) exists and is not an empty directory")
            }
            rmdir(dest)
        }
        let tmp = dest + ".gquic-partial-\(getpid())"
        FileIO.removeTree(tmp)
        try FileIO.makeDirectory(tmp)
        do {
            try FileIO.makeDirectory(tmp + "/blobs")
            try FileIO.makeDirectory(tmp + "/blobs/sha256")
            var seen = Set<Digest>()
            var queue = [digest]
            while let d = queue.popLast() {
                guard seen.insert(d).inserted else { continue }
                let bm = try manifest(for: d)
                guard bm.kind == .file else { throw ContentStoreError.badOCILayout(d.description, "an OCI blob must be a file blob") }
                try export(d, to: "\(tmp)/blobs/sha256/\(d.hex)", progress: progress)
                queue += bm.references
            }
            try writePlain(tmp + "/oci-layout", Array("{\"imageLayoutVersion\":\"1.0.0\"}".utf8))
            var annotations: [String: String]? = nil
            if let refName { annotations = ["org.opencontainers.image.ref.name": refName] }
            let index = OCIIndexOut(manifests: [OCIDescriptor(mediaType: m.mediaType, digest: digest.description, size: Int64(m.size), annotations: annotations)])
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            try writePlain(tmp + "/index.json", Array(try enc.encode(index)))
            guard rename(tmp, dest) == 0 else { throw ContentStoreError.io("rename into", dest) }
        } catch {
            FileIO.removeTree(tmp)
            throw error
        }
    }

    private func writePlain(_ path: String, _ bytes: [UInt8]) throws {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ContentStoreError.io("create", path) }
        defer { Glibc.close(fd) }
        try bytes.withUnsafeBytes { try FileIO.writeAll(fd: fd, $0, path: path) }
        if options.durable && fsync(fd) != 0 { throw ContentStoreError.io("fsync", path) }
    }
}

struct OCIIndexOut: Encodable {
    var schemaVersion = 2
    var mediaType = OCIMediaType.imageIndex
    var manifests: [OCIDescriptor]
}
