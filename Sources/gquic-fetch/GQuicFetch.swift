import ArgumentParser
import ContentStore
import Foundation
import MeshCore

/// `gquic-fetch`: put content into a store and get it out again. Each subcommand lives in its own
/// file; a network variant (`get https://…` over HTTP/3) adds its own file and registers here.
@main
struct GQuicFetch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gquic-fetch",
        abstract: "Add, fetch, export and verify content-addressed blobs (files, directory trees, OCI images).",
        discussion: """
        Content is addressed by its sha256 digest, the same ID OCI registries use. A store is a directory
        (--store DIR) holding deduplicated, zstd-compressed FastCDC chunks and one manifest per blob.

        Examples:
          gquic-fetch add --store ~/.gquic ./proton-9.0             # a directory tree -> one digest
          gquic-fetch add --store ~/.gquic oci:./alpine-layout      # every image in an OCI layout
          gquic-fetch get --store ~/.gquic sha256:… -o ./proton-9.0-copy
          gquic-fetch export --store ~/.gquic sha256:… oci:./out && skopeo inspect oci:./out
          gquic-fetch verify --store ~/.gquic                        # fsck; non-zero exit on damage
        """,
        subcommands: [AddCommand.self, GetCommand.self, ExportCommand.self, VerifyCommand.self, GCCommand.self]
    )
}

/// Options every subcommand that touches a local store shares.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The store directory (created if missing).", valueName: "DIR"))
    var store: String

    @Option(name: .long, help: ArgumentHelp("Evict least-recently-used unpinned blobs beyond this size, e.g. 20G, 512M.", valueName: "SIZE"))
    var capacity: String?

    func open() throws -> ContentStore {
        var o = ContentStore.Options()
        if let capacity { o.capacityBytes = try parseSize(capacity) }
        return try ContentStore.open(path: store, options: o)
    }
}

func parseSize(_ text: String) throws -> UInt64 {
    let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var t = text.uppercased()
    if t.hasSuffix("B") { t.removeLast() }
    var mult: UInt64 = 1
    if let last = t.last, let u = units[last] { mult = u; t.removeLast() }
    guard let n = UInt64(t) else { throw ValidationError("size \"\(text)\" is not a number with an optional K, M, G or T suffix") }
    return n * mult
}

func parseDigest(_ text: String) throws -> Digest {
    do { return try Digest(parsing: text) } catch { throw ValidationError("\(error)") }
}

/// Prints `error: …` for store errors (their descriptions say what to do) and exits non-zero.
func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    return ExitCode(1)
}
