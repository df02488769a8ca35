#if canImport(Glibc)
import Glibc
#endif
import MeshCore

/// A non-blocking POSIX UDP socket. Sends use UDP GSO (`UDP_SEGMENT`) when the kernel takes it: one
/// `sendmsg` carries up to 64 equal-sized QUIC packets, which the kernel splits.
final class UDPSocket {
    let fd: Int32
    let localAddress: SocketAddress
    private(set) var gsoWorks = true

    private static let solUDP: Int32 = 17      // SOL_UDP
    private static let udpSegment: Int32 = 103 // UDP_SEGMENT (linux/udp.h)
    private static let udpGRO: Int32 = 104     // UDP_GRO (linux/udp.h)

    init(bind address: SocketAddress) throws(QUICError) {
        let fd = socket(address.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .socket("creating a UDP socket", errno) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var size: Int32 = 16 << 20
        // As root, FORCE lifts the rmem_max cap; otherwise the plain option takes what the kernel allows.
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, 4) != 0 { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, 4) }
        if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, 4) != 0 { setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, 4) }
        if address.isIPv6 {
            var zero: Int32 = 0
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &zero, 4)
            setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_RECVTCLASS, &one, 4)
        }
        // Report each datagram's TOS byte (its ECN codepoint goes to ngtcp2).
        setsockopt(fd, Int32(IPPROTO_IP), IP_RECVTOS, &one, 4)
        // UDP GRO: the kernel may hand over several equal-sized datagrams from one sender in one read
        // (a UDP_GRO control message gives their size); `receive` reports it and callers split.
        setsockopt(fd, UDPSocket.solUDP, UDPSocket.udpGRO, &one, 4)
        var a = address
        let rc = withUnsafePointer(to: &a.storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, a.length) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw .socket("binding UDP \(address) (is another process using that port?)", e)
        }
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        self.fd = fd
        localAddress = SocketAddress(storage: st, length: len)
    }

    deinit { close(fd) }

    /// Receives into `buffer`; nil when nothing is waiting. `tos` is the IP TOS / IPv6 traffic-class
    /// byte it arrived with (DSCP and the ECN codepoint in its low two bits). With GRO the bytes may be
    /// several datagrams of `segmentSize` bytes each (the last may be shorter); 0 means one datagram.
    func receive(into buffer: UnsafeMutableRawBufferPointer) -> (Int, SocketAddress, tos: UInt8, segmentSize: Int)? {
        var st = sockaddr_storage()
        var control = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        var tos: UInt8 = 0, segment = 0
        let n: Int = withUnsafeMutableBytes(of: &control) { ctl in
            withUnsafeMutablePointer(to: &st) { sp in
                withUnsafeMutablePointer(to: &iov) { iovp in
                    var msg = msghdr()
                    msg.msg_name = UnsafeMutableRawPointer(sp)
                    msg.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = ctl.baseAddress
                    msg.msg_controllen = ctl.count
                    let n = recvmsg(fd, &msg, 0)
                    if n >= 0 { (tos, segment) = UDPSocket.readControl(ctl, length: Int(msg.msg_controllen)) }
                    return n
                }
            }
        }
        guard n >= 0 else { return nil }
        let len = socklen_t(st.ss_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
        return (n, SocketAddress(storage: st, length: len), tos, segment)
    }

    private static let headerSize = MemoryLayout<cmsghdr>.size
    private static func align(_ n: Int) -> Int { (n + 7) & ~7 }

    /// The TOS / traffic class and the GRO segment size from received control messages (0 if absent).
    private static func readControl(_ ctl: UnsafeMutableRawBufferPointer, length: Int) -> (UInt8, Int) {
        var tos: UInt8 = 0, segment = 0
        var off = 0
        while off + headerSize <= min(length, ctl.count) {
            let h = ctl.baseAddress!.advanced(by: off).assumingMemoryBound(to: cmsghdr.self).pointee
            guard h.cmsg_len >= headerSize, off + Int(h.cmsg_len) <= ctl.count else { break }
            let data = ctl.baseAddress!.advanced(by: off + headerSize)
            if h.cmsg_level == Int32(IPPROTO_IP) && h.cmsg_type == IP_TOS && h.cmsg_len > headerSize {
                tos = data.load(as: UInt8.self)
            } else if h.cmsg_level == Int32(IPPROTO_IPV6) && h.cmsg_type == IPV6_TCLASS && h.cmsg_len >= headerSize + 4 {
                tos = UInt8(truncatingIfNeeded: data.loadUnaligned(as: Int32.self))
            } else if h.cmsg_level == solUDP && h.cmsg_type == udpGRO && h.cmsg_len >= headerSize + 4 {
                segment = Int(max(0, data.loadUnaligned(as: Int32.self)))
            }
            off += align(Int(h.cmsg_len))
        }
        return (tos, segment)
    }

    /// Sends `data` to `to` as datagrams of `segmentSize` bytes (the last may be shorter), with IP TOS
    /// / traffic class `tos` (DSCP << 2 | ECN). Returns false if the socket buffer is full (the caller
    /// drops: QUIC recovers).
    @discardableResult
    func send(_ data: UnsafeRawBufferPointer, segmentSize: Int, to: SocketAddress, tos: UInt8 = 0) -> Bool {
        var dest = to
        if data.count > segmentSize && gsoWorks {
            if let ok = sendmsg(data, segmentSize: segmentSize, tos: tos, to: &dest) { return ok }
            gsoWorks = false // the kernel refused GSO: fall back to one call per packet
        }
        var off = 0
        var allOK = true
        while off < data.count {
            let n = min(segmentSize, data.count - off)
            if sendmsg(UnsafeRawBufferPointer(rebasing: data[off..<(off + n)]), segmentSize: nil, tos: tos, to: &dest) != true {
                allOK = false
            }
            off += n
        }
        return allOK
    }

    /// One sendmsg with optional UDP_SEGMENT (GSO) and TOS control messages. nil: GSO unsupported here.
    private func sendmsg(_ data: UnsafeRawBufferPointer, segmentSize: Int?, tos: UInt8, to dest: inout SocketAddress) -> Bool? {
        var control = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: data.baseAddress), iov_len: data.count)
        let len = dest.length
        let v6 = dest.isIPv6
        let rc: Int = withUnsafeMutableBytes(of: &control) { ctl in
            var used = 0
            func add(level: Int32, type: Int32, _ body: (UnsafeMutableRawPointer) -> Int) {
                let h = ctl.baseAddress!.advanced(by: used).assumingMemoryBound(to: cmsghdr.self)
                let n = body(ctl.baseAddress!.advanced(by: used + UDPSocket.headerSize))
                h.pointee.cmsg_len = UDPSocket.headerSize + n
                h.pointee.cmsg_level = level
                h.pointee.cmsg_type = type
                used += UDPSocket.align(UDPSocket.headerSize + n)
            }
            if let segmentSize {
                add(level: UDPSocket.solUDP, type: UDPSocket.udpSegment) { $0.storeBytes(of: UInt16(segmentSize), as: UInt16.self); return 2 }
            }
            if tos != 0 {
                add(level: Int32(v6 ? IPPROTO_IPV6 : IPPROTO_IP), type: v6 ? IPV6_TCLASS : IP_TOS) {
                    $0.storeBytes(of: Int32(tos), as: Int32.self); return 4
                }
            }
            return withUnsafeMutablePointer(to: &dest.storage) { sp in
                withUnsafeMutablePointer(to: &iov) { iovp in
                    var msg = msghdr()
                    msg.msg_name = UnsafeMutableRawPointer(sp)
                    msg.msg_namelen = len
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = used > 0 ? ctl.baseAddress : nil
                    msg.msg_controllen = used
                    return Glibc.sendmsg(fd, &msg, 0)
                }
            }
        }
        if rc >= 0 { return true }
        switch errno {
        case EAGAIN, ENOBUFS: return false
        case EIO, EINVAL, ENOPROTOOPT, EOPNOTSUPP: return segmentSize == nil ? false : nil
        default: return false
        }
    }
}
