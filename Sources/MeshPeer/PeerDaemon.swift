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
    /// The running mesh (set once `run` has started it).
    public private(set) var node: MeshNode?

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
        let mesh = try MeshNode(identity: identity, config: config, data: data, logger: logger, metrics: metrics)
        node = mesh
        mesh.start()
        mesh.refreshStoreMetrics()
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
            "listen": "\(mesh.transport.localAddress)", "cluster": "\(config.cluster)", "control": "\(controlSocketPath)",
            "seeds": "\(config.seeds.map(\.description).joined(separator: ","))",
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
        mesh.stop()
        logger.info("stopped cleanly")
    }

    func route(_ req: ControlRequest) -> ControlResponse {
        switch (req.method, req.path) {
        case ("GET", "/v1/status"): return .json(status())
        case ("GET", "/metrics"): return .text(metrics.exposition(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        case ("GET", "/v1/health"): return .json(["status": "ok"])
        case ("GET", "/v1/blobs"): return blobList()
        case ("POST", "/v1/blobs"): return addBlob(req)
        case ("POST", "/v1/fetch"): return startFetch(req)
        case ("GET", "/v1/transfer"): return transfer(req)
        case ("POST", "/v1/export"): return export(req)
        case ("POST", "/v1/abandon"): return abandon(req)
        case ("GET", "/v1/blob"): return blobDetail(req)
        case ("GET", "/v1/refs"): return .json(node?.imageRefs().map { ImageRef(name: $0.name, digest: $0.digest) } ?? [])
        case ("GET", "/v1/resolve"): return resolve(req)
        case ("POST", "/v1/ping"): return startPing(req)
        case ("GET", "/v1/ping"), ("DELETE", "/v1/ping"): return pingReport(req, stop: req.method == "DELETE")
        default: return .error(404, "no such endpoint \(req.method) \(req.path); see docs/operations.md#control-api")
        }
    }

    public func status() -> StatusReport {
        let me = StatusReport.Member(id: identity.nodeID.description, short_id: identity.nodeID.short,
                                     address: (node?.transport.localAddress ?? config.listen).description, state: "alive (self)",
                                     rtt_ms: nil, incarnation: 0)
        let links = node.map { n in Self.blocking { await n.links() } } ?? []
        // A member's RTT is its link's smoothed RTT (QUIC's own estimate), when linked.
        let rtt = Dictionary(links.compactMap { l in l.rtt_ms.map { (l.peer, $0) } }, uniquingKeysWith: { a, _ in a })
        let members = [me] + (node?.members() ?? []).map { m in var m = m; m.rtt_ms = m.rtt_ms ?? rtt[m.short_id]; return m }
        metrics.members.set(Double(members.filter { $0.state.hasPrefix("alive") }.count))
        metrics.links.set(Double(links.count))
        let store = node?.store
        let chunks = (try? store?.chunkDigests().count) ?? 0
        return StatusReport(
            node: .init(id: identity.nodeID.description, short_id: identity.nodeID.short,
                        listen: (node?.transport.localAddress ?? config.listen).description,
                        cluster: config.cluster, pid: getpid(), uptime_seconds: (SystemClock().now() - started).seconds,
                        version: GQUICVersion.string),
            members: members, links: links, transfers: node?.transfers() ?? [],
            store: .init(blobs: (try? store?.blobs().count) ?? 0, chunks: chunks, bytes_on_disk: store?.usedBytes ?? 0,
                         capacity_bytes: config.storeCapacity))
    }

    /// Runs async work from a control-API thread (never from the cooperative pool).
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task { box.value = await body(); done.signal() }
        done.wait()
        return box.value!
    }

    struct BlobInfo: Codable { var digest: String; var size: UInt64; var chunks: Int; var kind: String }
    struct TransferInfo: Codable {
        var digest: String; var bytes_done: UInt64; var bytes_total: UInt64; var rate_bytes_per_second: Double
        var sources: Int; var done: Bool; var error: String?
        /// Seconds from the fetch's start to the blob committed (so far, while running).
        var seconds: Double?
    }

    func blobList() -> ControlResponse {
        guard let n = node else { return .error(503, "starting up") }
        let list = ((try? n.store.blobs()) ?? []).compactMap { d -> BlobInfo? in
            guard let m = try? n.store.manifest(for: d) else { return nil }
            return BlobInfo(digest: d.description, size: m.size, chunks: m.chunks.count, kind: "\(m.kind)")
        }
        return .json(list.sorted { $0.digest < $1.digest })
    }

    struct BlobDetail: Codable {
        var digest: String; var size: UInt64; var chunks: Int; var kind: String; var media_type: String; var references: [String]
    }
    struct ImageRef: Codable { var name: String; var digest: String }
    struct AddedImage: Codable { var digest: String; var ref: String?; var media_type: String; var blobs: [String] }

    func blobDetail(_ req: ControlRequest) -> ControlResponse {
        guard let n = node else { return .error(503, "starting up") }
        guard let d = digestParam(req) else { return .error(400, "give ?digest=sha256:<64 hex>") }
        guard let m = try? n.store.manifest(for: d) else { return .error(404, "this node does not hold \(d)") }
        return .json(BlobDetail(digest: d.description, size: m.size, chunks: m.chunks.count, kind: "\(m.kind)",
                                media_type: m.mediaType, references: m.references.map(\.description)))
    }

    func resolve(_ req: ControlRequest) -> ControlResponse {
        guard let n = node else { return .error(503, "starting up") }
        guard let ref = req.query["ref"], !ref.isEmpty else { return .error(400, "give ?ref=NAME[:TAG] or a sha256: digest") }
        guard let d = n.resolveImage(ref) else {
            return .error(404, "no image named \(ref) is known in the cluster; `gquic-fetch refs` lists the names nodes have added with `gquic-fetch add oci:LAYOUT`")
        }
        return .json(ImageRef(name: ref, digest: d.description))
    }

    func addBlob(_ req: ControlRequest) -> ControlResponse {
        guard let n = node else { return .error(503, "starting up") }
        guard let path = req.query["path"], path.hasPrefix("/") else { return .error(400, "give ?path=ABSOLUTE_PATH of a file or directory") }
        if req.query["format"] == "oci" {
            do {
                let images = try n.addOCILayout(path: path)
                return .json(images.map { AddedImage(digest: $0.digest.description, ref: $0.refName, media_type: $0.mediaType,
                                                     blobs: $0.blobs.map(\.description)) })
            } catch {
                return .error(400, "\(error)")
            }
        }
        do {
            let m = try n.add(path: path)
            n.refreshStoreMetrics()
            return .json(BlobInfo(digest: m.digest.description, size: m.size, chunks: m.chunks.count, kind: "\(m.kind)"))
        } catch {
            return .error(400, "\(error)")
        }
    }

    func digestParam(_ req: ControlRequest) -> Digest? { req.query["digest"].flatMap { try? Digest(parsing: $0) } }

    func startFetch(_ req: ControlRequest) -> ControlResponse {
        guard let n = node else { return .error(503, "starting up") }
        guard let d = digestParam(req) else { return .error(400, "give ?digest=sha256:<64 hex>") }
        // `path=FILE`: write a file blob to FILE while it arrives (claimed by `/v1/export` with the
        // same path); `sync=0`: without the fsync before it is renamed onto FILE.
        var output: StreamedOutputs.Request?
        if let path = req.query["path"] {
            guard path.hasPrefix("/") else { return .error(400, "path must be absolute") }
            output = .init(target: path, sync: req.query["sync"] != "0", owner: req.peerPID)
        }
        n.fetch(d, output: output)
        return transfer(req)
    }

    func transfer(_ req: ControlRequest) -> ControlResponse {
        guard let n = node else { return .error(503, "starting up") }
        guard let d = digestParam(req) else { return .error(400, "give ?digest=sha256:<64 hex>") }
        // `wait=MS` (at most 5000): answer as soon as the blob is in or its fetch failed, or after MS,
        // so a client polling a transfer learns of its end at once instead of after a poll interval.
        if let w = req.query["wait"].flatMap({ Int($0) }), w > 0 {
            _ = n.waitForBlob(d, timeout: .milliseconds(min(w, 5000)))
        }
        let have = n.store.hasBlob(d)
        let p = n.transferProgress(d)
        let total = p?.bytesTotal ?? (have ? ((try? n.store.manifest(for: d).size) ?? 0) : 0)
        return .json(TransferInfo(digest: d.description, bytes_done: have ? total : (p?.bytesDone ?? 0), bytes_total: total,
                                  rate_bytes_per_second: p?.rate ?? 0, sources: p?.sources ?? 0, done: have,
                                  error: n.failure(d), seconds: n.fetchDuration(d)?.seconds))
    }

    struct Exported: Codable { var path: String; var streamed: Bool }

    /// `POST /v1/abandon?digest=&path=`: the `get` that asked for DIGEST at PATH with `/v1/fetch?path=`
    /// is going away (interrupted): its partial file is removed now. The fetch itself goes on.
    func abandon(_ req: ControlRequest) -> ControlResponse {
        guard let n = node else { return .error(503, "starting up") }
        guard let d = digestParam(req), let path = req.query["path"], path.hasPrefix("/") else {
            return .error(400, "give ?digest=sha256:<64 hex>&path=ABSOLUTE_PATH")
        }
        return .json(["abandoned": n.outputs.abandon(d, target: path, "abandoned through the control API")])
    }

    func export(_ req: ControlRequest) -> ControlResponse {
        guard let n = node else { return .error(503, "starting up") }
        guard let d = digestParam(req), let path = req.query["path"], path.hasPrefix("/") else {
            return .error(400, "give ?digest=sha256:<64 hex>&path=ABSOLUTE_PATH")
        }
        guard n.store.hasBlob(d) else { return .error(404, "this node does not hold \(d)") }
        do {
            if req.query["format"] == "oci" {
                let ref = req.query["ref"].flatMap { $0.isEmpty ? nil : $0 }
                try n.store.exportOCILayout(d, to: path, refName: ref)
                return .json(Exported(path: path, streamed: false))
            }
            // Written while it arrived (`/v1/fetch?path=`): done once that output is; if it was dropped,
            // exported here after all.
            switch n.outputs.claim(d, target: path, timeout: .seconds(600)) {
            case .done?: return .json(Exported(path: path, streamed: true))
            case .dropped(let why)?: logger.warning("\(d.short) was not streamed to \(path), exporting it: \(why)")
            case .writing?: return .error(500, "the streamed write of \(path) did not finish within 600 s")
            case nil: break
            }
            // `sync=0`: no fsync of the written file (the caller does not need it durable).
            try n.store.export(d, to: path, sync: req.query["sync"] == "0" ? false : nil)
            return .json(Exported(path: path, streamed: false))
        } catch {
            return .error(500, "\(error)")
        }
    }
}

