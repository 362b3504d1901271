# Strait: build, test and benchmark everything from a fresh machine.
#
# `make run`  starts one broker on 127.0.0.1:1883 (admin on 127.0.0.1:8080).
# `make run-linked` starts two clusters, east (1883) and west (2883), linked both ways.
# `make test` installs what the tests need (Debian packages, a Python venv, the
#             Kubernetes control-plane binaries), then runs every test.
# Each area adds its own targets in mk/*.mk and appends to TEST_TARGETS / BENCH_TARGETS.

SHELL := /bin/bash
CARGO ?= cargo
CACHE_DIR ?= $(HOME)/.cache/strait
export CACHE_DIR

TEST_TARGETS :=
BENCH_TARGETS :=
DEPS_TARGETS :=

include $(sort $(wildcard mk/*.mk))

.PHONY: all build run run-cluster run-linked test bench deps fmt fmt-check lint clippy unit

all: build

deps: $(DEPS_TARGETS)

build:
	$(CARGO) build --workspace --release

run:
	$(CARGO) run --release -p strait-broker --bin strait-broker

run-cluster:
	$(CARGO) build --release -p strait-broker --bin strait-broker
	scripts/run-cluster.sh

run-linked:
	$(CARGO) build --release -p strait-broker --bin strait-broker
	scripts/run-linked.sh

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

unit:
	$(CARGO) test --workspace --lib --bins

test: deps fmt-check lint $(TEST_TARGETS)
	$(CARGO) test --workspace --lib --bins --tests

bench: $(BENCH_TARGETS)
