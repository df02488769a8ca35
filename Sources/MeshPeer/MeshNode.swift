import ClusterState
import ContentStore
import Foundation
import Logging
import MDNSDiscovery
import Membership
import MeshCore
import QUICTransport
import Swarm

/// One node's running mesh: the QUIC transport, the sans-IO cores (membership, cluster state,
/// swarm) driven by a `CoreHost`, the content store, and mDNS discovery.
public final class MeshNode: @unchecked Sendable {
    public let identity: NodeIdentity
    public let config: PeerConfig
    public let store: ContentStore
    public let transport: QUICLinkTransport
    let host: CoreHost
    private let swarmShell: SwarmShell
    private let logger: Logger
    private let metrics: PeerMetrics
    private var mdns: MDNSDiscovery?
    private let lock = NSLock()
    private var progress: [Digest: SwarmProgress] = [:]
    private var finished: [Digest: Result<Void, PeerError>] = [:]
    private var waiters: [Digest: [CheckedContinuation<Result<Void, PeerError>, Never>]] = [:]

    public init(identity: NodeIdentity, config: PeerConfig, data: DataDirectory, logger: Logger, metrics: PeerMetrics) throws {
        self.identity = identity
        self.config = config
        self.logger = logger
        self.metrics = metrics
        var storeOptions = ContentStore.Options()
        storeOptions.capacityBytes = config.storeCapacity == 0 ? nil : config.storeCapacity
        store = try ContentStore.open(path: data.storePath, options: storeOptions)
        let admission: AdmissionPolicy = config.allow.isEmpty ? .anyNode : .allowList(config.allow + [identity.nodeID])
        transport = try QUICLinkTransport(identity: identity, listen: config.listen, admission: admission, logger: logger, metrics: metrics)
        let me = identity.nodeID
        let advertised = config.advertise.first ?? MeshNode.advertisedAddress(config.listen, bound: transport.localAddress)
        var rng = SeededRandom(seed: UInt64.random(in: 0...UInt64.max))
        let generation = SystemClock().wallNow().millisecondsSinceEpoch
        let membership = MembershipCore(me: me, address: advertised, generation: generation, seeds: config.seeds, random: rng.fork())
        let sync = ClusterSync(replica: ClusterReplica(node: me), epoch: generation)
        let events = EventRelay()
        swarmShell = SwarmShell(swarm: SwarmCore(me: me, seed: rng.next()), store: store) { events.forward($0) }
        host = CoreHost(cores: [membership, sync, swarmShell], transport: transport)
        events.target = self
    }

    /// The address others should dial: the bound address, or loopback when bound to "any".
    static func advertisedAddress(_ listen: PeerAddress, bound: PeerAddress) -> PeerAddress {
        if listen.host == "0.0.0.0" || listen.host == "::" {
            return PeerAddress(host: hostAddress() ?? "127.0.0.1", port: bound.port)
        }
        return PeerAddress(host: listen.host, port: bound.port)
    }

