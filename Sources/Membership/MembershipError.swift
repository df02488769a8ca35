import MeshCore

/// Why the membership core refused a message. Carries the wire error where decoding failed.
public struct MembershipError: Error, Hashable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        case malformed, tooLarge, invalidCoordinate, notAMember, wrongCluster, notAllowed, unsolicited
    }
    private enum Kind: Hashable {
        case malformed(WireError)
        case tooLarge(Int, limit: Int)
        case invalidCoordinate
        case notAMember(NodeID)
        case wrongCluster(String)
        case notAllowed(NodeID)
        case unsolicited(NodeID)
    }
    private let kind: Kind

    public var code: Code {
        switch kind {
        case .malformed: .malformed
        case .tooLarge: .tooLarge
        case .invalidCoordinate: .invalidCoordinate
        case .notAMember: .notAMember
        case .wrongCluster: .wrongCluster
        case .notAllowed: .notAllowed
        case .unsolicited: .unsolicited
        }
    }

    /// The decoding error, when the bytes themselves were bad.
    public var wireError: WireError? { if case .malformed(let e) = kind { e } else { nil } }

    static func malformed(_ e: WireError) -> MembershipError { .init(kind: .malformed(e)) }
    static func tooLarge(_ n: Int, limit: Int) -> MembershipError { .init(kind: .tooLarge(n, limit: limit)) }
    static var invalidCoordinate: MembershipError { .init(kind: .invalidCoordinate) }
    static func notAMember(_ n: NodeID) -> MembershipError { .init(kind: .notAMember(n)) }
    static func wrongCluster(_ c: String) -> MembershipError { .init(kind: .wrongCluster(c)) }
    static func notAllowed(_ n: NodeID) -> MembershipError { .init(kind: .notAllowed(n)) }
    static func unsolicited(_ n: NodeID) -> MembershipError { .init(kind: .unsolicited(n)) }

    public var description: String {
        switch kind {
        case .malformed(let e): "malformed membership message: \(e)"
        case .tooLarge(let n, let limit): "push-pull state of \(n) bytes exceeds the limit of \(limit) (raise limits.maxPushPullBytes if the cluster is that large)"
        case .invalidCoordinate: "network coordinate has non-finite or out-of-range values"
        case .notAMember(let n): "message from \(n.short), which is not a member of this cluster: only a push-pull join request is accepted from non-members"
        case .wrongCluster(let c): "join request names cluster '\(c)'; this node belongs to another cluster (check clusterID on both nodes)"
        case .notAllowed(let n): "\(n.short) is not on this cluster's allow-list (settings.allowedNodes)"
        case .unsolicited(let n): "push-pull response from \(n.short) that this node never asked for"
        }
    }
}
