import Testing
import MeshCore
@testable import ClusterState

@Suite("Holdings in batches")
struct HoldingsBatchTests {
    @Test("a node announces thousands of held blobs in one delta; a peer that joins it sees every one, and a batch removal retracts exactly those")
    func batchAddAndRemove() throws {
        var a = ClusterReplica(node: nodeID(0))
        var b = ClusterReplica(node: nodeID(1))
        _ = a.addHolding(blob(0))                        // one earlier single add, re-added in the batch
        let blobs = (0..<5_000).map(blob)
        let add = a.addHoldings(blobs)
        #expect(a.holdings(of: nodeID(0)).count == 5_000)
        // The delta travels on the wire like any other.
        let bytes = add.delta.wireBytes()
        b.apply(try ClusterData(wireBytes: bytes))
        // b saw only the batch, not the earlier single add: the batch carries blob 0's new dot.
        #expect(b.holdings(of: nodeID(0)).count == 4_999)
        b.apply(a.data)
        #expect(b.holdings(of: nodeID(0)) == Set(blobs))
        #expect(b.holders(of: blob(4_321)) == [nodeID(0)])

        // Adding what is already held is no write at all.
        #expect(a.addHoldings(blobs.prefix(10)).delta.isBottom)

        let gone = Array(blobs[100..<1_100])
        let remove = a.removeHoldings(gone)
        b.apply(try ClusterData(wireBytes: remove.delta.wireBytes()))
        #expect(b.holdings(of: nodeID(0)) == Set(blobs).subtracting(gone))
        #expect(b.holders(of: blob(150)).isEmpty)
        #expect(b.holders(of: blob(1_100)) == [nodeID(0)])
        #expect(a.data == b.data)
    }
}
