import CAvahiClient
import MeshCore

/// Browsing for `_gquic._udp` and resolving what is found (avahi service browser and resolvers).
extension AvahiSession {
    func startBrowsing(_ c: OpaquePointer) throws(MDNSError) {
        let me = Unmanaged.passUnretained(self).toOpaque()
        browser = avahi_service_browser_new(c, AvahiIfIndex(Int32(AVAHI_IF_UNSPEC)), AvahiProtocol(Int32(AVAHI_PROTO_INET)),
                                            MDNSDiscovery.serviceType, nil, AvahiLookupFlags(0), { b, iface, proto, event, name, type, domain, _, userdata in
            guard let userdata else { return }
            Unmanaged<AvahiSession>.fromOpaque(userdata).takeUnretainedValue().browserEvent(b, iface, proto, event, name, type, domain)
        }, me)
        if browser == nil {
            let (code, text) = errorText(c)
            throw .avahi("browsing for \(MDNSDiscovery.serviceType)", code: code, message: text)
        }
    }

    private func browserEvent(_ b: OpaquePointer?, _ iface: AvahiIfIndex, _ proto: AvahiProtocol, _ event: AvahiBrowserEvent,
                              _ name: UnsafePointer<CChar>?, _ type: UnsafePointer<CChar>?, _ domain: UnsafePointer<CChar>?) {
        switch event {
        case AVAHI_BROWSER_NEW:
            guard let b, let c = avahi_service_browser_get_client(b), let name, let type, let domain else { return }
            let me = Unmanaged.passUnretained(self).toOpaque()
            // The resolver frees itself in its callback.
            _ = avahi_service_resolver_new(c, iface, proto, name, type, domain, AvahiProtocol(Int32(AVAHI_PROTO_INET)), AvahiLookupFlags(0),
                                           { r, _, _, event, name, _, _, _, address, port, txt, _, userdata in
                guard let userdata else { if let r { avahi_service_resolver_free(r) }; return }
                Unmanaged<AvahiSession>.fromOpaque(userdata).takeUnretainedValue().resolved(r, event, name, address, port, txt)
            }, me)
        case AVAHI_BROWSER_REMOVE:
            guard let name else { return }
            let service = String(cString: name)
            emit(.lost(serviceName: service, nodeID: resolved.removeValue(forKey: service)))
        case AVAHI_BROWSER_FAILURE:
            let (code, text) = errorText(b.flatMap { avahi_service_browser_get_client($0) })
            emit(.failed(.avahi("browsing", code: code, message: text)))
        default:
            break // CACHE_EXHAUSTED, ALL_FOR_NOW
        }
    }

    private func resolved(_ r: OpaquePointer?, _ event: AvahiResolverEvent, _ name: UnsafePointer<CChar>?,
                          _ address: UnsafePointer<AvahiAddress>?, _ port: UInt16, _ txt: UnsafeMutablePointer<AvahiStringList>?) {
        defer { if let r { avahi_service_resolver_free(r) } }
        guard event == AVAHI_RESOLVER_FOUND, let name, let address else { return }
        let service = String(cString: name)
        var buffer = [CChar](repeating: 0, count: Int(AVAHI_ADDRESS_STR_MAX))
        avahi_address_snprint(&buffer, buffer.count, address)
        let host = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var records: [String] = []
        var item = txt
        while let it = item, records.count < 64 {
            let size = avahi_string_list_get_size(it)
            if let text = avahi_string_list_get_text(it), size <= 255 {
                let bytes = UnsafeBufferPointer(start: text, count: size)
                if let s = String(validating: bytes, as: UTF8.self) { records.append(s) }
            }
            item = avahi_string_list_get_next(it)
        }
        switch DiscoveredPeer.parse(txt: records, host: host, servicePort: port, serviceName: service) {
        case .success(let peer):
            resolved[service] = peer.nodeID
            emit(.found(peer))
        case .failure:
            break // not a GQUIC announcement we can use; nothing to do
        }
    }
}
