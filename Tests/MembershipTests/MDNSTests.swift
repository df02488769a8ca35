import Logging
import Testing
import MDNSDiscovery
import MeshCore
#if canImport(Glibc)
import Glibc
#endif

/// mDNS pieces that need no daemon. Discovery between real avahi-daemons runs in network
/// namespaces: `make test-mdns` (simulations/netns/mdns-test.sh).
@Suite struct MDNSTests {
    let id = NodeID(digest: Digest.of(Array("mdns".utf8)))

    @Test func announcementRoundTripsThroughTXT() throws {
        let a = MDNSAnnouncement(nodeID: id, clusterID: "lab", port: 7401)
        #expect(a.serviceName.utf8.count <= 63)
        let parsed = try DiscoveredPeer.parse(txt: a.txtRecords, host: "10.0.0.7", servicePort: 9, serviceName: a.serviceName).get()
        #expect(parsed.nodeID == id)
        #expect(parsed.clusterID == "lab")
        #expect(parsed.address == PeerAddress(host: "10.0.0.7", port: 7401))
        #expect(parsed.protocolVersion == MDNSDiscovery.protocolVersion)
    }

    @Test func hostileOrForeignTXTIsRefused() {
        func parse(_ txt: [String]) -> DiscoveredPeer? {
            try? DiscoveredPeer.parse(txt: txt, host: "10.0.0.7", servicePort: 7400, serviceName: "x").get()
        }
        #expect(parse([]) == nil)
        #expect(parse(["id=not-a-node", "cluster=lab"]) == nil)
        #expect(parse(["id=\(id)"]) == nil, "no cluster")
        #expect(parse(["id=\(id)", "cluster=" + String(repeating: "c", count: 300)]) == nil)
        #expect(parse(["id=\(id)", "cluster=lab", "port=0"]) == nil)
        // Missing port falls back to the SRV port; junk records are ignored.
        #expect(parse(["junk", "id=\(id)", "cluster=lab"])?.address.port == 7400)
    }

    @Test func noDaemonMeansDiscoveryOffWithAClearReason() {
        // Point avahi-client at a system bus that does not exist.
        setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/gquic-test-bus", 1)
        defer { unsetenv("DBUS_SYSTEM_BUS_ADDRESS") }
        do {
            _ = try MDNSDiscovery(announce: MDNSAnnouncement(nodeID: id, clusterID: "lab", port: 7400))
            Issue.record("connected to a bus that does not exist")
        } catch {
            #expect(error.isDaemonUnreachable)
            #expect(error.description.contains("seeds"))
        }
        #expect(MDNSDiscovery.startOrLog(announce: nil, logger: Logger(label: "test")) == nil)
    }
}
