import Foundation
import Glibc
import Testing
@testable import ContentStore
import MeshCore

/// Writes a small but real OCI image layout: one layer (a tar made by `tar`), a config, a manifest.
func makeOCILayout(_ dir: String, seed: UInt64) throws -> (manifest: Digest, blobs: [Digest: [UInt8]]) {
    mkdirs(dir + "/blobs/sha256")
    let src = dir + ".src"
    mkdirs(src + "/etc")
    writeFile(src + "/etc/hello", textBytes(50_000, seed: seed))
    let (status, out) = run(["/usr/bin/tar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf", dir + ".tar", "-C", src, "etc"])
    guard status == 0 else { throw ContentStoreError.invalidArgument("tar failed: \(out)") }
    let layer = readFile(dir + ".tar")
    var blobs: [Digest: [UInt8]] = [:]
    func put(_ b: [UInt8]) -> Digest { let d = Digest.of(b); blobs[d] = b; writeFile("\(dir)/blobs/sha256/\(d.hex)", b); return d }
    let layerDigest = put(layer)
    let config = Array("""
    {"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["\(layerDigest)"]}}
    """.utf8)
    let configDigest = put(config)
    let manifest = Array("""
    {"schemaVersion":2,"mediaType":"\(OCIMediaType.imageManifest)","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(configDigest)","size":\(config.count)},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"\(layerDigest)","size":\(layer.count)}]}
    """.utf8)
    let manifestDigest = put(manifest)
    writeFile(dir + "/oci-layout", Array("{\"imageLayoutVersion\":\"1.0.0\"}".utf8))
    writeIndex(dir, digest: manifestDigest.description, size: manifest.count)
    FileIO.removeTree(src); unlink(dir + ".tar")
    return (manifestDigest, blobs)
}

func writeIndex(_ dir: String, digest: String, size: Int) {
    writeFile(dir + "/index.json", Array("""
    {"schemaVersion":2,"manifests":[{"mediaType":"\(OCIMediaType.imageManifest)","digest":"\(digest)","size":\(size),"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}
    """.utf8))
}

@Suite struct OCITests {
    @Test func ociLayoutRoundTripsAndSkopeoReadsTheExport() throws {
        let t = TempDir(); defer { t.cleanup() }
        let (manifest, blobs) = try makeOCILayout(t.sub("layout"), seed: 70)
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let images = try store.importOCILayout(at: t.sub("layout"))
        #expect(images.map(\.digest) == [manifest])
        #expect(images.first?.refName == "v1")
        #expect(Set(images[0].blobs) == Set(blobs.keys))
        #expect(try store.manifest(for: manifest).references.count == 2)
        try store.exportOCILayout(manifest, to: t.sub("out"))
        for (d, bytes) in blobs { #expect(readFile(t.sub("out/blobs/sha256/\(d.hex)")) == bytes) }
        // Exported layout re-imports to the same digests.
        let again = try ContentStore.open(path: t.sub("s2"), options: testOptions(workers: 1))
        #expect(try again.importOCILayout(at: t.sub("out")).map(\.digest) == [manifest])
        if let skopeo = which("skopeo") {
            let (status, out) = run([skopeo, "inspect", "oci:" + t.sub("out")])
            #expect(status == 0, "skopeo inspect failed: \(out)")
            #expect(out.contains(manifest.description))
        } else {
            Issue.record("skopeo is not installed (make deps installs it)")
        }
    }

    @Test func badLayoutsAreRefusedNamingWhatIsWrong() throws {
        let t = TempDir(); defer { t.cleanup() }
        let store = try ContentStore.open(path: t.sub("s"), options: testOptions())
        // Wrong digest: a layer's bytes changed, same size.
        let (_, blobs) = try makeOCILayout(t.sub("a"), seed: 71)
        let layer = blobs.max { $0.value.count < $1.value.count }!
        var damaged = layer.value
        damaged[100] ^= 1
        writeFile(t.sub("a/blobs/sha256/\(layer.key.hex)"), damaged)
        let wrong = expectError(.digestMismatch) { _ = try store.importOCILayout(at: t.sub("a")) }
        #expect(wrong?.digest == layer.key)
        // Size mismatch: the index lies about the manifest's size.
        let (m2, blobs2) = try makeOCILayout(t.sub("b"), seed: 72)
        writeIndex(t.sub("b"), digest: m2.description, size: blobs2[m2]!.count + 1)
        let size = expectError(.sizeMismatch) { _ = try store.importOCILayout(at: t.sub("b")) }
        #expect(size?.description.contains(m2.description) == true)
        // Path traversal in the index.
        _ = try makeOCILayout(t.sub("c"), seed: 73)
        writeIndex(t.sub("c"), digest: "sha256:../../../../etc/passwd", size: 10)
        let traversal = expectError(.pathTraversal) { _ = try store.importOCILayout(at: t.sub("c")) }
        #expect(traversal?.description.contains("../") == true)
        // A blob the manifest lists is missing.
        let (_, blobs4) = try makeOCILayout(t.sub("d"), seed: 74)
        let layer4 = blobs4.max { $0.value.count < $1.value.count }!.key
        unlink(t.sub("d/blobs/sha256/\(layer4.hex)"))
        let missing = expectError(.badOCILayout) { _ = try store.importOCILayout(at: t.sub("d")) }
        #expect(missing?.description.contains(layer4.description) == true)
        // None of the refused images became visible.
        #expect(try store.blobs().allSatisfy { !(try store.manifest(for: $0).mediaType == OCIMediaType.imageManifest) })
    }
}

@Suite struct DeltaTests {
    /// A synthetic build tree: 30 binaries-like files (~3.6 MB).
    static func buildTree(_ root: String) {
        for i in 0..<30 {
            mkdirs(root + "/lib/m\(i % 5)")
            writeFile(root + "/lib/m\(i % 5)/part\(i).so", textBytes(60_000, seed: UInt64(100 + i)) + randomBytes(60_000, seed: UInt64(200 + i)), mode: 0o755)
        }
        writeFile(root + "/version", Array("1\n".utf8))
    }

