import ArgumentParser
import ContentStore
import Foundation

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a stored OCI image (manifest or index) and all its blobs as an OCI image layout.",
        discussion: """
        The layout (oci-layout, index.json, blobs/sha256/…) is readable by skopeo, podman and other OCI
        tools, e.g. `skopeo inspect oci:LAYOUT`. LAYOUT must not exist or be an empty directory.
        """
    )

    @OptionGroup var storeOptions: StoreOptions

    @Argument(help: ArgumentHelp("The image manifest or index digest.", valueName: "DIGEST"))
    var digest: String

    @Argument(help: ArgumentHelp("Destination, written as oci:DIR.", valueName: "oci:LAYOUT"))
    var destination: String

    @Option(help: "Tag to record as org.opencontainers.image.ref.name in index.json.")
    var ref: String?

    func validate() throws {
        guard destination.hasPrefix("oci:"), destination.count > 4 else {
            throw ValidationError("the destination must be oci:DIR (an OCI image layout directory), got \"\(destination)\"")
        }
    }

    func run() throws {
        let d = try parseDigest(digest)
        let store = try storeOptions.open()
        let progress = ProgressLine("exporting")
        defer { progress.finish() }
        do { try store.exportOCILayout(d, to: String(destination.dropFirst(4)), refName: ref, progress: progress.handler) } catch { throw fail(error) }
    }
}
