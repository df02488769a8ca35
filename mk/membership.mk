# Membership (SWIM + Lifeguard) and mDNS discovery.
BENCH_AREAS += membership
INTEGRATION_TESTS += test-mdns
.PHONY: bench-membership test-mdns

## bench-membership: join dissemination, failure detection and false positives at N = 1,000
## (simulated in virtual time), next to Serf's convergence model and memberlist's LAN timings.
## N = 10,000: .build/release/gquic-bench membership --nodes 10000 --crashes 5 --no-false-positives
## --anchor-nodes 0 (~20 CPU-minutes, ~12 GiB; see docs/benchmarks.md).
bench-membership: build-release
	$(BENCH_BIN) membership

## test-mdns: real avahi-daemon + dbus-daemon in three network namespaces (needs root).
test-mdns:
	$(SWIFT) build --product gquic-mdns-probe $(SWIFT_FLAGS)
	$(SWIFT) build --product gquic-peer $(SWIFT_FLAGS)
	./simulations/netns/mdns-test.sh .build/debug/gquic-mdns-probe
