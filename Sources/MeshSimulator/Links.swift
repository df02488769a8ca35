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
    /// Has crossed the sender's uplink and the path, and reaches the receiver's downlink at
    /// `arrival.at`. The world calls `SimLinkLayer.arrive` at that instant (so arrivals at one
    /// receiver are taken in the order they arrive, not the order they were sent), and delivers the
    /// message at the instant it returns.
    case arrive(SimArrival)
    /// Lost for good (an unreliable message hit a lost packet, or a reliable one ran out of retries).
    case lost(wireBytes: Int)
}

/// A message on its way to the receiver's downlink (`SimLinkVerdict.arrive`): what the downlink
/// needs to take it in order.
public struct SimArrival: Sendable, Equatable {
    /// When the receiver's downlink can start taking it: the later of its first bit's arrival and
    /// the instant from which the downlink, at its own rate, would finish with the last bit.
    public var at: UInt64
    /// When its first bit reaches the receiver (the receiver's CPU can start on it from then).
    public var firstBit: UInt64
    /// When its last bit has crossed the path (sender's uplink done + latency).
    public var lastBit: UInt64
    /// Retransmission delay from loss, added after the downlink has taken it.
    public var extra: UInt64
    public var to: Int32
    public var wireBytes: Int32
    public var traffic: TrafficClass
    public init(at: UInt64, firstBit: UInt64, lastBit: UInt64, extra: UInt64, to: Int32, wireBytes: Int32, traffic: TrafficClass) {
        self.at = at; self.firstBit = firstBit; self.lastBit = lastBit; self.extra = extra; self.to = to
        self.wireBytes = wireBytes; self.traffic = traffic
    }
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
    /// A message `transmit` answered with `.arrive` has reached the receiver's downlink (called at
    /// `arrival.at`, in event order); returns the instant it is whole at the receiver.
    mutating func arrive(_ arrival: SimArrival) -> UInt64
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
/// - crosses the path: its first bit reaches `b` one latency (plus jitter) after it started leaving,
///   its last bit one latency after it has left;
/// - only then, on arrival, queues for `b`'s downlink, which takes it for `W / down(b)` after what
///   `b` is already receiving: start = max(arrival, downlink free), whole at start + `W / down(b)`.
///   The arrival is the later of the first bit's and the instant from which the downlink, at its own
///   rate, finishes just as the last bit comes in, so a message trickling in slower than the downlink
///   could take it holds the downlink only for its own `W / down(b)`, and a lone transfer takes
///   `latency + W / min(up, down)`.
/// The downlink is granted in the order messages arrive, as the network does (`transmit` answers
/// `.arrive`, and the world calls `arrive` at that instant): a message still queued behind a long
/// uplink at one sender holds back nothing another sender gets there first. Many peers pushing to one
/// node share its downlink; a node pushing to many shares its uplink.
/// Both sides are shared by priority class (control > interactive > telemetry > bulk) as QUIC's
/// stream scheduler does: a message waits for queued messages of its own and higher classes only,
/// and pushes the queued lower-class backlog back by its own serialisation time.
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
        // The downlink is the receiver's business, taken in arrival order (`arrive`).
        let take = UInt64((Double(wire) * ports[t.to].nsPerByteDown).rounded(.up))
        let firstBit = sendStart + lat, lastBit = upDone + lat
        let at = max(firstBit, lastBit > take ? lastBit - take : 0)
        return .arrive(SimArrival(at: at, firstBit: firstBit, lastBit: lastBit, extra: extra, to: Int32(t.to),
                                  wireBytes: Int32(clamping: wire), traffic: t.traffic))
    }

    public mutating func arrive(_ a: SimArrival) -> UInt64 {
        let to = Int(a.to)
        let k = Int(a.traffic.rawValue)
        var down = ports[to].downFree
        var queued = a.firstBit
        for j in 0...k { queued = max(queued, down[j]) }
        let start = max(a.at, queued)
        let take = UInt64((Double(a.wireBytes) * ports[to].nsPerByteDown).rounded(.up))
        let recvDone = max(start + take, a.lastBit)
        down[k] = recvDone
        if k < 3 {
            for j in (k + 1)...3 {
                down[j] = down[j] > start ? down[j] + take : max(down[j], recvDone)
            }
        }
        ports[to].downFree = down
        var done = recvDone
        if cpu != nil {
            // Decrypted and verified as its packets arrive: whole once the receiver's CPU is done too.
            done = max(done, cpu!.run(node: to, cost: Double(a.wireBytes) * cpu!.settings.recvNsPerByte, ready: queued, now: a.at))
        }
        return done + a.extra
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
