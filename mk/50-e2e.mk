# The whole system on one machine (e2e/): a control plane, the node agent
# running every pod as a real process in a network namespace of its own,
# the operator installed by its Helm chart, two linked regions.
#
# `make run`  brings it up with manifests/local/two-regions.yaml and keeps it
#             running until Ctrl-C (needs root: network namespaces, mounts).
# `make e2e`  runs the scenarios (e2e/tests/) and the container images'
#             check, part of `make test`.

DEPS_TARGETS += deps-e2e
TEST_TARGETS += e2e

.PHONY: deps-e2e e2e run-preflight

# iproute2 (ip netns, veth, bridge) and dnsmasq (cluster DNS); util-linux
# (unshare, mount) and coreutils (chroot) are part of every Debian.
deps-e2e:
	@command -v ip >/dev/null && command -v dnsmasq >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 dnsmasq-base; }

# Says up front what `make run` needs, before anything is built.
run-preflight:
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "make run needs root: it gives each broker pod a network namespace, a veth pair on a"; \
	  echo "bridge and mounts of its own, as a kubelet and a CNI plugin would (sudo make run)."; \
	  exit 1; fi
	@echo "make run: the first run builds the Kubernetes control plane from Debian's source (about 8 minutes, once)"

e2e: deps-e2e deps-k8s deps-clients images
	$(CARGO) build -p strait-broker -p strait-operator
	STRAIT_BIN_DIR=$(abspath $(BENCH_TARGET_DIR))/debug STRAIT_IMAGES_DIR=$(IMAGES_DIR) \
	  $(CARGO) test -p strait-e2e -- --test-threads=1
