# MeshSimulator: gquic-sim speed benchmark and the network-namespace harness test.
BENCH_AREAS += sim
INTEGRATION_TESTS += test-netns
.PHONY: bench-sim test-netns

bench-sim: build-release
	$(BENCH_BIN) sim

## Three namespaces on a bridge with dbus + avahi each, UDP through gquic-relay's delay, then
## teardown to nothing. Needs root; ~5 s.
test-netns:
	$(SWIFT) build --product gquic-relay $(SWIFT_FLAGS)
	./simulations/netns/test-netns.sh .build/debug/gquic-relay

## Fidelity (issue 5): simulations/scenarios/fidelity-8.sim in gquic-sim and the same swarm with real
## daemons in namespaces (1 seed + 8 peers, 256 MiB, tbf 100 Mbit/s per node): both completion
## times, their ratio, met/missed against ±15%, and the real run's CPU, wire and queue measurements
## the scenario's model rests on. Root; ~1.5 min. Run it on a quiet machine (load is printed).
.PHONY: bench-fidelity
bench-fidelity: build-release
	./simulations/netns/fidelity.sh 8
bench-sim: bench-fidelity
