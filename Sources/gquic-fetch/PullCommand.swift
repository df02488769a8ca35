import ArgumentParser
import Foundation
import MeshCore

/// `gquic-fetch pull`: an OCI image from the mesh into a local OCI image layout directory.
struct PullCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Pull an OCI image (manifest or index, config, layers) from the mesh into an OCI layout.",
        discussion: """
        REF is an image reference name that some node added with `gquic-fetch add oci:LAYOUT` (the
        org.opencontainers.image.ref.name of its index.json, e.g. alpine:3.20; NAME alone means
        NAME:latest), or the digest of an image manifest or index. `gquic-fetch refs` lists the names
        the cluster knows.

        The local daemon fetches the image's root document, then everything it references (an index's
        manifests, a manifest's config and layers), all at once from every peer that holds them, each
        verified chunk by chunk; then it writes the layout, which appears only when complete:

          gquic-fetch pull alpine:3.20 -o ./alpine          # then: skopeo inspect oci:./alpine
          gquic-fetch pull sha256:… -o oci:./img --json

        Exit codes as for get: 69 the daemon is not running, 75 the image or one of its blobs could not
        be fetched, 1 the layout could not be written.
        """
    )

    @OptionGroup var daemon: DaemonOptions

    @Argument(help: ArgumentHelp("An image reference name known to the cluster, or a sha256: digest.", valueName: "REF"))
    var ref: String

    @Option(name: .shortAndLong, help: ArgumentHelp("The OCI layout directory to write (must not exist, or be empty); oci: prefix optional.", valueName: "DIR"))
    var output: String

    @Option(help: ArgumentHelp("The org.opencontainers.image.ref.name to record in index.json (default: REF when it is a name).", valueName: "NAME"))
    var tag: String?

    @Flag(help: "Print a JSON summary instead of progress and a summary line.")
    var json = false

    func run() throws {
        let dir = output.hasPrefix("oci:") ? String(output.dropFirst(4)) : output
        guard !dir.isEmpty else { throw ValidationError("-o needs a directory") }
        do {
            let client = daemon.client
            let root = try client.call("GET", "/v1/resolve?ref=\(percentEncode(ref))", as: ImageRefInfo.self)
            let digest = try parseDigest(root.digest)
            let isName = (try? Digest(parsing: ref)) == nil
            var export = "&format=oci"
            if let name = tag ?? (isName ? ref : nil) { export += "&ref=\(percentEncode(name))" }
            // The daemon fetches the root document and, with it, every blob it references; the
            // progress it reports covers them all, and the root is done only when all are in.
            try daemonGet(client, digest: digest, output: dir, json: json, exportQuery: export,
                          label: isName ? "\(ref) (\(digest))" : nil)
        } catch let e as DaemonError {
            FileHandle.standardError.write(Data("error: \(e.description)\n".utf8))
            throw ExitCode(e.code)
        }
    }
}

/// `gquic-fetch refs`: the image reference names the cluster knows.
struct RefsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refs", abstract: "List the OCI image reference names known in the cluster (for pull).")
    @OptionGroup var daemon: DaemonOptions
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() throws {
        do {
            let refs = try daemon.client.call("GET", "/v1/refs", as: [ImageRefInfo].self)
            if json {
                try printJSON(refs)
                return
            }
            if refs.isEmpty { print("(no image references; add one with `gquic-fetch add oci:LAYOUT`)"); return }
            let width = refs.map(\.name.count).max() ?? 0
            for r in refs { print("\(r.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(r.digest)") }
        } catch let e as DaemonError {
            FileHandle.standardError.write(Data("error: \(e.description)\n".utf8))
            throw ExitCode(e.code)
        }
    }
}

struct ImageRefInfo: Codable { var name: String; var digest: String }
struct AddedImageInfo: Codable { var digest: String; var ref: String?; var media_type: String; var blobs: [String] }

