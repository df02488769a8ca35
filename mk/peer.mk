# The product end to end (issue 9): three daemons on loopback; make demo.
INTEGRATION_TESTS += test-peer-e2e
BENCH_AREAS += peer
.PHONY: test-peer-e2e bench-peer

# Start-up with 10,000 blobs, idle cost in a 50-member cluster, RSS while serving 1 GiB to 4 peers,
# gquic-fetch get vs gtlsclient --download. Real processes on loopback; ~5 minutes.
bench-peer: build-release
	$(BENCH_BIN) peer
test-peer-e2e:
	./scripts/test-peer-e2e.sh

# Swarm with real daemons in network namespaces (issue 8): 1 seed + 4 peers fetch 64 MiB and every
# copy verifies (make test, root, ~45 s); the benchmark caps every node's upload at 100 Mbit/s and
# races 1 seed + 4 and + 8 peers on 256 MiB against aria2c + opentracker in the same namespaces.
INTEGRATION_TESTS += test-swarm-netns
.PHONY: test-swarm-netns bench-swarm-netns
test-swarm-netns:
	BIN=.build/debug ./simulations/netns/swarm.sh test

bench-swarm-netns: build-release
	BIN=.build/release ./simulations/netns/swarm.sh bench 4 8
