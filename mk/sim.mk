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
