import MeshCore

/// One mesh link per peer, shared by every caller: concurrent requests for the same peer wait for a
/// single dial, a closed link is replaced on the next request, and failed dials back off
/// exponentially (so a dead peer is not hammered).
public actor ConnectionPool {
    public let endpoint: QUICEndpoint
    private var links: [NodeID: QUICLink] = [:]
    private var dialing: [NodeID: Task<QUICLink, Error>] = [:]
    private var failures: [NodeID: (count: Int, until: ContinuousClock.Instant)] = [:]
    /// First retry delay after a failed dial; doubles per failure up to `maxBackoff`.
    public let initialBackoff: Duration
    public let maxBackoff: Duration

    public init(endpoint: QUICEndpoint, initialBackoff: Duration = .milliseconds(250), maxBackoff: Duration = .seconds(30)) {
        self.endpoint = endpoint
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
    }

    /// The link to `peer` at `address`, dialling it if there is none (or it closed).
    public func link(to peer: NodeID, at address: PeerAddress) async throws -> QUICLink {
        if let l = links[peer], !l.isClosed { return l }
        if let t = dialing[peer] { return try await t.value }
        if let f = failures[peer], ContinuousClock.now < f.until {
            throw QUICError.closed("not redialling \(peer) yet: \(f.count) recent failed dial(s), backing off")
        }
        let endpoint = self.endpoint
        let task = Task { try await endpoint.connect(to: address, expecting: peer) }
        dialing[peer] = task
        defer { dialing[peer] = nil }
        do {
            let l = try await task.value
            links[peer] = l
            failures[peer] = nil
            return l
        } catch {
            let count = (failures[peer]?.count ?? 0) + 1
            let delay = min(maxBackoff, initialBackoff * (1 << min(count - 1, 16)))
            failures[peer] = (count, ContinuousClock.now + delay)
            throw error
        }
    }

    /// Adopts a link the peer opened to us, so our own requests to that peer reuse it.
    public func adopt(_ link: QUICLink) {
        if let existing = links[link.peer], !existing.isClosed { return }
        links[link.peer] = link
    }

    /// Links currently open.
    public var openLinks: [NodeID: QUICLink] { links.filter { !$0.value.isClosed } }
}
