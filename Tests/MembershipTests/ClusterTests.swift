import Testing
import MeshCore
import Membership
import MembershipLab

/// Whole-cluster behaviour, driven deterministically in virtual time.
@Suite struct ClusterTests {
    func converged(_ n: Int, seed: UInt64, seeds: [Int] = [0]) -> MembershipWorld {
        let w = MembershipWorld(count: n, seed: seed, seedHosts: seeds)
        w.startAll(spread: .seconds(1))
        let t = w.run(until: { w.converged }, limit: .seconds(30))
        #expect(t != nil, "cluster of \(n) did not converge in 30 s")
        return w
    }

    @Test func joinsConvergeFromOneSeed() {
        let w = MembershipWorld(count: 24, seed: 1)
        w.startAll(spread: .seconds(1))
        let t = w.run(until: { w.converged }, limit: .seconds(30))
        #expect(t != nil)
        if let t { #expect(t < .seconds(10), "took \(t)") }
        for i in w.hosts.indices { #expect(w.core(i)?.liveMemberCount == 23) }
    }

    /// The push-pull kinds host `from` sent, recorded as they are delivered.
    func pushPulls(in w: MembershipWorld) -> () -> [(from: Int, to: Int, kind: MembershipMessage.PushPull.Kind, at: Duration)] {
        var seen: [(from: Int, to: Int, kind: MembershipMessage.PushPull.Kind, at: Duration)] = []
        let t0 = w.now
        w.onDeliver = { from, to, msg in
            if case .pushPull(let pp)? = try? MembershipMessage(frame: msg.frame, maxPushPullBytes: 1 << 24) {
                seen.append((from, to, pp.kind, w.now - t0))
            }
        }
        return { seen }
    }

    @Test func aJoinerPullsOneSeedsStateAndAnnouncesItselfToTheRest() {
        // Every seed must hear of each joiner first-hand (gossip alone cannot carry a fast join to a
        // large cluster), but only one sends the joiner its full state.
        for seed in UInt64(1)...6 {
            let w = MembershipWorld(count: 5, seed: seed, seedHosts: [0, 1, 2, 3])
            w.startFormed(count: 4)
            let sent = pushPulls(in: w)
            w.start(4)
            w.run(for: .seconds(1))
            let mine = sent().filter { $0.from == 4 }
            #expect(mine.filter { $0.kind == .request }.count == 1, "seed \(seed): \(mine)")
            #expect(Set(mine.filter { $0.kind == .announce }.map(\.to)).count == 3, "seed \(seed): \(mine)")
            #expect(sent().filter { $0.to == 4 && $0.kind == .response }.count == 1)
            for s in 0..<4 { #expect(w.status(of: 4, at: s) == .alive, "seed \(s) did not learn of the joiner") }
            #expect(w.core(4)?.liveMemberCount == 4)
        }
    }

    @Test func aJoinerAsksTheNextSeedWhenOneIsDownOrSilent() {
        // Host 2 never runs (its dial fails after 1 s); host 1 is up but 10 s away each way, so
        // nothing from it arrives within the 5 s push-pull timeout. Whatever order the joiner
        // tries them in, it must have joined through host 0 within 6 s, not wait for host 1.
        var silentFirst = 0
        for seed in UInt64(1)...12 {
            let w = MembershipWorld(count: 4, seed: seed, seedHosts: [0, 1, 2])
            w.startFormed(count: 2)
            w.slow(1, by: .seconds(10))
            let sent = pushPulls(in: w)
            w.start(3)
            let t = w.run(until: { w.core(3)?.joined == true }, limit: .seconds(6))
            #expect(t != nil, "seed \(seed): not joined in 6 s; \(sent())")
            let requests = sent().filter { $0.from == 3 && $0.kind == .request }
            #expect(requests.map(\.to) == [0], "seed \(seed): \(requests)")
            if let t, t >= .seconds(5) { silentFirst += 1 }
        }
        #expect(silentFirst > 0, "no run tried the silent seed first; the timeout path went untested")
    }

    @Test func aMemberForgingAnotherMembersRecordIsRefuted() throws {
        // Records are not signed (docs/protocol.md says why): a member can claim a live member is
        // dead, has left, or moved — at a higher incarnation than the subject's own. The subject hears
        // it, refutes with a still higher incarnation from its own (TLS-proven) links, and every view
        // ends with it alive at its real address.
        let w = converged(10, seed: 21)
        let victim = 3, liar = 1
        let real = try #require(w.core(0)?.member(w.hosts[victim].id))
        func forged(_ status: MemberStatus, _ bump: UInt64, address: PeerAddress? = nil) -> MemberUpdate {
            MemberUpdate(node: w.hosts[victim].id, address: address ?? real.address,
                         version: MemberVersion(generation: real.version.generation, incarnation: real.version.incarnation + bump),
                         status: status, from: w.hosts[liar].id)
        }
        let lies = [forged(.dead, 5), forged(.alive, 10, address: PeerAddress(host: "10.66.66.66", port: 1)), forged(.left, 20)]
        var g = MembershipMessage.Gossip()
        g.updates = lies
        for to in w.runningHosts where to != liar && to != victim { w.inject(.gossip(g), from: liar, to: to) }
        w.run(for: .milliseconds(1))
        #expect(w.status(of: victim, at: 0) == .left, "the forged records were applied (they are not signed)")
        let healed = w.run(until: {
            w.runningHosts.allSatisfy { o in
                o == victim || (w.status(of: victim, at: o) == .alive && w.core(o)?.member(w.hosts[victim].id)?.address == real.address)
            }
        }, limit: .seconds(15))
        #expect(healed != nil, "the victim's refutation did not reach every member")
        #expect((w.core(victim)?.stats.refutations ?? 0) > 0)
        #expect((w.core(0)?.member(w.hosts[victim].id)?.version.incarnation ?? 0) > real.version.incarnation + 20)
    }

    @Test func crashedNodeIsDetectedByEveryMember() {
        let w = converged(20, seed: 2)
        w.crash(7)
        let t = w.run(until: {
            w.runningHosts.allSatisfy { w.status(of: 7, at: $0) == .dead }
        }, limit: .seconds(30))
        #expect(t != nil, "not every member marked the crashed node dead")
        if let t { #expect(t < .seconds(10), "detection took \(t)") }
    }

    @Test func slowButLiveNodeIsNotDeclaredDead() {
        let w = MembershipWorld(count: 16, seed: 3)
        var deadMarks = 0
        let slowID = w.hosts[5].id
        w.onChange = { _, change in if change.node == slowID && change.status == .dead { deadMarks += 1 } }
        w.startAll(spread: .seconds(1))
        w.run(until: { w.converged }, limit: .seconds(30))
        // Every message to and from host 5 takes 400 ms more: longer than the 300 ms probe timeout.
        w.slow(5, by: .milliseconds(400))
        w.run(for: .seconds(120))
        #expect(deadMarks == 0)
        for i in w.runningHosts where i != 5 { #expect(w.status(of: 5, at: i) != .dead) }
        // The slow node noticed it is the slow one (Lifeguard's local health awareness).
        #expect((w.core(5)?.stats.probesFailed ?? 0) > 0)
    }

    @Test func aQuarterOfTheClusterSlowedUnderLossIsNeverDeclaredDead() {
        // Issue 6's false-positive case, scaled down: 10 of 40 live members answer 300 ms late each
        // way (a 600 ms round trip, twice the probe timeout) and 10% of datagrams are lost. They are
        // suspected over and over (many suspectors: Lifeguard's timeout drops to its minimum), so
        // verdicts hang on the last-chance probe. With intermediaries that dropped their relay after
        // twice the probe timeout (600 ms, just short of the round trip) and the probe carried by
        // datagrams alone, this seed declared a slowed member dead 22 s in (4 times in 2 minutes).
        // Relays now wait as long as a last chance does and the probe is repeated on the stream.
        let w = converged(40, seed: 31)
        var deaths = 0
        w.onChange = { _, change in if change.status == .dead { deaths += 1 } }
        w.loss = 0.10
        for s in 3..<13 { w.slow(s, by: .milliseconds(300)) }
        w.run(for: .seconds(60))
        #expect(deaths == 0, "live members were declared dead \(deaths) times")
    }

    @Test func partitionHeals() {
        let w = converged(12, seed: 4)
        w.partition([Array(0..<6), Array(6..<12)])
        let split = w.run(until: {
            (0..<6).allSatisfy { o in (6..<12).allSatisfy { w.status(of: $0, at: o) == .dead } }
        }, limit: .seconds(60))
        #expect(split != nil, "the two sides never declared each other dead")
        w.heal()
        let healed = w.run(until: { w.converged }, limit: .seconds(120))
        #expect(healed != nil, "the partition did not heal")
    }

    @Test func massRestartOfAThirdEndsWithEveryoneAlive() {
        // Seeds are among the restarted nodes, so the restarted third first forms an island and
        // must be merged back by the survivors' reconnect loop.
        let w = converged(30, seed: 5, seeds: [0, 1, 2])
        let restarted = Array(0..<10)
        for i in restarted { w.crash(i) }
        w.run(until: {
            (10..<30).allSatisfy { o in restarted.allSatisfy { w.status(of: $0, at: o) == .dead } }
        }, limit: .seconds(60))
        for i in restarted { w.start(i) }
        let t = w.run(until: { w.converged }, limit: .seconds(120))
        #expect(t != nil, "restarted nodes did not come back alive in every view")
        // Everyone holds the restarted nodes at their new generation.
        for o in w.runningHosts {
            for i in restarted where i != o {
                #expect(w.core(o)?.member(w.hosts[i].id)?.version.generation == 2)
            }
        }
    }

    @Test func restartWithTheSameGenerationStillComesBackAlive() {
        // memberlist's failure: a node restarts at incarnation 0 while others hold it dead at a
        // higher incarnation. Here the restarted node hears the claim and refutes above it.
        let w = converged(12, seed: 9)
        w.crash(4)
        let detected = w.run(until: { w.runningHosts.allSatisfy { w.status(of: 4, at: $0) == .dead } }, limit: .seconds(30))
        #expect(detected != nil)
        let deadVersion = w.core(0)?.member(w.hosts[4].id)?.version
        #expect(deadVersion != nil)
        w.start(4, keepGeneration: true)
        let t = w.run(until: { w.converged }, limit: .seconds(60))
        #expect(t != nil, "the restarted node stayed dead in some view")
        if let v = w.core(0)?.member(w.hosts[4].id)?.version, let d = deadVersion {
            #expect(v.generation == d.generation && v.incarnation > d.incarnation)
        }
    }

    @Test func gracefulLeaveIsSeenAsLeftNotDead() {
        let w = converged(10, seed: 6)
        w.leave(3)
        w.run(for: .seconds(2))
        w.crash(3)
        let t = w.run(until: { w.runningHosts.allSatisfy { w.status(of: 3, at: $0) == .left } }, limit: .seconds(10))
        #expect(t != nil)
        w.run(for: .seconds(30))
        for o in w.runningHosts { #expect(w.status(of: 3, at: o) == .left) }
    }

    @Test func tenPercentLossCausesNoFalsePositives() {
        let w = MembershipWorld(count: 24, seed: 7)
        var falseDeaths = 0
        w.onChange = { _, change in if change.status == .dead { falseDeaths += 1 } }
        w.startAll(spread: .seconds(1))
        w.run(until: { w.converged }, limit: .seconds(30))
        w.loss = 0.10
        w.run(for: .seconds(180))
        #expect(falseDeaths == 0)
    }

    @Test func membersThatStartTogetherDoNotSyncTogether() throws {
        // 48 members formed in one step all start at the same instant. Their periodic push-pulls
        // (each a full state) must spread over the interval, not land in the same second.
        let w = MembershipWorld(count: 48, seed: 7)
        var requests: [Duration] = []
        let t0 = w.now
        w.onDeliver = { _, _, msg in
            if case .pushPull(let pp)? = try? MembershipMessage(frame: msg.frame, maxPushPullBytes: 1 << 24), !pp.isResponse {
                requests.append(w.now - t0)
            }
        }
        w.startFormed(count: 48)
        w.run(for: .seconds(150))
        #expect(requests.count >= 48, "only \(requests.count) periodic push-pulls in 150 s")
        var perSecond: [Int64: Int] = [:]
        for t in requests { perSecond[t.components.seconds, default: 0] += 1 }
        let busiest = perSecond.values.max() ?? 0
        #expect(busiest <= 6, "\(busiest) of \(requests.count) push-pulls in one second")
    }

    @Test func aClusterFormedInOneStepHasNoGossipLeftToSpread() {
        // startFormed hands every member the whole state; with nothing new to say, the members'
        // traffic is probes and acks: less than half of what re-gossiping the formation costs.
        let w = MembershipWorld(count: 48, seed: 9)
        w.startFormed(count: 48)
        let bytes0 = w.hosts.reduce(0) { $0 + $1.bytesSent }
        w.run(for: .seconds(10))
        let kbit = Double(w.hosts.reduce(0) { $0 + $1.bytesSent } - bytes0) * 8 / 10 / 48 / 1000
        let noisy = MembershipWorld(count: 48, seed: 9)
        noisy.startFormed(count: 48, gossipFormation: true)
        let nb0 = noisy.hosts.reduce(0) { $0 + $1.bytesSent }
        noisy.run(for: .seconds(10))
        let noisyKbit = Double(noisy.hosts.reduce(0) { $0 + $1.bytesSent } - nb0) * 8 / 10 / 48 / 1000
        #expect(kbit < noisyKbit / 2, "\(kbit) kbit/s vs \(noisyKbit) with the formation gossip")
        for i in 0..<48 { #expect(w.core(i)?.liveMemberCount == 47) }
    }

    @Test func sameSeedSameRun() {
        func run() -> [Int] {
            let w = MembershipWorld(count: 10, seed: 42)
            w.loss = 0.05
            w.startAll(spread: .seconds(1))
            w.run(for: .seconds(20))
            return w.hosts.map { $0.bytesSent }
        }
        #expect(run() == run())
    }

    @Test func vivaldiCoordinatesFollowRTT() {
        let w = converged(8, seed: 8)
        w.run(for: .seconds(30))
        // Every link has the same ~0.55 ms RTT in this world; coordinates must predict about that.
        guard let a = w.core(0), let b = w.core(1) else { Issue.record("hosts down"); return }
        let predicted = a.vivaldi.coordinate.distance(to: b.vivaldi.coordinate)
        #expect(predicted > 0.0002 && predicted < 0.002, "predicted RTT \(predicted) s")
        #expect(a.vivaldi.updates > 10)
        #expect(a.nearestMembers(3).count == 3)
    }
}
