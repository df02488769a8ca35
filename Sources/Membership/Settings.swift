import MeshCore

/// Every knob of the membership core, with its default and where that default comes from.
///
/// Shaped like swift-cluster-membership's `SWIM.Settings`: nested structs, each field documented.
/// Two presets exist: `MembershipSettings()` (GQUIC's defaults, tuned for a LAN mesh of up to ~10k
/// nodes whose membership traffic rides QUIC DATAGRAMs) and `.memberlistLAN` (hashicorp/memberlist's
/// `DefaultLANConfig`, the anchor the benchmark compares against).
public struct MembershipSettings: Sendable {
    /// Identifies the cluster. A join (push-pull request) from a node whose cluster ID differs is
    /// refused. Default "gquic". Also published in mDNS TXT records.
    public var clusterID: String = "gquic"

    /// Optional allow-list: when set, only these nodes may join. Nil admits every node that proves
    /// its identity on the (mutually authenticated) QUIC link and names the same cluster ID.
    public var allowedNodes: Set<NodeID>? = nil

    public var probe = Probe()
    public var suspicion = Suspicion()
    public var lifeguard = LocalHealth()
    public var gossip = Gossip()
    public var pushPull = PushPull()
    public var reconnect = Reconnect()
    public var vivaldi = Vivaldi()
    public var limits = Limits()

    public init() {}

    /// SWIM failure detector: the periodic probe.
    public struct Probe: Sendable {
        /// How often a member is probed (SWIM's protocol period T'). Default 300 ms, against
        /// memberlist's LAN `ProbeInterval` of 1 s. A crashed member is first probed after an
        /// exponentially distributed wait with mean `interval` whatever N is (every member probes
        /// one member per period), so its p99 is 4.6 periods: 2.3 s at 500 ms, 1.4 s at 300 ms.
        /// That tail plus one probe, Lifeguard's minimum suspicion (proportional to the period) and
        /// the spread of the death is the p99 detection time to all members, under the 5 s goal
        /// of issue 6 only at ~300 ms (docs/benchmarks.md). A probe costs two small DATAGRAMs on
        /// a link that is already open (~8 kbit/s per node at this rate). Probes may overlap: one
        /// lasts `timeout + indirectWait`. Scaled by the local health multiplier (Lifeguard §4.3).
        public var interval: Duration = .milliseconds(300)
        /// How long to wait for a direct ack before asking `indirectChecks` members to probe
        /// (memberlist LAN `ProbeTimeout`: 500 ms; we use 300 ms, well above a LAN RTT and above
        /// the 220 ms RTT between the farthest regions the simulator's 10k scenario models).
        /// Scaled by the local health multiplier.
        public var timeout: Duration = .milliseconds(300)
        /// How long the indirect phase (ping-reqs and the stream fallback) runs after `timeout`
        /// before the probe counts as failed: memberlist gives it the rest of its period
        /// (`ProbeInterval − ProbeTimeout` = 500 ms on a LAN); 200 ms is 400 LAN round trips and
        /// covers a stream retransmission. A member known to answer slowly gets its adaptive
        /// wait instead (`maxAdaptiveWait`). Scaled by the local health multiplier.
        public var indirectWait: Duration = .milliseconds(200)
        /// How many members to ask for an indirect probe (SWIM's k; memberlist `IndirectChecks` = 3).
        public var indirectChecks: Int = 3
        /// When the direct ping goes unanswered for `timeout`, also repeat it over the member's
        /// reliable stream while the indirect probes run; the member answers on the stream too.
        /// memberlist does the same over TCP (`DisableTcpPings` = false by default). Loss only
        /// delays a stream, so a live member is not suspected because datagrams were lost: at
        /// N = 1,000 with 10% loss, ~0.75% of probes failed without it (direct 19% × all three
        /// indirect paths 34%³), and every such false suspicion and its refutation were gossiped
        /// to every member (most of the 170 kbit/s per node measured then). Default true.
        public var streamFallback = true
        /// Fraction of the probe timeout after which an intermediary that has no ack from the target
        /// sends a nack to the requester (Lifeguard §4.3 and memberlist: 80%).
        public var nackFraction: Double = 0.8
        /// Upper bound of the per-member adaptive wait: a member whose acks arrive late (we keep
        /// listening for late acks), or whose link's handshake took longer than half `timeout`,
        /// is given up to twice its observed RTT, at most this long,
        /// before the probe counts as failed. Default 2 s (four periods). A GQUIC addition: SWIM
        /// and memberlist wait one fixed period, so a live node slower than that is suspected on
        /// every probe.
        public var maxAdaptiveWait: Duration = .seconds(2)
        /// How long the last-chance probe of a suspect waits for an ack (and how long intermediaries
        /// relay late acks). It starts this long before the suspicion's earliest deadline (its
        /// verdict lands on the deadline, so a crash is not detected later; held until the current
        /// deadline if confirmations are still missing), and it may take that long because the
        /// observer usually has never measured the suspect's RTT: at N = 1,000 a member probes a
        /// given member once per ~300 s round, so a live member with a 600 ms RTT under 10% loss
        /// failed a one-period last chance and was declared dead. Default 1.5 s (covers RTTs to
        /// ~1.4 s). A GQUIC addition; memberlist has no last-chance probe.
        public var lastChanceWait: Duration = .milliseconds(1_500)
        public init() {}
    }

