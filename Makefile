# quorumkv: build, test and run a local cluster. See README.md.
SHELL := /bin/bash
CARGO ?= cargo
# The cluster file; absolute, or relative to the repository root.
CONFIG ?= cluster.toml
ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
CONFIG_PATH := $(if $(filter /%,$(CONFIG)),$(CONFIG),$(ROOT)$(CONFIG))

.PHONY: all build test lint fmt bench cluster stop status ring clean

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

bench:
	$(CARGO) bench --locked --bench core

## Shows the ring the cluster file describes.
ring: build
	$(ROOT)target/release/quorumkv ring --config $(CONFIG_PATH)

cluster stop status:
	@echo "make $@: not yet. Nodes, gossip and the HTTP API arrive with issue 3 (cluster runtime);" >&2
	@echo "today 'make test' runs the core suite and 'make ring' shows the ring of $(CONFIG)." >&2
	@exit 1

clean:
	$(CARGO) clean
