/// Backward-shift deletion in a linear-probing table (`SlotMap`, Membership's `NodeIDSet`): with a
/// hole at `hole`, the cell at `at` (later in the same probe run) may move into it unless its home
/// slot lies cyclically in (hole, at]. Moving cells this way means lookups never need tombstones.
@inlinable @inline(__always)
public func staysInPlace(home h: Int, hole i: Int, at j: Int) -> Bool {
    i <= j ? (h > i && h <= j) : (h > i || h <= j)
}

/// `Int32` key → value: open addressing with linear probing and backward-shift deletion, hashed by
/// one multiply. `Dictionary<Int32, _>` hashes every lookup with SipHash; the membership core's
/// broadcast queue looks items up several times per update it sends (~9% of a 10,000-node
/// simulation), and the simulator looks a link up on both ends of every message. Keys must be the
/// owner's own numbers (slots, node indices), never peer input: the hash has no key. The table's
/// layout never shows: `sortedKeys` is the only iteration.
///
/// Inlinable, so each user gets it specialised for its value type (an unspecialised generic would
/// cost more than the SipHash it replaces).
@frozen public struct SlotMap<Value: Sendable>: Sendable {
    @usableFromInline struct Cell: Sendable {
        @usableFromInline var key: Int32   // `SlotMap.empty` marks a free cell (its value is the placeholder)
        @usableFromInline var value: Value
        @inlinable init(key: Int32, value: Value) { self.key = key; self.value = value }
    }
    @usableFromInline var cells: [Cell] = []
    @usableFromInline var mask = -1
    @usableFromInline var stored = 0
    @inlinable public var count: Int { stored }
    @usableFromInline let placeholder: Value
    @inlinable static var empty: Int32 { Int32.min }

    /// - Parameter placeholder: what free cells hold (values are stored unwrapped, so an 8-byte
    ///   value makes a 16-byte cell, not 20).
    @inlinable public init(placeholder: Value) { self.placeholder = placeholder }

    @inlinable public var isEmpty: Bool { count == 0 }

    @inlinable @inline(__always) func home(_ key: Int32) -> Int {
        Int(truncatingIfNeeded: (UInt64(UInt32(bitPattern: key)) &* 0x9e37_79b9_7f4a_7c15) >> 32) & mask
    }

    @inlinable @inline(__always) func find(_ key: Int32) -> Int? {
        guard count > 0 else { return nil }
        var i = home(key)
        while true {
            let k = cells[i].key
            if k == key { return i }
            if k == Self.empty { return nil }
            i = (i + 1) & mask
        }
    }

    @inlinable public subscript(key: Int32) -> Value? {
        get { find(key).map { cells[$0].value } }
        set {
            if let v = newValue { updateValue(v, forKey: key) } else { removeValue(forKey: key) }
        }
    }

    /// Reads the cell of `key`; returns a number from it (used only to keep the read, so a caller
    /// can touch the cells it will need next and overlap their cache misses).
    @inlinable @inline(__always) public func token(_ key: Int32) -> UInt32 {
        find(key).map { UInt32(truncatingIfNeeded: $0) } ?? 0
    }

    /// Updates an item in place (nothing happens if it is absent).
    @inlinable @inline(__always) public mutating func modify(_ key: Int32, _ body: (inout Value) -> Void) {
        guard let i = find(key) else { return }
        body(&cells[i].value)
    }

    /// Sets `key`'s value; returns the one it replaced (nil if `key` was absent).
    @inlinable @discardableResult
    public mutating func updateValue(_ value: Value, forKey key: Int32) -> Value? {
        precondition(key != Self.empty, "SlotMap key Int32.min is reserved")
        if let i = find(key) {
            let old = cells[i].value
            cells[i].value = value
            return old
        }
        if (count + 1) * 4 > cells.count * 3 { grow() }
        var i = home(key)
        while cells[i].key != Self.empty { i = (i + 1) & mask }
        cells[i] = Cell(key: key, value: value)
        stored += 1
        return nil
    }

    @inlinable mutating func grow() {
        let old = cells
        let size = Swift.max(16, cells.count * 2)
        cells = Array(repeating: Cell(key: Self.empty, value: placeholder), count: size)
        mask = size - 1
        stored = 0
        for c in old where c.key != Self.empty { updateValue(c.value, forKey: c.key) }
    }

    /// Removes `key`; returns its value if it was present.
    @inlinable @discardableResult
    public mutating func removeValue(forKey key: Int32) -> Value? {
        guard var i = find(key) else { return nil }
        let old = cells[i].value
        stored -= 1
        var j = i
        while true {
            j = (j + 1) & mask
            let k = cells[j].key
            if k == Self.empty { break }
            if !staysInPlace(home: home(k), hole: i, at: j) {
                cells[i] = cells[j]
                i = j
            }
        }
        cells[i] = Cell(key: Self.empty, value: placeholder)
        return old
    }

    /// The keys whose entries pass `include`, in ascending order.
    @inlinable public func sortedKeys(where include: (Int32, Value) -> Bool = { _, _ in true }) -> [Int32] {
        guard count > 0 else { return [] }
        var out: [Int32] = []
        for c in cells where c.key != Self.empty && include(c.key, c.value) { out.append(c.key) }
        out.sort()
        return out
    }
}
