import Testing
import MeshCore
@testable import Membership

/// The open-addressing tables behind the broadcast queue, the directory and the link set answer
/// exactly as `Dictionary` / `Set` do, through growth and many removals (backward-shift deletion is
/// where such tables break).
@Suite struct HashTableTests {
    @Test func slotMapAgreesWithADictionary() {
        var rng = SeededRandom(seed: 21)
        var map = SlotMap<UInt64>(placeholder: 0)
        var model: [Int32: UInt64] = [:]
        for step in 0..<60_000 {
            // Keys from a small range so inserts, replacements and removals collide often; -1 is
            // the queue's own-record slot.
            let key = Int32(rng.next() % 700) - 1
            switch rng.next() % 5 {
            case 0, 1:
                map[key] = UInt64(step); model[key] = UInt64(step)
            case 2:
                #expect(map.removeValue(forKey: key) == model.removeValue(forKey: key))
            case 3:
                map.modify(key) { $0 += 1 }
                if model[key] != nil { model[key]! += 1 }
            default:
                map[key] = nil; model[key] = nil
            }
            if step % 997 == 0 {
                for k in Int32(-1)..<700 where map[k] != model[k] {
                    Issue.record("step \(step): key \(k) is \(String(describing: map[k])), expected \(String(describing: model[k]))")
                    return
                }
            }
            #expect(map.count == model.count)
        }
    }

    @Test func nodeIDSetAgreesWithASet() {
        var rng = SeededRandom(seed: 22)
        let ids = [NodeID(digest: .zero)] + (0..<900).map { NodeID(digest: Digest.of(Array("n\($0)".utf8))) }
        var set = NodeIDSet()
        var model = Set<NodeID>()
        for step in 0..<40_000 {
            let id = ids[Int(rng.next() % UInt64(ids.count))]
            if rng.next() % 3 == 0 {
                set.remove(id); model.remove(id)
            } else {
                set.insert(id); model.insert(id)
            }
            #expect(set.count == model.count)
            if step % 1_009 == 0 {
                for id in ids where set.contains(id) != model.contains(id) {
                    Issue.record("step \(step): membership of \(id.short) differs")
                    return
                }
            }
        }
    }

    @Test func linkSetAgreesWithASetWhileNodesGetNumbers() {
        // A peer may link before the directory has a number for it and be interned later; the
        // set must answer for it under either key, and forget it under the one it has now.
        var rng = SeededRandom(seed: 23)
        let ids = (0..<900).map { NodeID(digest: Digest.of(Array("l\($0)".utf8))) }
        var numbered = Array(repeating: false, count: ids.count)
        var set = LinkSet()
        var model = Set<NodeID>()
        func number(_ k: Int) -> UInt32? { numbered[k] ? UInt32(k * 7 % 1_000) : nil }
        for step in 0..<40_000 {
            let k = Int(rng.next() % UInt64(ids.count))
            switch rng.next() % 7 {
            case 0: numbered[k] = true
            case 1, 2: set.remove(ids[k], number: number(k)); model.remove(ids[k])
            default: set.insert(ids[k], number: number(k), nodes: 1_000); model.insert(ids[k])
            }
            if step % 997 == 0 {
                for j in ids.indices where set.contains(ids[j], number: number(j)) != model.contains(ids[j]) {
                    Issue.record("step \(step): link to \(j) differs")
                    return
                }
            }
        }
    }

