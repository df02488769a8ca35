# Membership (SWIM + Lifeguard) and mDNS discovery.
BENCH_AREAS += membership
INTEGRATION_TESTS += test-mdns
.PHONY: bench-membership test-mdns

## bench-membership: join dissemination, failure detection and false positives at N = 1,000
## (simulated in virtual time), next to Serf's convergence model and memberlist's LAN timings.
bench-membership: build-release
	$(BENCH_BIN) membership

## test-mdns: real avahi-daemon + dbus-daemon in three network namespaces (needs root).
test-mdns:
	$(SWIFT) build --product gquic-mdns-probe $(SWIFT_FLAGS)
	$(SWIFT) build --product gquic-peer $(SWIFT_FLAGS)
	./simulations/netns/mdns-test.sh .build/debug/gquic-mdns-probe
