import ArgumentParser
import ContentStore
import Foundation

struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check every chunk and manifest in the store (fsck); exit 1 and name what is corrupt.",
        discussion: """
        Each chunk is decompressed and re-hashed against its name; each manifest is decoded and its
        chunks checked present. Orphaned chunks (left by an interrupted add) are reported but are not
        damage; --repair deletes them and any corrupt chunk, so the affected blobs can be re-fetched.
        """
    )

    @OptionGroup var storeOptions: StoreOptions

    @Flag(help: "Delete corrupt and orphaned chunks and unreadable manifests.")
    var repair = false

    func run() throws {
        let store = try storeOptions.open()
        let progress = ProgressLine("verifying")
        let report: VerifyReport
        do { report = try store.verify(repair: repair, progress: progress.handler) } catch { progress.finish(); throw fail(error) }
        progress.finish()
        print(report)
        if !report.isHealthy { throw ExitCode(1) }
    }
}

struct GCCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Delete chunks no blob references, then evict LRU unpinned blobs while over --capacity."
    )

    @OptionGroup var storeOptions: StoreOptions

    func run() throws {
        let store = try storeOptions.open()
        do {
            let freed = try store.collectGarbage()
            let evicted = try store.enforceCapacity()
            for e in evicted { print("evicted \(e)") }
            print("freed \(freed) bytes of unreferenced chunks; store holds \(store.usedBytes) bytes")
        } catch { throw fail(error) }
    }
}
