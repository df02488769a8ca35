import Testing
import MeshCore
@testable import MeshSimulator

/// A test-only core that records what the world does to it, to check the world's own logic
/// (timers, link events, dials, skew). It models no GQUIC protocol.
struct RecorderCore: MeshProtocolCore, SimPersistentCore {
    struct Script: Sendable {
        var wakeAfter: Duration? = nil
        var dial: [PeerAddress] = []
        var sendTo: [NodeID] = []
    }
    static let frameType: UInt64 = 0xfe
    let script: Script
    let persistedAtStart: [UInt8]?
    var log: [String] = []
    var nowSeen: [Instant] = []
    var ticks = 0

    init(context: SimCoreContext, script: Script) {
        self.script = script
        persistedAtStart = context.persisted
    }

    func handles(frameType type: UInt64) -> Bool { type == Self.frameType }

    mutating func start(now: Instant) -> Outbox {
        var out = Outbox()
        nowSeen.append(now)
        log.append("start")
        if let w = script.wakeAfter { out.wake(at: now + w); out.wake(at: now + w + w) }
        for a in script.dial { out.dial(a) }
        for p in script.sendTo { out.send(to: p, .control, Frame(type: Self.frameType, payload: [1, 2, 3])) }
        return out
    }

    mutating func receive(_ message: PeerMessage, now: Instant) -> Outbox {
        log.append("receive \(message.peer.short)")
        return Outbox()
    }

    mutating func linkChanged(_ event: LinkEvent, now: Instant) -> Outbox {
        switch event {
        case .up(let p, _, _): log.append("up \(p.short)")
        case .down(let p): log.append("down \(p.short)")
        case .dialFailed(let a): log.append("dialFailed \(a)")
        }
        nowSeen.append(now)
        return Outbox()
    }

    mutating func tick(now: Instant) -> Outbox {
        ticks += 1
        nowSeen.append(now)
        log.append("tick")
        return Outbox()
    }

    func persistentState() -> [UInt8] { [UInt8(ticks)] }
}

func scenario(_ text: String) throws -> Scenario { try Scenario(parsing: text) }

func recorderRegistry(_ script: @escaping @Sendable (Int) -> RecorderCore.Script) -> SimCoreRegistry {
    var r = SimCoreRegistry()
    r.register("recorder", summary: "test only") { ctx in RecorderCore(context: ctx, script: script(ctx.index)) }
    return r
}

@Suite struct WorldTests {
    @Test func ticksAreNeverEarlyAndTheEarliestRequestWins() throws {
        let sc = try scenario("nodes 1\ncore recorder\nduration 10s\nlink idle-timeout=0s\n")
        var world = try SimWorld(scenario: sc, registry: recorderRegistry { _ in .init(wakeAfter: .seconds(2)) })
        try world.run()
        let core = world.core(of: 0) as! RecorderCore
        // Asked for 2 s and 4 s in one outbox: the earliest is kept, and the core is ticked once then.
        #expect(core.ticks == 1)
        #expect(core.nowSeen.last == Instant(nanoseconds: 2_000_000_000))
        #expect(world.clock.now() == Instant(nanoseconds: 10_000_000_000))
    }

    @Test func nodeIDsComeFromTheSeed() throws {
        let sc = try scenario("nodes 3\ncore recorder\nduration 1s\n")
        let a = try SimWorld(scenario: sc, seed: 1, registry: recorderRegistry { _ in .init() })
        let b = try SimWorld(scenario: sc, seed: 1, registry: recorderRegistry { _ in .init() })
        let c = try SimWorld(scenario: sc, seed: 2, registry: recorderRegistry { _ in .init() })
        #expect(a.directory.ids == b.directory.ids)
        #expect(a.directory.ids != c.directory.ids)
        #expect(Set(a.directory.ids).count == 3)
    }

