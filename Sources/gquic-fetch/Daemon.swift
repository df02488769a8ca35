import ArgumentParser
import Foundation
import MeshCore
import MeshPeer

/// How `gquic-fetch` finds the local daemon: its data directory (the control socket is
/// DATA/control.sock) or the socket path itself.
struct DaemonOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The local node's data directory (default: $GQUIC_DATA or /var/lib/gquic).", valueName: "DIR"))
    var data: String?

    @Option(name: .long, help: ArgumentHelp("The daemon's control socket (overrides --data).", valueName: "PATH"))
    var control: String?

    var client: ControlClient {
        if let control { return ControlClient(socketPath: control) }
        let dir = DataDirectory(path: data ?? ProcessInfo.processInfo.environment["GQUIC_DATA"] ?? "/var/lib/gquic")
        let socket = (try? dir.loadConfig(environment: ProcessInfo.processInfo.environment))?.controlSocket ?? "control.sock"
        return ControlClient(socketPath: dir.resolve(socket))
    }
}

/// Exit codes, documented in `gquic-fetch --help` and docs/operations.md.
enum FetchExit {
    /// Bad arguments.
    static let usage: Int32 = 64
    /// The daemon is not running or not reachable.
    static let unreachable: Int32 = 69
    /// Nothing could be fetched: no peer holds it, or the transfer failed.
    static let unavailable: Int32 = 75
    /// Local I/O problem (cannot write the output).
    static let io: Int32 = 74
}

struct DaemonError: Error, CustomStringConvertible {
    let description: String
    let code: Int32
}

extension ControlClient {
    /// A JSON request; non-2xx answers become a `DaemonError` carrying the daemon's message.
    func call<T: Decodable>(_ method: String, _ path: String, as: T.Type) throws -> T {
        let r: (status: Int, body: [UInt8])
        do { r = try request(method, path) } catch {
            throw DaemonError(description: error.description, code: error.isDaemonUnreachable ? FetchExit.unreachable : FetchExit.io)
        }
        guard (200..<300).contains(r.status) else {
            let msg = (try? JSONDecoder().decode([String: String].self, from: Data(r.body)))?["error"] ?? String(decoding: r.body, as: UTF8.self)
            throw DaemonError(description: msg, code: r.status == 404 ? FetchExit.unavailable : FetchExit.usage)
        }
        return try JSONDecoder().decode(T.self, from: Data(r.body))
    }
}

struct BlobInfo: Codable { var digest: String; var size: UInt64; var chunks: Int; var kind: String }
struct TransferInfo: Codable {
    var digest: String; var bytes_done: UInt64; var bytes_total: UInt64; var rate_bytes_per_second: Double
    var sources: Int; var done: Bool; var error: String?
    /// The daemon's own measure: fetch start to blob committed (older daemons leave it out).
    var seconds: Double?
}

func percentEncode(_ s: String) -> String {
    s.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+"))) ?? s
}

func absolute(_ path: String) -> String {
    path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
}

/// Adds PATH through the daemon, which imports it and announces it to the cluster.
func daemonAdd(_ client: ControlClient, path: String) throws -> BlobInfo {
    try client.call("POST", "/v1/blobs?path=\(percentEncode(absolute(path)))", as: BlobInfo.self)
}

/// Fetches DIGEST through the daemon and writes it to OUTPUT, with a progress bar on a terminal.
/// `exportQuery` adds to the export request (`&format=oci&ref=NAME` writes an OCI image layout).
/// With `stream`, the daemon writes a file blob to OUTPUT while it arrives (`/v1/fetch?path=`), and
/// the export only claims it; an interrupted get (SIGINT, SIGTERM) has the partial file removed.
func daemonGet(_ client: ControlClient, digest: Digest, output: String, json: Bool, exportQuery: String = "",
               stream: Bool = false, label: String? = nil, timeout: Duration = .seconds(3600)) throws {
    let q = "digest=\(percentEncode(digest.description))"
    let target = "&path=\(percentEncode(absolute(output)))"
    let interrupt = stream ? AbandonOnSignal(client, "/v1/abandon?\(q)\(target)") : nil
    defer { interrupt?.cancel() }
    var t = try client.call("POST", "/v1/fetch?\(q)\(stream ? target + exportQuery : "")", as: TransferInfo.self)
    let bar = TransferBar(enabled: !json)
    let start = ContinuousClock.now
    var lastMoved = start
    var lastDone = t.bytes_done
    while !t.done {
        if let e = t.error { bar.finish(); throw DaemonError(description: "fetching \(digest.short) failed: \(e)", code: FetchExit.unavailable) }
        bar.update(t)
        if t.bytes_done != lastDone { lastDone = t.bytes_done; lastMoved = .now }
        if ContinuousClock.now - lastMoved > .seconds(30) {
            bar.finish()
            throw DaemonError(description: t.bytes_total == 0
                ? "no peer holds \(digest) — is the cluster reachable? check `gquic-peer status`"
                : "the transfer of \(digest.short) stalled at \(t.bytes_done) of \(t.bytes_total) bytes (no source answered for 30 s)",
                code: FetchExit.unavailable)
        }
        if ContinuousClock.now - start > timeout { bar.finish(); throw DaemonError(description: "timed out", code: FetchExit.unavailable) }
        // The daemon holds the request until the blob is in (or 200 ms pass): the end of the transfer
        // is seen at once, not up to a poll interval late.
        let asked = ContinuousClock.now
        t = try client.call("GET", "/v1/transfer?\(q)&wait=200", as: TransferInfo.self)
        let took = ContinuousClock.now - asked
        if !t.done && took < .milliseconds(200) { Thread.sleep(forTimeInterval: (.milliseconds(200) - took).seconds) }
    }
    bar.update(t)
    bar.finish()
    /// `streamed`: the daemon wrote the file while it arrived (older daemons leave it out).
    struct Exported: Codable { var path: String; var streamed: Bool? }
    let exportStart = ContinuousClock.now
    let exported = try client.call("POST", "/v1/export?\(q)\(target)\(exportQuery)", as: Exported.self)
    let end = ContinuousClock.now
    let secs = (end - start).seconds
    if json {
        try printJSON(["digest": digest.description, "path": absolute(output), "bytes": "\(t.bytes_total)",
                       "seconds": String(format: "%.3f", secs), "export_seconds": String(format: "%.3f", (end - exportStart).seconds),
                       "streamed": exported.streamed == true ? "true" : "false",
                       "transfer_seconds": t.seconds.map { String(format: "%.3f", $0) } ?? ""])
    } else {
        print("\(output): \(t.bytes_total) bytes, \(label ?? digest.description), \(String(format: "%.2f", secs)) s")
    }
}

