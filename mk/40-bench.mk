# Benchmark: Strait against mosquitto and rumqttd under identical MQTT load.
#
# `make bench` builds release binaries, installs rumqttd once into the cache,
# and runs the load generator, which starts each broker in turn on loopback,
# then Strait alone and as a two-node cluster (publishers on one node,
# subscribers on the other), then Strait clusters joined by a link against
# two mosquitto brokers joined by mosquitto's bridge (publishers on one side,
# subscribers on the other, through a relay that counts the bytes and can add
# a round trip), and writes target/bench/report.md. Not part of `make test`.
# `make bench BENCH_ARGS=--quick` is a smoke test of under a minute.

# Not --locked: rumqttd 0.20.0's lock file pins metrics 0.22.1, which current
# rustc refuses (E0521); the latest 0.22.x compiles.
RUMQTTD_VERSION ?= 0.20.0
RUMQTTD_ROOT := $(CACHE_DIR)/rumqttd
RUMQTTD := $(RUMQTTD_ROOT)/bin/rumqttd
BENCH_TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BENCH_ARGS ?=
BENCH_TARGETS += bench-broker

.PHONY: bench-broker
bench-broker: deps-clients
	$(CARGO) build --release -p strait-broker -p strait-loadgen
	@test -x $(RUMQTTD) || $(CARGO) install rumqttd --version $(RUMQTTD_VERSION) --root $(RUMQTTD_ROOT)
	$(BENCH_TARGET_DIR)/release/strait-loadgen \
	  --strait $(BENCH_TARGET_DIR)/release/strait-broker \
	  --mosquitto "$$(command -v mosquitto || echo /usr/sbin/mosquitto)" \
	  --rumqttd $(RUMQTTD) \
	  --out $(BENCH_TARGET_DIR)/bench/report.md \
	  $(BENCH_ARGS)
