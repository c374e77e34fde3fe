# DON Predictor. Every target installs what it needs first (the virtualenv in .venv/, then helm,
# kubectl and the Kubernetes binaries on first use, cached under ~/.cache/don-predictor).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STORE ?= .demo-store
KSERVE_MODE ?= Standard
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: install demo test test-fast test-chart test-operator e2e bench manifests kind-up kind-e2e kind-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,serve,serve-native,ops,dev]'
	touch $(STAMP)

## The main job on the embedded default: train both families on synthetic data into $(STORE),
## serve them with the model server and call them over V1 and V2 (Ctrl-C stops the servers).
demo: install
	$(BIN)/python -m scripts.demo --store $(STORE)

## The whole suite (what CI runs): unit, integration, chart, operator (real kube-apiserver) and
## the end-to-end suite on a real local one-node Kubernetes.
test: install
	$(PYTEST)

## Quick loop while developing: no model training, API server or cluster.
test-fast: install
	$(PYTEST) -m "not slow and not apiserver and not e2e"

test-chart: install
	$(PYTEST) -m chart

test-operator: install
	$(PYTEST) -m apiserver

## The end-to-end suite alone (local real cluster here; DON_E2E_TARGET=kind for kind), with its report.
e2e: install
	flock /tmp/don-e2e.lock $(PYTEST) -m e2e -v

bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/serve.py

## Re-render manifests/ from the chart (tests/chart/test_manifests.py fails when it is stale).
manifests: install
	$(BIN)/python -m scripts.render_manifests

## kind path, for machines with Docker and internet (see README "End to end on kind").
kind-up: install
	KSERVE_MODE=$(KSERVE_MODE) ops/cluster/kind/kind-up.sh

kind-e2e: install
	KSERVE_MODE=$(KSERVE_MODE) PYTHON=$(abspath $(BIN)/python) ops/cluster/kind/kind-e2e.sh

kind-down:
	ops/cluster/kind/kind-down.sh

clean:
	rm -rf $(VENV) $(STORE) .pytest_cache
