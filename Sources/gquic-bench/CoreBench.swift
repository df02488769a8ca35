import ArgumentParser
import Foundation
import MeshCore

/// The areas `gquic-bench` knows. Each area adds its command here.
let benchAreas: [ParsableCommand.Type] = [
    CoreBench.self,
    QUICBench.self,
    MembershipBench.self,
    StateBench.self,
    SimBench.self,
    ContentBench.self,
    PeerBench.self,
]

/// MeshCore: wire codec and identity signatures, against OpenSSL's own Ed25519 speed.
struct CoreBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "core", abstract: "Wire codec and Ed25519 identity speed.")

    struct Message: WireFields {
        var node = NodeID(digest: Digest.of([1]))
        var incarnation: UInt64 = 0
        var address = PeerAddress(host: "10.0.0.1", port: 7400)
        var holdings: [Digest] = []
        mutating func wireFields(_ c: inout some WireCoder) throws(WireError) {
            try c.value(&node); try c.varint(&incarnation); try c.value(&address); try c.array(&holdings, max: 1024)
        }
    }

    func run() throws {
        var report = BenchReport(area: "core")
        report.header()
        var m = Message()
        m.incarnation = 123_456
        m.holdings = (0..<16).map { Digest.of([UInt8($0)]) }
        let bytes = m.wireBytes()
        let enc = measure { _ = m.wireBytes() }
        report.add(BenchRow("wire encode, 16-digest message (\(bytes.count) B)", 1 / enc, "msg/s"))
        let dec = measure { _ = try! Message(wireBytes: bytes) }
        report.add(BenchRow("wire decode, same message", 1 / dec, "msg/s"))

        let id = try NodeIdentity.generate()
        let payload = [UInt8](repeating: 7, count: 64)
        let sign = measure { _ = id.sign(payload) }
        let sig = id.sign(payload)
        let verify = measure { _ = NodeIdentity.verify(signature: sig, of: payload, publicKey: id.publicKey) }
        // openssl speed prints: "253 bits EdDSA (Ed25519)   0.0000s   0.0001s  45123.4  16234.1"
        let speed = (try? shell("openssl speed -seconds 1 ed25519 2>/dev/null | grep 'Ed25519)'")) ?? ""
        let nums = speed.split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { Double($0) }
        let anchorSign = nums.count >= 2 ? nums[nums.count - 2] : nil
        let anchorVerify = nums.last
        report.add(BenchRow("Ed25519 sign, 64 B", 1 / sign, "op/s", anchor: "openssl speed ed25519", anchorValue: anchorSign))
        report.add(BenchRow("Ed25519 verify, 64 B", 1 / verify, "op/s", anchor: "openssl speed ed25519", anchorValue: anchorVerify))
        try report.write()
    }
}
