import ArgumentParser

/// `gquic-fetch`: gets things from the mesh and from HTTP/3 servers.
@main
struct GQuicFetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gquic-fetch",
        abstract: "Fetch content over HTTP/3 or from the GQUIC mesh.",
        subcommands: [HTTP3Get.self, ListCommand.self]
    )
}
