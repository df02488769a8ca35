import Testing
import MeshCore
@testable import MeshSimulator

/// The `cpu` line: daemons sharing a machine's cores, CPU cost per byte sent and received.
@Suite struct CPUModelTests {
    func cpu(cores: Double, machines: Int = 1, nodes: Int = 4) -> SimCPU {
        var s = CPUSettings()
        s.cores = cores
        s.machines = machines
        return SimCPU(settings: s, nodes: nodes)
    }
    let ms: UInt64 = 1_000_000

    @Test func coresAreSharedByTheNodesOfAMachine() {
        var one = cpu(cores: 1)
        #expect(one.run(node: 0, cost: 1e6, ready: 0, now: 0) == ms)
        #expect(one.run(node: 1, cost: 1e6, ready: 0, now: 0) == 2 * ms)     // waits for the only core
        var two = cpu(cores: 2)
        #expect(two.run(node: 0, cost: 1e6, ready: 0, now: 0) == ms)
        #expect(two.run(node: 1, cost: 1e6, ready: 0, now: 0) == ms)         // the second core
        #expect(two.run(node: 2, cost: 1e6, ready: 0, now: 0) == 2 * ms)
        // Nodes on another machine do not compete.
        var split = cpu(cores: 1, machines: 2)
        #expect(split.run(node: 0, cost: 1e6, ready: 0, now: 0) == ms)
        #expect(split.run(node: 3, cost: 1e6, ready: 0, now: 0) == ms)
        #expect(split.spent[0] == 1e6 && split.spent[3] == 1e6)
    }

    @Test func oneJobUsesOneCoreAndEarlierGapsStayUsable() {
        var two = cpu(cores: 2)
        #expect(two.run(node: 0, cost: 2e6, ready: 0, now: 0) == 2 * ms)     // not 1 ms on two cores
        var one = cpu(cores: 1)
        #expect(one.run(node: 0, cost: 1e6, ready: 10 * ms, now: 0) == 11 * ms)
        // Placed later but ready earlier: it runs in the idle time before, not after.
        #expect(one.run(node: 1, cost: 1e6, ready: 0, now: 0) == ms)
        #expect(one.run(node: 1, cost: 1e6, ready: 10 * ms + ms / 2, now: 0) == 12 * ms)
    }

    @Test func aCPUBoundSenderIsSlowerThanItsLink() {
        var s = LinkSettings()
        s.up = 12_500_000; s.down = 1e9
        var c = CPUSettings()
        c.cores = 1
        c.sendNsPerByte = 100  // 10 MB/s of CPU for a 12.5 MB/s link
        s.cpu = c
        var model = MessageLevelLinks(settings: s, regionOf: [0, 0], latency: [[.microseconds(100)]], capacity: [(nil, nil)])
        var rng = SeededRandom(seed: 1)
        guard case .deliver(let at, let wire) = model.send(SimTransmission(from: 0, to: 1, bytes: 1 << 20, unreliable: false, notBefore: 0),
                                                               random: &rng) else { Issue.record("lost"); return }
        let cpuNs = Double(wire) * 100
        #expect(Double(at) >= cpuNs && Double(at) < cpuNs + 1e6, "delivered at \(at) ns, CPU alone takes \(cpuNs) ns")
        // Without the cpu line the link alone sets the time.
        s.cpu = nil
        var free = MessageLevelLinks(settings: s, regionOf: [0, 0], latency: [[.microseconds(100)]], capacity: [(nil, nil)])
        guard case .deliver(let fast, _) = free.send(SimTransmission(from: 0, to: 1, bytes: 1 << 20, unreliable: false, notBefore: 0),
                                                         random: &rng) else { return }
        #expect(Double(fast) < cpuNs * 0.9)
    }

    /// `link fifo=`: priority ends at the kernel's queue; a control message waits behind up to that
    /// much queued bulk, not all of it, and not at all without it.
    @Test func controlWaitsBehindTheKernelsShareOfTheBulkBacklog() {
        func controlArrival(fifo: Duration) -> UInt64 {
            var s = LinkSettings()
            s.up = 1_000_000; s.down = 1e9; s.fifo = fifo
            var model = MessageLevelLinks(settings: s, regionOf: [0, 0], latency: [[.microseconds(100)]], capacity: [(nil, nil)])
            var rng = SeededRandom(seed: 1)
            let vs = model.run([SimTransmission(from: 0, to: 1, bytes: 100_000, unreliable: false, traffic: .bulk, notBefore: 0),
                                SimTransmission(from: 0, to: 1, bytes: 64, unreliable: false, traffic: .control, notBefore: 0)], random: &rng)
            guard case .deliver(let at, _) = vs[1] else { return 0 }
            return at
        }
        let strict = controlArrival(fifo: .zero), kernel = controlArrival(fifo: .milliseconds(5))
        #expect(strict < 1_000_000)                                   // jumps the 100 ms of bulk
        #expect(kernel >= 5_000_000 && kernel < 6_000_000, "\(kernel)") // waits 5 ms of it
    }

    @Test func theScenarioLineParses() throws {
        let text = """
        name t
        nodes 9
        core flood
        cpu cores=2 machines=1 send=7.7ns recv=11.7ns/B
        """
        let s = try Scenario(parsing: text)
        #expect(s.link.cpu?.cores == 2 && s.link.cpu?.sendNsPerByte == 7.7 && s.link.cpu?.recvNsPerByte == 11.7)
        #expect(throws: (any Error).self) { try Scenario(parsing: "name t\nnodes 2\ncore flood\ncpu send=fast") }
    }
}
