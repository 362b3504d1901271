# mqtt.js (npm package `mqtt`), a third independent MQTT client, for the
# WebSocket interop test (broker/tests/interop_mqttjs.rs), installed under the cache.

NODE_DIR := $(CACHE_DIR)/node
export STRAIT_NODE_MODULES := $(NODE_DIR)/node_modules
DEPS_TARGETS += deps-node

.PHONY: deps-node
deps-node:
	@command -v node >/dev/null && command -v npm >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	@test -f $(STRAIT_NODE_MODULES)/mqtt/package.json || \
	  { mkdir -p $(NODE_DIR) && npm install --prefix $(NODE_DIR) --no-audit --no-fund --silent 'mqtt@5'; }
