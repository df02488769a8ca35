import MeshCore

/// One message leaving a node, as the link layer sees it.
public struct SimTransmission: Sendable {
    public var from: Int
    public var to: Int
    /// Encoded frame bytes (type, length, payload).
    public var bytes: Int
    public var unreliable: Bool
    /// Priority class: a message waits only for queued messages of its own or a higher class.
    public var traffic: TrafficClass
    /// The message may not leave before this instant (a connection handshake still running).
    public var notBefore: UInt64
    public init(from: Int, to: Int, bytes: Int, unreliable: Bool, traffic: TrafficClass = .bulk, notBefore: UInt64) {
        self.from = from; self.to = to; self.bytes = bytes; self.unreliable = unreliable
        self.traffic = traffic; self.notBefore = notBefore
    }
}

/// What happened to a transmission.
public enum SimLinkVerdict: Sendable, Equatable {
    /// Arrives whole at the receiver at this virtual instant (nanoseconds).
    case deliver(at: UInt64, wireBytes: Int)
    /// Lost for good (an unreliable message hit a lost packet, or a reliable one ran out of retries).
    case lost(wireBytes: Int)
}

/// The link layer between hosts. The world asks it when a message arrives; partitions, crashes and
/// routing are the world's business, capacity, latency, jitter, loss and reordering are the link's.
///
/// Two fidelities are meant to sit behind this seam: `MessageLevelLinks` (here: arithmetic per
/// message, for 10,000 nodes) and, once QUICTransport lands, a packet-level layer that carries real
/// ngtcp2 packets between real `QUICConnection`s (docs/architecture.md, "MeshSimulator").
public protocol SimLinkLayer {
    /// Plans one message. Called in event order, so any state the layer keeps (queues) is causal.
    mutating func transmit(_ t: SimTransmission, random: inout SeededRandom) -> SimLinkVerdict
    /// One-way base latency between two nodes in nanoseconds (handshakes and timeouts use it).
    func latency(from: Int, to: Int) -> UInt64
    /// Scales a node's upload and download capacity (slow-node faults); 1 is the configured rate.
    mutating func setBandwidthFactor(_ factor: Double, node: Int)
    /// The packet loss probability from now on.
    var loss: Double { get set }
}

/// Message-level links: each node has an uplink and a downlink with a capacity.
///
/// A message of `W` wire bytes (payload + per-packet overhead) from `a` to `b`:
/// - waits for `a`'s uplink to be free, then occupies it for `W / up(a)` (serialisation and
///   queueing delay at the sender);
/// - its first bit reaches `b` one latency (plus jitter) after it started leaving;
/// - occupies `b`'s downlink for `W / down(b)`, after whatever `b` is already receiving;
/// - is whole at `b` when both the last bit has crossed and `b`'s downlink has taken it in.
/// The uplink is shared by priority class (control > interactive > telemetry > bulk) as QUIC's
/// stream scheduler does: a message waits for queued messages of its own and higher classes only,
/// and pushes the queued lower-class backlog back by its own serialisation time.
/// So a lone transfer takes `latency + W / min(up, down)`, and a node pushing to many peers, or
/// many peers pushing to one node, shares the bottleneck. Downlink time is granted in the order
/// messages are sent (per class, with the same priority rule), not the order they arrive — an
/// approximation that keeps one event per message.
///
/// With `fifo` > 0 the priority stops at the kernel: a message also waits for lower-class backlog,
/// up to `fifo` of it (the bytes QUIC already handed to the qdisc queue, e.g. tc tbf's backlog).
///
/// Loss is per packet (`ceil(bytes / mtu)` packets). An unreliable message with a lost packet is
/// dropped. A reliable one is delayed by one probe timeout (2 × latency + 1 ms) per round in which a
/// packet of it was lost (as QUIC retransmits), and dropped after 16 rounds; retransmitted bytes do not
/// take extra capacity. With `reorder` > 0 a fraction of messages is held back by up to
/// `reorderDelay`, so later ones overtake it; jitter alone also reorders (messages are not FIFO per
/// pair, as separate QUIC streams are not).
public struct MessageLevelLinks: SimLinkLayer {
    public let settings: LinkSettings
    public var loss: Double
    /// A node's side of the network, kept together so one message touches few cache lines.
    struct Port {
        /// Per class: when that class's uplink queue drains.
        var upFree: SIMD4<UInt64> = .zero
        /// Per class: when that class's downlink backlog drains.
        var downFree: SIMD4<UInt64> = .zero
        var nsPerByteUp: Double
        var nsPerByteDown: Double
        var region: Int
    }
    private var ports: [Port]
    private let regionCount: Int
    private let latencyNs: [UInt64]
    private let baseUp: [Double]
    private let baseDown: [Double]
    private let jitterNs: UInt64
    private let reorderNs: UInt64
    private let fifoNs: UInt64
    /// The hosts' CPUs, when the scenario models them (`cpu` line): a message's send work must be
    /// done before its last byte leaves, its receive work before the receiver's core sees it.
    public private(set) var cpu: SimCPU?