/// While a streamed get runs, SIGINT and SIGTERM first tell the daemon to remove the partial file
/// (`POST /v1/abandon`), then exit 130. (A get killed outright is noticed by the daemon within half a
/// second: it knows the get's pid from the control socket.)
final class AbandonOnSignal {
    private var sources: [DispatchSourceSignal] = []

    init(_ client: ControlClient, _ abandonPath: String) {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler {
                _ = try? client.request("POST", abandonPath, timeoutSeconds: 5)
                FileHandle.standardError.write(Data("\ninterrupted\n".utf8))
                exit(130)
            }
            s.resume()
            sources.append(s)
        }
    }

    func cancel() {
        for s in sources { s.cancel() }
        sources = []
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}

/// A progress bar with rate, ETA and number of sources when stderr is a terminal; plain lines,
/// at most one a second, otherwise.
final class TransferBar {
    private let enabled: Bool
    private let tty = isatty(2) == 1
    private var lastPlain = ContinuousClock.now - .seconds(10)
    private var drawn = false

    init(enabled: Bool) { self.enabled = enabled }

    func update(_ t: TransferInfo) {
        // Nothing to draw until a holder has sent the manifest (the total is unknown before).
        guard enabled, t.bytes_total > 0 || t.done else { return }
        let frac = t.bytes_total > 0 ? Double(t.bytes_done) / Double(t.bytes_total) : 0
        let rate = t.rate_bytes_per_second
        let eta = rate > 0 && t.bytes_total > t.bytes_done ? Double(t.bytes_total - t.bytes_done) / rate : 0
        let mib = { (b: UInt64) in String(format: "%.1f", Double(b) / 1_048_576) }
        let text = "\(mib(t.bytes_done))/\(mib(t.bytes_total)) MiB  \(String(format: "%.1f", rate / 1_048_576)) MiB/s  ETA \(Int(eta))s  \(t.sources) source\(t.sources == 1 ? "" : "s")"
        if tty {
            let width = 30
            let filled = Int(frac * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
            FileHandle.standardError.write(Data("\r\(bar) \(String(format: "%3d", Int(frac * 100)))%  \(text)\u{1b}[K".utf8))
            drawn = true
        } else if ContinuousClock.now - lastPlain >= .seconds(1) || t.done {
            lastPlain = .now
            FileHandle.standardError.write(Data("\(Int(frac * 100))% \(text)\n".utf8))
        }
    }

    func finish() {
        if drawn { FileHandle.standardError.write(Data("\n".utf8)); drawn = false }
    }
}

/// `gquic-fetch ls`: the blobs the local node holds.
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List the blobs the local node holds (through the daemon).")
    @OptionGroup var daemon: DaemonOptions
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() throws {
        do {
            let list = try daemon.client.call("GET", "/v1/blobs", as: [BlobInfo].self)
            if json {
                try printJSON(list)
                return
            }
            if list.isEmpty { print("(no blobs)"); return }
            for b in list { print("\(b.digest)  \(StatusReport.bytes(b.size).padding(toLength: 10, withPad: " ", startingAt: 0))  \(b.chunks) chunks  \(b.kind)") }
        } catch let e as DaemonError {
            FileHandle.standardError.write(Data("error: \(e.description)\n".utf8))
            throw ExitCode(e.code)
        }
    }
}

/// Prints `value` as one line of JSON with sorted keys (the `--json` output of every subcommand).
func printJSON<T: Encodable>(_ value: T) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = .sortedKeys
    print(String(decoding: try enc.encode(value), as: UTF8.self))
}