    /// Lifeguard's dynamic suspicion (Dadgar et al. 2018, §4.2; memberlist `suspicion.go`).
    ///
    /// A suspicion's timeout starts at `max` and shrinks towards `min` as independent members confirm
    /// it: `timeout(c) = max(min, max − (max − min)·log(c+1)/log(k+1))` for `c` confirmations.
    /// `min = minMultiplier · max(1, log10(N)) · probe.interval` (memberlist's `suspicionTimeout`),
    /// `max = maxMultiplier · min`.
    public struct Suspicion: Sendable {
        /// Lifeguard's α. memberlist LAN `SuspicionMult` = 4 (with its 1 s period: 12 s at N = 1,000).
        /// Default 2: with the 300 ms period, min = 2 · 3 · 0.3 s = 1.8 s at N = 1,000 (2.4 s at
        /// 10,000), max = 10.8 s (14.4 s). A false suspicion gets no independent confirmations and so
        /// runs for close to `max`, ample time to refute; and no member is declared dead without a
        /// last-chance probe over datagrams and the reliable stream (see `Probe.streamFallback`).
        /// Earlier rounds measured α = 1.5 and 2 with a 500 ms period: the false deaths they saw
        /// came from the last-chance probe, not from α (docs/benchmarks.md).
        public var minMultiplier: Double = 2
        /// Lifeguard's β. memberlist `SuspicionMaxTimeoutMult` = 6; the paper evaluates β = 6.
        public var maxMultiplier: Double = 6
        /// Lifeguard's K: independent confirmations expected before the timeout reaches `min`.
        /// The paper uses K = 3; memberlist derives `SuspicionMult − 2` = 2.
        public var expectedConfirmations: Int = 3
        public init() {}
    }

    /// Lifeguard's local health awareness (§4.1, memberlist `awareness.go`).
    public struct LocalHealth: Sendable {
        /// The local health multiplier (LHM) ranges over `0...maxMultiplier`; probe interval and
        /// timeout are scaled by `1 + LHM`. memberlist `AwarenessMaxMultiplier` = 8.
        public var maxMultiplier: Int = 8
        public init() {}
    }

    /// Dissemination: piggybacked on probes, plus a dedicated gossip round.
    public struct Gossip: Sendable {
        /// Each update is sent `retransmitMultiplier · max(2, ceil(log10(N + 1)))` times (SWIM's
        /// λ·log N; memberlist `RetransmitMult` = 4 with `ceil(log10(N + 1))`). The floor of 2 is a
        /// GQUIC change: below 10 members memberlist's formula gives 4 sends, and in 8-node clusters
        /// some member missed a join until the next push-pull (30 s) in about one run in 20; with
        /// 8 sends (SWIM's natural log gives ln 8 ≈ 2 too) none of 150 seeded runs did.
        public var retransmitMultiplier: Int = 4
        /// How often a gossip round runs (memberlist LAN `GossipInterval` = 200 ms), while updates are
        /// queued. A node with an empty queue does not wake for gossip, and its first round after an
        /// update arrives runs at once (a GQUIC change: joins and deaths spread in a few hops).
        public var interval: Duration = .milliseconds(200)
        /// Members gossiped to per round (memberlist LAN `GossipNodes` = 3).
        public var fanout: Int = 3
        /// How long dead members still receive gossip, so they learn they were declared dead and
        /// refute (memberlist LAN `GossipToTheDeadTime` = 30 s).
        public var toTheDeadTime: Duration = .seconds(30)
        /// Bytes of piggybacked updates per message: a QUIC DATAGRAM must fit a 1,200-byte packet
        /// with its headers (memberlist's `UDPBufferSize` is 1,400 for raw UDP).
        public var maxPiggybackBytes: Int = 1_000
        /// Most updates waiting to be gossiped; beyond it the update sent most often is dropped
        /// (push-pull repairs what gossip then misses). memberlist's queue is unbounded; while
        /// 10,000 nodes join within two minutes, updates arrive faster than λ·log N transmissions
        /// drain them and an unbounded queue held ~8,000 per node (~0.5 MB each, 5 GB across a
        /// simulated cluster). Default 2,048: ~40 KB per node. At most 2^24 − 2.
        public var maxQueuedUpdates: Int = 2_048
        public init() {}
    }

