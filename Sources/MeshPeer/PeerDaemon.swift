#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import MeshCore
import ServiceLifecycle

public enum GQUICVersion {
    public static let string = "0.1.0"
}

/// One running node: owns the data directory lock, the control API and metrics, and the services
/// that link, discover, replicate and transfer. Composed with swift-service-lifecycle so SIGTERM and
/// SIGINT shut everything down cleanly.
public final class PeerDaemon: Service, @unchecked Sendable {
    public let identity: NodeIdentity
    public let config: PeerConfig
    public let data: DataDirectory
    public let metrics: PeerMetrics
    private let logger: Logger
    private let lock: DirectoryLock
    private let started = SystemClock().now()
    private var control: ControlServer?
    private var metricsServer: ControlServer?

    /// Opens the data directory (taking its lock) and loads identity and configuration.
    public init(data: DataDirectory, config: PeerConfig, logger: Logger) throws(PeerError) {
        self.data = data
        self.config = config
        self.logger = logger
        self.identity = try data.loadIdentity()
        self.lock = try data.lock()
        self.metrics = PeerMetrics()
    }

    public var controlSocketPath: String { data.resolve(config.controlSocket) }

    public func run() async throws {
        metrics.startTime.set(Double(SystemClock().wallNow().nanosecondsSinceEpoch) / 1e9)
        let server = ControlServer { [weak self] req in
            guard let self else { return .error(503, "shutting down") }
            self.metrics.controlRequests.increment()
            return self.route(req)
        }
        try server.listen(unixPath: controlSocketPath)
        control = server
        if let m = config.metricsListen {
            let ms = ControlServer { [weak self] req in
                guard let self, req.path == "/metrics" else { return .error(404, "only /metrics is served here") }
                return self.route(req)
            }
            try ms.listen(tcpHost: m.host, port: m.port)
            metricsServer = ms
            logger.info("metrics on http://\(m.host):\(ms.tcpPort ?? m.port)/metrics")
        }
        logger.info("node \(identity.nodeID) ready", metadata: [
            "listen": "\(config.listen)", "cluster": "\(config.cluster)", "control": "\(controlSocketPath)",
        ])
        // Run until the service group asks us to shut down gracefully (SIGTERM/SIGINT).
        await withGracefulShutdownHandler {
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(200))
            }
        } onGracefulShutdown: {
            self.logger.info("shutting down")
        }
        server.stop()
        metricsServer?.stop()
        logger.info("stopped cleanly")
    }

    func route(_ req: ControlRequest) -> ControlResponse {
        switch (req.method, req.path) {
        case ("GET", "/v1/status"): return .json(status())
        case ("GET", "/metrics"): return .text(metrics.exposition(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        case ("GET", "/v1/health"): return .json(["status": "ok"])
        default: return .error(404, "no such endpoint \(req.method) \(req.path); see docs/operations.md#control-api")
        }
    }

    public func status() -> StatusReport {
        let me = StatusReport.Member(id: identity.nodeID.description, short_id: identity.nodeID.short,
                                     address: config.listen.description, state: "alive", rtt_ms: nil, incarnation: 0)
        return StatusReport(
            node: .init(id: identity.nodeID.description, short_id: identity.nodeID.short, listen: config.listen.description,
                        cluster: config.cluster, pid: getpid(), uptime_seconds: (SystemClock().now() - started).seconds,
                        version: GQUICVersion.string),
            members: [me], links: [], transfers: [],
            store: .init(blobs: 0, chunks: 0, bytes_on_disk: 0, capacity_bytes: config.storeCapacity))
    }
}
