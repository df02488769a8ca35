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

        // MARK: ContentStore (issue 4)

        // MARK: MeshSimulator (issue 5)
        .target(name: "MeshSimulator", dependencies: ["MeshCore"]),
        .executableTarget(name: "gquic-sim", dependencies: [
            "MeshSimulator", "MeshCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "gquic-relay", dependencies: [
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "MeshSimulatorTests", dependencies: ["MeshSimulator", "MeshCore"]),

        // MARK: Membership (issue 6)

        // MARK: ClusterState (issue 7)

        // MARK: Swarm (issue 8)

        // MARK: MeshPeer and executables (issue 9)

        .executableTarget(name: "gquic-bench", dependencies: [
            "MeshCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: Tests

        .testTarget(name: "MeshCoreTests", dependencies: ["MeshCore"]),
        .testTarget(name: "CBindingTests",
                    dependencies: ["CNgtcp2", "CGnuTLS", "CNghttp3", "CZstd", "CAvahiClient", "COpenSSLCrypto"]),
    ],
    swiftLanguageModes: [.v6]
)
