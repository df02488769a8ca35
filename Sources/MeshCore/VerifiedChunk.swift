/// Chunk bytes together with their SHA-256 digest, obtainable only by hashing those bytes: holding
/// one is proof that `bytes` hash to `digest`. Whoever verified a chunk on arrival (the swarm) hands
/// it on as a `VerifiedChunk`, and the content store takes it without hashing it a second time; its
/// contract — nothing unverified goes in — holds because there is no other way to make one.
public struct VerifiedChunk: Hashable, Sendable {
    public let digest: Digest
    public let bytes: [UInt8]

    /// Hashes `bytes`; nil when they do not hash to `expected`.
    public init?(_ bytes: [UInt8], expected: Digest) {
        guard Digest.of(bytes) == expected else { return nil }
        self.digest = expected
        self.bytes = bytes
    }

    /// Hashes `bytes` and pairs them with the digest they have.
    public init(hashing bytes: [UInt8]) {
        self.digest = Digest.of(bytes)
        self.bytes = bytes
    }
}
