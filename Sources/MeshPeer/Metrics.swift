import CoreMetrics
import Prometheus
import MeshCore
import QUICTransport
import Synchronization

/// The daemon's metrics, exposed in Prometheus text format on `/metrics`.
///
/// Modules below MeshPeer record through swift-metrics (`Counter(label:)`, `Gauge(label:)`) without
/// knowing about Prometheus; `PeerMetrics.bootstrap()` routes those into the same registry.
public final class PeerMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    public let members: Prometheus.Gauge
    public let links: Prometheus.Gauge
    public let storeBytes: Prometheus.Gauge
    public let storeBlobs: Prometheus.Gauge
    public let transfersActive: Prometheus.Gauge
    public let evictions: Prometheus.Counter
    public let controlRequests: Prometheus.Counter
    public let startTime: Prometheus.Gauge
    private let bytesSent: [TrafficClass: Prometheus.Counter]
    private let bytesReceived: [TrafficClass: Prometheus.Counter]
    /// The transport's process-wide counters, copied into Prometheus counters at each scrape.
    private let transport: [(exported: Prometheus.Counter, source: QUICMetrics.Counter)]
    private let transportSeen: Mutex<[Int]>

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        members = registry.makeGauge(name: "gquic_members", help: "Cluster members this node believes alive, itself included.")
        links = registry.makeGauge(name: "gquic_links", help: "Open authenticated links to peers.")
        storeBytes = registry.makeGauge(name: "gquic_store_bytes", help: "Bytes held in the content store (compressed, on disk).")
        storeBlobs = registry.makeGauge(name: "gquic_store_blobs", help: "Blobs held in the content store.")
        transfersActive = registry.makeGauge(name: "gquic_transfers_active", help: "Blob transfers in flight.")
        evictions = registry.makeCounter(name: "gquic_store_evictions_total", help: "Blobs evicted by the store's capacity limit.")
        controlRequests = registry.makeCounter(name: "gquic_control_requests_total", help: "Requests served by the local control API.")
        startTime = registry.makeGauge(name: "gquic_start_time_seconds", help: "Unix time the daemon started.")
        var sent: [TrafficClass: Prometheus.Counter] = [:], received: [TrafficClass: Prometheus.Counter] = [:]
        for c in TrafficClass.allCases {
            sent[c] = registry.makeCounter(name: "gquic_link_sent_bytes_total", labels: [("class", c.description)],
                                           help: "Payload bytes sent to peers, by traffic class.")
            received[c] = registry.makeCounter(name: "gquic_link_received_bytes_total", labels: [("class", c.description)],
                                               help: "Payload bytes received from peers, by traffic class.")
        }
        bytesSent = sent
        bytesReceived = received
        let q = QUICMetrics.shared
        transport = [
            (registry.makeCounter(name: "gquic_peers_refused_total", help: "Peers refused at the handshake: bad or unadmitted identity."), q.peersRefused),
            (registry.makeCounter(name: "gquic_join_refused_total", help: "Links closed for a missing or wrong join token."), q.joinRefused),
            (registry.makeCounter(name: "gquic_quic_packets_lost_total", help: "QUIC packets carrying stream data declared lost, all connections."), q.packetsLost),
            (registry.makeCounter(name: "gquic_quic_sessions_resumed_total", help: "Handshakes resumed from a session ticket (server side)."), q.sessionsResumed),
            (registry.makeCounter(name: "gquic_quic_datagrams_dropped_total", help: "UDP datagrams that matched no connection and started none."), q.datagramsDropped),
            (registry.makeCounter(name: "gquic_quic_stateless_resets_sent_total", help: "Stateless resets sent."), q.statelessResetsSent),
            (registry.makeCounter(name: "gquic_quic_invalid_tokens_total", help: "Client Initials refused for a bad address-validation token."), q.invalidTokens),
        ]
        transportSeen = Mutex(Array(repeating: 0, count: transport.count))
    }

    public func sent(_ bytes: Int, on c: TrafficClass) { bytesSent[c]?.increment(by: Int64(bytes)) }
    public func received(_ bytes: Int, on c: TrafficClass) { bytesReceived[c]?.increment(by: Int64(bytes)) }

    /// Routes swift-metrics into this registry. Call once per process.
    public func bootstrap() {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }

    /// The Prometheus text exposition (version 0.0.4).
    public func exposition() -> String {
        transportSeen.withLock { seen in
            for (i, t) in transport.enumerated() {
                let now = t.source.current
                if now > seen[i] { t.exported.increment(by: Int64(now - seen[i])); seen[i] = now }
            }
        }
        return registry.emitToString()
    }
}
