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
