# ContentStore: SHA-256, FastCDC, import and delta benchmarks against openssl, sha256sum, pyfastcdc,
# zstd and rsync. CONTENT_BENCH_MIB sets the input size (the issue's figure is 1024 MiB);
# CONTENT_BENCH_ARGS passes more options, e.g. "--only cdc,import --inputs random".
BENCH_AREAS += content
CONTENT_BENCH_MIB ?= 1024
CONTENT_BENCH_ARGS ?=
.PHONY: bench-content content-venv
content-venv:
	@test -x .build-venv/bin/python || python3 -m venv .build-venv
	@.build-venv/bin/python -c 'import pyfastcdc' 2>/dev/null || .build-venv/bin/pip install -q pyfastcdc
bench-content: build-release content-venv
	$(BENCH_BIN) content --size-mib $(CONTENT_BENCH_MIB) $(CONTENT_BENCH_ARGS)
