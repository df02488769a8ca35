// swift-tools-version:6.0
// GQUIC — a peer-to-peer mesh overlay over QUIC. See docs/architecture.md for the module map.
import PackageDescription

/// C libraries enter through thin system-library targets: a module map plus a shim header whose
/// `static inline` helpers carry a `gq_` prefix. No C type leaks past the Swift module that wraps it.
func systemLibrary(_ name: String, pkgConfig: String?, apt: [String]) -> Target {
    .systemLibrary(name: name, path: "Sources/\(name)", pkgConfig: pkgConfig, providers: [.apt(apt)])
}

let package = Package(
    name: "gquic",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "MeshCore", targets: ["MeshCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        systemLibrary("CNgtcp2", pkgConfig: "libngtcp2_crypto_gnutls",
                      apt: ["libngtcp2-dev", "libngtcp2-crypto-gnutls-dev", "libgnutls28-dev"]),
        systemLibrary("CGnuTLS", pkgConfig: "gnutls", apt: ["libgnutls28-dev"]),
        systemLibrary("CNghttp3", pkgConfig: "libnghttp3", apt: ["libnghttp3-dev"]),
        systemLibrary("CZstd", pkgConfig: "libzstd", apt: ["libzstd-dev"]),
        systemLibrary("CAvahiClient", pkgConfig: "avahi-client", apt: ["libavahi-client-dev"]),
        systemLibrary("COpenSSLCrypto", pkgConfig: "libcrypto", apt: ["libssl-dev"]),

        .target(name: "MeshCore", dependencies: ["COpenSSLCrypto"]),

        // MARK: QUICTransport (issue 3)
        .target(name: "QUICTransport", dependencies: [
            "MeshCore", "CNgtcp2", "CNghttp3",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "QUICTransportTests", dependencies: ["QUICTransport", "MeshCore"]),

        // MARK: ContentStore (issue 4)
        .systemLibrary(name: "CLinuxIO", path: "Sources/CLinuxIO"),
        .systemLibrary(name: "CSHA256NI", path: "Sources/CSHA256NI"),
        .target(name: "ContentStore", dependencies: ["MeshCore", "CZstd", "CLinuxIO", "CSHA256NI"]),
        .executableTarget(name: "gquic-fetch", dependencies: [
            "ContentStore", "MeshCore", "QUICTransport", "MeshPeer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "ContentStoreTests", dependencies: ["ContentStore", "MeshCore", "gquic-fetch"]),

        // MARK: MeshSimulator (issue 5)
        .target(name: "MeshSimulator", dependencies: ["MeshCore"]),
        .executableTarget(name: "gquic-sim", dependencies: [
            "Membership", "Swarm",
            "MeshSimulator", "MeshCore", "CLinuxIO",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "gquic-relay", dependencies: [
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "MeshSimulatorTests", dependencies: ["MeshSimulator", "MeshCore"]),

        // MARK: Membership (issue 6)
        .target(name: "Membership", dependencies: ["MeshCore"]),
        // A small virtual-time world that drives N membership cores (tests and gquic-bench).
        .target(name: "MembershipLab", dependencies: ["Membership", "MeshCore"]),
        .testTarget(name: "MembershipTests", dependencies: [
            "Membership", "MembershipLab", "MeshCore", "MDNSDiscovery", .product(name: "Logging", package: "swift-log"),
        ]),
        // mDNS through avahi-client: the only module that imports CAvahiClient.
        .target(name: "MDNSDiscovery", dependencies: [
            "CAvahiClient", "MeshCore", .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "gquic-mdns-probe", dependencies: [
            "MDNSDiscovery", "MeshCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // MARK: ClusterState (issue 7)
        .target(name: "ClusterState", dependencies: ["MeshCore"]),
        .testTarget(name: "ClusterStateTests", dependencies: ["ClusterState", "MeshCore"]),

        // MARK: Swarm (issue 8)
        .target(name: "Swarm", dependencies: ["MeshCore"]),
        .testTarget(name: "SwarmTests", dependencies: ["Swarm", "MeshCore", "MeshSimulator", "gquic-sim"]),

        // MARK: MeshPeer and executables (issue 9)
        .target(name: "MeshPeer", dependencies: [
            "MeshCore", "QUICTransport", "Swarm", "ContentStore", "CLinuxIO", "Membership", "ClusterState", "MDNSDiscovery",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .executableTarget(name: "gquic-peer", dependencies: [
            "MeshPeer", "MeshCore", "QUICTransport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        .executableTarget(name: "gquic-bench", dependencies: [
            "MeshCore",
            "QUICTransport",
            "Membership", "MembershipLab", "MeshSimulator",
            "ClusterState",
            "ContentStore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: Tests

        .testTarget(name: "MeshCoreTests", dependencies: ["MeshCore"]),
        .testTarget(name: "MeshPeerTests", dependencies: ["MeshPeer"]),
        .testTarget(name: "CBindingTests",
                    dependencies: ["CNgtcp2", "CGnuTLS", "CNghttp3", "CZstd", "CAvahiClient", "COpenSSLCrypto"]),
    ],
    swiftLanguageModes: [.v6]
)