    @Test func broadcastQueueStorageFollowsItsItems() {
        // Items climb one bucket per transmission, so a full queue sent round after round passes
        // through every bucket; the buckets' storage must follow the queue, not the most each
        // bucket ever held, and an empty queue holds none.
        var q = BroadcastQueue(capacity: 2_048)
        for k in 0..<2_048 { q.enqueue(Int32(k)) }
        var rounds = 0
        while q.count > 1_500 {
            _ = q.take(byteBudget: 1_000, maxCount: 256, limit: 20) { _, _ in 50 }
            rounds += 1
        }
        #expect(rounds > 1_000, "the queue must have been sent through most buckets (\(rounds) takes)")
        #expect(q.storedEntries <= 4 * q.count + 3 * 1_024,
                "\(q.storedEntries) entries of storage for \(q.count) items")
        while !q.isEmpty { _ = q.take(byteBudget: 100_000, maxCount: 256, limit: 20) { _, _ in 50 } }
        #expect(q.storedEntries == 0)
    }

    @Test func broadcastQueueKeepsEverySuspectorAndCountsTransmissions() {
        // An item packs its transmit count into a byte beside its token, and its suspector's
        // number lives in a side table. Each comes back whole (slot 2's replacement has none),
        // and an item goes exactly `limit` times (a limit past what a byte counts is taken as 255).
        let froms: [UInt32] = [0, 1, 0xFF_FFFE, 0xFF_FFFF, 0x100_0000, UInt32.max]
        for limit in [3, 300] {
            var q = BroadcastQueue(capacity: 64)
            for (k, f) in froms.enumerated() { q.enqueue(Int32(k), from: f) }
            q.enqueue(2, from: 7) // a replaced item drops its wide number
            q.enqueue(4, from: 0x200_0000)
            var sent: [Int32: [Int]] = [:]
            while !q.isEmpty {
                let (items, _) = q.take(byteBudget: 10_000, maxCount: 64, limit: limit) { _, _ in 50 }
                for i in items {
                    let expected: UInt32 = i.slot == 2 ? 7 : i.slot == 4 ? 0x200_0000 : froms[Int(i.slot)]
                    #expect(i.from == expected, "slot \(i.slot)")
                    sent[i.slot, default: []].append(i.transmits)
                }
            }
            for k in froms.indices { #expect(sent[Int32(k)] == Array(0..<min(limit, 255)), "slot \(k), limit \(limit)") }
        }
    }

    @Test func aTokenWrapLeavesNoEntryThatCanMatchAgain() {
        // Tokens 1 and 2, then a wrap. The third placement replaces a queued item at the wrap: the
        // item's earlier entry must stay stale (counted, never matching) through the new round.
        var q = BroadcastQueue(capacity: 1, tokenLimit: 3)
        q.enqueue(7)                                                                    // token 1
        _ = q.take(byteBudget: 50, maxCount: 1, limit: 20) { _, _ in 50 }               // token 2, sent once
        q.enqueue(7)                                                                    // the wrap
        #expect(q.count == 1)
        #expect(q.inconsistency() == nil, "\(q.inconsistency() ?? "")")
        let (items, _) = q.take(byteBudget: 50, maxCount: 1, limit: 20) { _, _ in 50 }  // another wrap
        #expect(items.map(\.transmits) == [0], "the replaced item starts its count again")
        #expect(q.inconsistency() == nil, "\(q.inconsistency() ?? "")")
    }

    @Test func broadcastQueueCountsRightThroughTokenWraps() {
        // Tokens tell a bucket entry from a stale one and wrap (here every few placements); a stale
        // entry from an earlier round must never pass for the item that drew its token again.
        // Against a model, with the queue's own bookkeeping checked after every step: every item
        // comes back with its own count and suspector, least-transmitted first, and goes exactly
        // `limit` times unless replaced.
        var q = BroadcastQueue(capacity: 40, tokenLimit: 42)
        var model: [Int32: (transmits: Int, from: UInt32)] = [:]
        var rng = SeededRandom(seed: 5)
        let limit = 6
        for step in 0..<20_000 {
            if rng.next() % 3 == 0 {
                let slot = Int32(rng.next() % 40), from = rng.next() % 4 == 0 ? UInt32(rng.next() % 1_000 + 1) : 0
                q.enqueue(slot, from: from)
                model[slot] = (0, from)
            } else {
                let before = model
                let (items, _) = q.take(byteBudget: 50 * Int(rng.next() % 6 + 1), maxCount: 256, limit: limit) { _, _ in 50 }
                for i in items {
                    guard let m = model[i.slot] else { Issue.record("step \(step): slot \(i.slot) is not queued"); return }
                    #expect(i.transmits == m.transmits && i.from == m.from,
                            "step \(step): slot \(i.slot) came with \(i.transmits)/\(i.from), expected \(m.transmits)/\(m.from)")
                    model[i.slot] = m.transmits + 1 >= limit ? nil : (m.transmits + 1, m.from)
                }
                let taken = Set(items.map(\.slot))
                let most = items.map(\.transmits).max() ?? 0
                let least = before.filter { !taken.contains($0.key) }.map(\.value.transmits).min() ?? Int.max
                #expect(items.isEmpty || least >= most, "step \(step): sent an item at \(most) before one at \(least)")
            }
            #expect(q.count == model.count, "step \(step): \(q.count) queued, expected \(model.count)")
            if let wrong = q.inconsistency() { Issue.record("step \(step): \(wrong)"); return }
            if q.count != model.count { return }
        }
    }

    @Test func nodeNumbersFindWhatWasInserted() {
        var numbers = NodeNumbers()
        let ids = (0..<5_000).map { NodeID(digest: Digest.of(Array("m\($0)".utf8))) }
        for (i, id) in ids.enumerated() {
            #expect(numbers.find(id) == nil)
            numbers.insert(id, UInt32(i))
        }
        for (i, id) in ids.enumerated() where numbers.find(id) != UInt32(i) {
            Issue.record("\(id.short) maps to \(String(describing: numbers.find(id))), expected \(i)")
            return
        }
        #expect(numbers.find(NodeID(digest: Digest.of(Array("absent".utf8)))) == nil)
    }

    @Test func memberTableKeepsEveryIncarnationWhole() {
        // Records hold 32-bit incarnations; larger ones (up to the varint limit) live in a side
        // table. Every value reads back exactly, through updates, removal and slot reuse.
        var table = MemberTable()
        var rng = SeededRandom(seed: 23)
        let edges: [UInt64] = [0, 1, UInt64(UInt32.max) - 1, UInt64(UInt32.max), UInt64(UInt32.max) + 1, (1 << 62) - 1]
        var model: [UInt32: (slot: Int32, inc: UInt64)] = [:]
        for step in 0..<20_000 {
            let node = UInt32(rng.next() % 300)
            let inc = rng.next() % 3 == 0 ? edges[Int(rng.next() % UInt64(edges.count))] : rng.next() >> (2 + rng.next() % 62)
            if let m = model[node] {
                if rng.next() % 4 == 0 {
                    table.remove(m.slot, node: node); model[node] = nil
                } else {
                    table.set(m.slot, incarnation: inc); model[node] = (m.slot, inc)
                }
            } else {
                let s = table.insert(node: node, endpoint: UInt32(step), incarnation: inc, status: .alive, since: 7)
                model[node] = (s, inc)
            }
            if step % 101 == 0 {
                for (node, m) in model where table.slot(ofNode: node) != m.slot || table.incarnation(m.slot) != m.inc {
                    Issue.record("step \(step): node \(node) reads \(table.incarnation(m.slot)), expected \(m.inc)")
                    return
                }
            }
        }
        #expect(table.count == model.count)
    }

    /// The broadcast queue takes exactly what its documented order says — least transmitted first,
    /// newest first among equals, `first` ahead of all; items that do not fit counted as misses (at
    /// most 4), items at the limit dropped, the most transmitted (newest among them) evicted at
    /// capacity — checked against a plain model, with transmit limits past 64 buckets (the queue
    /// skips empty buckets below 64 through a bitmask and looks at every bucket above).
    @Test func broadcastQueueTakesInTheDocumentedOrder() {
        struct Item { var transmits: Int; var seq: Int; var from: UInt32 }
        var rng = SeededRandom(seed: 23)
        let capacity = 48
        var queue = BroadcastQueue(capacity: capacity)
        var model: [Int32: Item] = [:]
        var seq = 0
        func size(_ slot: Int32, _ from: UInt32) -> Int { 40 + Int(slot & 31) + (from == 0 ? 0 : 32) }
        for step in 0..<40_000 {
            if rng.next() % 3 != 0 {
                let slot = Int32(rng.next() % 90) - 1
                let from = rng.next() % 4 == 0 ? UInt32(rng.next() % 100) + 1 : 0
                if model[slot] == nil, model.count >= capacity {
                    let victim = model.max { ($0.value.transmits, $0.value.seq) < ($1.value.transmits, $1.value.seq) }!.key
                    model[victim] = nil
                }
                seq += 1
                model[slot] = Item(transmits: 0, seq: seq, from: from)
                queue.enqueue(slot, from: from)
            } else {
                let limit = [3, 12, 70][Int(rng.next() % 3)]
                let budget = 60 + Int(rng.next() % 1_400)
                let maxCount = 1 + Int(rng.next() % 20)
                let first: Int32? = rng.next() % 4 == 0 ? Int32(rng.next() % 90) - 1 : nil
                let got = queue.take(byteBudget: budget, maxCount: maxCount, limit: limit, first: first, size: size)
                // The model.
                var chosen: [(slot: Int32, from: UInt32, transmits: Int)] = []
                var used = 0
                if let f = first, let item = model[f], size(f, item.from) <= budget {
                    chosen.append((f, item.from, item.transmits)); used = size(f, item.from)
                }
                var misses = 0
                let order = model.filter { $0.key != chosen.first?.slot }
                    .sorted { ($0.value.transmits, -$0.value.seq) < ($1.value.transmits, -$1.value.seq) }
                for (slot, item) in order {
                    guard chosen.count < maxCount, budget - used >= 40, misses < 4 else { break }
                    if item.transmits >= limit { model[slot] = nil; continue }
                    let n = size(slot, item.from)
                    if used + n > budget { misses += 1; continue }
                    used += n
                    chosen.append((slot, item.from, item.transmits))
                }
                for c in chosen {
                    if c.transmits + 1 >= limit { model[c.slot] = nil } else { seq += 1; model[c.slot] = Item(transmits: c.transmits + 1, seq: seq, from: c.from) }
                }
                guard got.items.map({ [Int($0.slot), Int($0.from), $0.transmits] }) == chosen.map({ [Int($0.slot), Int($0.from), $0.transmits] }),
                      got.bytes == used else {
                    Issue.record("step \(step): took \(got.items) (\(got.bytes) bytes), the model \(chosen) (\(used) bytes)")
                    return
                }
            }
            #expect(queue.count == model.count)
        }
    }
}
