import Testing
import MeshCore

/// `SlotMap` (the broadcast queue's items, the simulated world's links) answers what a dictionary
/// would, through growth and deletions that shift entries back across the table's wrap-around.
/// (MembershipTests' `HashTableTests` drive it as the queue does: modify, negative keys.)
@Suite struct SlotMapTests {
    @Test func agreesWithADictionaryUnderRandomUpdatesAndRemovals() {
        var rng = SeededRandom(seed: 7)
        for round in 0..<20 {
            var map = SlotMap<UInt64>(placeholder: 0)
            var reference: [Int32: UInt64] = [:]
            // Few distinct keys in rounds 0..<10 (dense clusters of collisions), many after.
            let keySpace = UInt64(round < 10 ? 40 : 5_000)
            for step in 0..<4_000 {
                let key = Int32(rng.next() % keySpace)
                switch rng.next() % 4 {
                case 0, 1:
                    let t = UInt64(step)
                    #expect(map.updateValue(t, forKey: key) == reference.updateValue(t, forKey: key))
                case 2:
                    #expect(map.removeValue(forKey: key) == reference.removeValue(forKey: key))
                default:
                    #expect(map[key] == reference[key])
                }
                #expect(map.count == reference.count)
            }
            #expect(map.sortedKeys() == reference.keys.sorted())
            let cut = UInt64(2_000)
            #expect(map.sortedKeys { $1 < cut } == reference.filter { $0.value < cut }.keys.sorted())
            for key in reference.keys.sorted() { #expect(map[key] == reference[key]) }
            for key in reference.keys.sorted() { map[key] = nil }
            #expect(map.isEmpty && map.sortedKeys().isEmpty)
        }
    }
}
