import CNgtcp2
import MeshCore

/// What runs on top of a connection once the handshake is done: the mesh stream scheduler
/// (`MeshStreams`, ALPN `gquic/1`) or HTTP/3 (`HTTP3Session`, ALPN `h3`). All calls happen on the
/// connection's owner thread, inside ngtcp2 callbacks or the write loop.
protocol QUICApplication: AnyObject {
    /// The handshake completed and the peer is authenticated.
    func start(_ connection: QUICConnection) throws(QUICError)
    /// Stream bytes in order of arrival (ngtcp2 hands them over in order). Throwing closes the connection.
    func receivedStreamData(_ connection: QUICConnection, stream: Int64, data: UnsafeRawBufferPointer, fin: Bool) throws(QUICError)
    /// The peer opened a stream.
    func streamOpened(_ connection: QUICConnection, stream: Int64)
    /// A stream is gone from ngtcp2 (both directions done, or reset).
    func streamClosed(_ connection: QUICConnection, stream: Int64, errorCode: UInt64?)
    /// The peer reset its sending side.
    func streamReset(_ connection: QUICConnection, stream: Int64, errorCode: UInt64)
    /// The peer asked us to stop sending.
    func stopSending(_ connection: QUICConnection, stream: Int64, errorCode: UInt64)
    /// The peer acknowledged `length` bytes at `offset`: their buffers may be released.
    func ackedStreamData(_ connection: QUICConnection, stream: Int64, offset: UInt64, length: UInt64)
    /// Flow control opened for `stream`.
    func streamUnblocked(_ connection: QUICConnection, stream: Int64)
    /// The peer allows more locally-opened streams.
    func moreStreamsAllowed(_ connection: QUICConnection)
    /// A DATAGRAM frame arrived.
    func receivedDatagram(_ connection: QUICConnection, data: UnsafeRawBufferPointer)
    /// The next stream data to send, highest priority first: fills `vecs` and returns the stream,
    /// the number of vecs used, and whether the data ends the stream. Nil when nothing is ready.
    func nextStreamData(_ connection: QUICConnection, vecs: UnsafeMutableBufferPointer<ngtcp2_vec>) -> (stream: Int64, count: Int, fin: Bool)?
    /// ngtcp2 took `count` bytes of the data last offered on `stream` (and the FIN if `fin`).
    func wroteStreamData(_ connection: QUICConnection, stream: Int64, count: Int, fin: Bool)
    /// The stream cannot send now (flow control, or its write side is shut).
    func streamBlocked(_ connection: QUICConnection, stream: Int64, permanently: Bool)
    /// The connection is over; `error` says why (nil for a clean close).
    func connectionClosed(_ connection: QUICConnection, error: QUICError?)
    /// The handshake completed (after `start`, which may have run earlier for 0-RTT).
    func handshakeCompleted(_ connection: QUICConnection)
    /// The server refused our 0-RTT data: ngtcp2 forgot every stream opened so far.
    func earlyDataRejected(_ connection: QUICConnection)
    /// A timer of the application's own (the connection folds it into `nextTimeout`).
    var deadline: Instant? { get }
    /// `deadline` passed.
    func deadlineReached(_ connection: QUICConnection, now: Instant)
    /// The class of a stream we send on (for DSCP marking), if the application has classes.
    func trafficClass(of stream: Int64) -> TrafficClass?
}

extension QUICApplication {
    func handshakeCompleted(_ connection: QUICConnection) {}
    func earlyDataRejected(_ connection: QUICConnection) {}
    var deadline: Instant? { nil }
    func deadlineReached(_ connection: QUICConnection, now: Instant) {}
    func trafficClass(of stream: Int64) -> TrafficClass? { nil }
}

extension TrafficClass {
    /// DSCP when marking is on: EF (46) for control, CS1 (8, lower effort) for bulk, best effort else.
    var dscp: UInt8 {
        switch self {
        case .control: 46
        case .bulk: 8
        default: 0
        }
    }
}

/// Congestion controllers ngtcp2 0.12 offers. BBR is the default: in this ngtcp2, CUBIC collapses at
/// 1% random loss while BBR holds the link rate (docs/benchmarks.md).
public enum CongestionControl: String, Sendable, CaseIterable {
    case bbr, bbr2, cubic, reno

    var ngtcp2: ngtcp2_cc_algo {
        switch self {
        case .bbr: NGTCP2_CC_ALGO_BBR
        case .bbr2: NGTCP2_CC_ALGO_BBR2
        case .cubic: NGTCP2_CC_ALGO_CUBIC
        case .reno: NGTCP2_CC_ALGO_RENO
        }
    }
}

/// Transport settings for every connection of an endpoint. Defaults are sized for throughput on a
/// LAN: flow-control windows start at 4 MiB per stream and auto-tune up to 32 MiB.
public struct QUICSettings: Sendable {
    /// Default BBR (see `CongestionControl`).
    public var congestionControl: CongestionControl = .bbr
    /// Close a connection silent for this long. Default 30 s.
    public var idleTimeout: Duration = .seconds(30)
    /// Give up a handshake after this long. Default 10 s.
    public var handshakeTimeout: Duration = .seconds(10)
    /// Connection-level flow-control window at start. Default 16 MiB.
    public var initialMaxData: UInt64 = 16 << 20
    /// Stream-level flow-control window at start. Default 4 MiB.
    public var initialMaxStreamData: UInt64 = 4 << 20
    /// Auto-tuning ceiling for the connection window. Default 64 MiB.
    public var maxWindow: UInt64 = 64 << 20
    /// Auto-tuning ceiling for a stream window. Default 32 MiB.
    public var maxStreamWindow: UInt64 = 32 << 20
    /// Concurrent bidirectional streams the peer may open. Default 4096.
    public var maxStreamsBidi: UInt64 = 4096
    /// Concurrent unidirectional streams the peer may open. Default 1024.
    public var maxStreamsUni: UInt64 = 1024
    /// Largest DATAGRAM frame accepted (RFC 9221). Default 1200 bytes; 0 disables DATAGRAM.
    public var maxDatagramFrameSize: UInt64 = 1200
    /// Largest UDP payload we send. Default 1452 (Ethernet MTU minus headers).
    public var maxUDPPayloadSize: Int = 1452
    /// Acknowledge at once after this many ack-eliciting packets (else within the peer's max ACK
    /// delay, 25 ms). ngtcp2's default is 2; a bulk receiver at 100 Mbit/s then sends an ACK every
    /// other packet, ~4,500 a second, each a syscall and an encryption for it and a loss-recovery
    /// update for the sender.
    public var ackThreshold: Int = 2
    /// Send a PING after this much silence, so the idle timeout never fires on a live peer
    /// (`ngtcp2_conn_set_keep_alive_timeout`). Default nil (off); `ConnectionPool` users set it.
    public var keepAlive: Duration? = nil