    /// - Parameters:
    ///   - regionOf: each node's region index.
    ///   - latency: one-way latency between regions.
    ///   - capacity: per region, (up, down) bytes per second; nil takes `settings`.
    public init(settings: LinkSettings, regionOf: [Int], latency: [[Duration]], capacity: [(up: Double?, down: Double?)]) {
        self.settings = settings
        loss = settings.loss
        regionCount = latency.count
        latencyNs = latency.flatMap { $0.map { UInt64(max(0, $0.nanosecondsClamped)) } }
        let up = regionOf.map { 1e9 / (capacity[$0].up ?? settings.up) }
        let down = regionOf.map { 1e9 / (capacity[$0].down ?? settings.down) }
        baseUp = up
        baseDown = down
        ports = regionOf.indices.map { Port(nsPerByteUp: up[$0], nsPerByteDown: down[$0], region: regionOf[$0]) }
        jitterNs = UInt64(max(0, settings.jitter.nanosecondsClamped))
        reorderNs = UInt64(max(0, settings.reorderDelay.nanosecondsClamped))
        fifoNs = UInt64(max(0, settings.fifo.nanosecondsClamped))
        cpu = settings.cpu.map { SimCPU(settings: $0, nodes: regionOf.count) }
    }

    /// Bytes on the wire for `bytes` of frame: each packet of up to `mtu` bytes adds `overhead`.
    public func wireBytes(_ bytes: Int) -> Int {
        let packets = max(1, (bytes + settings.mtu - 1) / settings.mtu)
        return bytes + packets * settings.overhead
    }

    @inline(__always)
    public func latency(from: Int, to: Int) -> UInt64 {
        latencyNs[ports[from].region * regionCount + ports[to].region]
    }

    public mutating func setBandwidthFactor(_ factor: Double, node: Int) {
        ports[node].nsPerByteUp = baseUp[node] / factor
        ports[node].nsPerByteDown = baseDown[node] / factor
    }

    @inline(__always)
    private static func chance(_ p: Double, _ random: inout SeededRandom) -> Bool {
        Double(random.next() >> 11) * 0x1p-53 < p
    }

    public mutating func transmit(_ t: SimTransmission, random: inout SeededRandom) -> SimLinkVerdict {
        let wire = wireBytes(t.bytes)
        let k = Int(t.traffic.rawValue)
        var up = ports[t.from]
        var sendStart = t.notBefore
        for j in 0...k { sendStart = max(sendStart, up.upFree[j]) }
        if fifoNs > 0, k < 3 {
            // The kernel's queue: lower-class bytes already handed to it (up to `fifo` of them) go
            // first, whatever the class of what comes next.
            for j in (k + 1)...3 where up.upFree[j] > t.notBefore { sendStart = max(sendStart, min(up.upFree[j], t.notBefore + fifoNs)) }
        }
        let serialise = UInt64((Double(wire) * up.nsPerByteUp).rounded(.up))
        var upDone = sendStart + serialise
        if cpu != nil {
            // Packets are built as the link takes them: the last byte leaves once both are done.
            let done = cpu!.run(node: t.from, cost: Double(wire) * cpu!.settings.sendNsPerByte, ready: sendStart, now: t.notBefore)
            upDone = max(upDone, done)
        }
        up.upFree[k] = upDone
        if k < 3 {
            for j in (k + 1)...3 {
                up.upFree[j] = up.upFree[j] > sendStart ? up.upFree[j] + serialise : max(up.upFree[j], upDone)
            }
        }
        ports[t.from].upFree = up.upFree
        let base = latency(from: t.from, to: t.to)
        var lat = base
        if jitterNs > 0 { lat += random.next() % (jitterNs + 1) }
        if settings.reorder > 0, MessageLevelLinks.chance(settings.reorder, &random) {
            lat += random.next() % (reorderNs + 1)
        }
        var extra: UInt64 = 0
        if loss > 0 {
            var packets = max(1, (t.bytes + settings.mtu - 1) / settings.mtu)
            var rounds = 0
            while MessageLevelLinks.chance(1 - pow1p(-loss, packets), &random) {
                if t.unreliable { return .lost(wireBytes: wire) }
                rounds += 1
                if rounds >= 16 { return .lost(wireBytes: wire) }
                extra += 2 * base + 1_000_000
                packets = max(1, Int((Double(packets) * loss).rounded(.up)))
            }
        }
        var down = ports[t.to].downFree
        var recvStart = sendStart + lat
        for j in 0...k { recvStart = max(recvStart, down[j]) }
        let take = UInt64((Double(wire) * ports[t.to].nsPerByteDown).rounded(.up))
        var recvDone = max(recvStart + take, upDone + lat)
        if cpu != nil {
            // Decrypted and verified as its packets arrive: whole once the receiver's CPU is done too.
            let done = cpu!.run(node: t.to, cost: Double(wire) * cpu!.settings.recvNsPerByte, ready: max(recvStart, sendStart + lat), now: t.notBefore)
            recvDone = max(recvDone, done)
        }
        down[k] = recvDone
        if k < 3 {
            for j in (k + 1)...3 {
                down[j] = down[j] > recvStart ? down[j] + take : max(down[j], recvDone)
            }
        }
        ports[t.to].downFree = down
        return .deliver(at: recvDone + extra, wireBytes: wire)
    }
}

/// (1 + x)^n for small n without Foundation.
@inline(__always)
private func pow1p(_ x: Double, _ n: Int) -> Double {
    var result = 1.0, base = 1 + x, e = n
    while e > 0 {
        if e & 1 == 1 { result *= base }
        base *= base
        e >>= 1
    }
    return result
}
