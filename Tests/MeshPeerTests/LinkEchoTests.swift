import MeshCore
import Testing
@testable import MeshPeer

/// `gquic-peer ping`'s core: control-class requests of the asked size on a fixed schedule, answered
/// by the peer's core with the same payload, round trips measured with the prober's own clock.
@Suite struct LinkEchoTests {
    let a = NodeID(digest: Digest.of([1])), b = NodeID(digest: Digest.of([2]))

    @Test func requestsGoOutOnTheControlClassAtTheAskedSizeAndScheduleAndRepliesAreTimed() {
        var prober = LinkEcho(), responder = LinkEcho()
        let t0 = Instant(nanoseconds: 1_000_000_000)
        var out = prober.begin(.init(peer: b, interval: .milliseconds(10), size: 64, count: 3), now: t0)
        #expect(out.messages.count == 1)
        let req = out.messages[0]
        #expect(req.peer == b && req.traffic == .control && !req.unreliable)
        #expect(req.frame.encoded.count == 64)
        #expect(out.wakeAt == t0 + .milliseconds(10))

        // The responder answers at once, with the same bytes, on the same class.
        let answer = responder.receive(PeerMessage(peer: a, traffic: .control, frame: req.frame), now: t0)
        #expect(answer.messages.count == 1)
        #expect(answer.messages[0].peer == a && answer.messages[0].traffic == .control)
        #expect(answer.messages[0].frame.type == LinkEcho.replyType && answer.messages[0].frame.payload == req.frame.payload)

        _ = prober.receive(PeerMessage(peer: b, traffic: .control, frame: answer.messages[0].frame), now: t0 + .microseconds(1500))
        // A late tick does not shift the schedule; a reply from someone else is ignored.
        out = prober.tick(now: t0 + .milliseconds(12))
        #expect(out.messages.count == 1 && out.wakeAt == t0 + .milliseconds(20))
        _ = prober.receive(PeerMessage(peer: a, traffic: .control, frame: Frame(type: LinkEcho.replyType, payload: out.messages[0].frame.payload)),
                           now: t0 + .milliseconds(13))
        out = prober.tick(now: t0 + .milliseconds(20))
        #expect(out.messages.count == 1)
        // Count reached: nothing more is sent; the run ends a second after the last request.
        out = prober.tick(now: t0 + .milliseconds(30))
        #expect(out.messages.isEmpty)
        _ = prober.tick(now: t0 + .milliseconds(1030))
        let r = prober.report!
        #expect(!r.running && r.sent == 3)
        #expect(r.samples.count == 1 && r.samples[0].roundTrip == .microseconds(1500) && r.samples[0].sentAfter == .zero)
        #expect(r.lost == 2)
    }

    @Test func aPeerThatNeverAnswersCostsBoundedMemory() {
        // An open-ended run (`gquic-peer ping` without --count) against a peer that has gone quiet:
        // requests older than `giveUp` are counted lost and forgotten, not kept for ever.
        var prober = LinkEcho()
        let t0 = Instant(nanoseconds: 1_000_000_000)
        _ = prober.begin(.init(peer: b, interval: .milliseconds(10)), now: t0)
        for k in 1...6_000 { _ = prober.tick(now: t0 + .milliseconds(10 * k)) } // 60 s
        let r = prober.report!
        #expect(r.sent == 6_001)
        #expect(r.awaiting <= 1_001, "\(r.awaiting) requests still held")
        #expect(r.lost >= 5_900 && r.lost <= r.sent, "\(r.lost) lost") // everything over a second old
        // A reply to a forgotten request is ignored; one to a recent request is timed.
        let now = t0 + .milliseconds(60_000)
        for seq: UInt64 in [5, 6_000] {
            _ = prober.receive(PeerMessage(peer: b, traffic: .control,
                                           frame: Frame(type: LinkEcho.replyType, payload: LinkEcho.payload(seq, size: 64))), now: now)
        }
        #expect(prober.report!.samples.map(\.sequence) == [6_000])
    }

    @Test func sizesAreExactAcrossTheVarintBoundary() {
        for size in [16, 64, 66, 100, 1024] {
            let f = Frame(type: LinkEcho.requestType, payload: LinkEcho.payload(7, size: size))
            #expect(f.encoded.count == size, "size \(size)")
        }
    }
}
