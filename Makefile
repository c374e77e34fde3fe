# DON Predictor. `make demo` and `make test` each install what they need first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STORE ?= .demo-store

.PHONY: install demo test test-fast test-chart test-operator e2e bench lint manifests clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,serve,ops,dev]'
	touch $(STAMP)

## Train both model families on the embedded synthetic data into $(STORE) and serve them.
demo: install
	$(BIN)/python -m scripts.demo --store $(STORE)

## The whole suite (what CI runs).
test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not apiserver and not e2e"

bench: install
	$(BIN)/python benchmarks/serve.py

clean:
	rm -rf $(VENV) $(STORE) .pytest_cache
