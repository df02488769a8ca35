import Testing
import MeshCore
import Membership
import MembershipLab

/// Message-level behaviour of one core: authentication, refusal of bad input, timers.
@Suite struct ProtocolTests {
    static func id(_ s: String) -> NodeID { NodeID(digest: Digest.of(Array(s.utf8))) }

    func message(_ m: MembershipMessage, from: NodeID) -> PeerMessage {
        PeerMessage(peer: from, traffic: .control, frame: m.frame, unreliable: true)
    }

    func update(_ node: NodeID, _ status: MemberStatus, inc: UInt64 = 5, from: NodeID? = nil) -> MemberUpdate {
        MemberUpdate(node: node, address: PeerAddress(host: "10.9.9.9", port: 7400),
                     version: MemberVersion(generation: 1, incarnation: inc), status: status, from: from)
    }

    /// A converged 5-member cluster and a copy of member 0's core.
    func formed(seed: UInt64) throws -> (MembershipWorld, MembershipCore) {
        let w = MembershipWorld(count: 5, seed: seed)
        w.startAll(spread: .milliseconds(500))
        w.run(until: { w.converged }, limit: .seconds(20))
        return (w, try #require(w.core(0)))
    }

    @Test func nonMemberCannotInjectMembersOrSuspicions() throws {
        var (w, core) = try formed(seed: 11)
        let outsider = Self.id("outsider")
        let victim = w.hosts[1].id
        let before = core.view

        var ping = MembershipMessage.Ping()
        ping.target = core.me
        ping.updates = [update(Self.id("phantom"), .alive), update(victim, .suspect, inc: 99, from: outsider),
                        update(victim, .dead, inc: 99, from: outsider)]
        // A ping to us is answered (a newcomer's probe must not fail; see
        // aPingFromANodeNotYetKnownIsAnsweredAndNothingElseInItApplied), but nothing in it is applied.
        _ = try core.handle(message(.ping(ping), from: outsider), now: w.now)
        for m in [MembershipMessage.gossip(.init(updates: ping.updates)), .pingReq(.init(target: victim, updates: ping.updates))] {
            #expect(throws: MembershipError.self) { _ = try core.handle(message(m, from: outsider), now: w.now) }
            do { _ = try core.handle(message(m, from: outsider), now: w.now) } catch { #expect(error.code == .notAMember) }
        }
        // A push-pull *response* nobody asked for is refused too.
        var pp = MembershipMessage.PushPull()
        pp.clusterID = "gquic"
        pp.isResponse = true
        pp.members = ping.updates
        do { _ = try core.handle(message(.pushPull(pp), from: outsider), now: w.now); Issue.record("accepted") } catch {
            #expect(error.code == .unsolicited)
        }
        // A join request that does not carry the joiner's own alive record is refused.
        pp.isResponse = false
        do { _ = try core.handle(message(.pushPull(pp), from: outsider), now: w.now); Issue.record("accepted") } catch {
            #expect(error.code == .notAMember)
        }
        // So is an announce without it, and an announce (with it) is merged but not answered.
        pp.kind = .announce
        do { _ = try core.handle(message(.pushPull(pp), from: outsider), now: w.now); Issue.record("accepted") } catch {
            #expect(error.code == .notAMember)
        }
        var announce = pp
        announce.members = [update(outsider, .alive)]
        var other = core
        let answer = try other.handle(message(.pushPull(announce), from: outsider), now: w.now)
        #expect(answer.messages.isEmpty, "an announce was answered")
        #expect(other.member(outsider)?.status == .alive)
        pp.kind = .request
        // A join request for another cluster is refused.
        pp.clusterID = "other"
        pp.members.append(update(outsider, .alive))
        do { _ = try core.handle(message(.pushPull(pp), from: outsider), now: w.now); Issue.record("accepted") } catch {
            #expect(error.code == .wrongCluster)
        }
        #expect(core.view == before)
        #expect(core.member(Self.id("phantom")) == nil)
        #expect(core.member(victim)?.status == .alive)
        #expect(core.stats.messagesRefused[.notAMember] == 6) // 2 kinds × 2 attempts + 1 join + 1 announce
    }

    @Test func intermediaryRelaysAnAckThatComesLate() throws {
        // An intermediary asked to probe a slow member keeps listening for its ack as long as a
        // last-chance probe waits (1.5 s), not just twice the probe timeout (it used to drop the
        // relay at 600 ms, so a member with a 600 ms round trip could not be saved by others).
        let w = MembershipWorld(count: 4, seed: 12)
        w.startAll(spread: .milliseconds(300))
        #expect(w.run(until: { w.converged }, limit: .seconds(20)) != nil)
        var relay = try #require(w.core(1))
        let requester = w.hosts[0].id, target = w.hosts[2].id
        var req = MembershipMessage.PingReq()
        req.sequence = 777
        req.target = target
        let t0 = w.now
        let out = try relay.handle(message(.pingReq(req), from: requester), now: t0)
        let ping = try #require(out.messages.first { $0.peer == target && $0.frame.type == MembershipMessage.FrameType.ping })
        guard case .ping(let p) = try MembershipMessage(frame: ping.frame) else { Issue.record("not a ping"); return }
        // The relay's timers run (its nack goes out), then the target's ack arrives after 1 s.
        let tick = relay.tick(now: t0 + .milliseconds(800))
        #expect(tick.messages.contains { $0.peer == requester && $0.frame.type == MembershipMessage.FrameType.nack })
        var ack = MembershipMessage.Ack()
        ack.sequence = p.sequence
        ack.responder = target
        let late = try relay.handle(message(.ack(ack), from: target), now: t0 + .milliseconds(1_000))
        let fwd = try #require(late.messages.first { $0.peer == requester })
        guard case .ack(let a) = try MembershipMessage(frame: fwd.frame) else { Issue.record("not an ack"); return }
        #expect(a.sequence == 777 && a.responder == target)
    }

    @Test func unansweredPingIsRepeatedOverTheStreamAndAnsweredThere() throws {
        // memberlist's TCP fallback: when the direct ping times out, the prober repeats it over the
        // reliable stream (besides the ping-reqs); a ping that came over the stream is acked there.
        let w = MembershipWorld(count: 6, seed: 13)
        w.startAll(spread: .milliseconds(300))
        #expect(w.run(until: { w.converged }, limit: .seconds(20)) != nil)
        var prober = try #require(w.core(0))
        var t = w.now
        var pings: [PeerMessage] = []
        // Tick until a probe goes out, then past its timeout without answering it.
        while pings.isEmpty && t < w.now + .seconds(5) {
            t = t + .milliseconds(10)
            pings = prober.tick(now: t).messages.filter { $0.frame.type == MembershipMessage.FrameType.ping }
        }
        let first = try #require(pings.first)
        #expect(first.unreliable)
        var fallback: PeerMessage?
        var reqs = 0
        for _ in 0..<100 where fallback == nil {
            t = t + .milliseconds(10)
            let out = prober.tick(now: t).messages
            reqs += out.filter { $0.frame.type == MembershipMessage.FrameType.pingReq }.count
            fallback = out.first { $0.frame.type == MembershipMessage.FrameType.ping && $0.peer == first.peer && !$0.unreliable }
        }
        let stream = try #require(fallback, "no stream ping after the timeout")
        #expect(reqs > 0)
        // The target answers a stream ping over the stream.
        let targetIndex = try #require(w.index(of: first.peer))
        var target = try #require(w.core(targetIndex))
        var incoming = stream
        incoming.peer = prober.me
        let answer = try target.handle(incoming, now: t + .milliseconds(1))
        let ack = try #require(answer.messages.first { $0.peer == prober.me && $0.frame.type == MembershipMessage.FrameType.ack })
        #expect(!ack.unreliable)
    }

    /// A probe that has to dial first counts its time from the link coming up, and waits for the
    /// round trip the handshake measured: between regions 220 ms apart a probe that needed a dial
    /// could not be acked within the 300 ms timeout, nor its stream fallback within the 200 ms
    /// indirect phase, so one lost datagram made a live member suspect to every member.
    @Test func aProbeThatWaitsForALinkCountsFromItAndAllowsTheHandshakesRoundTrip() throws {
        let w = MembershipWorld(count: 6, seed: 14)
        w.startAll(spread: .milliseconds(300))
        #expect(w.run(until: { w.converged }, limit: .seconds(20)) != nil)
        var prober = try #require(w.core(0))
        var t = w.now
        // Every link closes (idle): the next probe must dial.
        for h in w.hosts.dropFirst() { _ = prober.linkChanged(.down(peer: h.id), now: t) }
        // Tick until a probe starts (its ping is held, and its target dialled, if not dialled a
        // moment ago already).
        var dialed: [PeerAddress] = []
        let sent = prober.stats.probesSent
        while prober.stats.probesSent == sent && t < w.now + .seconds(5) {
            t = t + .milliseconds(10)
            let out = prober.tick(now: t)
            #expect(!out.messages.contains { $0.frame.type == MembershipMessage.FrameType.ping }, "a ping left without a link")
            dialed += out.dials
        }
        if dialed.isEmpty { dialed = w.hosts.dropFirst().map(\.address) }
        #expect(!dialed.isEmpty)
        // The handshakes take 220 ms; the held ping leaves when its target's link is up.
        t = t + .milliseconds(220)
        var probed: (target: NodeID, ping: PeerMessage)?
        for address in dialed {
            let peer = try #require(w.hosts.first { $0.address == address }).id
            let up = prober.linkChanged(.up(peer: peer, address: address, rtt: .milliseconds(220)), now: t)
            if let ping = up.messages.first(where: { $0.peer == peer && $0.frame.type == MembershipMessage.FrameType.ping }) { probed = (peer, ping) }
        }
        let (target, ping) = try #require(probed, "no dial was the probe's")
        guard case .ping(let p) = try MembershipMessage(frame: ping.frame) else { Issue.record("not a ping"); return }
        // The datagram is lost. Until twice the RTT has passed since the ping left, nothing more goes
        // out for this probe (before, the ping-reqs and the stream ping left 300 ms after the dial).
        let linkUp = t
        var fallback: PeerMessage?
        var reqs = 0, firstRetry: Duration?
        while fallback == nil && t < linkUp + .seconds(2) {
            t = t + .milliseconds(10)
            let out = prober.tick(now: t).messages
            let r = out.filter { $0.frame.type == MembershipMessage.FrameType.pingReq }.count
            if r > 0 && firstRetry == nil { firstRetry = t - linkUp }
            reqs += r
            fallback = out.first { $0.peer == target && $0.frame.type == MembershipMessage.FrameType.ping && !$0.unreliable }
        }
        _ = try #require(fallback, "no stream ping")
        #expect(reqs > 0)
        #expect(t - linkUp >= .milliseconds(440), "the fallback left \(t - linkUp) after the link came up")
        #expect(firstRetry.map { $0 >= .milliseconds(440) } ?? false)
        // The stream ping's ack comes back one round trip later, in time: no suspicion.
        var ack = MembershipMessage.Ack()
        ack.sequence = p.sequence
        ack.responder = target
        var reply = message(.ack(ack), from: target)
        reply.unreliable = false
        t = t + .milliseconds(220)
        _ = try prober.handle(reply, now: t)
        // (The probes after it, of members whose links stay down, fail; their targets are others.)
        for _ in 0..<100 { t = t + .milliseconds(10); _ = prober.tick(now: t) }
        #expect(prober.member(target)?.status == .alive)
    }

    @Test func allowListRefusesOtherJoiners() throws {
        var settings = MembershipSettings()
        let friend = Self.id("friend")
        settings.allowedNodes = [friend]
        var core = MembershipCore(me: Self.id("me"), address: PeerAddress(host: "10.0.0.1", port: 7400), generation: 1,
                                  settings: settings, random: SeededRandom(seed: 1))
        _ = core.start(now: .zero)
        let stranger = Self.id("stranger")
        var pp = MembershipMessage.PushPull()
        pp.clusterID = settings.clusterID
        pp.members = [update(stranger, .alive)]
        do { _ = try core.handle(message(.pushPull(pp), from: stranger), now: .zero); Issue.record("accepted") } catch {
            #expect(error.code == .notAllowed)
        }
        pp.members = [update(friend, .alive), update(stranger, .alive)]
        let out = try core.handle(message(.pushPull(pp), from: friend), now: .zero)
        #expect(core.member(friend)?.status == .alive)
        #expect(core.member(stranger) == nil, "the friend cannot introduce a node outside the allow-list")
        #expect(out.messages.contains { $0.peer == friend && $0.frame.type == MembershipMessage.FrameType.pushPull })
    }

    @Test func malformedMessagesAreRefusedWithTypedErrors() throws {
        var core = MembershipCore(me: Self.id("me"), address: PeerAddress(host: "10.0.0.1", port: 7400), generation: 1,
                                  random: SeededRandom(seed: 2))
        _ = core.start(now: .zero)
        let peer = Self.id("peer")
        func refuse(_ frame: Frame) -> MembershipError.Code? {
            do { _ = try core.handle(PeerMessage(peer: peer, traffic: .control, frame: frame), now: .zero); return nil }
            catch { return error.code }
        }
        var ping = MembershipMessage.Ping()
        ping.updates = [update(peer, .alive)]
        let good = MembershipMessage.ping(ping).frame
        // Truncated at every length.
        for n in 0..<good.payload.count {
            #expect(refuse(Frame(type: good.type, payload: Array(good.payload.prefix(n)))) == .malformed)
        }
        // Trailing garbage.
        #expect(refuse(Frame(type: good.type, payload: good.payload + [0])) == .malformed)
        // Unknown type inside the membership block.
        let unknown = refuse(Frame(type: 0x2f, payload: good.payload))
        #expect(unknown == .malformed)
        // A member status byte out of range.
        var bytes = good.payload
        let statusAt = bytes.count - 2 // status, then the optional tag of `from`
        bytes[statusAt] = 9
        #expect(refuse(Frame(type: good.type, payload: bytes)) == .malformed)
        // An update count far above the limit, with no bytes behind it.
        var w = WireWriter(); w.varint(1); w.raw(peer.bytes); w.varint(1_000_000)
        #expect(refuse(Frame(type: MembershipMessage.FrameType.ping, payload: w.bytes)) == .malformed)
        // A coordinate with NaN.
        var ack = MembershipMessage.Ack()
        var c = Coordinate(dimensions: 8, error: 1, height: 0)
        c.vector[0] = .nan
        ack.coordinate = c
        #expect(refuse(MembershipMessage.ack(ack).frame) == .invalidCoordinate)
        // An oversized push-pull state is refused before decoding.
        var small = MembershipSettings()
        small.limits.maxPushPullBytes = 64
        var tiny = MembershipCore(me: Self.id("me"), address: PeerAddress(host: "10.0.0.1", port: 7400), generation: 1,
                                  settings: small, random: SeededRandom(seed: 3))
        _ = tiny.start(now: .zero)
        var pp = MembershipMessage.PushPull()
        pp.members = (0..<4).map { update(Self.id("n\($0)"), .alive) }
        do { _ = try tiny.handle(PeerMessage(peer: peer, traffic: .control, frame: MembershipMessage.pushPull(pp).frame), now: .zero) } catch {
            #expect(error.code == .tooLarge)
        }
        // Random bytes never crash the core.
        var rng = SeededRandom(seed: 99)
        for _ in 0..<2_000 {
            let len = Int(rng.next() % 200)
            let payload = (0..<len).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let type = MembershipMessage.FrameType.ping + rng.next() % 6
            _ = core.receive(PeerMessage(peer: peer, traffic: .control, frame: Frame(type: type, payload: payload)), now: .zero)
        }
        #expect(core.view.isEmpty)
    }

    @Test func suspicionTimeoutShrinksWithConfirmations() {
        // memberlist LAN at N = 1,000: min = 4 · log10(1000) · 1 s = 12 s, max = 6 · min = 72 s, k = 2.
        let s = MembershipSettings.memberlistLAN
        let minT = s.probe.interval * (s.suspicion.minMultiplier * 3)
        #expect(minT == .seconds(12))
        let maxT = minT * s.suspicion.maxMultiplier
        let t0 = SuspicionTimerProbe.timeout(0, k: 2, min: minT, max: maxT)
        let t1 = SuspicionTimerProbe.timeout(1, k: 2, min: minT, max: maxT)
        let t2 = SuspicionTimerProbe.timeout(2, k: 2, min: minT, max: maxT)
        #expect(t0 == .seconds(72))
        #expect(t1 < t0 && t2 < t1)
        #expect(t2 == .seconds(12))
        // log(2)/log(3) of the way from 72 s to 12 s.
        #expect(abs(t1.seconds - (72 - 60 * 0.6309297535714574)) < 0.001)
    }

    @Test func suspicionAboutSelfIsRefutedWithHigherIncarnation() throws {
        let w = MembershipWorld(count: 3, seed: 12)
        w.startAll(spread: .milliseconds(300))
        w.run(until: { w.converged }, limit: .seconds(20))
        var core = try #require(w.core(0))
        let accuser = w.hosts[1].id
        let before = core.version
        var g = MembershipMessage.Gossip()
        g.updates = [MemberUpdate(node: core.me, address: core.address, version: before, status: .suspect, from: accuser)]
        _ = try core.handle(message(.gossip(g), from: accuser), now: w.now)
        #expect(core.version.incarnation == before.incarnation + 1)
        #expect(core.version.generation == before.generation)
        #expect(core.stats.refutations == 1)
        #expect(core.localHealth >= 1, "being suspected raises the local health multiplier")
    }

    @Test func dnsSeedIsDialledAndSyncedUnderItsResolvedAddress() {
        let seed = PeerAddress(host: "seed.cluster.example", port: 7400)
        var core = MembershipCore(me: Self.id("me"), address: PeerAddress(host: "10.0.0.1", port: 7400), generation: 1,
                                  seeds: [seed], random: SeededRandom(seed: 4))
        let first = core.start(now: .zero)
        #expect(first.dials == [seed])
        #expect(first.wakeAt != nil)
        // The shell resolved the name and reports the link under the IP it reached.
        let seedNode = Self.id("seed")
        let out = core.linkChanged(.up(peer: seedNode, address: PeerAddress(host: "10.0.0.9", port: 7400)), now: Instant(nanoseconds: 1_000_000))
        let sync = out.messages.first { $0.peer == seedNode }
        #expect(sync?.frame.type == MembershipMessage.FrameType.pushPull)
        #expect(sync?.unreliable == false && sync?.traffic == .control)
    }

    @Test func newerGenerationOutranksDead() {
        let old = MemberVersion(generation: 1, incarnation: 40)
        let restarted = MemberVersion(generation: 2, incarnation: 0)
        #expect(restarted > old)
    }

    @Test func aPingFromANodeNotYetKnownIsAnsweredAndNothingElseInItApplied() throws {
        // A member that joined a moment ago probes members its alive has not reached: they answer,
        // so its probe does not fail on a live member; only its own alive record is taken from it.
        var (w, core) = try formed(seed: 12)
        let newcomer = Self.id("newcomer")
        let victim = w.hosts[1].id
        var ping = MembershipMessage.Ping()
        ping.sequence = 4_242
        ping.target = core.me
        ping.updates = [update(Self.id("phantom"), .alive), update(victim, .suspect, inc: 99, from: newcomer)]
        let out = try core.handle(message(.ping(ping), from: newcomer), now: w.now)
        let ack = try #require(out.messages.first { $0.peer == newcomer })
        guard case .ack(let a)? = try? MembershipMessage(frame: ack.frame) else { Issue.record("not an ack"); return }
        #expect(a.sequence == 4_242 && a.responder == core.me)
        #expect(core.member(Self.id("phantom")) == nil, "a third party's record from a stranger was applied")
        #expect(core.member(victim)?.status == .alive)
        #expect(core.member(newcomer) == nil)
        #expect(core.stats.strangerPingsAnswered == 1)
        // Its own alive record is applied, as a join's would be.
        ping.updates.append(update(newcomer, .alive))
        _ = try core.handle(message(.ping(ping), from: newcomer), now: w.now)
        #expect(core.member(newcomer)?.status == .alive)
        // A ping meant for someone else, or a ping-req, from a stranger is still refused.
        var stray = ping
        stray.target = victim
        do { _ = try core.handle(message(.ping(stray), from: Self.id("other")), now: w.now); Issue.record("accepted") } catch {
            #expect(error.code == .notAMember)
        }
        do {
            _ = try core.handle(message(.pingReq(.init(target: victim, updates: [])), from: Self.id("other")), now: w.now)
            Issue.record("accepted")
        } catch { #expect(error.code == .notAMember) }
        // With an allow-list, a stranger not on it gets no answer.
        var listed = MembershipSettings()
        listed.allowedNodes = [core.me]
        var guarded = MembershipCore(me: Self.id("g"), address: PeerAddress(host: "10.0.0.7", port: 7400), generation: 1,
                                     settings: listed, random: SeededRandom(seed: 3))
        _ = guarded.start(now: .zero)
        var p2 = MembershipMessage.Ping()
        p2.target = guarded.me
        do { _ = try guarded.handle(message(.ping(p2), from: newcomer), now: .zero); Issue.record("accepted") } catch {
            #expect(error.code == .notAMember)
        }
    }

    @Test func pushPullKindsRoundTripAndAnUnknownKindIsRefused() throws {
        for kind in [MembershipMessage.PushPull.Kind.request, .response, .announce] {
            var pp = MembershipMessage.PushPull()
            pp.clusterID = "c"
            pp.kind = kind
            pp.members = [update(Self.id("a"), .alive)]
            let frame = MembershipMessage.pushPull(pp).frame
            #expect(try MembershipMessage(frame: frame) == .pushPull(pp))
            #expect(frame.payload[2] == kind.rawValue, "the kind is the byte after the cluster ID")
            var bad = frame
            bad.payload[2] = 3
            #expect(throws: MembershipError.self) { _ = try MembershipMessage(frame: bad) }
        }
    }

    @Test func messagesRoundTrip() throws {
        var ack = MembershipMessage.Ack()
        ack.sequence = 77
        ack.responder = Self.id("r")
        ack.coordinate = Coordinate(dimensions: 8, error: 1.5, height: 1e-5)
        ack.updates = [update(Self.id("a"), .suspect, from: Self.id("b")), update(Self.id("c"), .left)]
        let m = MembershipMessage.ack(ack)
        #expect(try MembershipMessage(frame: m.frame) == m)
        #expect(m.frame.type == 0x12 && FrameTypeRange.membership.contains(m.frame.type))
    }

    @Test func handWrittenUpdateCodecMatchesTheDeclaredFields() throws {
        // MemberUpdate encodes and decodes by hand for speed; the bytes must be those `wireFields`
        // declares, in both directions.
        var rng = SeededRandom(seed: 5)
        for i in 0..<200 {
            var u = update(Self.id("n\(i)"), MemberStatus(rawValue: UInt8(i % 4))!, inc: rng.next() >> (2 + rng.next() % 62),
                           from: i % 3 == 0 ? nil : Self.id("f\(i)"))
            u.version.generation = rng.next() >> (2 + rng.next() % 62)
            u.address = PeerAddress(host: String(repeating: "h", count: i % 40), port: UInt16(truncatingIfNeeded: rng.next()))
            var declared = WireEncodingCoder(writer: WireWriter())
            var copy = u
            try copy.wireFields(&declared)
            #expect(u.wireBytes() == declared.writer.bytes)
            var decoder = WireDecodingCoder(reader: WireReader(declared.writer.bytes))
            var viaFields = MemberUpdate()
            try viaFields.wireFields(&decoder)
            #expect(try MemberUpdate(wireBytes: declared.writer.bytes) == viaFields)
            #expect(viaFields == u)
        }
    }
}

extension ProtocolTests {
    /// The bytes `wireFields` declares for `m`, and `m` decoded from them through `wireFields`.
    static func declared<M: WireFields & Equatable>(_ m: M) throws -> (bytes: [UInt8], decoded: M) {
        var enc = WireEncodingCoder(writer: WireWriter())
        var copy = m
        try copy.wireFields(&enc)
        var dec = WireDecodingCoder(reader: WireReader(enc.writer.bytes))
        var back = M()
        try back.wireFields(&dec)
        return (enc.writer.bytes, back)
    }

    @Test func handWrittenMessageCodecsMatchTheDeclaredFields() throws {
        // The membership messages also encode and decode by hand; same bytes as `wireFields`,
        // both ways, for every message kind (empty, short and long update lists, host names
        // with non-ASCII characters, coordinates of several sizes).
        var rng = SeededRandom(seed: 9)
        func updates(_ n: Int) -> [MemberUpdate] {
            (0..<n).map { i in
                var u = update(Self.id("u\(i)"), MemberStatus(rawValue: UInt8(i % 4))!, inc: rng.next() >> (2 + rng.next() % 62),
                               from: i % 2 == 0 ? nil : Self.id("s\(i)"))
                u.address = PeerAddress(host: i % 5 == 0 ? "hôte-\(i).example" : "10.0.\(i % 256).\(i)", port: UInt16(truncatingIfNeeded: rng.next()))
                return u
            }
        }
        func check<M: WireFields & Equatable>(_ m: M) throws {
            let (bytes, viaFields) = try Self.declared(m)
            #expect(m.wireBytes() == bytes)
            #expect(try M(wireBytes: bytes) == viaFields)
            #expect(viaFields == m)
        }
        for n in [0, 1, 3, 17, 256] {
            var p = MembershipMessage.Probe()
            p.sequence = rng.next() >> 2
            p.target = Self.id("t\(n)")
            p.updates = updates(n)
            try check(p)
            var a = MembershipMessage.Ack()
            a.sequence = rng.next() >> (2 + rng.next() % 60)
            a.responder = Self.id("r\(n)")
            a.coordinate = n % 2 == 0 ? nil : Coordinate(dimensions: n % 9, error: 0.25, height: 1e-4)
            a.updates = updates(n)
            try check(a)
            try check(MembershipMessage.Gossip(updates: updates(n)))
            var pp = MembershipMessage.PushPull()
            pp.clusterID = n == 0 ? "" : "cluster-\(n)"
            pp.kind = [.request, .response, .announce][n % 3]
            pp.members = updates(n * 4)
            try check(pp)
        }
        var nack = MembershipMessage.Nack()
        nack.sequence = 1 << 40
        try check(nack)
        // A wrong push-pull kind is refused the same way by both.
        var pp = MembershipMessage.PushPull()
        pp.clusterID = "c"
        var bytes = pp.wireBytes()
        bytes[2] = 3
        #expect(throws: WireError.self) { try MembershipMessage.PushPull(wireBytes: bytes) }
        var dec = WireDecodingCoder(reader: WireReader(bytes))
        var back = MembershipMessage.PushPull()
        #expect(throws: WireError.self) { try back.wireFields(&dec) }
    }
}

extension ProtocolTests {
    /// A core reads a message's updates in place (checked when the message is read, decoded one at a
    /// time only when they matter); `MembershipMessage(frame:)` goes the same way. Both must take
    /// exactly what the per-message decoders (`[MemberUpdate]` through `MemberUpdate(from:)`) take
    /// and refuse the rest with the same error: every truncation and every single-byte change of
    /// messages of each kind is checked.
    @Test func updatesReadInPlaceAcceptAndRefuseWhatWholeDecodingDoes() throws {
        var rng = SeededRandom(seed: 21)
        func updates(_ n: Int) -> [MemberUpdate] {
            (0..<n).map { i in
                var u = update(Self.id("u\(i)"), MemberStatus(rawValue: UInt8(i % 4))!, inc: rng.next() >> (2 + rng.next() % 62),
                               from: i % 3 == 0 ? Self.id("s\(i)") : nil)
                u.address = PeerAddress(host: i % 4 == 1 ? "nœud-\(i).example" : "10.1.\(i % 256).\(i)", port: UInt16(truncatingIfNeeded: rng.next()))
                return u
            }
        }
        var ping = MembershipMessage.Ping(); ping.sequence = 77; ping.target = Self.id("t"); ping.updates = updates(5)
        var ack = MembershipMessage.Ack(); ack.sequence = 78; ack.responder = Self.id("r")
        ack.coordinate = Coordinate(dimensions: 3, error: 0.5, height: 1e-4); ack.updates = updates(4)
        var pp = MembershipMessage.PushPull(); pp.clusterID = "c"; pp.isResponse = true; pp.members = updates(6)
        let messages: [MembershipMessage] = [.ping(ping), .pingReq(ping), .ack(ack), .gossip(.init(updates: updates(3))), .pushPull(pp),
                                             .gossip(.init(updates: []))]
        /// What the whole decoders say about `bytes` as a frame of `type`.
        func whole(_ type: UInt64, _ bytes: [UInt8]) -> Result<MembershipMessage, WireError> {
            do throws(WireError) {
                switch type {
                case MembershipMessage.FrameType.ping: return .success(.ping(try .init(wireBytes: bytes)))
                case MembershipMessage.FrameType.pingReq: return .success(.pingReq(try .init(wireBytes: bytes)))
                case MembershipMessage.FrameType.ack: return .success(.ack(try .init(wireBytes: bytes)))
                case MembershipMessage.FrameType.gossip: return .success(.gossip(try .init(wireBytes: bytes)))
                default: return .success(.pushPull(try .init(wireBytes: bytes)))
                }
            } catch { return .failure(error) }
        }
        var refused = 0, accepted = 0
        for m in messages {
            let f = m.frame
            #expect(try MembershipMessage(frame: f) == m)
            var variants: [[UInt8]] = (0..<f.payload.count).map { Array(f.payload[..<$0]) }
            for i in f.payload.indices {
                for delta: UInt8 in [1, 0x40, 0x80] { var b = f.payload; b[i] &+= delta; variants.append(b) }
            }
            for bytes in variants {
                let expected = whole(f.type, bytes)
                do {
                    let got = try MembershipMessage(frame: Frame(type: f.type, payload: bytes))
                    accepted += 1
                    if case .success(let e) = expected {
                        // (An ack whose changed coordinate is not finite is refused by both; see below.)
                        #expect(got == e)
                    } else { Issue.record("accepted what whole decoding refuses: \(bytes)") }
                } catch {
                    refused += 1
                    switch expected {
                    case .failure(let e): #expect(error.wireError == e, "\(error) vs \(e)")
                    case .success(let e):
                        guard case .ack(let a) = e, let c = a.coordinate, !(c.vector.allSatisfy { $0.isFinite && abs($0) < 1e6 }
                            && c.error.isFinite && c.error >= 0 && c.adjustment.isFinite && c.height.isFinite && c.height >= 0) else {
                            Issue.record("refused what whole decoding accepts: \(error)"); continue
                        }
                        #expect(error.code == .invalidCoordinate)
                    }
                }
            }
        }
        #expect(refused > 100 && accepted > 100)
    }

    /// A record about a member held at the same version (or, for a suspicion or death, a newer one)
    /// changes nothing: it is dropped undecoded and counted; a newer one is applied.
    @Test func recordsAlreadyHeldAreCountedAndChangeNothing() throws {
        let w = MembershipWorld(count: 4, seed: 5)
        w.startAll(spread: .milliseconds(200))
        #expect(w.run(until: { w.converged }, limit: .seconds(20)) != nil)
        var core = try #require(w.core(0))
        let subject = w.hosts[1], sender = w.hosts[2].id
        let held = try #require(core.member(subject.id))
        func gossip(_ status: MemberStatus, _ version: MemberVersion) throws {
            let u = MemberUpdate(node: subject.id, address: held.address, version: version, status: status, from: status == .alive ? nil : sender)
            _ = try core.handle(message(.gossip(.init(updates: [u])), from: sender), now: w.now)
        }
        let before = core.stats
        let older = MemberVersion(generation: held.version.generation, incarnation: 0)
        try gossip(.alive, held.version)
        try gossip(.alive, older)
        if held.version.incarnation > 0 { try gossip(.suspect, older) } else { try gossip(.alive, held.version) }
        #expect(core.stats.updatesReceived == before.updatesReceived + 3)
        #expect(core.stats.updatesAlreadyHeld == before.updatesAlreadyHeld + 3)
        #expect(core.member(subject.id) == held)
        // Newer: applied, not counted as held.
        let newer = MemberVersion(generation: held.version.generation, incarnation: held.version.incarnation + 1)
        try gossip(.suspect, newer)
        #expect(core.stats.updatesAlreadyHeld == before.updatesAlreadyHeld + 3)
        #expect(core.member(subject.id)?.status == .suspect)
        #expect(core.member(subject.id)?.version == newer)
        // The same suspicion again is not "already held": it may confirm the suspicion.
        try gossip(.suspect, newer)
        #expect(core.stats.updatesAlreadyHeld == before.updatesAlreadyHeld + 3)
        try gossip(.alive, newer)
        #expect(core.stats.updatesAlreadyHeld == before.updatesAlreadyHeld + 4)
        #expect(core.member(subject.id)?.status == .suspect)
    }

    /// Cores write their messages' updates (and push-pull states) straight from their member
    /// tables: the bytes must be the ones the message types encode.
    @Test func framesCoresWriteAreTheBytesTheMessagesEncode() {
        let w = MembershipWorld(count: 6, seed: 8)
        var checked: [UInt64: Int] = [:], withUpdates = 0
        w.onDeliver = { _, _, m in
            guard let decoded = try? MembershipMessage(frame: m.frame) else { Issue.record("undecodable frame"); return }
            #expect(decoded.frame == m.frame)
            checked[m.frame.type, default: 0] += 1
            if !decoded.updates.isEmpty { withUpdates += 1 }
        }
        w.startAll(spread: .milliseconds(300))
        w.run(for: .seconds(5))
        w.crash(5) // so that probes of it go indirect (ping-req)
        w.run(for: .seconds(15))
        for type in [MembershipMessage.FrameType.ping, MembershipMessage.FrameType.ack, MembershipMessage.FrameType.gossip,
                     MembershipMessage.FrameType.pushPull, MembershipMessage.FrameType.pingReq] {
            #expect(checked[type, default: 0] > 0, "no frame of type \(type)")
        }
        #expect(withUpdates > 10)
    }
}

/// Test access to the suspicion formula.
enum SuspicionTimerProbe {
    static func timeout(_ c: Int, k: Int, min: Duration, max: Duration) -> Duration {
        MembershipCore.suspicionTimeout(confirmations: c, k: k, min: min, max: max)
    }
}

extension MembershipMessage.Gossip { init(updates: [MemberUpdate]) { self.init(); self.updates = updates } }
extension MembershipMessage.Probe { init(target: NodeID, updates: [MemberUpdate]) { self.init(); self.target = target; self.updates = updates } }
