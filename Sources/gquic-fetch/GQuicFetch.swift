import ArgumentParser
import ContentStore
import Foundation
import MeshCore

/// `gquic-fetch`: put content into a store and get it out again. Each subcommand lives in its own
/// file; a network variant (`get https://…` over HTTP/3) adds its own file and registers here.
@main
struct GQuicFetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gquic-fetch",
        abstract: "Add, fetch, export and verify content-addressed blobs (files, directory trees, OCI images).",
        discussion: """
        Content is addressed by its sha256 digest, the same ID OCI registries use.

        Without --store, add/get/ls talk to the local gquic-peer daemon (found through --data DIR or
        $GQUIC_DATA, or --control SOCKET): `add` imports and announces to the cluster, `get` pulls the
        blob from every peer that holds it, with a progress bar. With --store DIR they work on a local
        store directory directly (no daemon, no network).

          gquic-fetch add ./layer.tar                                # through the daemon
          gquic-fetch get sha256:… -o ./layer.tar                   # from the mesh
          gquic-fetch ls
          gquic-fetch add oci:./alpine-layout                         # images, named cluster-wide
          gquic-fetch pull alpine:3.20 -o ./alpine                  # an image into an OCI layout
          gquic-fetch get https://127.0.0.1:4433/big.bin -o big.bin --insecure   # any HTTP/3 server

        Exit codes: 0 success; 1 a store or verification error; 64 bad arguments; 69 the daemon is not
        running; 74 a local I/O error; 75 nothing could be fetched (no peer holds it, or it stalled).

        Local stores:
          gquic-fetch add --store ~/.gquic ./proton-9.0             # a directory tree -> one digest
          gquic-fetch add --store ~/.gquic oci:./alpine-layout      # every image in an OCI layout
          gquic-fetch get --store ~/.gquic sha256:… -o ./proton-9.0-copy
          gquic-fetch export --store ~/.gquic sha256:… oci:./out && skopeo inspect oci:./out
          gquic-fetch verify --store ~/.gquic                        # fsck; non-zero exit on damage
        """,
        subcommands: [AddCommand.self, GetCommand.self, PullCommand.self, ListCommand.self, RefsCommand.self, ExportCommand.self, VerifyCommand.self, GCCommand.self],
        helpNames: [.short, .long]
    )
}

/// Options every subcommand that touches a local store shares.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("A local store directory (created if missing); without it, add/get/ls use the daemon.", valueName: "DIR"))
    var store: String?

    @Option(name: .long, help: ArgumentHelp("Evict least-recently-used unpinned blobs beyond this size, e.g. 20G, 512M.", valueName: "SIZE"))
    var capacity: String?

    func open() throws -> ContentStore {
        var o = ContentStore.Options()
        if let capacity { o.capacityBytes = try parseSize(capacity) }
        guard let store else { throw ValidationError("this command works on a local store: give --store DIR") }
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
