import Foundation
import Logging
import MeshCore
import QUICTransport
import Synchronization

/// The daemon's `LinkTransport`: one authenticated QUIC connection per peer (ALPN `gquic/1`).
///
/// Each traffic class gets its own unidirectional stream per link, opened on first use, so the
/// endpoint's class scheduler puts control ahead of bulk; frames on one class stay in order.
/// Unreliable messages that fit ride DATAGRAM frames. Inbound frames are bounded by
/// `maxFramePayload` before anything is buffered.
public final class QUICLinkTransport: LinkTransport, Sendable {
    public let endpoint: QUICEndpoint
    private let logger: Logger
    private let metrics: PeerMetrics?
    private let state = Mutex<State>(State())
    /// The largest frame a peer may send us (a 4 MiB chunk plus headers).
    public static let maxFramePayload = 8 << 20
    /// DATAGRAM payloads above this go on a stream instead (the endpoint's frame limit is 1200).
    static let maxDatagram = 1100

    struct State {
        var sink: (any LinkEventSink)?
        var links: [NodeID: Peer] = [:]
        /// Frame bytes per peer and class since the peer was first linked: (sent, received).
        var bytes: [NodeID: [TrafficClass: (sent: UInt64, received: UInt64)]] = [:]
    }

    /// Bytes sent and received per traffic class on the link to `peer`.
    public func byteCounts(_ peer: NodeID) -> [TrafficClass: (sent: UInt64, received: UInt64)] {
        state.withLock { $0.bytes[peer] ?? [:] }
    }

    private func count(_ peer: NodeID, _ c: TrafficClass, sent: Int = 0, received: Int = 0) {
        state.withLock { s in
            var v = s.bytes[peer]?[c] ?? (0, 0)
            v.sent += UInt64(sent); v.received += UInt64(received)
            s.bytes[peer, default: [:]][c] = v
        }
    }

    final class Peer: Sendable {
        let link: QUICLink
        let writers: [TrafficClass: AsyncStream<[[UInt8]]>.Continuation]
        init(link: QUICLink, writers: [TrafficClass: AsyncStream<[[UInt8]]>.Continuation]) { self.link = link; self.writers = writers }
    }

    public init(identity: NodeIdentity, listen: PeerAddress, admission: AdmissionPolicy, joinToken: JoinToken? = nil,
                settings: QUICSettings = QUICSettings(), logger: Logger, metrics: PeerMetrics? = nil) throws {
        var config = QUICEndpoint.Configuration(tls: try .mesh(identity: identity, admission: admission, joinToken: joinToken))
        config.settings = settings
        config.logger = logger
        endpoint = try QUICEndpoint(bind: listen, configuration: config)
        self.logger = logger
        self.metrics = metrics
    }

    public var localAddress: PeerAddress { endpoint.localAddress }

    public func attach(_ sink: any LinkEventSink) {
        state.withLock { $0.sink = sink }
        Task { [self] in
            for await link in endpoint.incomingLinks { register(link) }
        }
    }

    public func dial(_ address: PeerAddress) {
        Task { [self] in
            do {
                let link = try await endpoint.connect(to: address)
                register(link)
            } catch {
                logger.info("dial \(address) failed: \(error)")
                sink?.deliver(.dialFailed(address: address))
            }
        }
    }

    public func send(_ message: PeerMessage) {
        guard let peer = state.withLock({ $0.links[message.peer] }) else { return }
        let size = message.frame.encodedCount
        metrics?.sent(size, on: message.traffic)
        count(message.peer, message.traffic, sent: size)
        if message.unreliable && size <= QUICLinkTransport.maxDatagram {
            peer.link.sendDatagram(message.frame.encoded)
        } else {
            // Header and payload go to the stream as two pieces: the payload is not copied into a
            // new array behind the header first.
            peer.writers[message.traffic]?.yield([message.frame.header, message.frame.payload])
        }
    }

