import Foundation
import MeshCore
import Testing
@testable import QUICTransport

@Suite struct NodeCertificateTests {
    /// The certificate names the node and carries its raw Ed25519 key, so a peer derives the NodeID.
    @Test func certificateCarriesTheNodeKey() throws {
        let id = try NodeIdentity.generate()
        let pem = try NodeCertificate.selfSigned(for: id)
        #expect(pem.hasPrefix("-----BEGIN CERTIFICATE-----"))
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        let der = try #require(Data(base64Encoded: body))
        let nodeID = der.withUnsafeBytes { NodeCertificate.nodeID(fromDER: $0) }
        #expect(nodeID == id.nodeID)
        if let dump = ProcessInfo.processInfo.environment["GQUIC_DUMP_CERT"] {
            try pem.write(toFile: dump, atomically: true, encoding: .utf8)
            try id.privateKeyPEM().write(toFile: dump + ".key", atomically: true, encoding: .utf8)
        }
    }

    @Test func garbageIsNotACertificate() {
        let junk: [UInt8] = [0x30, 0x82, 0x01, 0x00] + [UInt8](repeating: 0xAA, count: 64)
        #expect(junk.withUnsafeBytes { NodeCertificate.nodeID(fromDER: $0) } == nil)
    }
}