    /// The first non-loopback IPv4 address, for advertising when bound to 0.0.0.0.
    static func hostAddress() -> String? {
        var ifap: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&ifap) == 0, let first = ifap else { return nil }
        defer { freeifaddrs(ifap) }
        var p: UnsafeMutablePointer<ifaddrs>? = first
        while let cur = p {
            defer { p = cur.pointee.ifa_next }
            guard let sa = cur.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET),
                  cur.pointee.ifa_flags & UInt32(IFF_LOOPBACK) == 0 else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(sa, socklen_t(MemoryLayout<sockaddr_in>.size), &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 {
                return String(cString: host)
            }
        }
        return nil
    }

    public func start() {
        host.start()
        if config.mdns {
            let ann = MDNSAnnouncement(nodeID: identity.nodeID, clusterID: config.cluster, port: transport.localAddress.port)
            mdns = MDNSDiscovery.startOrLog(announce: ann, browse: true, logger: logger)
            if let mdns {
                Task { [self] in
                    for await peer in mdns.joinCandidates where peer.nodeID != identity.nodeID && peer.clusterID == config.cluster {
                        logger.info("mDNS found \(peer.nodeID.short) at \(peer.address)")
                        _ = host.withCore(MembershipCore.self) { core, now in ((), core.addSeeds([peer.address], now: now)) }
                    }
                }
            }
        }
    }

    public func stop() {
        _ = host.withCore(MembershipCore.self) { core, now in ((), core.leave(now: now)) }
        mdns?.stop()
        host.stop()
        // Give the leave a moment to go out before the links close.
        Thread.sleep(forTimeInterval: 0.1)
        transport.shutdown()
    }

    // MARK: Blobs

    /// Imports a file or directory into the store and offers it to the swarm.
    public func add(path: String) throws -> BlobManifest {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw PeerError.protocolError("\(path) does not exist")
        }
        let m = isDir.boolValue ? try store.importTree(at: path) : try store.importFile(at: path)
        announce(m)
        return m
    }

    func announce(_ m: BlobManifest) {
        host.withShell(swarmShell) { shell, now in shell.hold(m, now: now) }
        _ = host.withCore(ClusterSync.self) { sync, now in ((), sync.write(now: now) { $0.addHolding(m.digest) }) }
        refreshStoreMetrics()
    }

    /// Starts fetching `digest` from the swarm (no-op if the store has it).
    public func fetch(_ digest: Digest) {
        if store.hasBlob(digest) {
            finish(digest, .success(()))
            return
        }
        lock.withLock { finished[digest] = nil }
        host.withShell(swarmShell) { shell, now in shell.fetch(digest, now: now) }
    }

    /// Waits until `digest` is in the store (or its fetch failed).
    public func waitForBlob(_ digest: Digest) async -> Result<Void, PeerError> {
        await withCheckedContinuation { cont in
            let done: Result<Void, PeerError>? = lock.withLock {
                if store.hasBlob(digest) { return .success(()) }
                if let r = finished[digest] { return r }
                waiters[digest, default: []].append(cont)
                return nil
            }
            if let done { cont.resume(returning: done) }
        }
    }

    public func transferProgress(_ digest: Digest) -> SwarmProgress? { lock.withLock { progress[digest] } }

    /// Why the last fetch of `digest` failed, if it did.
    public func failure(_ digest: Digest) -> String? {
        lock.withLock { if case .failure(let e) = finished[digest] { e.description } else { nil } }
    }

    fileprivate func handle(_ e: SwarmShellEvent) {
        switch e {
        case .progress(let p):
            lock.withLock { progress[p.blob] = p }
        case .completed(let d):
            logger.info("fetched \(d.short)")
            if let m = try? store.manifest(for: d) {
                // Holding it now: tell the cluster (outside the host's lock: hop to a task).
                Task { self.announce(m) }
            }
            finish(d, .success(()))
        case .failed(let d, let why):
            logger.warning("fetch \(d.short) failed: \(why)")
            finish(d, .failure(.protocolError(why)))
        case .penalized(let peer, let d, let why):
            logger.warning("peer \(peer.short) sent bad data for \(d.short): \(why)")
        }
    }

    private func finish(_ d: Digest, _ r: Result<Void, PeerError>) {
        let ws = lock.withLock { () -> [CheckedContinuation<Result<Void, PeerError>, Never>] in
            finished[d] = r
            if let p = progress[d], case .success = r { var q = p; q.done = true; q.bytesDone = q.bytesTotal; progress[d] = q }
            return waiters.removeValue(forKey: d) ?? []
        }
        ws.forEach { $0.resume(returning: r) }
    }

    func refreshStoreMetrics() {
        metrics.storeBytes.set(Double(store.usedBytes))
        metrics.storeBlobs.set(Double((try? store.blobs().count) ?? 0))
    }

    // MARK: Status

    public func members() -> [StatusReport.Member] {
        host.withCore(MembershipCore.self) { core, _ -> ([StatusReport.Member], Outbox) in
            let list = core.view.map { m in
                StatusReport.Member(id: m.node.description, short_id: m.node.short, address: m.address.description,
                                    state: "\(m.status)", rtt_ms: nil, incarnation: m.version.incarnation)
            }
            return (list, Outbox())
        } ?? []
    }

    public func links() async -> [StatusReport.Link] {
        var out: [StatusReport.Link] = []
        for peer in transport.linkedPeers {
            guard let link = transport.link(to: peer) else { continue }
            let stats = await link.stats()
            let counts = transport.byteCounts(peer)
            out.append(StatusReport.Link(peer: peer.short, address: link.remoteAddress.description,
                                         rtt_ms: stats.map { $0.smoothedRTT.seconds * 1000 },
                                         sent_bytes: Dictionary(uniqueKeysWithValues: counts.map { ($0.key.description, $0.value.sent) }),
                                         received_bytes: Dictionary(uniqueKeysWithValues: counts.map { ($0.key.description, $0.value.received) })))
        }
        return out.sorted { $0.peer < $1.peer }
    }

    public func transfers() -> [StatusReport.Transfer] {
        lock.withLock {
            progress.values.filter { !$0.done }.map {
                StatusReport.Transfer(digest: $0.blob.description, bytes_done: $0.bytesDone, bytes_total: $0.bytesTotal,
                                      rate_bytes_per_second: $0.rate, sources: $0.sources)
            }
        }
    }
}

/// Forwards swarm events to the node once it exists (the shell is built before `self`).
final class EventRelay: @unchecked Sendable {
    weak var target: MeshNode?
    func forward(_ e: SwarmShellEvent) { target?.handle(e) }
}

extension CoreHost {
    /// Runs `body` on a class-based core under the host's lock and carries out its outbox.
    func withShell<S: AnyObject & MeshProtocolCore>(_ shell: S, _ body: (S, Instant) -> Outbox) {
        _ = withCore(S.self) { core, now in ((), body(core, now)) }
    }
}
