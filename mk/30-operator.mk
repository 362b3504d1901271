# The operator: its CRDs, and the Kubernetes control plane (etcd,
# kube-apiserver, kube-controller-manager 1.20.2) its integration tests run on.
# The binaries are built once from Debian's source package and cached under
# $(CACHE_DIR)/k8s-1.20.2, or taken from KUBEBUILDER_ASSETS when that folder
# has all three. The tests read STRAIT_K8S_BIN and fail when it is missing
# (set STRAIT_SKIP_K8S=1 to skip them explicitly).

STRAIT_K8S_BIN ?= $(shell if [ -x "$$KUBEBUILDER_ASSETS/kube-controller-manager" ] && [ -x "$$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$$KUBEBUILDER_ASSETS/etcd" ]; then echo "$$KUBEBUILDER_ASSETS"; else echo "$(CACHE_DIR)/k8s-1.20.2"; fi)
export STRAIT_K8S_BIN

DEPS_TARGETS += deps-k8s
TEST_TARGETS += chart-lint
BENCH_TARGETS += bench-operator


.PHONY: deps-k8s crds chart-lint bench-operator operator-test

deps-k8s:
	@CACHE_DIR="$(CACHE_DIR)" scripts/k8s-control-plane.sh >/dev/null

# One file per CRD, in crds/ and in the chart (a test fails when they drift).
crds:
	$(CARGO) run -q -p strait-operator -- crd --out-dir crds
	$(CARGO) run -q -p strait-operator -- crd --out-dir charts/strait-operator/files/crds

# Helm lint (strict) plus checks of the rendered chart, via helm-python-sdk.
chart-lint:
	@CACHE_DIR="$(CACHE_DIR)" scripts/k8s-chart-lint.sh

operator-test: deps-k8s
	$(CARGO) test -p strait-operator

bench-operator: deps-k8s
	$(CARGO) test --release -p strait-operator --test bench -- --ignored --nocapture
