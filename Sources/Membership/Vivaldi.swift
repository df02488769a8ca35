import MeshCore

/// Vivaldi network coordinates maintained from probe RTTs, following Serf's `coordinate` package
/// (Dabek et al. 2004, with Serf's height vector, adjustment window, gravity and latency filter).
/// Pure arithmetic: RTT samples in, coordinate out.
public struct VivaldiState: Sendable {
    public private(set) var coordinate: Coordinate
    private let settings: MembershipSettings.Vivaldi
    private var adjustmentSamples: [Double]
    private var adjustmentIndex = 0
    private var latencyFilters = RecentMap<NodeID, [Double]>(limit: 64)
    /// Samples applied so far (for reports and tests).
    public private(set) var updates = 0

    public init(settings: MembershipSettings.Vivaldi) {
        self.settings = settings
        coordinate = Coordinate(dimensions: settings.dimensions, error: settings.errorMax, height: settings.heightMin)
        adjustmentSamples = Array(repeating: 0, count: max(1, settings.adjustmentWindow))
    }

    private static let zeroThreshold = 1.0e-6

    /// Feeds one RTT to `node`, whose coordinate it sent with its ack.
    public mutating func observe(rtt: Duration, to node: NodeID, coordinate other: Coordinate, rng: inout SeededRandom) {
        guard other.isValid, other.vector.count == coordinate.vector.count else { return }
        var rttSeconds = rtt.seconds
        guard rttSeconds >= 0, rttSeconds < 10 else { return }
        // Median of the last few samples per peer: one delayed ack does not move the coordinate.
        // Bounded: filters of the peers sampled longest ago are dropped (a 10,000-member node
        // probes thousands of peers; a filter only matters while its peer is sampled again soon).
        var window = latencyFilters[node] ?? []
        window.append(rttSeconds)
        if window.count > settings.latencyFilterSize { window.removeFirst(window.count - settings.latencyFilterSize) }
        latencyFilters[node] = window
        rttSeconds = window.sorted()[window.count / 2]

        rttSeconds = max(rttSeconds, Self.zeroThreshold)
        let dist = coordinate.distance(to: other)
        let wrongness = abs(dist - rttSeconds) / rttSeconds
        let totalError = max(coordinate.error + other.error, Self.zeroThreshold)
        let weight = coordinate.error / totalError
        coordinate.error = min(settings.errorMax,
                               settings.ce * weight * wrongness + coordinate.error * (1 - settings.ce * weight))
        let force = settings.cc * weight * (rttSeconds - dist)
        applyForce(force, from: other, rng: &rng)

        // Adjustment: the mean residual over a window, halved (each side carries half).
        let raw = rawDistance(coordinate, other)
        adjustmentSamples[adjustmentIndex] = rttSeconds - raw
        adjustmentIndex = (adjustmentIndex + 1) % adjustmentSamples.count
        coordinate.adjustment = adjustmentSamples.reduce(0, +) / (2 * Double(adjustmentSamples.count))

        // Gravity towards the origin keeps the whole system from drifting.
        let origin = Coordinate(dimensions: settings.dimensions, error: settings.errorMax, height: settings.heightMin)
        let d = rawDistance(origin, coordinate)
        let gravity = -1 * (d / settings.gravityRho) * (d / settings.gravityRho)
        applyForce(gravity, from: origin, rng: &rng)
        updates += 1
    }

    /// Forgets per-peer filter state (when a member is removed).
    public mutating func forget(_ node: NodeID) { latencyFilters[node] = nil }

    private func rawDistance(_ a: Coordinate, _ b: Coordinate) -> Double {
        var sum = 0.0
        for i in a.vector.indices { let x = a.vector[i] - b.vector[i]; sum += x * x }
        return sum.squareRoot() + a.height + b.height
    }

    private mutating func applyForce(_ force: Double, from other: Coordinate, rng: inout SeededRandom) {
        var diff = zip(coordinate.vector, other.vector).map { $0 - $1 }
        var mag = diff.reduce(0) { $0 + $1 * $1 }.squareRoot()
        if mag <= Self.zeroThreshold {
            // Coincident coordinates: push apart in a random direction.
            diff = diff.map { _ in Double.random(in: -0.5...0.5, using: &rng) }
            let m = diff.reduce(0) { $0 + $1 * $1 }.squareRoot()
            diff = m > Self.zeroThreshold ? diff.map { $0 / m } : diff
            mag = 0
        } else {
            diff = diff.map { $0 / mag }
        }
        for i in coordinate.vector.indices { coordinate.vector[i] += diff[i] * force }
        if mag > Self.zeroThreshold {
            coordinate.height = max(settings.heightMin, (coordinate.height + other.height) * force / mag + coordinate.height)
        }
        if !coordinate.isValid {
            // Never let a pathological sample poison the coordinate: start over.
            coordinate = Coordinate(dimensions: settings.dimensions, error: settings.errorMax, height: settings.heightMin)
        }
    }
}
