import MeshCore

/// Updates waiting to be piggybacked, each sent at most `limit` times (SWIM's λ·log N,
/// memberlist's `TransmitLimitedQueue`). A newer update about a member replaces the older one.
/// Least-transmitted first, most recently queued first among equals.
///
/// An item names a member's slot (its current record is read when the message is built) and, for
/// suspicions, who suspected; so an item is a few bytes, not a copy of the update. Items sit in one
/// bucket per transmit count, newest at the end: `take` reads the tails of the lowest buckets and
/// never scans the whole queue (it holds thousands of items while a large cluster forms). Replaced
/// items are left behind as stale entries and skipped; the buckets are compacted when stale entries
/// outnumber live ones.
struct BroadcastQueue: Sendable {
    /// The member slot for this node's own record.
    static let me: Int32 = -1

    private struct Entry: Sendable {
        var slot: Int32
        var token: UInt32
    }
    private struct Live: Sendable {
        var token: UInt32
        var transmits: UInt16
        /// Node number + 1 of the suspector (0: none).
        var from: UInt32
    }
    private var buckets: [[Entry]] = []
    private var live: [Int32: Live] = [:]
    /// Tokens tell a bucket entry from a stale one; they wrap after 2^32 placements, and an entry
    /// would have to sit unread through all of them to be mistaken.
    private var counter: UInt32 = 0
    private var stale = 0
    /// Most updates held; see `enqueue`.
    let capacity: Int

    init(capacity: Int = 4_096) { self.capacity = capacity }

    var count: Int { live.count }
    var isEmpty: Bool { live.isEmpty }

    /// Queues (or replaces) the update about `slot`, with `from` the suspector's node number + 1.
    /// When `capacity` updates are held, the one sent most often (newest among those) is dropped:
    /// it has done most of its share, every node that got it passes it on, and push-pull repairs
    /// what gossip misses. (While 10,000 nodes join, updates arrive faster than λ·log N transmissions
    /// can drain them, and an unbounded queue held ~8,000 updates per node.)
    mutating func enqueue(_ slot: Int32, from: UInt32 = 0) {
        if live[slot] != nil { stale += 1 } else if live.count >= capacity { evictOne() }
        place(slot, transmits: 0, from: from)
    }

    private mutating func evictOne() {
        var t = buckets.count - 1
        while t >= 0 {
            while let e = buckets[t].popLast() {
                if let item = live[e.slot], item.token == e.token { live[e.slot] = nil; return }
                stale -= 1
            }
            t -= 1
        }
    }

    mutating func remove(_ slot: Int32) {
        if live.removeValue(forKey: slot) != nil { stale += 1 }
    }

    private mutating func place(_ slot: Int32, transmits: Int, from: UInt32) {
        counter &+= 1
        if counter == 0 { counter = 1 } // 0 marks an item being moved
        live[slot] = Live(token: counter, transmits: UInt16(clamping: transmits), from: from)
        while buckets.count <= transmits { buckets.append([]) }
        buckets[transmits].append(Entry(slot: slot, token: counter))
    }

    /// Picks updates that fit `byteBudget` (`size` gives one update's encoded size), counting one
    /// transmission each and dropping those that reached `limit`. `first`, if queued, goes first
    /// (Lifeguard's buddy system: a suspect hears of its suspicion in the very ping that probes it).
    /// Returns (slot, suspector node number + 1) pairs.
    mutating func take(byteBudget: Int, maxCount: Int, limit: Int, first: Int32? = nil,
                       size: (Int32, UInt32) -> Int) -> [(slot: Int32, from: UInt32)] {
        guard !live.isEmpty, byteBudget > 0, maxCount > 0 else { return [] }
        var chosen: [(slot: Int32, from: UInt32, transmits: Int)] = []
        chosen.reserveCapacity(16)
        var used = 0
        if let f = first, let item = live[f] {
            let n = size(f, item.from)
            if n <= byteBudget { chosen.append((f, item.from, Int(item.transmits))); used = n; live[f]!.token = 0; stale += 1 }
        }
        // The smallest update is ~45 bytes; stop looking once not even that fits, or after a few
        // that did not fit (a message is full; scanning on for a smaller update costs more than
        // the few bytes it would fill).
        var misses = 0
        var t = 0
        while t < buckets.count && chosen.count < maxCount && byteBudget - used >= 40 && misses < 4 {
            var j = buckets[t].count
            var kept: [Entry] = []
            while j > 0 && chosen.count < maxCount && byteBudget - used >= 40 && misses < 4 {
                j -= 1
                let e = buckets[t][j]
                guard let item = live[e.slot], item.token == e.token else { stale -= 1; continue }
                if t >= limit { live[e.slot] = nil; continue }
                let n = size(e.slot, item.from)
                if used + n > byteBudget { kept.append(e); misses += 1; continue }
                used += n
                chosen.append((e.slot, item.from, Int(item.transmits)))
                live[e.slot]!.token = 0 // moved below
            }
            buckets[t].removeSubrange(j...)
            buckets[t].append(contentsOf: kept.reversed())
            t += 1
        }
        var out: [(slot: Int32, from: UInt32)] = []
        out.reserveCapacity(chosen.count)
        for c in chosen {
            out.append((c.slot, c.from))
            if c.transmits + 1 >= limit { live[c.slot] = nil } else { place(c.slot, transmits: c.transmits + 1, from: c.from) }
        }
        if stale > live.count + 1_024 { compact() }
        return out
    }

    private mutating func compact() {
        for t in buckets.indices {
            buckets[t] = buckets[t].filter { e in live[e.slot].map { $0.token == e.token } ?? false }
        }
        stale = 0
    }
}
