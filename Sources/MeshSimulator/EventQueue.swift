/// A 4-ary min-heap of timed events: earliest time first, and among equal times the one scheduled first
/// (a sequence number breaks ties), so a run never depends on heap layout.
///
/// Four children a node halve the depth of a binary heap; pops dominate, and they touch adjacent
/// children. Entries are small (time, sequence, payload); the world keeps large payloads such as in-flight
/// messages in a side table and puts only an index here, so sifting moves few bytes.
public struct EventQueue<Payload> {
    public struct Entry {
        public var time: UInt64
        public var seq: UInt64
        public var payload: Payload
    }

    private var heap: [Entry] = []
    /// The sequence number the next `push` will get.
    public private(set) var nextSeq: UInt64 = 1

    public init() {}

    public var count: Int { heap.count }
    public var isEmpty: Bool { heap.isEmpty }
    /// The time of the earliest entry.
    public var peekTime: UInt64? { heap.first?.time }

    @inline(__always)
    private static func before(_ a: Entry, _ b: Entry) -> Bool {
        a.time < b.time || (a.time == b.time && a.seq < b.seq)
    }

    /// Adds an event; returns its sequence number (unique, increasing).
    @discardableResult
    public mutating func push(at time: UInt64, _ payload: Payload) -> UInt64 {
        let seq = nextSeq
        nextSeq &+= 1
        let entry = Entry(time: time, seq: seq, payload: payload)
        heap.append(entry)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) >> 2
            if !EventQueue.before(entry, heap[parent]) { break }
            heap[i] = heap[parent]
            i = parent
        }
        heap[i] = entry
        return seq
    }

    /// Removes and returns the earliest event.
    public mutating func pop() -> Entry? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        let n = heap.count
        var i = 0
        while true {
            let first = 4 * i + 1
            if first >= n { break }
            // The earliest of up to four children (adjacent in memory: one or two cache lines).
            var c = first
            var k = first + 1
            let end = min(first + 4, n)
            while k < end {
                if EventQueue.before(heap[k], heap[c]) { c = k }
                k += 1
            }
            if !EventQueue.before(heap[c], last) { break }
            heap[i] = heap[c]
            i = c
        }
        heap[i] = last
        return top
    }
}
