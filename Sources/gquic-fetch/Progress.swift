import ContentStore
import Foundation
import Glibc

/// A one-line progress meter on stderr, shown only when stderr is a terminal, redrawn at most 10
/// times a second.
final class ProgressLine: @unchecked Sendable {
    private let label: String
    private let enabled = isatty(2) == 1
    private let lock = NSLock()
    private var last = Date.distantPast
    private let start = Date()
    private var drew = false

    init(_ label: String) { self.label = label }

    var handler: ProgressHandler? {
        guard enabled else { return nil }
        return { [self] done, total in update(done, total) }
    }

    private func update(_ done: UInt64, _ total: UInt64) {
        lock.withLock {
            let now = Date()
            guard now.timeIntervalSince(last) >= 0.1 || done == total else { return }
            last = now
            let pct = total > 0 ? Double(done) * 100 / Double(total) : 100
            let secs = max(now.timeIntervalSince(start), 0.001)
            let rate = Double(done) / secs / 1e6
            let line = String(format: "\r%@ %5.1f%%  %.0f / %.0f MB  %.0f MB/s", label, pct, Double(done) / 1e6, Double(total) / 1e6, rate)
            FileHandle.standardError.write(Data(line.utf8))
            drew = true
        }
    }

    func finish() {
        lock.withLock { if drew { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } }
    }
}
