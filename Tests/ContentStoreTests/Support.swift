import Foundation
import Glibc
@testable import ContentStore
import MeshCore

/// A fresh temporary directory, removed by `cleanup`.
struct TempDir {
    let path: String
    init() {
        var template = Array("/tmp/gquic-cs-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: p!)
    }
    func cleanup() { FileIO.removeTree(path) }
    func sub(_ name: String) -> String { path + "/" + name }
}

/// Deterministic bytes: `random` is incompressible, `text` compresses well.
func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var rng = SeededRandom(seed: seed)
    var out = [UInt8](repeating: 0, count: n)
    var i = 0
    while i < n {
        let w = rng.next()
        for k in 0..<8 where i + k < n { out[i + k] = UInt8(truncatingIfNeeded: w >> (8 * UInt64(k))) }
        i += 8
    }
    return out
}

func textBytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var rng = SeededRandom(seed: seed)
    let words = ["mesh", "quic", "chunk", "proton", "layer", "steam", "digest", "store", "peer", "zstd", "\n", "  ", "0x", "{", "}"]
    var out: [UInt8] = []
    out.reserveCapacity(n + 16)
    while out.count < n { out += Array(words[Int(rng.next() % UInt64(words.count))].utf8); out.append(UInt8(rng.next() % 26) + 97) }
    return Array(out.prefix(n))
}

func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) {
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    chmod(path, mode)
}

func readFile(_ path: String) -> [UInt8] { Array(FileManager.default.contents(atPath: path) ?? Data()) }

func mkdirs(_ path: String) { try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }

/// Runs a command, returning (exit status, stdout+stderr).
@discardableResult
func run(_ args: [String]) -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: args[0])
    p.arguments = Array(args.dropFirst())
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    do { try p.run() } catch { return (-1, "\(error)") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The gquic-fetch executable SwiftPM built next to the test bundle.
func gquicFetchPath() -> String? {
    var candidates: [String] = []
    if let exe = Bundle.main.executablePath { candidates.append((exe as NSString).deletingLastPathComponent + "/gquic-fetch") }
    candidates.append((CommandLine.arguments[0] as NSString).deletingLastPathComponent + "/gquic-fetch")
    candidates.append(FileManager.default.currentDirectoryPath + "/.build/debug/gquic-fetch")
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
}

func which(_ tool: String) -> String? {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin"] where FileManager.default.isExecutableFile(atPath: dir + "/" + tool) {
        return dir + "/" + tool
    }
    return nil
}

/// Options for test stores: fsync on (it is what is being tested) but one worker unless asked.
func testOptions(workers: Int = 2) -> ContentStore.Options {
    var o = ContentStore.Options()
    o.workers = workers
    o.chunking = try! ChunkingParameters(minSize: 4096, averageSize: 16384, maxSize: 65536)
    return o
}

func expectError(_ code: ContentStoreError.Code, _ body: () throws -> Void) -> ContentStoreError? {
    do { try body() } catch let e as ContentStoreError {
        return e.code == code ? e : nil
    } catch { return nil }
    return nil
}
