#!/usr/bin/env bash
# Builds (once) and caches the Kubernetes 1.20.2 control-plane binaries the
# operator's integration tests and `make run` use: etcd, kube-apiserver,
# kube-controller-manager, and kubectl of the same version (for users of
# `make run` and the end-to-end scenarios, which drive the system as a user would).
#
# No kube-apiserver is published to the package registries this project may use,
# so it is built from Debian bookworm's `kubernetes` source package (the whole
# 1.20.2 tree, vendor/ included). Idempotent: when the cache already holds the
# binaries, nothing happens. When KUBEBUILDER_ASSETS names a folder that already
# holds etcd and kube-apiserver (the controller-runtime envtest convention), that
# folder is used as is and nothing is built.
#
# Prints the folder holding the binaries on its last line of stdout (for
# STRAIT_K8S_BIN). Everything else goes to stderr.
set -euo pipefail

CACHE_DIR="${CACHE_DIR:-$HOME/.cache/strait}"
BIN_DIR="$CACHE_DIR/k8s-1.20.2"
BUILD_DIR="$CACHE_DIR/k8s-build"
NEEDED=(etcd kube-apiserver kube-controller-manager kubectl)

log() { echo "k8s-control-plane: $*" >&2; }

have_all() {
  local dir="$1" b
  for b in "${NEEDED[@]}"; do
    [[ -x "$dir/$b" ]] || return 1
  done
}

SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# The tests make keys with openssl and probe the API server with curl.
if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then
  log "installing openssl and curl"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq openssl curl >&2
fi

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && [[ -x "$KUBEBUILDER_ASSETS/etcd" ]] && [[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]]; then
  if [[ -x "$KUBEBUILDER_ASSETS/kube-controller-manager" ]]; then
    log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    echo "$KUBEBUILDER_ASSETS"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS lacks kube-controller-manager (garbage collection needs it); building"
fi

if have_all "$BIN_DIR"; then
  log "cached in $BIN_DIR"
  echo "$BIN_DIR"
  exit 0
fi

# Debian packages: the Go toolchain, etcd, and the reflect2 copy that works with Go >= 1.18.
SRC_LIST=/etc/apt/sources.list.d/strait-bookworm-src.sources
if [[ ! -f "$SRC_LIST" ]]; then
  log "adding deb-src for bookworm main"
  $SUDO tee "$SRC_LIST" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  $SUDO apt-get update -qq
fi
if ! command -v go >/dev/null || ! [[ -x /usr/bin/etcd ]] || ! [[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]] || ! command -v rsync >/dev/null; then
  log "installing golang-go etcd-server rsync reflect2"
  $SUDO apt-get install -y -qq golang-go etcd-server rsync golang-github-modern-go-reflect2-dev >&2
fi

mkdir -p "$BUILD_DIR"
cd "$BUILD_DIR"
if ! ls kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
  log "downloading the kubernetes source package"
  apt-get source --download-only kubernetes >&2
fi
TREE="$BUILD_DIR/tree"
if [[ ! -f "$TREE/.strait-prepared" ]]; then
  rm -rf "$TREE"
  mkdir -p "$TREE"
  log "unpacking"
  tar -xzf kubernetes_*.orig.tar.gz -C "$TREE" --strip-components=1
  # The vendored reflect2 1.0.1 crashes under Go >= 1.18 at the first watch of a
  # custom resource; Debian's patched copy does not.
  rm -rf "$TREE/vendor/github.com/modern-go/reflect2"
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$TREE/vendor/github.com/modern-go/reflect2"
  rm -f "$TREE/vendor/github.com/modern-go/reflect2/go.mod"
  mkdir -p "$TREE/.go/src/k8s.io"
  ln -sfn ../../.. "$TREE/.go/src/k8s.io/kubernetes"
  touch "$TREE/.strait-prepared"
fi

cd "$TREE"
# A failed make leaves a zero-byte generator behind: always start from a clean _output.
rm -rf _output
log "building kube-apiserver, kube-controller-manager and kubectl (several minutes, once)"
env GOPATH="$TREE/.go" CGO_ENABLED=0 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl" >&2

mkdir -p "$BIN_DIR.tmp"
for b in kube-apiserver kube-controller-manager kubectl; do
  cp "_output/local/bin/linux/amd64/$b" "$BIN_DIR.tmp/"
done
cp /usr/bin/etcd "$BIN_DIR.tmp/etcd"
rm -rf "$BIN_DIR"
mv "$BIN_DIR.tmp" "$BIN_DIR"
# The tree is large (several GB with the Go build cache); the binaries are what is kept.
rm -rf "$TREE/_output"
log "cached in $BIN_DIR"
echo "$BIN_DIR"
