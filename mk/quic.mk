# QUICTransport (issue 3): HTTP/3 interop with ngtcp2's samples, the 256 MiB priority test and the
# 100,000-datagram fuzz run once by `make test`; `make bench-quic` prints ours next to gtlsserver→gtlsclient.
BENCH_AREAS += quic
INTEGRATION_TESTS += test-quic-integration
.PHONY: bench-quic test-quic-integration

bench-quic: build-release
	$(BENCH_BIN) quic

# Uses the debug test build `make test` just made.
test-quic-integration:
	GQUIC_QUIC_INTEGRATION=1 GQUIC_BULK_MIB=256 $(SWIFT) test --skip-build $(SWIFT_FLAGS) \
		--filter 'InteropTests|RobustnessTests|StreamSchedulingTests/controlOvertakesBulk'
