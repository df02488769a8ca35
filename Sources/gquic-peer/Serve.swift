import ArgumentParser
import Foundation
import MeshCore
import QUICTransport

/// `gquic-peer serve`: a diagnostic and interop HTTP/3 file server.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a directory over HTTP/3 (a diagnostic and interop server).",
        discussion: """
        Answers GET and HEAD for regular files under --root (memory-mapped, so bodies are sent without
        copies). Any HTTP/3 client works, for example:
          gquic-peer serve --root /srv/files --listen 0.0.0.0:4433 --cert cert.pem --key key.pem
          gquic-fetch get https://127.0.0.1:4433/big.bin -o big.bin --insecure
          gtlsclient -q --no-quic-dump --no-http-dump --download out 127.0.0.1 4433 https://127.0.0.1:4433/big.bin
        A self-signed Ed25519 certificate for testing:
          openssl req -x509 -newkey ed25519 -nodes -keyout key.pem -out cert.pem -days 30 -subj /CN=localhost
        """
    )

    @Option(help: "Directory whose files are served.") var root: String
    @Option(help: "UDP address to listen on, ADDR:PORT (0.0.0.0:4433, [::]:4433).") var listen: String
    @Option(help: "Certificate chain, PEM.") var cert: String
    @Option(help: "Private key, PEM.") var key: String
    @Option(help: "Congestion control: bbr, bbr2, cubic or reno.") var cc: String = "bbr"

    func run() async throws {
        guard let address = PeerAddress(parsing: listen) else {
            throw ValidationError("--listen must be ADDR:PORT, for example 0.0.0.0:4433 or [::]:4433; got \"\(listen)\"")
        }
        guard let algo = CongestionControl(rawValue: cc) else {
            throw ValidationError("--cc must be one of \(CongestionControl.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var settings = QUICSettings()
        settings.congestionControl = algo
        let server = try HTTP3Server(root: root, listen: address, certificatePath: cert, keyPath: key, settings: settings)
        print("gquic-peer: serving \(server.root) over HTTP/3 on \(server.localAddress) (Ctrl-C to stop)")
        fflush(nil)
        let signals = AsyncStream<Int32> { cont in
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let src = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                src.setEventHandler { cont.yield(sig) }
                src.resume()
                nonisolated(unsafe) let keep = src
                cont.onTermination = { _ in keep.cancel() }
            }
        }
        for await sig in signals {
            print("gquic-peer: signal \(sig), shutting down")
            break
        }
        server.shutdown()
    }
}

