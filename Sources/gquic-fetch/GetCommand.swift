import ArgumentParser
import ContentStore
import Foundation

struct GetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Write a stored blob out: a file blob to FILE, a tree blob to a new directory DIR.",
        discussion: """
        Every chunk is verified as it is read and every file against its digest; the output appears only
        once it is complete, so an interrupted or failed get leaves nothing at the -o path.
        """
    )

    @OptionGroup var storeOptions: StoreOptions

    @Argument(help: ArgumentHelp("The blob's digest, sha256:<64 hex>.", valueName: "DIGEST"))
    var digest: String

    @Option(name: .shortAndLong, help: ArgumentHelp("Where to write it (must not exist for a tree).", valueName: "FILE|DIR"))
    var output: String

    func run() throws {
        let d = try parseDigest(digest)
        let store = try storeOptions.open()
        let progress = ProgressLine("getting")
        defer { progress.finish() }
        do { try store.export(d, to: output, progress: progress.handler) } catch { throw fail(error) }
    }
}
