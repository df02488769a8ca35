import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// A small UDP toolkit for the network-namespace harness (simulations/netns/): the kernel here has
/// no netem, so delay is added in user space by `relay`; `echo` and `probe` measure it.
@main
struct GQuicRelay: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gquic-relay",
        abstract: "UDP delay relay, echo server and RTT probe for the namespace harness.",
        discussion: """
        relay: every datagram that arrives on --listen is sent on to --to after --delay-ms; replies
        from --to go back to the last client after the same delay (the round trip gains 2 x delay).
        Datagrams keep their order. Stops on SIGTERM/SIGINT.

          gquic-relay relay --listen 10.77.0.1:9000 --to 10.77.0.3:9001 --delay-ms 25
          gquic-relay echo --listen 10.77.0.3:9001
          gquic-relay probe --to 10.77.0.1:9000 --count 20
        """,
        subcommands: [Relay.self, Echo.self, Probe.self]
    )
}

struct RelayError: Error, CustomStringConvertible {
    let description: String
    init(_ what: String, errno e: Int32 = errno) { description = "\(what): \(String(cString: strerror(e))) (errno \(e))" }
}

func parseAddress(_ text: String) throws -> sockaddr_in {
    guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
        throw ValidationError("\"\(text)\" is not IPv4:PORT (for example 10.77.0.1:9000)")
    }
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = port.bigEndian
    guard inet_pton(AF_INET, String(text[..<colon]), &a.sin_addr) == 1 else {
        throw ValidationError("\"\(text[..<colon])\" is not an IPv4 address")
    }
    return a
}

func udpSocket(bind address: sockaddr_in?) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { throw RelayError("socket") }
    if var a = address {
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { let e = errno; close(fd); throw RelayError("bind", errno: e) }
    }
    return fd
}

func monotonicNs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func sendTo(_ fd: Int32, _ bytes: [UInt8], _ to: sockaddr_in) {
    var dst = to
    _ = bytes.withUnsafeBytes { buf in
        withUnsafePointer(to: &dst) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            sendto(fd, buf.baseAddress, buf.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        } }
    }
}

func receive(_ fd: Int32, _ buffer: inout [UInt8]) -> (Int, sockaddr_in)? {
    var from = sockaddr_in()
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let n = buffer.withUnsafeMutableBytes { buf in
        withUnsafeMutablePointer(to: &from) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            recvfrom(fd, buf.baseAddress, buf.count, 0, $0, &len)
        } }
    }
    return n >= 0 ? (n, from) : nil
}

nonisolated(unsafe) var stopRequested: Int32 = 0
func installStopHandlers() {
    signal(SIGTERM) { _ in stopRequested = 1 }
    signal(SIGINT) { _ in stopRequested = 1 }
}

struct Relay: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Forward UDP with an added one-way delay, both directions.")
    @Option(help: "Address to receive client datagrams on (IPv4:PORT).") var listen: String
    @Option(help: "Where to forward them (IPv4:PORT).") var to: String
    @Option(help: "One-way delay added to each datagram, in milliseconds.") var delayMs: Double = 10
    @Option(help: "Drop datagrams larger than this.") var maxDatagram: Int = 65_535

    func run() throws {
        guard delayMs >= 0, delayMs <= 60_000 else { throw ValidationError("--delay-ms must be 0...60000") }
        let front = try udpSocket(bind: try parseAddress(listen))
        let back = try udpSocket(bind: nil)
        let target = try parseAddress(to)
        installStopHandlers()
        let delay = UInt64(delayMs * 1e6)
        // FIFO per direction: a constant delay keeps arrival order, so the head is always due first.
        var queue: [(due: UInt64, bytes: [UInt8], toTarget: Bool)] = []
        var head = 0
        var client: sockaddr_in?
        var buffer = [UInt8](repeating: 0, count: max(2048, maxDatagram))
        var fds = [pollfd(fd: front, events: Int16(POLLIN), revents: 0), pollfd(fd: back, events: Int16(POLLIN), revents: 0)]
        while stopRequested == 0 {
            let now = monotonicNs()
            while head < queue.count, queue[head].due <= now {
                let item = queue[head]
                if item.toTarget { sendTo(back, item.bytes, target) } else if let c = client { sendTo(front, item.bytes, c) }
                head += 1
            }
            if head > 1024 && head * 2 > queue.count { queue.removeFirst(head); head = 0 }
            let timeout: Int32 = head < queue.count ? Int32(min(1000, (queue[head].due - now + 999_999) / 1_000_000)) : 200
            let rc = poll(&fds, 2, timeout)
            if rc < 0 { if errno == EINTR { continue }; throw RelayError("poll") }
            for k in 0..<2 where fds[k].revents & Int16(POLLIN) != 0 {
                guard let (n, from) = receive(fds[k].fd, &buffer), n <= maxDatagram else { continue }
                if k == 0 { client = from }
                queue.append((monotonicNs() + delay, Array(buffer[0..<n]), k == 0))
            }
        }
        close(front); close(back)
    }
}

struct Echo: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send every datagram back to its sender.")
    @Option(help: "Address to listen on (IPv4:PORT).") var listen: String

    func run() throws {
        let fd = try udpSocket(bind: try parseAddress(listen))
        installStopHandlers()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while stopRequested == 0 {
            if poll(&pfd, 1, 200) > 0, let (n, from) = receive(fd, &buffer) { sendTo(fd, Array(buffer[0..<n]), from) }
        }
        close(fd)
    }
}

struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure UDP round trips: prints `rtt-ms min=… p50=… max=… lost=…`.")
    @Option(help: "Echo server or relay to probe (IPv4:PORT).") var to: String
    @Option(help: "Number of probes.") var count: Int = 20
    @Option(help: "Pause between probes, in milliseconds.") var intervalMs: Int = 20
    @Option(help: "Give up on a probe after this many milliseconds.") var timeoutMs: Int = 2000

    func run() throws {
        guard (1...100_000).contains(count) else { throw ValidationError("--count must be 1...100000") }
        let fd = try udpSocket(bind: nil)
        let target = try parseAddress(to)
        var rtts: [Double] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        for seq in 0..<count {
            var payload = [UInt8](repeating: 0, count: 64)
            withUnsafeBytes(of: UInt64(seq).bigEndian) { for (i, b) in $0.enumerated() { payload[i] = b } }
            let sent = monotonicNs()
            sendTo(fd, payload, target)
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            while true {
                let waited = Int((monotonicNs() - sent) / 1_000_000)
                guard waited < timeoutMs, poll(&pfd, 1, Int32(timeoutMs - waited)) > 0 else { break }
                guard let (n, _) = receive(fd, &buffer), n >= 8 else { continue }
                let got = buffer[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                if got == UInt64(seq) { rtts.append(Double(monotonicNs() - sent) / 1e6); break }
            }
            usleep(useconds_t(intervalMs * 1000))
        }
        close(fd)
        let s = rtts.sorted()
        func f(_ v: Double) -> String { String(Double(Int(v * 1000)) / 1000) }
        if s.isEmpty {
            print("rtt-ms min=- p50=- max=- lost=\(count)")
            throw ExitCode(1)
        }
        print("rtt-ms min=\(f(s[0])) p50=\(f(s[s.count / 2])) max=\(f(s[s.count - 1])) lost=\(count - s.count)")
    }
}
