import ArgumentParser
import ContentStore
import Foundation
import MeshCore
import QUICTransport

struct GetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Fetch a blob from the mesh (or a local store, or an HTTP/3 URL) and write it out.",
        discussion: """
        gquic-fetch get DIGEST -o OUT             through the local daemon: pulled from every peer that
                                                 holds it, verified chunk by chunk, with a progress bar
        gquic-fetch get --store DIR DIGEST -o OUT from a local store directory
        gquic-fetch get https://HOST:PORT/PATH -o FILE [--insecure]   from any HTTP/3 server

        A file blob is written to FILE, a tree blob to a new directory DIR. The output appears only once
        it is complete and verified, so an interrupted get leaves nothing at the -o path. Through the
        daemon a file is written while it arrives (into a hidden .FILE.gquic-partial-* next to FILE,
        renamed onto FILE once the blob is verified), so it is in place about when the fetch ends.
        """
    )

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var daemon: DaemonOptions

    @Argument(help: ArgumentHelp("The blob's digest, sha256:<64 hex>, or an https:// URL.", valueName: "DIGEST|URL"))
    var digest: String

    @Option(name: .shortAndLong, help: ArgumentHelp("Where to write it (must not exist for a tree).", valueName: "FILE|DIR"))
    var output: String

    @Flag(help: "With an https:// URL: do not verify the server certificate (self-signed test servers).")
    var insecure = false

    @Flag(help: "Print a JSON summary instead of progress and a summary line.")
    var json = false

    @Flag(name: .customLong("no-sync"), help: "Do not fsync the output before it appears (as cp, curl or aria2c do); the store's copy stays durable either way.")
    var noSync = false

    func run() async throws {
        if digest.hasPrefix("https://") {
            try await HTTP3Get.download(url: digest, output: output, insecure: insecure, quiet: json, cc: "bbr")
            return
        }
        let d = try parseDigest(digest)
        if storeOptions.store != nil {
            let store = try storeOptions.open()
            let progress = ProgressLine("getting")
            defer { progress.finish() }
            do { try store.export(d, to: output, progress: progress.handler, sync: noSync ? false : nil) } catch { throw fail(error) }
            return
        }
        do {
            try daemonGet(daemon.client, digest: d, output: output, json: json, exportQuery: noSync ? "&sync=0" : "", stream: true)
        } catch let e as DaemonError {
            FileHandle.standardError.write(Data("error: \(e.description)\n".utf8))
            throw ExitCode(e.code)
        }
    }
}