    @Test func buildTreeDeltaIsSmallAndReproducesV2() throws {
        let t = TempDir(); defer { t.cleanup() }
        let v1 = t.sub("v1"), v2 = t.sub("v2")
        Self.buildTree(v1)
        Self.buildTree(v2)
        // v2: three files edited in place, one added, one deleted, the version bumped.
        for i in [3, 11, 27] {
            var b = readFile(v2 + "/lib/m\(i % 5)/part\(i).so")
            b.replaceSubrange(5000..<5010, with: Array("0123456789".utf8))
            writeFile(v2 + "/lib/m\(i % 5)/part\(i).so", b, mode: 0o755)
        }
        writeFile(v2 + "/lib/m0/new.so", textBytes(40_000, seed: 999))
        unlink(v2 + "/lib/m1/part6.so")
        writeFile(v2 + "/version", Array("2\n".utf8))

        let sender = try ContentStore.open(path: t.sub("sender"), options: testOptions())
        let m1 = try sender.importTree(at: v1)
        let m2 = try sender.importTree(at: v2)
        let v2Stored = m2.distinctChunks.reduce(UInt64(0)) { $0 + sender.storedSize(ofChunk: $1.digest)! }

        // Pure chunk delta against the old manifest.
        let chunkDelta = ChunkDelta(target: m2, receiverHolds: m1)
        #expect(chunkDelta.missing.count > 0)
        #expect(chunkDelta.missingBytes * 5 < m2.size, "chunk delta \(chunkDelta.missingBytes) of \(m2.size)")

        // Hybrid delta (chunks or patches per file), shipped and applied at a receiver holding v1.
        let bundle = try sender.makeDelta(from: m1.digest, to: m2.digest)
        let shipped = bundle.wireBytes()
        #expect(shipped.count * 10 < Int(v2Stored), "delta \(shipped.count) B vs v2 stored \(v2Stored) B")
        // The manifest travels as a patch of v1's: a fraction of its size.
        #expect(!bundle.manifestPatch.isEmpty && bundle.manifestPatch.count * 4 < m2.wireBytes().count)
        let receiver = try ContentStore.open(path: t.sub("receiver"), options: testOptions(workers: 1))
        try receiver.importTree(at: v1)
        let applied = try receiver.applyDelta(try DeltaBundle(wireBytes: shipped))
        #expect(applied.digest == m2.digest)
        try receiver.export(m2.digest, to: t.sub("v2copy"))
        let (status, diff) = run(["/usr/bin/diff", "-r", v2, t.sub("v2copy")])
        #expect(status == 0, "diff: \(diff)")
        #expect(try receiver.verify().isHealthy)

        // A tampered delta is refused and leaves no blob.
        var bad = try DeltaBundle(wireBytes: shipped)
        if !bad.patches.isEmpty { bad.patches[0].frame[bad.patches[0].frame.count / 2] ^= 0xff }
        else { bad.chunks[0].frame[bad.chunks[0].frame.count - 1] ^= 0xff }
        let fresh = try ContentStore.open(path: t.sub("fresh"), options: testOptions(workers: 1))
        try fresh.importTree(at: v1)
        #expect(throws: ContentStoreError.self) { try fresh.applyDelta(bad) }
        #expect(!fresh.hasBlob(m2.digest))
        // So is one whose manifest patch was damaged, or that claims another target.
        var badManifest = try DeltaBundle(wireBytes: shipped)
        badManifest.manifestPatch[badManifest.manifestPatch.count / 2] ^= 0x01
        #expect(expectError(.badManifest) { try fresh.applyDelta(badManifest) } != nil)
        var otherTarget = try DeltaBundle(wireBytes: shipped)
        otherTarget.target = m1.digest
        #expect(expectError(.badManifest) { try fresh.applyDelta(otherTarget) } != nil)
        #expect(!fresh.hasBlob(m2.digest))
    }

    @Test func patchDeltaBeatsChunksForScatteredEditsToOneFile() throws {
        let t = TempDir(); defer { t.cleanup() }
        let old = textBytes(1_000_000, seed: 300)
        var new = old
        for k in stride(from: 1000, to: new.count, by: 20_000) { new[k] ^= 0x20 }   // 50 scattered edits
        let sender = try ContentStore.open(path: t.sub("s"), options: testOptions())
        let a = try sender.importBytes(old), b = try sender.importBytes(new)
        let chunkOnly = try sender.makeDelta(from: a.digest, to: b.digest, usePatches: false)
        let best = try sender.makeDelta(from: a.digest, to: b.digest)
        #expect(best.patches.count == 1)
        #expect(best.wireBytes().count * 4 < chunkOnly.wireBytes().count)
        let receiver = try ContentStore.open(path: t.sub("r"), options: testOptions(workers: 1))
        try receiver.importBytes(old)
        try receiver.applyDelta(best)
        #expect(try receiver.reader(for: b.digest).bytes(0..<b.size) == new)
    }
}