    /// Write a qlog file per connection into this directory (it must exist). Default nil (off).
    public var qlogDirectory: String? = nil

    /// Send-rate caps per traffic class, bytes per second (token buckets, 10 ms burst). Default none:
    /// classes are limited only by priority and congestion control.
    public var classRateLimits: [TrafficClass: Double] = [:]
    /// Mark packets with a DSCP by the highest traffic class they carry: EF for control, CS1 for
    /// bulk, best effort for the rest (and for packets without stream data). Default false: only useful
    /// where routers honour DSCP, and some networks bleach or penalise unknown marks.
    public var dscpMarking = false
    /// Use ECN: send ECT(0) as ngtcp2 decides (it validates the path and stops if marks are lost) and
    /// report the codepoints we receive (read with IP_RECVTOS). Default true.
    public var ecn = true
    /// Scavenger mode for the bulk class (see `ScavengerSettings`). Default nil (off): on a LAN, CPU
    /// scheduling noise on a loaded host reads as queuing delay and would throttle bulk needlessly,
    /// and within one connection the scheduler already sends control first. Turn it on for links
    /// that share a bottleneck with latency-sensitive traffic (WAN, Wi-Fi, uplinks).
    public var bulkScavenger: ScavengerSettings? = nil

    /// Client: a token to put in the first Initial (tests forge one to check address validation).
    var initialToken: [UInt8]? = nil

    public init() {}
}

/// Per-connection numbers for metrics and `gquic-peer` status.
public struct ConnectionStats: Sendable, CustomStringConvertible {
    public var smoothedRTT: Duration
    public var rttVariance: Duration
    public var minRTT: Duration
    public var latestRTT: Duration
    public var congestionWindow: UInt64
    public var bytesInFlight: UInt64
    public var bytesSent: UInt64
    public var bytesReceived: UInt64
    public var packetsSent: UInt64
    public var packetsReceived: UInt64
    /// Open streams by traffic class (mesh links only).
    public var streamsByClass: [TrafficClass: Int]
    /// Packets declared lost that carried stream data (see `QUICConnection.lostPackets` for what
    /// ngtcp2 0.12 can count).
    public var lostPackets: UInt64 = 0
    /// Probe timeouts in a row right now (ngtcp2's `pto_count`; non-zero means the peer went quiet).
    public var probeTimeouts: UInt64 = 0
    /// Slow-start threshold in bytes (`UInt64.max` until the first congestion event).
    public var slowStartThreshold: UInt64 = .max
    /// The congestion controller's pacing rate, bytes per second (0 when not pacing).
    public var pacingRate: Double = 0
    /// Delivery rate estimate, bytes per second.
    public var deliveryRate: UInt64 = 0
    /// The handshake resumed an earlier session.
    public var resumed = false

    struct Extra {
        var lostPackets: UInt64 = 0, probeTimeouts: UInt64 = 0, slowStartThreshold: UInt64 = .max
        var pacingRate: Double = 0, deliveryRate: UInt64 = 0, resumed = false
    }

    init(smoothedRTT: Duration, rttVariance: Duration, minRTT: Duration, latestRTT: Duration, congestionWindow: UInt64,
         bytesInFlight: UInt64, bytesSent: UInt64, bytesReceived: UInt64, packetsSent: UInt64, packetsReceived: UInt64,
         streamsByClass: [TrafficClass: Int], extra: Extra) {
        self.smoothedRTT = smoothedRTT; self.rttVariance = rttVariance; self.minRTT = minRTT; self.latestRTT = latestRTT
        self.congestionWindow = congestionWindow; self.bytesInFlight = bytesInFlight
        self.bytesSent = bytesSent; self.bytesReceived = bytesReceived
        self.packetsSent = packetsSent; self.packetsReceived = packetsReceived; self.streamsByClass = streamsByClass
        lostPackets = extra.lostPackets; probeTimeouts = extra.probeTimeouts; slowStartThreshold = extra.slowStartThreshold
        pacingRate = extra.pacingRate; deliveryRate = extra.deliveryRate; resumed = extra.resumed
    }

    public var description: String {
        let classes = TrafficClass.allCases.compactMap { c in streamsByClass[c].map { "\(c)=\($0)" } }.joined(separator: ",")
        return "srtt=\(smoothedRTT) rttvar=\(rttVariance) cwnd=\(congestionWindow) inflight=\(bytesInFlight) "
            + "sent=\(bytesSent)B/\(packetsSent)pkt recv=\(bytesReceived)B/\(packetsReceived)pkt lost=\(lostPackets)pkt"
            + (classes.isEmpty ? "" : " streams=\(classes)")
    }
}
