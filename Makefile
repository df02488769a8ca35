# GQUIC — the two commands are `make demo` and `make test`. Everything else is a step they use.
SWIFT        ?= swift
SWIFT_FLAGS  ?=
# Release builds for benchmarks and the demo; debug for tests (faster to compile on 2 cores).
RELEASE      := -c release

.PHONY: all deps build build-release test test-unit test-integration bench clean help demo

all: build

help:
	@echo "make demo     set up, build, and run a three-peer demo on loopback"
	@echo "make test     set up, build, and run every test CI runs"
	@echo "make bench    run every benchmark (make bench-<area> for one area)"
	@echo "make deps     install the Debian packages GQUIC needs (only the missing ones)"

deps:
	@./scripts/deps.sh

build: deps
	$(SWIFT) build $(SWIFT_FLAGS)

build-release: deps
	$(SWIFT) build $(RELEASE) $(SWIFT_FLAGS)

## test: unit and property tests, then the multi-process integration suites (run once each).
test: deps
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	$(SWIFT) test --skip-build $(SWIFT_FLAGS)
	@for t in $(INTEGRATION_TESTS); do echo "== integration: $$t"; $(MAKE) --no-print-directory $$t || exit 1; done

## demo: three peers on loopback; a 64 MiB layer added on one is pulled by the other two.
demo: build
	@./scripts/demo.sh

clean:
	rm -rf .build .build-*

## Each area adds its own mk/<area>.mk: bench-<area> targets (appended to BENCH_AREAS) and
## integration suites (appended to INTEGRATION_TESTS, run once each after the unit tests).
BENCH_AREAS :=
INTEGRATION_TESTS :=
-include mk/*.mk

BENCH_BIN = .build/release/gquic-bench

bench: $(addprefix bench-,$(BENCH_AREAS))
