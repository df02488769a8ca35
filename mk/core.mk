# MeshCore: wire codec and identity signatures.
BENCH_AREAS += core
.PHONY: bench-core
bench-core: build-release
	$(BENCH_BIN) core
