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
        }
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

    /// Receives one datagram into `buffer`; nil when nothing is waiting.
    func receive(into buffer: UnsafeMutableRawBufferPointer) -> (Int, SocketAddress)? {
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = withUnsafeMutablePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                recvfrom(fd, buffer.baseAddress, buffer.count, 0, $0, &len)
            }
        }
        guard n >= 0 else { return nil }
        return (n, SocketAddress(storage: st, length: len))
    }

    /// Sends `data` to `to` as datagrams of `segmentSize` bytes (the last may be shorter). Returns
    /// false if the socket buffer is full (the caller drops: QUIC recovers).
    @discardableResult
    func send(_ data: UnsafeRawBufferPointer, segmentSize: Int, to: SocketAddress) -> Bool {
        var dest = to
        if data.count > segmentSize && gsoWorks {
            let ok = sendGSO(data, segmentSize: segmentSize, to: &dest)
            if ok != nil { return ok! }
            gsoWorks = false // the kernel refused GSO: fall back to one call per packet
        }
        var off = 0
        var allOK = true
        while off < data.count {
            let n = min(segmentSize, data.count - off)
            let rc = withUnsafePointer(to: &dest.storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, data.baseAddress! + off, n, 0, $0, dest.length)
                }
            }
            if rc < 0 { allOK = false }
            off += n
        }
        return allOK
    }

    /// nil: GSO unsupported here.
    private func sendGSO(_ data: UnsafeRawBufferPointer, segmentSize: Int, to dest: inout SocketAddress) -> Bool? {
        let cmsgSpace = MemoryLayout<cmsghdr>.size + 8
        var control = [UInt8](repeating: 0, count: cmsgSpace)
        var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: data.baseAddress), iov_len: data.count)
        let len = dest.length
        let rc: Int = control.withUnsafeMutableBytes { ctl in
            let h = ctl.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
            h.pointee.cmsg_len = MemoryLayout<cmsghdr>.size + 2
            h.pointee.cmsg_level = UDPSocket.solUDP
            h.pointee.cmsg_type = UDPSocket.udpSegment
            (ctl.baseAddress! + MemoryLayout<cmsghdr>.size).storeBytes(of: UInt16(segmentSize), as: UInt16.self)
            return withUnsafeMutablePointer(to: &dest.storage) { sp in
                withUnsafeMutablePointer(to: &iov) { iovp in
                    var msg = msghdr()
                    msg.msg_name = UnsafeMutableRawPointer(sp)
                    msg.msg_namelen = len
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = ctl.baseAddress
                    msg.msg_controllen = ctl.count
                    return sendmsg(fd, &msg, 0)
                }
            }
        }
        if rc >= 0 { return true }
        switch errno {
        case EAGAIN, ENOBUFS: return false
        case EIO, EINVAL, ENOPROTOOPT, EOPNOTSUPP: return nil
        default: return false
        }
    }
}
