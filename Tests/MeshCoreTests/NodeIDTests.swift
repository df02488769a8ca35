import Testing
import Foundation
#if canImport(Glibc)
import Glibc
#endif
@testable import MeshCore

@Suite struct NodeIDTests {
    func tempDir() -> String {
        var template = Array("/tmp/gquic-test-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    @Test func keyRoundTripsThroughPEMFile() throws {
        let dir = tempDir()
        let path = dir + "/node.key"
        let id = try NodeIdentity.generate()
        try id.save(path: path)
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        let loaded = try NodeIdentity.load(path: path)
        #expect(loaded.nodeID == id.nodeID)
        #expect(loaded.publicKey == id.publicKey)
        #expect(try id.privateKeyPEM().hasPrefix("-----BEGIN PRIVATE KEY-----"))
        // Refuses to overwrite.
        #expect(throws: IdentityError.self) { try id.save(path: path) }
    }

    @Test func keyFileReadableByOthersIsRefused() throws {
        let dir = tempDir()
        let path = dir + "/node.key"
        try NodeIdentity.generate().save(path: path)
        for mode: mode_t in [0o640, 0o604, 0o660, 0o644] {
            chmod(path, mode)
            do {
                _ = try NodeIdentity.load(path: path)
                Issue.record("loaded a key with mode \(String(mode, radix: 8))")
            } catch {
                #expect(error.isPermissionProblem)
                #expect(error.description.contains("chmod 600"))
            }
        }
    }

    @Test func garbageAndNonEd25519KeysAreRefused() {
        #expect(throws: IdentityError.self) { try NodeIdentity.fromPEM("not a key") }
        // A P-256 key (generated once with `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
        let p256 = """
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgYirTZSx+5O8Y6tlG
        cka6W6btJiocdrdolfcukSoTEk+hRANCAAQkvPNu7Pa1GpsWjEdGG5I/SHxMDfb1
        KrIzNHtIJp5yHfmdHC+bz9AIfp9yQ8KwzqJlwGzfdmNXLYv0FBtFchRq
        -----END PRIVATE KEY-----
        """
        do { _ = try NodeIdentity.fromPEM(p256); Issue.record("accepted a P-256 key") } catch {
            #expect(error.description.contains("not Ed25519") || error.description.contains("not a PEM"))
        }
    }

    @Test func signAndVerify() throws {
        let a = try NodeIdentity.generate(), b = try NodeIdentity.generate()
        let msg = Array("join cluster".utf8)
        let sig = a.sign(msg)
        #expect(NodeIdentity.verify(signature: sig, of: msg, publicKey: a.publicKey))
        #expect(!NodeIdentity.verify(signature: sig, of: msg, publicKey: b.publicKey))
        #expect(!NodeIdentity.verify(signature: sig, of: msg + [0], publicKey: a.publicKey))
        var bad = sig; bad[5] ^= 1
        #expect(!NodeIdentity.verify(signature: bad, of: msg, publicKey: a.publicKey))
        #expect(a.nodeID != b.nodeID)
    }

    @Test func textFormRoundTripsAndCatchesTypos() throws {
        let id = try NodeIdentity.generate().nodeID
        let text = id.description
        #expect(text.hasPrefix("gq1-"))
        #expect(try NodeID(parsing: text) == id)
        #expect(try NodeID(parsing: text.uppercased()) == id)
        #expect(try NodeID(parsing: text.replacingOccurrences(of: "-", with: "")) == id)
        #expect(id.short.count == 10)
        // Every single-digit substitution is caught.
        var caught = 0, tried = 0
        let chars = Array(text)
        for i in chars.indices where chars[i] != "-" && i >= 4 {
            var mutated = chars
            mutated[i] = chars[i] == "x" ? "y" : "x"
            tried += 1
            if (try? NodeID(parsing: String(mutated))) == nil { caught += 1 }
        }
        #expect(caught == tried)
        // Every swap of two adjacent different digits is caught too.
        for i in 4..<(chars.count - 1) where chars[i] != "-" && chars[i + 1] != "-" && chars[i] != chars[i + 1] {
            var swapped = chars
            swapped.swapAt(i, i + 1)
            #expect((try? NodeID(parsing: String(swapped))) == nil, "swap at \(i)")
        }
        // Look-alikes read as what they look like.
        let withLookalikes = "gq1" + text.dropFirst(3).replacingOccurrences(of: "0", with: "o").replacingOccurrences(of: "1", with: "l")
        #expect(try NodeID(parsing: withLookalikes) == id)
    }

    @Test func wireRoundTrip() throws {
        let id = try NodeIdentity.generate().nodeID
        #expect(try NodeID(wireBytes: id.wireBytes()) == id)
        #expect(throws: WireError.self) { try NodeID(wireBytes: Array(id.wireBytes().prefix(31))) }
    }
}
