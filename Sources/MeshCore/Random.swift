/// A small, fast, seedable generator (xoshiro256**, seeded through SplitMix64).
///
/// Cores take their randomness as an input so the simulator can reproduce a whole run from one
/// seed. Not for keys or nonces: those come from OpenSSL's `RAND_bytes` (see `NodeIdentity`).
public struct SeededRandom: RandomNumberGenerator, Sendable, Hashable {
    private var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    public init(seed: UInt64) {
        var sm = seed
        func splitmix(_ x: inout UInt64) -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitmix(&sm); s1 = splitmix(&sm); s2 = splitmix(&sm); s3 = splitmix(&sm)
    }

    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) <<< 7) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = s3 <<< 45
        return result
    }

    /// An independent generator derived from this one (for giving each simulated node its own stream).
    public mutating func fork() -> SeededRandom { SeededRandom(seed: next()) }
}

infix operator <<< : BitwiseShiftPrecedence
@inline(__always) private func <<< (x: UInt64, k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
