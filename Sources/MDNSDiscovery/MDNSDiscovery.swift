import Logging
import MeshCore
import Synchronization

/// LAN discovery through avahi-daemon: publishes this node as `_gquic._udp` and reports the peers
/// it finds as join candidates for membership.
///
/// ```swift
/// if let mdns = MDNSDiscovery.startOrLog(announce: ann, logger: log) {
///     for await peer in mdns.joinCandidates { /* membership.addSeeds([peer.address]) */ }
/// }
/// ```
/// Threading: avahi runs its own poll thread; events are delivered through `AsyncStream`s. No avahi
/// type leaves this module.
public final class MDNSDiscovery: Sendable {
    public static let serviceType = "_gquic._udp"
    /// The version announced in the `v=` TXT record.
    public static let protocolVersion = 1

    /// Every event: found, lost, published, failed.
    public let events: AsyncStream<MDNSEvent>
    private let continuation: AsyncStream<MDNSEvent>.Continuation
    private let session: Mutex<AvahiSession?>
    public let announcement: MDNSAnnouncement?

    /// Connects to avahi-daemon, publishes `announce` (if given) and browses (if `browse`).
    /// Throws `MDNSError` with `isDaemonUnreachable` when there is no daemon or no system bus.
    public init(announce: MDNSAnnouncement?, browse: Bool = true) throws(MDNSError) {
        let (stream, cont) = AsyncStream<MDNSEvent>.makeStream(bufferingPolicy: .bufferingNewest(4096))
        events = stream
        continuation = cont
        announcement = announce
        let s = try AvahiSession(announcement: announce, browse: browse) { event in cont.yield(event) }
        session = Mutex(s)
    }

    /// Starts discovery, or logs once — clearly — why it is off and returns nil, so the node carries
    /// on from its seeds.
    public static func startOrLog(announce: MDNSAnnouncement?, browse: Bool = true, logger: Logger) -> MDNSDiscovery? {
        do {
            return try MDNSDiscovery(announce: announce, browse: browse)
        } catch {
            logger.warning("mDNS discovery disabled: \(error)")
            return nil
        }
    }

    /// Peers of our cluster found on the LAN, ourselves excluded: feed them to membership as seeds.
    /// It reads `events`, which has one consumer: iterate either this or `events`, not both.
    public var joinCandidates: AsyncStream<DiscoveredPeer> {
        let me = announcement?.nodeID
        let cluster = announcement?.clusterID
        let source = events
        return AsyncStream { cont in
            let task = Task {
                for await event in source {
                    guard case .found(let peer) = event else { continue }
                    if peer.nodeID == me { continue }
                    if let cluster, peer.clusterID != cluster { continue }
                    cont.yield(peer)
                }
                cont.finish()
            }
            cont.onTermination = { _ in task.cancel() }
        }
    }

    /// Withdraws our announcement (avahi sends the goodbye) and stops browsing.
    public func stop() {
        session.withLock { s in s?.stop(); s = nil }
        continuation.finish()
    }

    deinit { stop() }
}
