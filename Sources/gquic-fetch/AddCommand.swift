import ArgumentParser
import ContentStore
import Foundation

struct AddCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
        abstract: "Store a file, a directory tree or an OCI image layout; print the digest(s).",
        discussion: """
        Without --store, the local daemon imports PATH and announces it to the cluster; for an OCI
        layout it also records each image's reference name (index.json's
        org.opencontainers.image.ref.name) cluster-wide, so any node can `gquic-fetch pull NAME`.
        With --store DIR, it goes into that store directly.
        PATH may be a regular file (its digest is the sha256 of its bytes), a directory (imported as one
        deterministic tree: the same tree always gives the same digest), or oci:LAYOUT for an OCI image
        layout directory. For a layout, every descriptor's digest and size are verified and one line
        "DIGEST [ref-name]" is printed per image in its index.json.
        Nothing becomes visible in the store until it is complete and verified.
        """
    )

    @OptionGroup var storeOptions: StoreOptions
    @OptionGroup var daemon: DaemonOptions

    @Argument(help: ArgumentHelp("A file, a directory, or oci:LAYOUT.", valueName: "PATH|oci:LAYOUT"))
    var source: String

    @Flag(help: "Pin what is added, so capacity eviction never removes it.")
    var pin = false

    func run() throws {
        if storeOptions.store == nil {
            // Through the daemon: it imports the content and announces it to the cluster.
            do {
                if source.hasPrefix("oci:") {
                    let path = String(source.dropFirst(4))
                    let images = try daemon.client.call("POST", "/v1/blobs?path=\(percentEncode(absolute(path)))&format=oci", as: [AddedImageInfo].self)
                    for image in images { print(image.ref.map { "\(image.digest) \($0)" } ?? image.digest) }
                    return
                }
                let info = try daemonAdd(daemon.client, path: source)
                print(info.digest)
            } catch let e as DaemonError {
                FileHandle.standardError.write(Data("error: \(e.description)\n".utf8))
                throw ExitCode(e.code)
            }
            return
        }
        let store = try storeOptions.open()
        let progress = ProgressLine("adding")
        defer { progress.finish() }
        do {
            if source.hasPrefix("oci:") {
                let images = try store.importOCILayout(at: String(source.dropFirst(4)), progress: progress.handler)
                progress.finish()
                for image in images {
                    if pin { try store.pin(image.digest) }
                    print(image.refName.map { "\(image.digest) \($0)" } ?? image.digest.description)
                }
                return
            }
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: source, isDirectory: &isDir) else {
                throw ValidationError("\(source) does not exist")
            }
            let m = isDir.boolValue
                ? try store.importTree(at: source, progress: progress.handler)
                : try store.importFile(at: source, progress: progress.handler)
            progress.finish()
            if pin { try store.pin(m.digest) }
            print(m.digest)
        } catch let e as ValidationError {
            throw e
        } catch {
            throw fail(error)
        }
    }
}
