import MeshCore

/// The edge composition a shell drives: `ClusterSync` plus its disk and its change streams. It
/// conforms to `MeshProtocolCore`, so the daemon's host loop drives it like any core, and after
/// every call it fsyncs the deltas the core joined *before* handing back the outbox (whose acks
/// tell peers those deltas are safe) and publishes the changes to subscribers.
///
/// Fail-stop: if the disk fails, the error is kept in `diskError`, writes throw, and every later
/// outbox is withheld (no acks for deltas that are not durable). Restart the node to recover.
/// The pure core stays in `ClusterSync`; this type is the only one here that touches the disk.
public struct DurableClusterSync: MeshProtocolCore {
    public private(set) var core: ClusterSync
    public let disk: ClusterStateDisk
    public let events: ClusterEvents
    /// The disk error that stopped this node, if any.
    public private(set) var diskError: ClusterStateError?
    /// The log is folded into a new snapshot when it grows past this. Default 64 MiB.
    public var snapshotAfterLogBytes = 64 << 20

    /// Opens `directory`, recovers the replica, and starts a new epoch.
    public static func open(directory: String, node: NodeID, settings: ClusterSync.Settings = .init(),
                            events: ClusterEvents = ClusterEvents()) throws(ClusterStateError) -> DurableClusterSync {
        let (disk, recovered) = try ClusterStateDisk.open(directory: directory)
        let core = ClusterSync(replica: ClusterReplica(node: node, data: recovered.data), epoch: recovered.epoch, settings: settings)
        return DurableClusterSync(core: core, disk: disk, events: events)
    }

    public var replica: ClusterReplica { core.replica }

    /// A local write: durable when this returns (then the caller may report success).
    public mutating func write(now: Instant, _ op: (inout ClusterReplica) -> ClusterReplica.Write) throws(ClusterStateError) -> Outbox {
        if let e = diskError { throw e }
        let out = settle(core.write(now: now, op))
        if let e = diskError { throw e }
        return out
    }

    public mutating func start(now: Instant) -> Outbox { settle(core.start(now: now)) }
    public mutating func receive(_ message: PeerMessage, now: Instant) -> Outbox { settle(core.receive(message, now: now)) }
    public mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox { settle(core.linkChanged(event, now: now)) }
    public mutating func tick(now: Instant) -> Outbox { settle(core.tick(now: now)) }
    public func handles(frameType type: UInt64) -> Bool { core.handles(frameType: type) }

    private mutating func settle(_ out: Outbox) -> Outbox {
        guard diskError == nil else { return Outbox() }
        do {
            try disk.append(core.takeApplied())
            if disk.logBytes > snapshotAfterLogBytes { try disk.snapshot(core.replica.data) }
        } catch {
            diskError = error
            return Outbox()
        }
        events.publish(core.takeChanges())
        return out
    }
}
