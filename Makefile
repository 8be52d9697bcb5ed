# quorumkv: build, test and run a local cluster. See README.md and docs/.
SHELL := /bin/bash
CARGO ?= cargo
# The cluster file; absolute, or relative to the repository root.
CONFIG ?= cluster.toml
ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
CONFIG_PATH := $(if $(filter /%,$(CONFIG)),$(CONFIG),$(ROOT)$(CONFIG))

.PHONY: all build test lint fmt bench cluster stop status ring clean partition heal kill restart simulate fuzz heap-profile

all: build

build:
	$(CARGO) build --release --locked

## The whole suite: formatting, lints, unit, property and integration tests.
test: lint
	$(CARGO) test --locked --benches
	$(CARGO) test --locked --lib --bins --tests

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Criterion micro-benchmarks, then quorumkv against redis-server with redis-benchmark
## (installs Debian's redis-server and redis-tools when missing and run as root).
bench:
	$(CARGO) bench --locked --bench core
	@command -v redis-benchmark >/dev/null && command -v redis-server >/dev/null || \
	  { test "$$(id -u)" = 0 && apt-get install -y redis-server redis-tools >/dev/null; } || \
	  { echo "make bench needs redis-server and redis-benchmark (apt-get install redis-server redis-tools)"; exit 2; }
	$(CARGO) bench --locked --bench resp
	$(CARGO) bench --locked --bench durability
	$(CARGO) bench --locked --bench tls
	$(CARGO) bench --locked --bench memory

## Shows the ring the cluster file describes.
ring: build
	$(ROOT)target/release/quorumkv ring --config $(CONFIG_PATH)

BIN := $(ROOT)target/release/quorumkv

## Builds, creates missing TLS material, starts every node of $(CONFIG) in the background
## (logs and pid files under its data_dir), waits for /health and prints the addresses.
cluster: build
	$(BIN) certs --config $(CONFIG_PATH)
	$(BIN) cluster start --config $(CONFIG_PATH)

## SIGTERM to every node of $(CONFIG) (SIGKILL after 10 s); data is kept.
stop:
	@test -x $(BIN) || $(CARGO) build --release --locked
	$(BIN) cluster stop --config $(CONFIG_PATH)

## Which nodes of $(CONFIG) run, and the membership each sees.
status:
	@test -x $(BIN) || $(CARGO) build --release --locked
	$(BIN) cluster status --config $(CONFIG_PATH)

## Fault injection on a running cluster (needs fault_injection = true in $(CONFIG)).
## make partition GROUPS="n1,n2|n3": each group drops all traffic with the others.
partition:
	@test -n "$(GROUPS)" || { echo 'usage: make partition GROUPS="n1,n2|n3"'; exit 2; }
	@test -x $(BIN) || $(CARGO) build --release --locked
	$(BIN) cluster partition "$(GROUPS)" --config $(CONFIG_PATH)

## Clears every node's injected faults.
heal:
	@test -x $(BIN) || $(CARGO) build --release --locked
	$(BIN) cluster heal --config $(CONFIG_PATH)

## make kill NODE=n2: SIGKILL, as a crash (its in-memory data is lost).
kill:
	@test -n "$(NODE)" || { echo 'usage: make kill NODE=n2'; exit 2; }
	@test -x $(BIN) || $(CARGO) build --release --locked
	$(BIN) cluster kill --id $(NODE) --config $(CONFIG_PATH)

## make restart NODE=n2: starts the node again in the background and waits for its /health.
restart:
	@test -n "$(NODE)" || { echo 'usage: make restart NODE=n2'; exit 2; }
	@test -x $(BIN) || $(CARGO) build --release --locked
	$(BIN) cluster start --id $(NODE) --config $(CONFIG_PATH)

## The deterministic simulation over many seeds (release build): make simulate SEEDS=10000
## (about 38 minutes on 2 cores, in bounded memory: each seed has a runtime of its own).
## Prints every failing seed; QKV_SIM_SEED=<seed> cargo test --test coordinator_sim replays one.
SEEDS ?= 200
simulate:
	QKV_SIM_SEEDS=$(SEEDS) $(CARGO) test --locked --release --test coordinator_sim

## Where a node's memory goes: a node built with dhat as its allocator (target/heap), loaded
## with HEAP_COUNT writes of HEAP_WHAT (strings, sets or hashes), its live memory at the peak
## by allocating function, in bytes per key.
HEAP_WHAT ?= strings
HEAP_COUNT ?= 100000
heap-profile:
	CARGO_TARGET_DIR=$(ROOT)target/heap $(CARGO) build --locked --profile heap --features heap-profile --bin quorumkv
	$(CARGO) run --locked --example heap_profile -- $(ROOT)target/heap/heap/quorumkv $(HEAP_WHAT) $(HEAP_COUNT)

## Coverage-guided fuzzing with cargo-fuzz (libFuzzer; the nightly toolchain, cargo-fuzz installed
## when missing): every target of tests/fuzz for FUZZ_SECONDS each, make fuzz FUZZ_SECONDS=600.
## Starts from the seeds in tests/fuzz/corpus/<target> and every input of tests/fuzz/regressions;
## what libFuzzer adds goes to tests/fuzz/target/corpus/<target>, a crashing input to
## tests/fuzz/artifacts/<target>/.
## Fails if any target crashes, hangs (-timeout) or runs out of memory. Not part of make test.
FUZZ_SECONDS ?= 60
FUZZ_CARGO ?= cargo +nightly
FUZZ_DIR := $(ROOT)tests/fuzz
FUZZ_TARGETS ?= $$($(FUZZ_CARGO) fuzz list --fuzz-dir $(FUZZ_DIR))
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@failed=""; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  mkdir -p $(FUZZ_DIR)/target/corpus/$$t && \
	  $(FUZZ_CARGO) fuzz run --fuzz-dir $(FUZZ_DIR) $$t \
	    $(FUZZ_DIR)/target/corpus/$$t $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/regressions -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets that failed:$$failed"; exit 1; fi

clean:
	$(CARGO) clean
