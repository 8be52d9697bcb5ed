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

clean:
	$(CARGO) clean
