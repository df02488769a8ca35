import Synchronization

/// Fans cluster changes out to any number of subscribers as `AsyncStream`s (dashboards, event
/// streams). The shell publishes what `ClusterSync.takeChanges()` returns.
public final class ClusterEvents: Sendable {
    private let subscribers = Mutex<(next: Int, continuations: [Int: AsyncStream<ClusterChange>.Continuation])>((0, [:]))

    public init() {}

    /// A stream of every change published from now on. A slow reader keeps the newest
    /// `bufferLimit` changes and loses older ones rather than holding memory without bound.
    public func subscribe(bufferLimit: Int = 10_000) -> AsyncStream<ClusterChange> {
        let (stream, continuation) = AsyncStream<ClusterChange>.makeStream(bufferingPolicy: .bufferingNewest(bufferLimit))
        let id = subscribers.withLock { s in
            let id = s.next
            s.next += 1
            s.continuations[id] = continuation
            return id
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.continuations.removeValue(forKey: id) }
        }
        return stream
    }

    public func publish(_ changes: [ClusterChange]) {
        guard !changes.isEmpty else { return }
        let targets = subscribers.withLock { Array($0.continuations.values) }
        for c in targets { for change in changes { c.yield(change) } }
    }

    public var subscriberCount: Int { subscribers.withLock { $0.continuations.count } }

    /// Ends every stream.
    public func finish() {
        let targets = subscribers.withLock { s in
            defer { s.continuations = [:] }
            return Array(s.continuations.values)
        }
        for c in targets { c.finish() }
    }
}
