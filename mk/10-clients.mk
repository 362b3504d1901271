# Real MQTT peers and clients the integration tests drive: mosquitto and its
# command-line clients (Debian), paho-mqtt (PyPI, in a venv under the cache).

VENV := $(CACHE_DIR)/venv
export STRAIT_PYTHON := $(VENV)/bin/python
DEPS_TARGETS += deps-clients

.PHONY: deps-clients
deps-clients:
	@command -v mosquitto_sub >/dev/null && command -v mosquitto >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients; }
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/python -c 'import paho.mqtt' 2>/dev/null || $(VENV)/bin/pip install -q 'paho-mqtt>=2,<3'