extension PeerDaemon {
    /// `/v1/ping` answers: a probe run's round trips (milliseconds) and, with `?samples=1`, every
    /// sample as [ms after the run started, round trip ms].
    public struct PingReport: Codable, Sendable {
        public var peer: String
        public var interval_ms: Double
        public var size: Int
        public var sent: Int
        public var received: Int
        public var lost: Int
        public var running: Bool
        public var rtt_ms: [String: Double]
        public var samples: [[Double]]?
    }

    func startPing(_ req: ControlRequest) -> ControlResponse {
        guard let n = node else { return .error(503, "starting up") }
        guard let name = req.query["peer"], let peer = n.member(named: name) else {
            return .error(400, "give ?peer=NODE (a node id, or a unique prefix of a member's short id from `gquic-peer status`)")
        }
        guard peer != identity.nodeID else { return .error(400, "\(peer.short) is this node; ping another member") }
        let interval = Double(req.query["interval_ms"] ?? "10") ?? -1
        let size = Int(req.query["size"] ?? "64") ?? -1
        let count = req.query["count"].map { Int($0) ?? -1 }
        guard interval >= 1, interval <= 60_000 else { return .error(400, "interval_ms must be 1…60000") }
        guard LinkEcho.sizeRange.contains(size) else { return .error(400, "size must be \(LinkEcho.sizeRange.lowerBound)…\(LinkEcho.sizeRange.upperBound) bytes") }
        if let count, count < 1 { return .error(400, "count must be a positive number (leave it out to ping until DELETE /v1/ping)") }
        n.startProbe(LinkEcho.Probe(peer: peer, interval: .microseconds(Int64(interval * 1000)), size: size, count: count))
        return pingReport(req, stop: false)
    }

    func pingReport(_ req: ControlRequest, stop: Bool) -> ControlResponse {
        guard let n = node else { return .error(503, "starting up") }
        guard let r = n.probeReport(stop: stop) else { return .error(404, "no ping has run; start one with POST /v1/ping?peer=NODE") }
        let ms = { (d: Duration) in d.seconds * 1000 }
        let rtts = r.samples.map { ms($0.roundTrip) }.sorted()
        var q: [String: Double] = [:]
        if !rtts.isEmpty {
            q["min"] = rtts[0]; q["max"] = rtts[rtts.count - 1]
            for (name, p) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)] {
                q[name] = rtts[min(rtts.count - 1, Int((Double(rtts.count) * p).rounded(.up)) - 1)]
            }
        }
        let samples = req.query["samples"] == "1" ? r.samples.map { [ms($0.sentAfter), ms($0.roundTrip)] } : nil
        return .json(PingReport(peer: r.probe.peer.description, interval_ms: ms(r.probe.interval), size: r.probe.size, sent: r.sent,
                                received: r.samples.count, lost: r.lost, running: r.running, rtt_ms: q, samples: samples))
    }
}

final class ResultBox<T>: @unchecked Sendable { var value: T? }
