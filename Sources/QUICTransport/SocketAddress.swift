#if canImport(Glibc)
import Glibc
#endif
import MeshCore

/// A UDP socket address (IPv4 or IPv6), stored as a `sockaddr_storage` so it can be handed to the
/// kernel and to ngtcp2 without conversion.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    var storage: sockaddr_storage
    var length: socklen_t

    init(storage: sockaddr_storage, length: socklen_t) {
        self.storage = storage
        self.length = length
    }

    /// Parses a numeric IPv4 or IPv6 literal.
    public init?(ip: String, port: UInt16) {
        var st = sockaddr_storage()
        if ip.contains(":") {
            var a6 = sockaddr_in6()
            a6.sin6_family = sa_family_t(AF_INET6)
            a6.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, ip, &a6.sin6_addr) == 1 else { return nil }
            withUnsafeBytes(of: a6) { src in withUnsafeMutableBytes(of: &st) { $0.copyMemory(from: src) } }
            self.init(storage: st, length: socklen_t(MemoryLayout<sockaddr_in6>.size))
        } else {
            var a4 = sockaddr_in()
            a4.sin_family = sa_family_t(AF_INET)
            a4.sin_port = port.bigEndian
            guard inet_pton(AF_INET, ip, &a4.sin_addr) == 1 else { return nil }
            withUnsafeBytes(of: a4) { src in withUnsafeMutableBytes(of: &st) { $0.copyMemory(from: src) } }
            self.init(storage: st, length: socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }

    /// Resolves `address.host` (an IP literal or a DNS name) to its first UDP address.
    public static func resolve(_ address: PeerAddress) throws(QUICError) -> SocketAddress {
        if let a = SocketAddress(ip: address.host, port: address.port) { return a }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(address.host, String(address.port), &hints, &result)
        guard rc == 0, let first = result else {
            throw .invalidArgument("cannot resolve host \"\(address.host)\": \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(result) }
        // Prefer IPv4 on loopback-style names: our listeners default to 0.0.0.0.
        var pick = first
        var it: UnsafeMutablePointer<addrinfo>? = first
        while let cur = it {
            if cur.pointee.ai_family == AF_INET { pick = cur; break }
            it = cur.pointee.ai_next
        }
        var st = sockaddr_storage()
        withUnsafeMutableBytes(of: &st) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: pick.pointee.ai_addr, count: Int(pick.pointee.ai_addrlen)))
        }
        return SocketAddress(storage: st, length: pick.pointee.ai_addrlen)
    }

    public var family: Int32 { Int32(storage.ss_family) }
    public var isIPv6: Bool { family == AF_INET6 }

    public var port: UInt16 {
        withUnsafeBytes(of: storage) { raw in
            isIPv6 ? UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
                   : UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
        }
    }

    public var host: String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        withUnsafeBytes(of: storage) { raw in
            if isIPv6 {
                var a = raw.load(as: sockaddr_in6.self).sin6_addr
                _ = inet_ntop(AF_INET6, &a, &buf, socklen_t(buf.count))
            } else {
                var a = raw.load(as: sockaddr_in.self).sin_addr
                _ = inet_ntop(AF_INET, &a, &buf, socklen_t(buf.count))
            }
        }
        return String(cString: buf)
    }

    public var peerAddress: PeerAddress { PeerAddress(host: host, port: port) }

    public var description: String { peerAddress.description }

    public static func == (a: SocketAddress, b: SocketAddress) -> Bool {
        a.length == b.length && withUnsafeBytes(of: a.storage) { x in
            withUnsafeBytes(of: b.storage) { y in memcmp(x.baseAddress!, y.baseAddress!, Int(a.length)) == 0 }
        }
    }

    public func hash(into h: inout Hasher) {
        withUnsafeBytes(of: storage) { h.combine(bytes: UnsafeRawBufferPointer(rebasing: $0[0..<Int(length)])) }
    }
}

func errnoName(_ e: Int32) -> String { "\(String(cString: strerror(e))) (errno \(e))" }
