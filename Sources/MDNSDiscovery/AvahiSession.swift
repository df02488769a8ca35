import CAvahiClient
import MeshCore

/// Owns avahi's threaded poll, the client connection, the entry group (publishing) and the
/// service browser with its resolvers. Every C pointer lives here and in `AvahiBrowser.swift`;
/// callbacks run on avahi's poll thread and reach this object through the user-data pointer.
final class AvahiSession: @unchecked Sendable {
    private let poll: OpaquePointer
    private var client: OpaquePointer?
    private var group: OpaquePointer?
    var browser: OpaquePointer?
    let announcement: MDNSAnnouncement?
    let browse: Bool
    let emit: @Sendable (MDNSEvent) -> Void
    /// Service name → node ID, for `lost` events (touched only on the poll thread).
    var resolved: [String: NodeID] = [:]
    private var serviceName: String?
    private var stopped = false

    init(announcement: MDNSAnnouncement?, browse: Bool, emit: @escaping @Sendable (MDNSEvent) -> Void) throws(MDNSError) {
        self.announcement = announcement
        self.browse = browse
        self.emit = emit
        guard let p = avahi_threaded_poll_new() else {
            throw .avahi("creating the poll thread", code: Int32(AVAHI_ERR_NO_MEMORY), message: "out of memory")
        }
        poll = p
        serviceName = announcement?.serviceName
        var error: Int32 = 0
        let me = Unmanaged.passUnretained(self).toOpaque()
        // The state callback runs for the first time inside avahi_client_new, on this thread.
        client = avahi_client_new(avahi_threaded_poll_get(poll), AvahiClientFlags(0), { client, state, userdata in
            guard let userdata, let client else { return }
            Unmanaged<AvahiSession>.fromOpaque(userdata).takeUnretainedValue().clientStateChanged(client, state)
        }, me, &error)
        guard let c = client else {
            stopped = true // deinit runs after a throwing init: do not free twice
            avahi_threaded_poll_free(poll)
            let message = String(cString: avahi_strerror(error))
            if error == Int32(AVAHI_ERR_NO_DAEMON) || error == Int32(AVAHI_ERR_DISCONNECTED) || error == Int32(AVAHI_ERR_DBUS_ERROR) {
                throw .noDaemon(code: error, message: message)
            }
            throw .avahi("connecting to avahi-daemon", code: error, message: message)
        }
        if browse {
            do { try startBrowsing(c) } catch {
                stopped = true
                avahi_client_free(c)
                avahi_threaded_poll_free(poll)
                throw error
            }
        }
        guard avahi_threaded_poll_start(poll) >= 0 else {
            stopped = true
            avahi_client_free(c)
            avahi_threaded_poll_free(poll)
            throw .avahi("starting the poll thread", code: Int32(AVAHI_ERR_FAILURE), message: "avahi_threaded_poll_start failed")
        }
    }

    /// Stops the poll thread and frees everything; withdrawing our service sends its goodbye.
    func stop() {
        guard !stopped else { return }
        stopped = true
        avahi_threaded_poll_stop(poll)
        if let c = client { avahi_client_free(c) } // frees the group, browser and resolvers too
        client = nil; group = nil; browser = nil
        avahi_threaded_poll_free(poll)
    }

    deinit { stop() }

    func errorText(_ c: OpaquePointer?) -> (Int32, String) {
        let code = c.map { avahi_client_errno($0) } ?? Int32(AVAHI_ERR_FAILURE)
        return (code, String(cString: avahi_strerror(code)))
    }

    private func clientStateChanged(_ c: OpaquePointer, _ state: AvahiClientState) {
        switch state {
        case AVAHI_CLIENT_S_RUNNING:
            if announcement != nil && group == nil { publish(c) }
        case AVAHI_CLIENT_S_COLLISION, AVAHI_CLIENT_S_REGISTERING:
            // The host name changed or is being re-registered: our records are withdrawn and
            // published again once the server runs.
            if let g = group { avahi_entry_group_reset(g) }
        case AVAHI_CLIENT_FAILURE:
            let (code, text) = errorText(c)
            emit(.failed(.noDaemon(code: code, message: text)))
        default:
            break
        }
    }

    private func publish(_ c: OpaquePointer) {
        guard let a = announcement else { return }
        let me = Unmanaged.passUnretained(self).toOpaque()
        if group == nil {
            group = avahi_entry_group_new(c, { g, state, userdata in
                guard let userdata else { return }
                Unmanaged<AvahiSession>.fromOpaque(userdata).takeUnretainedValue().groupStateChanged(g, state)
            }, me)
        }
        guard let g = group else {
            let (code, text) = errorText(c)
            emit(.failed(.avahi("creating the entry group", code: code, message: text)))
            return
        }
        var txt: UnsafeMutablePointer<AvahiStringList>? = nil
        for record in a.txtRecords.reversed() { txt = avahi_string_list_add(txt, record) }
        defer { avahi_string_list_free(txt) }
        let name = serviceName ?? a.serviceName
        let rc = avahi_entry_group_add_service_strlst(g, AvahiIfIndex(Int32(AVAHI_IF_UNSPEC)), AvahiProtocol(Int32(AVAHI_PROTO_INET)),
                                                      AvahiPublishFlags(0), name, MDNSDiscovery.serviceType, nil, nil, a.port, txt)
        if rc == Int32(AVAHI_ERR_COLLISION) {
            renameAfterCollision(c)
            return
        }
        guard rc >= 0, avahi_entry_group_commit(g) >= 0 else {
            let (code, text) = errorText(c)
            emit(.failed(.avahi("publishing \(name)", code: code, message: text)))
            return
        }
    }

    private func renameAfterCollision(_ c: OpaquePointer) {
        let current = serviceName ?? announcement?.serviceName ?? "gquic"
        if let alt = avahi_alternative_service_name(current) {
            serviceName = String(cString: alt)
            avahi_free(alt)
        }
        if let g = group { avahi_entry_group_reset(g) }
        publish(c)
    }

    private func groupStateChanged(_ g: OpaquePointer?, _ state: AvahiEntryGroupState) {
        switch state {
        case AVAHI_ENTRY_GROUP_ESTABLISHED:
            emit(.published(serviceName: serviceName ?? ""))
        case AVAHI_ENTRY_GROUP_COLLISION:
            if let c = client ?? g.flatMap({ avahi_entry_group_get_client($0) }) { renameAfterCollision(c) }
        case AVAHI_ENTRY_GROUP_FAILURE:
            let (code, text) = errorText(g.flatMap { avahi_entry_group_get_client($0) })
            emit(.failed(.avahi("publishing", code: code, message: text)))
        default:
            break
        }
    }
}
