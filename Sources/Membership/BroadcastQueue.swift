import MeshCore

/// Updates waiting to be piggybacked, each sent at most `limit` times (SWIM's λ·log N,
/// memberlist's `TransmitLimitedQueue`). A newer update about a node replaces the older one.
/// Least-transmitted first, newest first among equals.
struct BroadcastQueue: Sendable {
    private struct Item: Sendable {
        var update: MemberUpdate
        var size: Int
        var transmits: Int
        var order: UInt64
    }
    private var items: [NodeID: Item] = [:]
    private var counter: UInt64 = 0

    var count: Int { items.count }
    var isEmpty: Bool { items.isEmpty }

    mutating func enqueue(_ update: MemberUpdate) {
        counter += 1
        items[update.node] = Item(update: update, size: update.wireBytes().count, transmits: 0, order: counter)
    }

    /// Picks updates that fit `byteBudget`, counting one transmission each; drops those that reached
    /// `limit`. `first`, if queued, goes first (Lifeguard's buddy system: a suspect hears of its
    /// suspicion in the very ping that probes it).
    mutating func take(byteBudget: Int, maxCount: Int, limit: Int, first: NodeID? = nil) -> [MemberUpdate] {
        guard !items.isEmpty, byteBudget > 0 else { return [] }
        var chosen: [NodeID] = []
        var used = 0
        if let f = first, let item = items[f], item.size <= byteBudget {
            chosen.append(f); used += item.size
        }
        // One pass keeping the best few candidates: the queue can hold thousands of updates while a
        // large cluster forms, and a message carries a dozen.
        let keep = Swift.min(maxCount, byteBudget / 40 + 1)
        func better(_ a: Item, _ b: Item) -> Bool {
            a.transmits != b.transmits ? a.transmits < b.transmits : a.order > b.order
        }
        var ordered: [Item] = []
        ordered.reserveCapacity(keep + 1)
        for item in items.values {
            if ordered.count == keep, let last = ordered.last, !better(item, last) { continue }
            let at = ordered.firstIndex { better(item, $0) } ?? ordered.count
            ordered.insert(item, at: at)
            if ordered.count > keep { ordered.removeLast() }
        }
        for item in ordered where chosen.count < maxCount {
            if item.update.node == first { continue }
            // Per-update overhead: nothing beyond its own bytes (the array count is one varint).
            if used + item.size > byteBudget { continue }
            chosen.append(item.update.node)
            used += item.size
        }
        var out: [MemberUpdate] = []
        out.reserveCapacity(chosen.count)
        for node in chosen {
            guard var item = items[node] else { continue }
            out.append(item.update)
            item.transmits += 1
            items[node] = item.transmits >= limit ? nil : item
        }
        return out
    }
}