    /// Push-pull anti-entropy: full state exchange on join and now and then.
    public struct PushPull: Sendable {
        /// Base period of the periodic sync with one random member (memberlist LAN
        /// `PushPullInterval` = 30 s), scaled up for N > 32 by memberlist's `pushPullScale`:
        /// `interval · (ceil(log2 N) − log2 32 + 1)`.
        public var interval: Duration = .seconds(30)
        /// How long a push-pull request waits for its response before it is retried with another
        /// seed or member (memberlist's TCP timeout is 10 s).
        public var timeout: Duration = .seconds(5)
        public init() {}
    }

    /// Reconnecting to failed members, so a healed partition or a restarted node merges back
    /// (Serf `ReconnectInterval` = 30 s, `ReconnectTimeout` = 24 h; memberlist alone has no such
    /// loop, which is one half of its "restarted nodes stay dead" failure).
    public struct Reconnect: Sendable {
        /// How often one random dead member (and the seeds, while we know no one) is contacted.
        public var interval: Duration = .seconds(10)
        /// Dead members are forgotten after this long (Serf `ReconnectTimeout` = 24 h).
        public var deadTimeout: Duration = .seconds(24 * 3600)
        /// Left members are kept as tombstones this long so a stale alive cannot resurrect them
        /// (Serf `TombstoneTimeout` = 24 h).
        public var tombstoneTimeout: Duration = .seconds(24 * 3600)
        public init() {}
    }

    /// Vivaldi network coordinates, Serf's defaults (`coordinate.DefaultConfig`).
    public struct Vivaldi: Sendable {
        /// Euclidean dimensions (Serf: 8).
        public var dimensions: Int = 8
        /// Upper bound and initial value of the error estimate (Serf `VivaldiErrorMax` = 1.5).
        public var errorMax: Double = 1.5
        /// ce, the error tuning factor (Serf `VivaldiCE` = 0.25).
        public var ce: Double = 0.25
        /// cc, the coordinate tuning factor (Serf `VivaldiCC` = 0.25).
        public var cc: Double = 0.25
        /// Samples in the adjustment window (Serf `AdjustmentWindowSize` = 20).
        public var adjustmentWindow: Int = 20
        /// The smallest height, seconds (Serf `HeightMin` = 10 µs).
        public var heightMin: Double = 10e-6
        /// RTT samples per peer fed through a median filter (Serf `LatencyFilterSize` = 3).
        public var latencyFilterSize: Int = 3
        /// Gravity pulling coordinates towards the origin (Serf `GravityRho` = 150).
        public var gravityRho: Double = 150
        public init() {}
    }

    /// Bounds on what a peer may make us hold or decode.
    public struct Limits: Sendable {
        /// Members in one push-pull state (and members we hold): 65,536.
        public var maxMembers: Int = 65_536
        /// Largest push-pull payload accepted, bytes (memberlist caps user state at 2 MiB too).
        public var maxPushPullBytes: Int = 8 << 20
        /// Updates carried by one message.
        public var maxUpdatesPerMessage: Int = 256
        public init() {}
    }

    /// hashicorp/memberlist's `DefaultLANConfig` (v0.5): the anchor for detection and bandwidth.
    public static var memberlistLAN: MembershipSettings {
        var s = MembershipSettings()
        s.probe.interval = .seconds(1)
        s.probe.timeout = .milliseconds(500)
        s.probe.indirectWait = .milliseconds(500)
        s.suspicion.minMultiplier = 4
        s.suspicion.maxMultiplier = 6
        s.suspicion.expectedConfirmations = 2
        s.gossip.maxPiggybackBytes = 1_400
        return s
    }
}