    @Test func dialsComeUpAfterAHandshakeAndUnknownAddressesFail() throws {
        let sc = try scenario("""
            nodes 2
            core recorder
            duration 20s
            region r
            latency r r 10ms
            link dial-timeout=3s idle-timeout=0s
            """)
        let bogus = PeerAddress(host: "192.0.2.1", port: 7400)
        var world = try SimWorld(scenario: sc, registry: recorderRegistry { i in
            i == 0 ? .init(dial: [SimDirectory.address(of: 1), bogus]) : .init()
        })
        try world.run()
        let a = world.core(of: 0) as! RecorderCore, b = world.core(of: 1) as! RecorderCore
        let id1 = world.directory.ids[1].short, id0 = world.directory.ids[0].short
        #expect(a.log.contains("up \(id1)"))
        #expect(b.log.contains("up \(id0)"))
        #expect(a.log.contains("dialFailed \(bogus)"))
        // Dialler: up after one round trip (20 ms); the failed dial after the dial timeout.
        #expect(a.nowSeen.contains(Instant(nanoseconds: 20_000_000)))
        #expect(a.nowSeen.contains(Instant(nanoseconds: 3_000_000_000)))
        #expect(b.nowSeen.contains(Instant(nanoseconds: 30_000_000)))
    }

    @Test func idleLinksCloseAtTheFirstCheckPastTheTimeoutNeverBefore() throws {
        // Idle links are checked every half timeout (here 1 s, from 2 s on) at millisecond
        // resolution. Used at 0 ms, a link is idle for 2 s at the 2 s check; used at 0.4 ms, it is
        // not yet, and closes at the 3 s check (its last use rounds up, never down).
        let sc = try scenario("""
            nodes 3
            core recorder
            duration 5s
            region r
            latency r r 10ms
            link idle-timeout=2s
            join at=0s nodes=1
            join at=0s nodes=0
            join at=400us nodes=2
            """)
        let ids = try SimWorld(scenario: sc, registry: recorderRegistry { _ in .init() }).directory.ids
        var world = try SimWorld(scenario: sc, registry: recorderRegistry { i in i == 1 ? .init() : .init(sendTo: [ids[1]]) })
        try world.run()
        let a = world.core(of: 0) as! RecorderCore, b = world.core(of: 1) as! RecorderCore, c = world.core(of: 2) as! RecorderCore
        #expect(a.log.last == "down \(ids[1].short)" && a.nowSeen.last == Instant(nanoseconds: 2_000_000_000))
        #expect(c.log.last == "down \(ids[1].short)" && c.nowSeen.last == Instant(nanoseconds: 3_000_000_000))
        #expect(b.log.filter { $0.hasPrefix("down") }.count == 2)
    }

