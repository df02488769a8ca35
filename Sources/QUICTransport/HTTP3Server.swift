import Foundation
import MeshCore

/// A minimal HTTP/3 file server: GET and HEAD for regular files under a root directory.
public final class HTTP3Server: Sendable {
    public let endpoint: QUICEndpoint
    public let root: String

    /// Listens on `address` with the certificate and key (PEM text).
    public init(root: String, listen address: PeerAddress, certificatePEM: String, keyPEM: String,
                settings: QUICSettings = QUICSettings()) throws(QUICError) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
            throw .invalidArgument("--root \(root) is not a directory")
        }
        let rootPath = URL(fileURLWithPath: root).standardizedFileURL.path
        var config = QUICEndpoint.Configuration(tls: .server(certificatePEM: certificatePEM, keyPEM: keyPEM))
        config.settings = settings
        config.http3Factory = { conn, endpoint throws(QUICError) in
            let rec = LoopBound(conn)
            return HTTP3Session(serverRoot: rootPath, wake: { [weak endpoint] in endpoint?.markDirty(rec.value) })
        }
        endpoint = try QUICEndpoint(bind: address, configuration: config)
        self.root = rootPath
    }

    /// Reads the certificate and key from PEM files.
    public convenience init(root: String, listen address: PeerAddress, certificatePath: String, keyPath: String,
                            settings: QUICSettings = QUICSettings()) throws(QUICError) {
        try self.init(root: root, listen: address, certificatePEM: try TLSCredentials.readPEM(path: certificatePath),
                      keyPEM: try TLSCredentials.readPEM(path: keyPath), settings: settings)
    }

    public var localAddress: PeerAddress { endpoint.localAddress }

    public func shutdown() { endpoint.shutdown() }
}
