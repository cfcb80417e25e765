# Every habit is one command. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_VERSION := 26.3
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)

.PHONY: help venv build wheel run tour system-deps test test-rust test-python lint lint-tree lint-rust lint-python bench proto lock clean

help: ## List the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	touch $@

venv: $(VENV)/.installed ## Create .venv with the pinned dependencies

build: venv ## Build the Rust extension (release) into the virtual environment
	maturin develop --release --quiet

wheel: venv ## An abi3 wheel for operators in dist/ (release build)
	maturin build --release --out dist

run: build ## The main job: 4 validators on 127.0.0.1 (LMDB) and the demo story
	$(VENV)/bin/medledger demo

tour: build ## A tour of the Rust core on a signed 10,000-transaction block
	$(PY) examples/core_tour.py

lint-tree:
	bash tools/check_self_contained.sh

lint-rust:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

lint-python: build
	ruff check .
	ruff format --check .
	mypy
	lint-imports
	$(PY) -m mypy.stubtest medledger._core

lint: lint-tree lint-rust lint-python ## self-contained tree, rustfmt, clippy, ruff, mypy, import layers and stubtest

# Never fails: without root or apt-get it says why it installed nothing (the partition
# tests then skip what needs the tools, saying so).
system-deps: ## nftables and iproute2 for the partition tests, chromium for the explorer's browser test (as root, apt-get)
	@if command -v nft >/dev/null && command -v ip >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "system-deps: nft or ip missing; not root, so not installing nftables/iproute2"; \
	elif ! command -v apt-get >/dev/null; then echo "system-deps: nft or ip missing and no apt-get; install nftables and iproute2 by hand"; \
	else echo "system-deps: installing nftables and iproute2 (apt-get)"; export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends nftables iproute2 >/dev/null \
		|| { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends nftables iproute2 >/dev/null; } \
		|| echo "system-deps: apt-get failed; the partition tests will skip what needs nftables"; fi
	@if command -v chromedriver >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "system-deps: chromium or chromedriver missing; not root, so not installing chromium/chromium-driver (the explorer's browser test skips)"; \
	elif ! command -v apt-get >/dev/null; then echo "system-deps: chromium missing and no apt-get; install chromium and chromium-driver by hand (the explorer's browser test skips)"; \
	else echo "system-deps: installing chromium and chromium-driver (apt-get)"; export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null \
		|| { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } \
		|| echo "system-deps: apt-get failed; the explorer's browser test will skip"; fi

test-rust:
	cargo test --locked -p medledger-core

test-python: build system-deps
	$(PY) -m pytest tests

test: lint test-rust test-python ## Everything CI runs: lints, cargo test, pytest

bench: build ## Benchmarks beside their peers; one HTML report in bench/results/report/
	mkdir -p bench/results
	rm -f bench/results/report/*.data.json
	$(PY) -m pytest bench --benchmark-only --benchmark-json=bench/results/latest.json \
		--benchmark-columns=min,median,rounds --benchmark-sort=name -p no:cacheprovider -q
	$(PY) bench/report.py bench/results/latest.json
	$(VENV)/bin/medledger bench node --txs 100000 --json bench/results/node.json --report bench/results/report
	$(VENV)/bin/medledger bench cluster --validators 4 --txs 60000 --json bench/results/cluster.json --report bench/results/report
	$(VENV)/bin/medledger bench records --json bench/results/records.json --report bench/results/report
	$(VENV)/bin/medledger bench channels --json bench/results/channels.json --report bench/results/report
	$(PY) -m medledger.bench.report bench/results/report --peers bench/results/latest.json

proto: venv ## Regenerate python/medledger/wire from proto/
	rm -rf python/medledger/wire
	$(PY) tools/gen_proto.py

lock: ## Re-resolve requirements-dev.in into requirements-dev.lock
	rm -rf /tmp/medledger-lock && $(PYTHON) -m venv /tmp/medledger-lock
	/tmp/medledger-lock/bin/pip install --quiet pip==$(PIP_VERSION) -r requirements-dev.in
	{ head -2 requirements-dev.lock; /tmp/medledger-lock/bin/pip freeze; } > requirements-dev.lock.new
	mv requirements-dev.lock.new requirements-dev.lock

clean: ## Remove build outputs and the virtual environment
	rm -rf $(VENV) target python/medledger/_core*.so .mypy_cache .ruff_cache .pytest_cache
