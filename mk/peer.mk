# The product end to end (issue 9): three daemons on loopback; make demo.
INTEGRATION_TESTS += test-peer-e2e
.PHONY: test-peer-e2e
test-peer-e2e:
	./scripts/test-peer-e2e.sh
