import ArgumentParser
import Foundation
import QUICTransport

/// `gquic-fetch get https://HOST:PORT/PATH -o FILE [--insecure]`
struct HTTP3Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "Download a URL over HTTP/3.",
        discussion: """
        Streams the response body to FILE (via FILE.part, renamed when complete) and prints its size,
        SHA-256 and rate. Works against any HTTP/3 server, for example:
          gquic-fetch get https://127.0.0.1:4433/big.bin -o big.bin --insecure
        Without --insecure the server's certificate must chain to the system trust store and match HOST.
        """
    )

    @Argument(help: "https://HOST:PORT/PATH") var url: String
    @Option(name: .shortAndLong, help: "Where to write the body.") var output: String
    @Flag(help: "Do not verify the server certificate (self-signed test servers).") var insecure = false
    @Flag(name: .shortAndLong, help: "Print nothing but errors.") var quiet = false
    @Option(help: "Congestion control: bbr, bbr2, cubic or reno.") var cc: String = "bbr"

    func run() async throws {
        guard let algo = CongestionControl(rawValue: cc) else {
            throw ValidationError("--cc must be one of \(CongestionControl.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var settings = QUICSettings()
        settings.congestionControl = algo
        let quiet = self.quiet
        do {
            let d = try await HTTP3Client.download(url: url, to: output, insecure: insecure, settings: settings) { got, total in
                guard !quiet else { return }
                let t = total.map { " of \($0 >> 20) MiB" } ?? ""
                FileHandle.standardError.write(Data("  \(got >> 20) MiB\(t)\n".utf8))
            }
            if !quiet {
                let rate = d.seconds > 0 ? Double(d.bytes) / d.seconds / 1e6 : 0
                print("\(output): \(d.bytes) bytes, \(d.digest), \(String(format: "%.3f", d.seconds)) s, \(String(format: "%.1f", rate)) MB/s")
            }
        } catch {
            throw FetchFailure(message: "get \(url) failed: \(error.description)")
        }
    }
}

/// A failure worth one line on stderr (no usage text: the arguments were fine).
struct FetchFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
