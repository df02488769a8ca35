import MeshCore

/// One mesh link per peer, shared by every caller: concurrent requests for the same peer wait for a
/// single dial, a closed link is replaced on the next request, and failed dials back off
/// exponentially (so a dead peer is not hammered). Session tickets from every peer are remembered, so
/// a reconnect to a known peer resumes (no certificate exchange) and can carry its first control
/// message as 0-RTT data (`request`).
public actor ConnectionPool {
    public let endpoint: QUICEndpoint
    /// Resumption tickets by peer NodeID.
    public let tickets: TicketStore
    private var links: [NodeID: QUICLink] = [:]
    private var dialing: [NodeID: Task<QUICLink, Error>] = [:]
    private var failures: [NodeID: (count: Int, until: ContinuousClock.Instant)] = [:]
    /// First retry delay after a failed dial; doubles per failure up to `maxBackoff`.
    public let initialBackoff: Duration
    public let maxBackoff: Duration

    /// `ticketDirectory`: also keep resumption tickets there (one file per peer), so a restarted
    /// process resumes too. Default: in memory only.
    public init(endpoint: QUICEndpoint, initialBackoff: Duration = .milliseconds(250), maxBackoff: Duration = .seconds(30),
                ticketDirectory: String? = nil) {
        self.endpoint = endpoint
        self.tickets = TicketStore(directory: ticketDirectory)
        self.initialBackoff = initialBackoff
        self.maxBackoff = maxBackoff
    }

    /// The link to `peer` at `address`, dialling it if there is none (or it closed).
    public func link(to peer: NodeID, at address: PeerAddress) async throws -> QUICLink {
        try await link(to: peer, at: address, firstMessage: nil).link
    }

    /// Sends `message` on a new control stream to `peer` (finished) and returns the stream, to read
    /// the reply from. If the pool has to dial and holds a ticket for the peer, the message rides in
    /// the 0-RTT flight of the resumed handshake; keep it idempotent (see `QUICEndpoint.connect`).
    public func request(_ message: [UInt8], to peer: NodeID, at address: PeerAddress) async throws -> QUICStream {
        let (link, sent) = try await link(to: peer, at: address, firstMessage: message)
        if let sent { return sent }
        let s = try await link.openStream(.control)
        try await s.finish(message)
        return s
    }

    private func link(to peer: NodeID, at address: PeerAddress, firstMessage: [UInt8]?) async throws -> (link: QUICLink, sent: QUICStream?) {
        if let l = links[peer], !l.isClosed { return (l, nil) }
        if let t = dialing[peer] { return (try await t.value, nil) }
        if let f = failures[peer], ContinuousClock.now < f.until {
            throw QUICError.closed("not redialling \(peer) yet: \(f.count) recent failed dial(s), backing off")
        }
        let endpoint = self.endpoint, tickets = self.tickets
        let task = Task { try await endpoint.connect(to: address, expecting: peer, tickets: tickets, firstMessage: firstMessage) }
        dialing[peer] = task
        defer { dialing[peer] = nil }
        do {
            let l = try await task.value
            links[peer] = l
            failures[peer] = nil
            return (l, firstMessage == nil ? nil : l.firstStream)
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