    @Test func runsLongerThanLinkTimesCanCountAreRefused() throws {
        // Link times are 32-bit milliseconds: a run past 49.7 days would stamp every link with
        // the same time. 49 days runs; 50 is refused with a reason.
        _ = try SimWorld(scenario: try scenario("nodes 1\ncore recorder\nduration 1176h\n"), registry: recorderRegistry { _ in .init() })
        #expect(throws: ScenarioError.self) {
            _ = try SimWorld(scenario: try scenario("nodes 1\ncore recorder\nduration 1200h\n"), registry: recorderRegistry { _ in .init() })
        }
    }

    @Test func crashedPeersLinksGoDownAfterTheLinkTimeout() throws {
        let sc = try scenario("""
            nodes 2
            core recorder
            duration 30s
            link link-timeout=5s idle-timeout=0s
            fault at=1s crash nodes=1
            """)
        var world = try SimWorld(scenario: sc, registry: recorderRegistry { i in i == 0 ? .init(dial: [SimDirectory.address(of: 1)]) : .init() })
        try world.run()
        let a = world.core(of: 0) as! RecorderCore
        #expect(a.log.contains("down \(world.directory.ids[1].short)"))
        #expect(a.nowSeen.last == Instant(nanoseconds: 6_000_000_000))
        #expect(!world.isAlive(1))
    }

    @Test func restartWithDiskPassesPersistedStateAndWipeDoesNot() throws {
        let sc = try scenario("""
            nodes 2
            core recorder
            duration 10s
            fault at=5s restart nodes=0 disk=keep
            fault at=5s restart nodes=1 disk=wipe
            """)
        var world = try SimWorld(scenario: sc, registry: recorderRegistry { _ in .init(wakeAfter: .seconds(1)) })
        try world.run()
        #expect((world.core(of: 0) as! RecorderCore).persistedAtStart == [1])
        #expect((world.core(of: 1) as! RecorderCore).persistedAtStart == nil)
        #expect(world.stats.restarts == 2)
    }

    @Test func clockSkewShiftsWhatTheCoreSees() throws {
        let sc = try scenario("""
            nodes 1
            core recorder
            duration 10s
            link idle-timeout=0s
            fault at=0s skew nodes=0 offset=+500ms
            join at=1s nodes=0
            """)
        var world = try SimWorld(scenario: sc, registry: recorderRegistry { _ in .init(wakeAfter: .seconds(1)) })
        try world.run()
        let core = world.core(of: 0) as! RecorderCore
        // Started at global 1 s = local 1.5 s; the wake-up at local 2.5 s fires at global 2 s.
        #expect(core.nowSeen == [Instant(nanoseconds: 1_500_000_000), Instant(nanoseconds: 2_500_000_000)])
    }

    @Test func messagesToAPartitionedOrDeadPeerAreDropped() throws {
        let sc = try scenario("""
            nodes 4
            core recorder
            duration 5s
            fault at=0s partition groups=0..1|2..3
            fault at=0s crash nodes=1
            join at=1s nodes=0
            """)
        let registry = recorderRegistry { _ in .init() }
        let probe = try SimWorld(scenario: sc, registry: registry)
        let ids = probe.directory.ids
        var world = try SimWorld(scenario: sc, registry: recorderRegistry { i in
            i == 0 ? .init(sendTo: [ids[1], ids[2], ids[3], NodeID(digest: Digest.of([9]))]) : .init()
        })
        try world.run()
        #expect(world.stats.dropped(.unreachable) == 3)
        #expect(world.stats.dropped(.unknownPeer) == 1)
        #expect(world.stats.delivered == 0)
    }

    @Test func missingCoreIsNamed() throws {
        let sc = try scenario("nodes 10\ncore membership\n")
        #expect(throws: ScenarioError.self) { try SimWorld(scenario: sc, registry: .builtIn) }
        do { _ = try SimWorld(scenario: sc, registry: .builtIn) } catch {
            #expect(error.missingCoreName == "membership")
            #expect(error.description.contains("membership"))
        }
    }

    @Test func badScenarioLinesSayWhere() {
        for (text, fragment) in [("nodes 3\ncore flood\nduration ten\n", "line 3"),
                                 ("nodes 3\ncore flood\nbogus 1\n", "unknown keyword"),
                                 ("core flood\n", "no `nodes N`"),
                                 ("nodes 3\ncore flood\nregion a\nregion b\nlatency a a 1ms\n", "no latency between"),
                                 ("nodes 3\ncore flood\nfault at=1s crash nodes=0..x\n", "not a node set"),
                                 ("nodes 3\ncore flood\nlink loss=150%\n", "not a fraction")] {
            do {
                _ = try Scenario(parsing: text)
                Issue.record("accepted: \(text)")
            } catch {
                #expect(error.description.contains(fragment), "\(error.description)")
            }
        }
    }
}

@Suite struct ScenarioParserRobustnessTests {
    /// Scenario files are input from people: any jumble of tokens must parse or be refused with a
    /// `ScenarioError`, never trap (huge numbers, negative sizes, empty sets, stray `=`).
    @Test func randomTokenSoupNeverTraps() {
        let tokens = ["nodes", "core", "flood", "duration", "seed", "region", "latency", "link", "join", "workload",
                      "fault", "partition", "heal", "crash", "restart", "slow", "skew", "loss", "sample", "seeds",
                      "at=1s", "at=-1s", "nodes=all", "nodes=0..5", "nodes=9..2", "nodes=random:3", "nodes=region:a",
                      "groups=0|1", "groups=|", "every=0s", "count=0", "count=99999999999", "kind=push", "up=0mbit",
                      "loss=101%", "loss=-1%", "jitter=5ms", "mtu=1", "disk=maybe", "offset=+1s", "drift=5ppm",
                      "a", "b", "10ms", "1e308s", "18446744073709551616", "-5", "0", "1", "3", "=", "==", "#", "\t", "\n", "\n"]
        var rng = SeededRandom(seed: 11)
        var parsed = 0
        for _ in 0..<3000 {
            var text = ""
            for _ in 0..<Int(rng.next() % 30) { text += tokens[Int(rng.next() % UInt64(tokens.count))] + " " }
            if (try? Scenario(parsing: text)) != nil { parsed += 1 }
        }
        // Some jumbles are valid scenarios; most are refused. Either way, nothing trapped.
        #expect(parsed < 3000)
    }
}