    /// Peers with an open link.
    public var linkedPeers: [NodeID] { state.withLock { Array($0.links.keys) } }

    public func link(to peer: NodeID) -> QUICLink? { state.withLock { $0.links[peer]?.link } }

    public func shutdown() {
        let peers = state.withLock { s -> [Peer] in defer { s.links = [:] }; return Array(s.links.values) }
        for p in peers { p.writers.values.forEach { $0.finish() } }
        endpoint.shutdown()
    }

    private var sink: (any LinkEventSink)? { state.withLock { $0.sink } }

    private func register(_ link: QUICLink) {
        var writers: [TrafficClass: AsyncStream<[[UInt8]]>.Continuation] = [:]
        for c in TrafficClass.allCases {
            let (stream, cont) = AsyncStream.makeStream(of: [[UInt8]].self, bufferingPolicy: .unbounded)
            writers[c] = cont
            Task { [logger] in
                // Opened lazily: the first frame on this class opens its stream.
                var out: QUICStream?
                for await parts in stream {
                    do {
                        if out == nil { out = try await link.openStream(c, bidirectional: false) }
                        try await out!.write(parts: parts)
                    } catch {
                        logger.debug("link \(link.peer.short) \(c) stream failed: \(error)")
                        return
                    }
                }
                try? await out?.finish()
            }
        }
        let peer = Peer(link: link, writers: writers)
        let replaced = state.withLock { s -> Peer? in
            defer { s.links[link.peer] = peer }
            return s.links[link.peer]
        }
        replaced?.writers.values.forEach { $0.finish() }
        logger.info("link up: \(link.peer.short) at \(link.remoteAddress)")
        Task { [self] in
            await withTaskGroup(of: Void.self) { group in
                group.addTask { [self] in
                    for await stream in link.incomingStreams {
                        Task { await self.readFrames(stream, from: link.peer) }
                    }
                }
                group.addTask { [self] in
                    for await datagram in link.datagrams {
                        var decoder = FrameDecoder(maxPayload: QUICLinkTransport.maxDatagram)
                        decoder.append(datagram)
                        if let frame = try? decoder.next(), decoder.isIdle {
                            metrics?.received(datagram.count, on: .control)
                            count(link.peer, .control, received: datagram.count)
                            sink?.deliver(PeerMessage(peer: link.peer, traffic: .control, frame: frame, unreliable: true))
                        }
                    }
                }
            }
        }
        Task { [self] in
            let why = await link.waitClosed()
            let wasCurrent = state.withLock { s -> Bool in
                guard s.links[link.peer] === peer else { return false }
                s.links[link.peer] = nil
                return true
            }
            writers.values.forEach { $0.finish() }
            if wasCurrent {
                logger.info("link down: \(link.peer.short)\(why.map { " (\($0))" } ?? "")")
                sink?.deliver(.down(peer: link.peer))
            }
        }
        sink?.deliver(.up(peer: link.peer, address: link.remoteAddress, rtt: link.handshakeRTT))
    }

    private func readFrames(_ stream: QUICStream, from peer: NodeID) async {
        var decoder = FrameDecoder(maxPayload: QUICLinkTransport.maxFramePayload)
        do {
            // Woken once the next frame is complete (up to QUICStream.maxReadMinimum), not per packet.
            while let bytes = try await stream.read(minimum: decoder.bytesWanted) {
                metrics?.received(bytes.count, on: stream.trafficClass)
                count(peer, stream.trafficClass, received: bytes.count)
                decoder.append(bytes)
                while let frame = try decoder.next() {
                    sink?.deliver(PeerMessage(peer: peer, traffic: stream.trafficClass, frame: frame))
                }
            }
        } catch {
            // A malformed frame closes that stream (not the link): stop reading and tell the peer.
            logger.warning("closing a \(stream.trafficClass) stream from \(peer.short): \(error)")
            stream.stopSending(errorCode: 0x101)
        }
    }
}
