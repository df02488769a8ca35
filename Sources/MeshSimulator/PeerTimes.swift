/// A node's open links in the simulated world: peer index → last use (virtual ns).
///
/// Open addressing with linear probing and backward-shift deletion, hashed by one multiply: the
/// world looks a pair up on both ends for every message it sends, and the idle sweep visits every
/// link, and `Dictionary<Int32, UInt64>` hashed each of those lookups with SipHash (~12% of a
/// 10,000-node run once its members had joined). The keys are the world's own node indices, not
/// input, so a keyless hash is safe. Iteration order is the table's; the world sorts what it
/// iterates, so the layout never changes what a run does.
struct PeerTimes: Sendable {
    private var keys: [Int32] = []
    private var times: [UInt64] = []
    private var mask = -1
    private(set) var count = 0
    private static let free: Int32 = -1

    var isEmpty: Bool { count == 0 }

    @inline(__always) private func home(_ key: Int32) -> Int {
        Int(truncatingIfNeeded: (UInt64(UInt32(bitPattern: key)) &* 0x9e37_79b9_7f4a_7c15) >> 32) & mask
    }

    @inline(__always) private func find(_ key: Int32) -> Int? {
        guard count > 0 else { return nil }
        var i = home(key)
        while true {
            let k = keys[i]
            if k == key { return i }
            if k == Self.free { return nil }
            i = (i + 1) & mask
        }
    }

    subscript(key: Int32) -> UInt64? {
        get { find(key).map { times[$0] } }
        set {
            if let v = newValue { _ = updateValue(v, forKey: key) } else { _ = removeValue(forKey: key) }
        }
    }

    /// Sets `key`'s time; returns the previous one (nil if `key` was absent).
    @discardableResult
    mutating func updateValue(_ value: UInt64, forKey key: Int32) -> UInt64? {
        precondition(key >= 0, "PeerTimes keys are node indices")
        if let i = find(key) {
            let old = times[i]
            times[i] = value
            return old
        }
        if (count + 1) * 4 > keys.count * 3 { grow() }
        var i = home(key)
        while keys[i] != Self.free { i = (i + 1) & mask }
        keys[i] = key
        times[i] = value
        count += 1
        return nil
    }

    /// Removes `key`; returns its time if it was present.
    @discardableResult
    mutating func removeValue(forKey key: Int32) -> UInt64? {
        guard var i = find(key) else { return nil }
        let old = times[i]
        count -= 1
        var j = i
        while true {
            j = (j + 1) & mask
            let k = keys[j]
            if k == Self.free { break }
            let h = home(k)
            // The entry at j may move into the hole at i unless its home lies cyclically in (i, j].
            let stays = i <= j ? (i < h && h <= j) : (i < h || h <= j)
            if !stays {
                keys[i] = k
                times[i] = times[j]
                i = j
            }
        }
        keys[i] = Self.free
        return old
    }

    /// The peers whose entries pass `include`, in ascending order.
    func sortedKeys(where include: (Int32, UInt64) -> Bool = { _, _ in true }) -> [Int32] {
        guard count > 0 else { return [] }
        var out: [Int32] = []
        for i in keys.indices where keys[i] != Self.free && include(keys[i], times[i]) { out.append(keys[i]) }
        out.sort()
        return out
    }

    private mutating func grow() {
        let oldKeys = keys, oldTimes = times
        let size = Swift.max(8, keys.count * 2)
        keys = Array(repeating: Self.free, count: size)
        times = Array(repeating: 0, count: size)
        mask = size - 1
        count = 0
        for i in oldKeys.indices where oldKeys[i] != Self.free { updateValue(oldTimes[i], forKey: oldKeys[i]) }
    }
}
