# Strait: build, test and benchmark everything from a fresh machine.
#
# `make run`  brings up the whole system on this machine (root): a Kubernetes
#             control plane, the operator installed by its Helm chart, two
#             regions `east` and `west` of three broker pods each, linked.
# `make run-broker` starts one broker on 127.0.0.1:1883 (admin on 127.0.0.1:8080).
# `make run-linked` starts two broker processes, east (1883) and west (2883), linked both ways.
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

.PHONY: all build run run-broker run-cluster run-linked test bench deps fmt fmt-check lint clippy unit

all: build

deps: $(DEPS_TARGETS)

build:
	$(CARGO) build --workspace --release

run: run-preflight deps-k8s deps-e2e deps-clients
	$(CARGO) build --release -p strait-broker -p strait-operator -p strait-e2e
	$(BENCH_TARGET_DIR)/release/strait-e2e up --apply manifests/local/two-regions.yaml \
	  --demo-users-in east --demo-users-in west

run-broker:
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

# The e2e crate's tests run in `make e2e` (one of TEST_TARGETS), one at a time.
test: deps fmt-check lint $(TEST_TARGETS)
	$(CARGO) test --workspace --exclude strait-e2e --lib --bins --tests

bench: $(BENCH_TARGETS)
