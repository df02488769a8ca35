import Foundation

/// One measured number, with the anchor it is compared against (if any), measured in the same run.
struct BenchRow: Codable {
    var name: String
    var value: Double
    var unit: String
    var anchor: String?
    var anchor_value: Double?
    var note: String?

    init(_ name: String, _ value: Double, _ unit: String, anchor: String? = nil, anchorValue: Double? = nil, note: String? = nil) {
        self.name = name; self.value = value; self.unit = unit
        self.anchor = anchor; self.anchor_value = anchorValue; self.note = note
    }
}

/// Collects rows, prints them as a table, and writes the JSON file.
struct BenchReport {
    let area: String
    var rows: [BenchRow] = []

    init(area: String) { self.area = area }

    mutating func add(_ row: BenchRow) {
        rows.append(row)
        // Print as we go, so a long benchmark shows progress.
        print(BenchReport.format(row))
        fflush(nil)
    }

    static func number(_ v: Double) -> String {
        if v == 0 { return "0" }
        if abs(v) >= 100 { return String(format: "%.0f", v) }
        if abs(v) >= 10 { return String(format: "%.1f", v) }
        return String(format: "%.3g", v)
    }

    static func format(_ r: BenchRow) -> String {
        let ours = "\(number(r.value)) \(r.unit)"
        var line = r.name.padding(toLength: 44, withPad: " ", startingAt: 0) + " " + ours.padding(toLength: 18, withPad: " ", startingAt: 0)
        if let a = r.anchor, let av = r.anchor_value {
            let ratio = av != 0 ? String(format: " (%.2fx)", r.value / av) : ""
            line += " | \(a): \(number(av)) \(r.unit)\(ratio)"
        }
        if let n = r.note { line += "  [\(n)]" }
        return line
    }

    func header() {
        print("== gquic-bench \(area) ==")
        print("metric".padding(toLength: 44, withPad: " ", startingAt: 0) + " ours               | anchor (same run)")
    }

    /// Writes `simulations/results/bench-AREA.json` (or into `directory`).
    func write(directory: String = "simulations/results") throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let path = "\(directory)/bench-\(area).json"
        try enc.encode(rows).write(to: URL(fileURLWithPath: path))
        print("wrote \(path)")
    }
}

/// Times `body` and returns seconds per call, repeating until at least `minSeconds` have passed.
func measure(minSeconds: Double = 0.5, _ body: () throws -> Void) rethrows -> Double {
    let clock = ContinuousClock()
    var iterations = 0
    let start = clock.now
    var elapsed = 0.0
    repeat {
        try body()
        iterations += 1
        elapsed = (clock.now - start).seconds
    } while elapsed < minSeconds
    return elapsed / Double(iterations)
}

/// User + system CPU time of this process so far.
func processCPUSeconds() -> Double {
    var u = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &u)
    return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) / 1e6 + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) / 1e6
}

/// Runs a shell command and returns its standard output (for anchors such as `openssl speed`).
///
/// Spawned with posix_spawn and an empty signal mask: Foundation's `Process` leaves signals such as
/// SIGALRM blocked in the child, and `openssl speed -seconds N` then never stops.
func shell(_ command: String) throws -> String {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw POSIXError(.EIO) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_addclose(&actions, fds[0])
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var empty = sigset_t(), all = sigset_t()
    sigemptyset(&empty); sigfillset(&all)
    posix_spawnattr_setsigmask(&attr, &empty)
    posix_spawnattr_setsigdefault(&attr, &all)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    var pid: pid_t = 0
    let args: [UnsafeMutablePointer<CChar>?] = ["/bin/sh", "-c", command].map { (s: String) in strdup(s) } + [nil]
    defer { args.forEach { free($0) } }
    let rc = posix_spawn(&pid, "/bin/sh", &actions, &attr, args, environ)
    close(fds[1])
    guard rc == 0 else { close(fds[0]); throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fds[0], &buf, buf.count)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    close(fds[0])
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return String(decoding: out, as: UTF8.self)
}
