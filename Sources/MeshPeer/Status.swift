import MeshCore

/// What `gquic-peer status` shows and `/v1/status` returns (JSON, snake_case keys).
public struct StatusReport: Codable, Sendable {
    public struct Node: Codable, Sendable {
        public var id: String
        public var short_id: String
        public var listen: String
        public var cluster: String
        public var pid: Int32
        public var uptime_seconds: Double
        public var version: String
    }
    public struct Member: Codable, Sendable {
        public var id: String
        public var short_id: String
        public var address: String
        public var state: String          // alive, suspect, dead, left
        public var rtt_ms: Double?
        public var incarnation: UInt64
    }
    public struct Link: Codable, Sendable {
        public var peer: String
        public var address: String
        public var rtt_ms: Double?
        public var sent_bytes: [String: UInt64]      // by traffic class
        public var received_bytes: [String: UInt64]
    }
    public struct Transfer: Codable, Sendable {
        public var digest: String
        public var bytes_done: UInt64
        public var bytes_total: UInt64
        public var rate_bytes_per_second: Double
        public var sources: Int
    }
    public struct Store: Codable, Sendable {
        public var blobs: Int
        public var chunks: Int
        public var bytes_on_disk: UInt64
        public var capacity_bytes: UInt64
    }

    public var node: Node
    public var members: [Member]
    public var links: [Link]
    public var transfers: [Transfer]
    public var store: Store

    /// A human-readable rendering: aligned tables, no colours.
    public func rendered() -> String {
        var out = "node     \(node.id)\n"
        out += "listen   \(node.listen)   cluster \(node.cluster)   pid \(node.pid)   up \(Self.duration(node.uptime_seconds))\n"
        out += "store    \(store.blobs) blobs, \(store.chunks) chunks, \(Self.bytes(store.bytes_on_disk)) on disk"
        out += store.capacity_bytes > 0 ? " of \(Self.bytes(store.capacity_bytes))\n" : " (no limit)\n"
        out += "\nMEMBERS (\(members.count))\n"
        out += Self.table(["ID", "ADDRESS", "STATE", "RTT", "INC"], members.map {
            [$0.short_id, $0.address, $0.state, $0.rtt_ms.map { String(format: "%.2f ms", $0) } ?? "-", "\($0.incarnation)"]
        })
        out += "\nLINKS (\(links.count))\n"
        out += Self.table(["PEER", "ADDRESS", "RTT", "SENT ctl/int/tel/bulk", "RECEIVED ctl/int/tel/bulk"], links.map { l in
            let order = TrafficClass.allCases.map(\.description)
            return [l.peer, l.address, l.rtt_ms.map { String(format: "%.2f ms", $0) } ?? "-",
                    order.map { Self.bytes(l.sent_bytes[$0] ?? 0) }.joined(separator: "/"),
                    order.map { Self.bytes(l.received_bytes[$0] ?? 0) }.joined(separator: "/")]
        })
        out += "\nTRANSFERS (\(transfers.count))\n"
        out += Self.table(["DIGEST", "DONE", "RATE", "SOURCES"], transfers.map {
            [String($0.digest.prefix(19)), "\(Self.bytes($0.bytes_done))/\(Self.bytes($0.bytes_total))",
             Self.bytes(UInt64($0.rate_bytes_per_second)) + "/s", "\($0.sources)"]
        })
        return out
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        if rows.isEmpty { return "  (none)\n" }
        let all = [header] + rows
        let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
        return all.map { row in
            "  " + row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }

    public static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n), u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
    }

    static func duration(_ s: Double) -> String {
        let t = Int(s)
        if t < 60 { return "\(t)s" }
        if t < 3600 { return "\(t / 60)m\(t % 60)s" }
        return "\(t / 3600)h\(t / 60 % 60)m"
    }
}

import Foundation
