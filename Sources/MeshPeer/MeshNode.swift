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
    /// Threads blocked in `waitForBlob(_:timeout:)`, woken by `finish`.
    private var blockedWaiters: [Digest: [DispatchSemaphore]] = [:]
    /// Blobs fetched along with a blob that references them.
    private var references: [Digest: [Digest]] = [:]
    /// When each fetch started, and how long finished ones took (start to committed, or failed).
    private var fetchStarted: [Digest: Instant] = [:]
    private var fetchTook: [Digest: Duration] = [:]
    /// Files `get -o` asked to have written while their blob arrives.
    public let outputs = StreamedOutputs()
    private var sweeper: DispatchSourceTimer?

    public init(identity: NodeIdentity, config: PeerConfig, data: DataDirectory, logger: Logger, metrics: PeerMetrics) throws {
        self.identity = identity
        self.config = config
        self.logger = logger
        self.metrics = metrics
        var storeOptions = ContentStore.Options()
        storeOptions.capacityBytes = config.storeCapacity == 0 ? nil : config.storeCapacity
        store = try ContentStore.open(path: data.storePath, options: storeOptions)
        let joinToken = config.joinToken.isEmpty ? nil : try JoinToken(parsing: config.joinToken)
        let admission: AdmissionPolicy = if let joinToken { .joinTokens([joinToken]) }
            else if config.allow.isEmpty { .anyNode } else { .allowList(config.allow + [identity.nodeID]) }
        var quic = QUICSettings()
        if config.scavenger {
            var scavenger = ScavengerSettings()
            scavenger.target = config.scavengerTarget
            quic.bulkScavenger = scavenger
        }
        if config.bulkRate > 0 { quic.classRateLimits[.bulk] = Double(config.bulkRate) }
        quic.dscpMarking = config.dscp
        quic.ackThreshold = config.ackThreshold
        transport = try QUICLinkTransport(identity: identity, listen: config.listen, admission: admission, joinToken: joinToken,
                                          settings: quic, logger: logger, metrics: metrics)
        let me = identity.nodeID
        let advertised = config.advertise.first ?? MeshNode.advertisedAddress(config.listen, bound: transport.localAddress)
        var rng = SeededRandom(seed: UInt64.random(in: 0...UInt64.max))
        let generation = SystemClock().wallNow().millisecondsSinceEpoch
        let membership = MembershipCore(me: me, address: advertised, generation: generation, seeds: config.seeds, random: rng.fork())
        // Cluster state lives in DATA/state: a snapshot plus a delta log, fsynced before peers are
        // told a delta is safe. A restart recovers it and starts a new epoch.
        let sync: DurableClusterSync
        do { sync = try DurableClusterSync.open(directory: data.statePath, node: me) } catch {
            throw PeerError.system("opening the cluster state in \(data.statePath): \(error)")
        }
        let events = EventRelay()
        swarmShell = SwarmShell(swarm: SwarmCore(me: me, settings: MeshNode.swarmSettings, seed: rng.next()), store: store,
                                outputs: outputs) { events.forward($0) }
        host = CoreHost(cores: [membership, sync, swarmShell, LinkEcho()], transport: transport)
        events.target = self
        // The swarm's commits and reads from the store run on its writer and reader threads and come
        // back under the host's lock from there (nothing holding the lock waits for those threads).
        swarmShell.reenter = { [host, swarmShell] body in host.withShell(swarmShell) { shell, now in body(shell, now) } }
    }

    /// The daemon's swarm settings: the planner's defaults, the seed's unique-first serving on. (It
    /// was off for a while: a peer whose `interested` reached another before that one knew the blob
    /// never heard of its chunks, and the seed's busy rejects left it stranded; both are fixed, see
    /// SwarmSeedingTests.)
    static var swarmSettings: SwarmSettings { SwarmSettings() }

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
        recordHoldings()
        // A `get` killed while its file streams in: its temp file goes within half a second.
        let timer = DispatchSource.makeTimerSource(queue: .global())
        timer.schedule(deadline: .now() + .milliseconds(500), repeating: .milliseconds(500))
        timer.setEventHandler { [outputs] in outputs.sweep() }
        timer.resume()
        sweeper = timer
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
        sweeper?.cancel()
        outputs.abandonAll("the daemon stopped")
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
        recordHoldings()
        refreshStoreMetrics()
    }

    /// Imports every image of an OCI image layout, offers all its blobs to the swarm, and records
    /// each image's `org.opencontainers.image.ref.name` in the cluster's image references, so any
    /// node can `gquic-fetch pull NAME`.
    public func addOCILayout(path: String) throws -> [OCIImportedImage] {
        let images = try store.importOCILayout(at: path)
        for image in images {
            for d in image.blobs {
                let m = try store.manifest(for: d)
                host.withShell(swarmShell) { shell, now in shell.hold(m, now: now) }
            }
            if let name = image.refName {
                clusterWrite("recording image reference \(name)") {
                    $0.setConfig(MeshNode.imageRefKey(name), image.digest.description, wall: SystemClock().wallNow())
                }
            }
        }
        recordHoldings()
        refreshStoreMetrics()
        return images
    }

    /// Cluster config keys that map an image reference name to its manifest or index digest.
    static func imageRefKey(_ name: String) -> String { "oci-ref:" + name }

    /// What an image reference names: a digest as it is, or a name recorded by some node's
    /// `gquic-fetch add oci:LAYOUT` (trying NAME:latest for a name without a tag).
    public func resolveImage(_ ref: String) -> Digest? {
        if let d = try? Digest(parsing: ref) { return d }
        return clusterRead { r in
            if let v = r.config(MeshNode.imageRefKey(ref)) { return try? Digest(parsing: v) }
            let lastPart = ref.split(separator: "/").last ?? ""
            if !lastPart.contains(":"), let v = r.config(MeshNode.imageRefKey(ref + ":latest")) { return try? Digest(parsing: v) }
            return nil
        } ?? nil
    }

    /// Every image reference name the cluster knows, with its digest.
    public func imageRefs() -> [(name: String, digest: String)] {
        let entries = clusterRead { $0.configEntries } ?? [:]
        let prefix = MeshNode.imageRefKey("")
        return entries.filter { $0.key.hasPrefix(prefix) }
            .map { (name: String($0.key.dropFirst(prefix.count)), digest: $0.value) }
            .sorted { $0.name < $1.name }
    }

    /// Starts fetching `digest` from the swarm (no-op if the store has it). Nodes the cluster state
    /// says hold it are dialled at once (not only the peers already linked), and the swarm learns
    /// which of them run games or are loaded, so it asks those last.
    /// With `output`, a file blob is also written to `output.target` as it arrives (see
    /// `StreamedOutput`; `/v1/export` then claims it).
    public func fetch(_ digest: Digest, output: StreamedOutputs.Request? = nil) {
        if store.hasBlob(digest) {
            finish(digest, .success(()))
            return
        }
        lock.withLock {
            finished[digest] = nil
            fetchStarted[digest] = SystemClock().now()
            fetchTook[digest] = nil
        }
        let me = identity.nodeID
        let holders: [(NodeID, PeerHint)] = clusterRead { r in
            r.holders(of: digest).filter { $0 != me }.map { ($0, MeshNode.hint(for: $0, in: r)) }
        } ?? []
        host.withShell(swarmShell) { shell, now in
            shell.setHints(holders)
            if let output { shell.stream(digest, output) }
            return shell.fetch(digest, now: now)
        }
        let linked = Set(transport.linkedPeers)
        let unlinked = Set(holders.map(\.0)).subtracting(linked)
        if !unlinked.isEmpty {
            let addresses = host.withCore(MembershipCore.self) { core, _ in
                (core.view.filter { unlinked.contains($0.node) && $0.status == .alive }.map(\.address), Outbox())
            } ?? []
            for a in addresses { transport.dial(a) }
        }
    }

    /// What the swarm should know of a holder: whether it runs a gaming container now, and its load.
    static func hint(for node: NodeID, in r: ClusterReplica) -> PeerHint {
        let gaming = r.containers(on: node).contains { $0.spec?.workloadClass == .gaming && $0.status == .running }
        let load = r.node(node)?.load.map { Double($0.cpuPermille) / 1000 } ?? 0
        return PeerHint(gaming: gaming, load: load)
    }

    // MARK: Cluster state

    /// Makes the cluster's record of what this node holds match its store: blobs added, fetched,
    /// evicted or collected (also while the node was down), one durable write each way.
    func recordHoldings() {
        let blobs = Set((try? store.blobs()) ?? [])
        guard let recorded = clusterRead({ $0.holdings(of: identity.nodeID) }) else { return }
        let added = blobs.subtracting(recorded), removed = recorded.subtracting(blobs)
        if !added.isEmpty { clusterWrite("recording \(added.count) held blobs") { $0.addHoldings(added.sorted()) } }
        if !removed.isEmpty { clusterWrite("retracting \(removed.count) blobs no longer held") { $0.removeHoldings(removed.sorted()) } }
    }

    /// Runs a write on the durable cluster state (fsynced before it returns); logs a failure.
    @discardableResult
    func clusterWrite(_ what: String, _ op: (inout ClusterReplica) -> ClusterReplica.Write) -> Bool {
        let failure: String?? = host.withCore(DurableClusterSync.self) { sync, now in
            do { return (nil, try sync.write(now: now, op)) } catch { return ("\(error)", Outbox()) }
        }
        if let f = failure ?? nil {
            logger.error("cluster state: \(what) failed: \(f)")
            return false
        }
        return true
    }

    /// Reads the local replica of the cluster state.
    func clusterRead<T>(_ body: (ClusterReplica) -> T) -> T? {
        host.withCore(DurableClusterSync.self) { sync, _ in (body(sync.replica), Outbox()) }
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

    /// Blocks the calling thread until `digest` is in the store, its fetch failed, or `timeout` passed;
    /// true unless it timed out. For the control server's threads (`/v1/transfer?wait=`), which used to
    /// poll the store every 10 ms for each waiting `get`.
    public func waitForBlob(_ digest: Digest, timeout: Duration) -> Bool {
        let sem = DispatchSemaphore(value: 0)
        let ended = lock.withLock { () -> Bool in
            if case .failure = finished[digest] { return true }
            if store.hasBlob(digest) { return true }
            blockedWaiters[digest, default: []].append(sem)
            return false
        }
        if ended { return true }
        let ms = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        if sem.wait(timeout: .now() + .milliseconds(ms)) == .success { return true }
        lock.withLock { blockedWaiters[digest]?.removeAll { $0 === sem } }
        return false
    }

    /// Progress of fetching `digest`, including the blobs it references that are fetched with it
    /// (an OCI image's config and layers count toward its manifest's progress).
    public func transferProgress(_ digest: Digest) -> SwarmProgress? {
        lock.withLock {
            guard var total = progress[digest] else { return nil }
            var seen: Set<Digest> = [digest]
            var queue = references[digest] ?? []
            while let d = queue.popLast() {
                guard seen.insert(d).inserted else { continue }
                queue += references[d] ?? []
                if let p = progress[d] {
                    total.bytesDone += p.bytesDone
                    total.bytesTotal += p.bytesTotal
                    total.rate += p.rate   // concurrent transfers: their rates add up
                    total.sources = max(total.sources, p.sources)
                } else if store.hasBlob(d), let m = try? store.manifest(for: d) {
                    total.bytesDone += m.size
                    total.bytesTotal += m.size
                }
            }
            return total
        }
    }

    /// How long the fetch of `digest` took, from `fetch` to the blob committed (or failed); until now
    /// while it runs. Nil if this node never fetched it.
    public func fetchDuration(_ digest: Digest) -> Duration? {
        lock.withLock {
            if let d = fetchTook[digest] { return d }
            return fetchStarted[digest].map { SystemClock().now() - $0 }
        }
    }

    /// Why the last fetch of `digest` failed, if it did.
    public func failure(_ digest: Digest) -> String? {
        lock.withLock { if case .failure(let e) = finished[digest] { e.description } else { nil } }
    }

    fileprivate func handle(_ e: SwarmShellEvent) {
        switch e {
        case .progress(let p):
            lock.withLock { progress[p.blob] = p }
        case .completed(let d, let hashed):
            if let (early, atCommit) = hashed {
                logger.info("fetched \(d.short) (content hash: \(early >> 20) MiB taken while it arrived, \(atCommit >> 20) MiB at the commit)")
            } else {
                logger.info("fetched \(d.short)")
            }
            if let m = try? store.manifest(for: d) {
                // Holding it now: tell the cluster (outside the host's lock: hop to a task).
                Task { self.announce(m) }
            }
            finish(d, .success(()))
        case .failed(let d, let why):
            logger.warning("fetch \(d.short) failed: \(why)")
            outputs.fail(d, why)
            finish(d, .failure(.protocolError(why)))
        case .awaitingReferences(let d, let missing):
            logger.info("\(d.short) arrived; fetching the \(missing.count) blob(s) it references")
            lock.withLock { references[d] = missing }
        case .penalized(let peer, let d, let why):
            logger.warning("peer \(peer.short) sent bad data for \(d.short): \(why)")
        case .streamFailed(let d, let target, let why):
            logger.warning("\(d.short) is not streamed to \(target) (it is exported after the commit): \(why)")
        }
    }

    private func finish(_ d: Digest, _ r: Result<Void, PeerError>) {
        let ws = lock.withLock { () -> [CheckedContinuation<Result<Void, PeerError>, Never>] in
            finished[d] = r
            if let t0 = fetchStarted[d], fetchTook[d] == nil { fetchTook[d] = SystemClock().now() - t0 }
            if let p = progress[d], case .success = r { var q = p; q.done = true; q.bytesDone = q.bytesTotal; progress[d] = q }
            for sem in blockedWaiters.removeValue(forKey: d) ?? [] { sem.signal() }
            return waiters.removeValue(forKey: d) ?? []
        }
        ws.forEach { $0.resume(returning: r) }
    }

    func refreshStoreMetrics() {
        metrics.storeBytes.set(Double(store.usedBytes))
        metrics.storeBlobs.set(Double((try? store.blobs().count) ?? 0))
    }

    // MARK: Control round trips (ping)

    /// Starts a probe run: control-class round trips to `probe.peer` (see `LinkEcho`).
    public func startProbe(_ probe: LinkEcho.Probe) {
        _ = host.withCore(LinkEcho.self) { core, now in ((), core.begin(probe, now: now)) }
    }

    /// What the current (or last) probe run measured; `stop` ends it first.
    public func probeReport(stop: Bool = false) -> LinkEcho.Report? {
        host.withCore(LinkEcho.self) { core, _ in
            if stop { core.end() }
            return (core.report, Outbox())
        } ?? nil
    }

    /// A member named by its full NodeID or a unique prefix of its short form.
    public func member(named text: String) -> NodeID? {
        if let id = NodeID(text) { return id }
        let matches = host.withCore(MembershipCore.self) { core, _ in
            (core.view.map(\.node).filter { $0.short.hasPrefix(text) || $0.description.hasPrefix(text) }, Outbox())
        } ?? []
        return matches.count == 1 ? matches[0] : nil
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
