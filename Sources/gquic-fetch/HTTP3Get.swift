import ArgumentParser
import Foundation
import QUICTransport

/// `gquic-fetch get https://HOST:PORT/PATH -o FILE [--insecure]`: streams the response body to FILE
/// (via FILE.part, renamed when complete) and prints its size, SHA-256 and rate. Works against any
/// HTTP/3 server. Without --insecure the server's certificate must chain to the system trust store
/// and match HOST.
enum HTTP3Get {
    static func download(url: String, output: String, insecure: Bool, quiet: Bool, cc: String) async throws {
        guard let algo = CongestionControl(rawValue: cc) else {
            throw ValidationError("--cc must be one of \(CongestionControl.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var settings = QUICSettings()
        settings.congestionControl = algo
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
