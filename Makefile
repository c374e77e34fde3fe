# DON Predictor. Every target installs what it needs first (the virtualenv in .venv/, then helm,
# kubectl and the Kubernetes binaries on first use, cached under ~/.cache/don-predictor).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STORE ?= .demo-store
KSERVE_MODE ?= Standard
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

# Targets: `make help` prints the first `## ` comment line above each one.
.PHONY: help install demo test test-fast test-chart test-operator e2e images bench manifests docs docs-build docs-ref kind-up kind-e2e kind-down clean

## List every target with what it does.
help:
	@awk '/^## /{if (!doc) doc = substr($$0, 4); next} \
	     /^[a-z][a-z0-9-]*:/{if (doc) printf "  make %-14s %s\n", substr($$1, 1, length($$1) - 1), doc; doc = ""; next} \
	     {doc = ""}' $(MAKEFILE_LIST)

## Create .venv/ with the project and every extra (first time about 2-5 minutes).
## pip prints each package it fetches, but unpacks them silently: a line every 30 s says it is busy.
install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "[install] virtualenv $(VENV) with '.[train,serve,serve-native,ops,console,dev]' (first time: about 2-5 minutes)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@start=$$(date +%s); \
	(while sleep 30 </dev/null >/dev/null 2>&1; do \
	  echo "[install] pip still working, $$(( $$(date +%s) - start )) s so far (unpacking ~3 GB takes 1-2 minutes)"; done) & beat=$$!; \
	$(BIN)/python -m pip install --progress-bar off -e '.[train,serve,serve-native,ops,console,dev]'; rc=$$?; \
	kill $$beat; exit $$rc
	touch $(STAMP)

## The main job: train both families on embedded synthetic data, serve and call them.
## Trains into $(STORE), serves don-rf and don-tf with the model server, calls them over V1 and
## V2 (the forest answers first, while the network trains); Ctrl-C stops the servers.
demo: install
	$(BIN)/python -m scripts.demo --store $(STORE)

## The whole suite (what CI runs): the rest and the end-to-end suite on a real local Kubernetes,
## side by side as two pytest processes (tests/run.py: lines prefixed [tests] / [e2e], both must
## pass, each one's summary repeated at the end; DON_TEST_AT_ONCE=0: one after the other); needs root.
test: install
	$(BIN)/python -m tests.run

## Quick loop while developing: no model training, API server or cluster.
test-fast: install
	$(PYTEST) -m "not slow and not apiserver and not e2e"

## The chart tests alone (real helm; rendered manifests validated offline).
test-chart: install
	$(PYTEST) -m chart

## The operator tests on a real kube-apiserver (no kubelet).
test-operator: install
	$(PYTEST) -m apiserver

## The end-to-end suite alone, with its report (DON_E2E_TARGET=kind for kind).
e2e: install
	flock /tmp/don-e2e.lock $(PYTEST) -m e2e -v

## Build the four images from their Dockerfiles (Debian's docker.io; cached under ~/.cache/don-predictor).
images: install
	$(BIN)/python -m tests.cluster.images

## Serving benchmark: our server vs a plain kserve.Model and the framework's no-op floor.
bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/serve.py

## Write the contract's ModelRollout defaults into the chart, then re-render manifests/ from it
## (a test fails when either is stale).
manifests: install
	$(BIN)/python -m scripts.gen_rollout_defaults
	$(BIN)/python -m scripts.render_manifests

## Serve the documentation site on http://127.0.0.1:8000 (mkdocs serve; reloads on edits).
docs: install
	$(BIN)/python -m mkdocs serve

## Build the documentation site into site/, strictly (a broken link or anchor fails; a test does too).
docs-build: install
	$(BIN)/python -m mkdocs build --strict

## Regenerate docs/reference/ from the code (a test fails when it is stale).
docs-ref: install
	$(BIN)/python -m scripts.gen_docs

# kind path, for machines with Docker and internet (see README "End to end on kind").
## Create a kind cluster with KServe (needs Docker and internet).
kind-up: install
	KSERVE_MODE=$(KSERVE_MODE) tests/cluster/kind/kind-up.sh

## Build the images, load them into kind and run the e2e suite there.
kind-e2e: install
	KSERVE_MODE=$(KSERVE_MODE) PYTHON=$(abspath $(BIN)/python) tests/cluster/kind/kind-e2e.sh

## Delete the kind cluster.
kind-down:
	tests/cluster/kind/kind-down.sh

## Remove the virtualenv and the demo store.
clean:
	rm -rf $(VENV) $(STORE) .pytest_cache site
