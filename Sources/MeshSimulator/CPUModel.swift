/// Hosts' CPUs, for runs that stand in for several daemons sharing one machine (the namespace
/// benchmarks put nine daemons on two cores).
///
/// A message costs its sender `send` nanoseconds of CPU per wire byte (reading the chunk, framing,
/// QUIC packetisation and AEAD) and its receiver `recv` per wire byte (decryption, SHA-256
/// verification, the store's write). Nodes are split into `machines` contiguous blocks; each
/// machine has `cores` cores, shared by its nodes. CPU is fluid, in time slots: a job placed at
/// time t takes the capacity left in the slots from t on, at most one core's worth per slot (one
/// message is one thread's work), so a job may use a gap before work placed earlier for a later
/// time. The scenario line: `cpu cores=2 send=7.7ns recv=11.7ns [machines=1] [slot=50us]`; `cores`
/// may be fractional (1.3: what a machine busy with other work leaves the nodes).
public struct CPUSettings: Sendable, Hashable {
    /// Cores the machine gives its nodes (fractional: what other work on the machine leaves).
    public var cores: Double = 2
    /// CPU nanoseconds per wire byte sent and received.
    public var sendNsPerByte: Double = 0
    public var recvNsPerByte: Double = 0
    /// Machines the nodes are spread over (contiguous blocks).
    public var machines: Int = 1
    /// The scheduling grain.
    public var slot: Duration = .microseconds(50)
    public init() {}
}

/// The CPU time line of every machine (see `CPUSettings`). Pure arithmetic; the link layer calls it.
public struct SimCPU: Sendable {
    public let settings: CPUSettings
    private let machineOf: [Int32]
    private let slotNs: UInt64
    private let capacityPerSlot: Double
    /// Per machine: core-nanoseconds used in each slot from `base` on; nothing goes before `floor`.
    private var used: [[Double]]
    private var base: [UInt64]
    private var floor: [UInt64]
    /// CPU nanoseconds spent per node (sent and received work), for reports.
    public private(set) var spent: [Double]

    public init(settings: CPUSettings, nodes: Int) {
        self.settings = settings
        let m = max(1, min(settings.machines, max(nodes, 1)))
        machineOf = (0..<nodes).map { Int32($0 * m / max(nodes, 1)) }
        slotNs = UInt64(max(1_000, settings.slot.nanosecondsClamped))
        capacityPerSlot = Double(slotNs) * max(0.01, settings.cores)
        used = Array(repeating: [], count: m)
        base = Array(repeating: 0, count: m)
        floor = Array(repeating: 0, count: m)
        spent = Array(repeating: 0, count: nodes)
    }

    /// Runs `cost` nanoseconds of work for `node`, ready at `ready`; returns when it is done.
    /// `now` (the present of the simulation) lets slots in the past be forgotten.
    public mutating func run(node: Int, cost: Double, ready: UInt64, now: UInt64) -> UInt64 {
        guard cost > 0 else { return ready }
        spent[node] += cost
        let m = Int(machineOf[node])
        floor[m] = max(floor[m], now / slotNs)
        if floor[m] - base[m] > 4096 {
            // Forget slots well in the past (nothing can be placed there any more).
            let drop = Int(min(UInt64(used[m].count), floor[m] - base[m]))
            used[m].removeFirst(drop)
            base[m] += UInt64(drop)
            if used[m].isEmpty { base[m] = floor[m] }
        }
        var slot = max(ready / slotNs, floor[m])
        var left = cost
        // Inside its first slot the job starts at `ready`.
        var offset = Double(ready > slot * slotNs ? ready - slot * slotNs : 0)
        while true {
            let i = Int(slot - base[m])
            if i >= used[m].count { used[m].append(contentsOf: repeatElement(0, count: i + 1 - used[m].count)) }
            let free = min(capacityPerSlot - used[m][i], Double(slotNs) - offset)
            if free > 0 {
                let take = min(free, left)
                used[m][i] += take
                left -= take
                if left <= 0 { return slot * slotNs + UInt64((offset + take).rounded(.up)) }
            }
            slot += 1
            offset = 0
        }
    }

    /// Fraction of the machine's cores in use over [from, to) from what has been placed (for tests).
    func utilisation(machine m: Int, from: UInt64, to: UInt64) -> Double {
        let a = max(from / slotNs, base[m]), b = to / slotNs
        guard b > a else { return 0 }
        var sum = 0.0
        for s in a..<b where Int(s - base[m]) < used[m].count { sum += used[m][Int(s - base[m])] }
        return sum / (Double(b - a) * capacityPerSlot)
    }
}
