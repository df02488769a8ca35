# ClusterState: merges/s, crdt-benchmarks B3.1 against Loro and Yrs (PyPI loro, pycrdt), delta and
# state sizes. The anchors run from a virtual environment under .build-venv/ (ignored by git).
BENCH_AREAS += state
STATE_VENV := .build-venv/state
.PHONY: bench-state
$(STATE_VENV)/bin/python:
	python3 -m venv $(STATE_VENV)
	$(STATE_VENV)/bin/pip install --quiet loro pycrdt
bench-state: build-release $(STATE_VENV)/bin/python
	$(BENCH_BIN) state --python $(STATE_VENV)/bin/python
