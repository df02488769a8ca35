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
    /// 4 bytes, so a `SlotMap` cell is 8 (a queue holds up to `capacity` items in a table twice
    /// that size; with 10,000 cores forming a cluster, each 4 bytes an item is ~160 MB): the
    /// transmissions so far in the top byte (`take` caps limits at 255), the token in the low 24
    /// bits. Suspectors, rare, live beside it in `suspectors`.
    private struct Live: Sendable {
        var word: UInt32
        static let tokenMask: UInt32 = 0xFF_FFFF
        init(token: UInt32, transmits: Int) { word = UInt32(UInt8(clamping: transmits)) << 24 | token }
        var transmits: Int { Int(word >> 24) }
        var token: UInt32 {
            get { word & Live.tokenMask }
            set { word = word & ~Live.tokenMask | newValue }
        }
    }
    private var buckets: [[Entry]] = []
    /// Bit t set: `buckets[t]` is not empty (for t < 64; buckets past 63 are always looked at).
    /// `take` skips the empty buckets without touching their storage: each is an array of its
    /// own, and reading the count of every bucket up to the transmit limit was a cache miss each,
    /// half of `take`'s time at 1,000 nodes (most buckets are empty).
    private var filled: UInt64 = 0
    private var live = SlotMap<Live>(placeholder: Live(token: 0, transmits: 0))
    /// The suspector's node number + 1 of the queued items that have one (suspicions, deaths).
    private var suspectors = SlotMap<UInt32>(placeholder: 0)
    /// Tokens tell a bucket entry from a stale one; each placement draws the next. They stay below
    /// `tokenLimit`: at the limit the buckets are compacted and their entries (one per item)
    /// renumbered 1...n, and drawing goes on from n + 1 (`renumber`). So a token drawn is above
    /// every token in the buckets, and no stale entry can ever match its item again.
    private var counter: UInt32 = 0
    private let tokenLimit: UInt32
    private var stale = 0
    /// `take`s since the buckets' storage was last checked (see `trimIfSlack`).
    private var takesSinceTrim = 0
    /// Most updates held; see `enqueue`.
    let capacity: Int

    /// Most items a queue can hold: a token for each, and one more (`renumber`).
    static let maxCapacity = Int(Live.tokenMask) - 1

    /// - Parameters:
    ///   - capacity: most items held (at most `tokenLimit` − 2, so at most `maxCapacity`).
    ///   - tokenLimit: tokens are below it (at most 2^24; smaller only in tests, to wrap often).
    init(capacity: Int = 4_096, tokenLimit: UInt32 = 1 << 24) {
        precondition(tokenLimit <= Live.tokenMask + 1 && capacity >= 1 && capacity <= Int(tokenLimit) - 2,
                     "a broadcast queue needs a token for each item and one more")
        self.capacity = capacity
        self.tokenLimit = tokenLimit
    }

    var count: Int { live.count }
    /// Entries the buckets have storage for (for tests).
    var storedEntries: Int { buckets.reduce(0) { $0 + $1.capacity } }
    var isEmpty: Bool { live.isEmpty }

    /// Queues (or replaces) the update about `slot`, with `from` the suspector's node number + 1.
    /// When `capacity` updates are held, the one sent most often (newest among those) is dropped:
    /// it has done most of its share, every node that got it passes it on, and push-pull repairs
    /// what gossip misses. (While 10,000 nodes join, updates arrive faster than λ·log N transmissions
    /// can drain them, and an unbounded queue held ~8,000 updates per node.)
    mutating func enqueue(_ slot: Int32, from: UInt32 = 0) {
        let replaced = live[slot] != nil
        if !replaced && live.count >= capacity { evictOne() }
        place(slot, transmits: 0, from: from)
        if replaced { stale += 1 } // (counted after `place`, which may compact the buckets)
    }

    private mutating func evictOne() {
        var t = buckets.count - 1
        while t >= 0 {
            while let e = buckets[t].popLast() {
                if let item = live[e.slot], item.token == e.token {
                    drop(e.slot)
                    if buckets[t].isEmpty { markEmpty(t) }
                    return
                }
                stale -= 1
            }
            markEmpty(t)
            t -= 1
        }
    }

    @inline(__always) private mutating func markEmpty(_ t: Int) { if t < 64 { filled &= ~(1 << UInt64(t)) } }
    @inline(__always) private mutating func markFilled(_ t: Int) { if t < 64 { filled |= 1 << UInt64(t) } }

    /// The first bucket at or after `t` that may hold entries (`buckets.count` if none).
    @inline(__always) private func nextFilled(from t: Int) -> Int {
        guard t < 64 else { return t }
        let rest = filled >> UInt64(t)
        if rest != 0 { return t + rest.trailingZeroBitCount }
        return buckets.count > 64 ? 64 : buckets.count
    }

    mutating func remove(_ slot: Int32) {
        if drop(slot) { stale += 1 }
        if live.isEmpty { release() }
    }

    /// An empty queue gives its storage back (while a large cluster forms, every member's queue
    /// holds thousands of items; once they are sent, 10,000 idle queues would keep ~100 KB each).
    private mutating func release() {
        buckets = []
        filled = 0
        live = SlotMap(placeholder: Live(token: 0, transmits: 0))
        suspectors = SlotMap(placeholder: 0)
        stale = 0
    }

    private mutating func place(_ slot: Int32, transmits: Int, from: UInt32) {
        if counter + 1 == tokenLimit { renumber() }
        counter += 1
        if from != 0 { suspectors[slot] = from } else if !suspectors.isEmpty { suspectors[slot] = nil }
        live[slot] = Live(token: counter, transmits: transmits)
        while buckets.count <= transmits { buckets.append([]) }
        buckets[transmits].append(Entry(slot: slot, token: counter))
        markFilled(transmits)
    }

    /// Picks updates that fit `byteBudget` (`size` gives one update's encoded size), counting one
    /// transmission each and dropping those that reached `limit`. `first`, if queued, goes first
    /// (Lifeguard's buddy system: a suspect hears of its suspicion in the very ping that probes it).
    /// Returns (slot, suspector node number + 1, transmissions before this one) for each, and the
    /// sum of their sizes.
    mutating func take(byteBudget: Int, maxCount: Int, limit: Int, first: Int32? = nil,
                       size: (Int32, UInt32) -> Int) -> (items: [(slot: Int32, from: UInt32, transmits: Int)], bytes: Int) {
        guard !live.isEmpty, byteBudget > 0, maxCount > 0 else { return ([], 0) }
        let limit = Swift.min(limit, Int(UInt8.max)) // `Live` counts transmissions in a byte
        var chosen: [(slot: Int32, from: UInt32, transmits: Int)] = []
        chosen.reserveCapacity(16)
        var used = 0
        if let f = first, let item = live[f] {
            let by = from(f), n = size(f, by)
            if n <= byteBudget { chosen.append((f, by, item.transmits)); used = n; live.modify(f) { $0.token = 0 }; stale += 1 }
        }
        // The smallest update is ~45 bytes; stop looking once not even that fits, or after a few
        // that did not fit (a message is full; scanning on for a smaller update costs more than
        // the few bytes it would fill).
        var misses = 0
        var t = nextFilled(from: 0)
        while t < buckets.count && chosen.count < maxCount && byteBudget - used >= 40 && misses < 4 {
            var j = buckets[t].count
            warm(buckets[t].suffix(Swift.min(j, maxCount - chosen.count, 16)))
            var kept: [Entry] = []
            while j > 0 && chosen.count < maxCount && byteBudget - used >= 40 && misses < 4 {
                j -= 1
                let e = buckets[t][j]
                guard let item = live[e.slot], item.token == e.token else { stale -= 1; continue }
                if t >= limit { drop(e.slot); continue }
                let by = from(e.slot), n = size(e.slot, by)
                if used + n > byteBudget { kept.append(e); misses += 1; continue }
                used += n
                chosen.append((e.slot, by, item.transmits))
                live.modify(e.slot) { $0.token = 0 } // moved below
            }
            buckets[t].removeSubrange(j...)
            buckets[t].append(contentsOf: kept.reversed())
            if buckets[t].isEmpty { markEmpty(t) }
            t = nextFilled(from: t + 1)
        }
        // The buckets the taken items move to, read together first (see `warm`).
        var sum = 0
        for c in chosen where c.transmits + 1 < Swift.min(limit, buckets.count) { sum &+= buckets[c.transmits + 1].count }
        warmed &+= UInt32(truncatingIfNeeded: sum)
        for c in chosen {
            if c.transmits + 1 >= limit { drop(c.slot) } else { place(c.slot, transmits: c.transmits + 1, from: c.from) }
        }
        if live.isEmpty {
            release()
        } else if stale > live.count + 1_024 {
            compact()
        } else {
            takesSinceTrim += 1
            if takesSinceTrim >= 256 { trimIfSlack() }
        }
        return (chosen, used)
    }

    @inline(__always) private func from(_ slot: Int32) -> UInt32 {
        suspectors.isEmpty ? 0 : suspectors[slot] ?? 0
    }

    /// Removes the item of `slot` (its bucket entry, if any, becomes stale); false if none was queued.
    @inline(__always) @discardableResult private mutating func drop(_ slot: Int32) -> Bool {
        guard live.removeValue(forKey: slot) != nil else { return false }
        if !suspectors.isEmpty { suspectors[slot] = nil }
        return true
    }

    /// What `warm` read (never used: it only keeps those reads in the program).
    private var warmed: UInt32 = 0

    /// Reads the live items of `entries` (the next ones `take` looks at) without acting on them:
    /// each is a cache miss while thousands of cores take turns, and this loop's lookups do not
    /// wait for one another, so their misses overlap instead of coming one per update taken.
    @inline(__always) private mutating func warm(_ entries: ArraySlice<Entry>) {
        var sum: UInt32 = 0
        for e in entries { sum &+= live.token(e.slot) }
        warmed &+= sum
    }

    /// The end of a round of tokens: drops the stale entries and gives the live ones (one per item
    /// outside a `take`) tokens 1...n in bucket order, their items the same; drawing goes on from
    /// n + 1 (n ≤ `capacity` < `tokenLimit` − 1). Items being moved by a `take` keep token 0.
    private mutating func renumber() {
        compact()
        var n: UInt32 = 0
        for t in buckets.indices {
            for k in buckets[t].indices {
                n += 1
                buckets[t][k].token = n
                live.modify(buckets[t][k].slot) { $0.token = n }
            }
        }
        counter = n
    }

    /// What is wrong with the queue's bookkeeping, or nil (for tests): outside a `take`, each item
    /// has exactly one bucket entry with its token, `stale` counts the others, only queued items
    /// have a suspector, and every non-empty bucket below 64 is marked filled.
    func inconsistency() -> String? {
        var matching: [Int32: Int] = [:]
        var entries = 0
        for b in buckets {
            for e in b {
                entries += 1
                if let item = live[e.slot], item.token == e.token { matching[e.slot, default: 0] += 1 }
            }
        }
        let items = live.sortedKeys()
        for s in items where matching[s] != 1 { return "slot \(s) has \(matching[s] ?? 0) entries with its token" }
        if stale != entries - items.count { return "stale is \(stale) with \(entries) entries for \(items.count) items" }
        for s in suspectors.sortedKeys() where live[s] == nil { return "a suspector is kept for slot \(s), which is not queued" }
        for t in buckets.indices where t < 64 && !buckets[t].isEmpty && filled & (1 << UInt64(t)) == 0 {
            return "bucket \(t) holds entries but is not marked filled"
        }
        return nil
    }

    /// Drops stale entries; each bucket keeps exactly the storage its live entries need.
    private mutating func compact() {
        for t in buckets.indices {
            let kept = buckets[t].filter { e in live[e.slot].map { $0.token == e.token } ?? false }
            var exact: [Entry] = []
            exact.reserveCapacity(kept.count)
            exact.append(contentsOf: kept)
            buckets[t] = exact
            if buckets[t].isEmpty { markEmpty(t) }
        }
        stale = 0
        takesSinceTrim = 0
    }

    /// Items move up one bucket per transmission, so each of the ~20 buckets grows, at some
    /// moment, to hold most of the queue, and an array keeps its largest storage: 13,000 entries'
    /// worth a node for a queue of 2,048 (25% of a 10,000-node simulation's heap). Every 256 takes
    /// the storage is compared with the entries; at more than twice as much, it is compacted.
    private mutating func trimIfSlack() {
        takesSinceTrim = 0
        var held = 0, entries = 0
        for b in buckets { held += b.capacity; entries += b.count }
        if held > 2 * entries + 512 { compact() }
    }
}
