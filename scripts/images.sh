#!/usr/bin/env bash
# Builds the broker's and the operator's container images, FROM scratch:
# one static binary each (glibc linked in), an /etc/passwd naming the
# unprivileged user 65532, and for the operator Debian's CA bundle (its
# Kubernetes client refuses to start without system roots), nothing else. No base image is downloaded and no
# daemon runs: Debian's umoci writes OCI image layouts, which skopeo, podman,
# containerd (`ctr image import`) and kind read.
#
#   scripts/images.sh OUT_DIR
#
# OUT_DIR/broker and OUT_DIR/operator are OCI layouts tagged with the
# workspace version, and OUT_DIR/<name>-<version>.oci.tar the same as
# archives. To push: skopeo copy oci:OUT_DIR/broker:<version> docker://ghcr.io/strait/broker:<version>
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:?usage: scripts/images.sh OUT_DIR}")
command -v umoci >/dev/null && test -s /etc/ssl/certs/ca-certificates.crt || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq umoci ca-certificates
}
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
target=x86_64-unknown-linux-gnu
# A target directory of its own: other RUSTFLAGS would rebuild everything.
target_dir="${CARGO_TARGET_DIR:-target}/image"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
  cargo build --profile image --target "$target" -p strait-broker -p strait-operator
bin_dir="$target_dir/$target/image"

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# image NAME BINARY DESCRIPTION [FILE...]: FILEs are copied from this machine.
image() {
  local name=$1 binary=$2 description=$3
  shift 3
  local layout="$out/$name" bundle="$work/$name"
  rm -rf "$layout"
  umoci init --layout "$layout"
  umoci new --image "$layout:$version"
  umoci unpack --image "$layout:$version" "$bundle"
  local root="$bundle/rootfs"
  install -D -m 0755 "$bin_dir/$binary" "$root/usr/local/bin/$binary"
  install -d -m 0755 "$root/etc"
  # The user by name too, for tools that look it up; no shell, no home.
  echo "nonroot:x:65532:65532:nonroot:/nonexistent:/usr/local/bin/$binary" >"$root/etc/passwd"
  echo "nonroot:x:65532:" >"$root/etc/group"
  # Mount points of the read-only root: the pods mount volumes here.
  install -d -m 1777 "$root/tmp"
  for file in "$@"; do
    install -D -m 0644 "$file" "$root$file"
  done
  umoci repack --image "$layout:$version" "$bundle"
  umoci config --image "$layout:$version" \
    --os linux --architecture amd64 \
    --config.user 65532:65532 \
    --config.entrypoint "/usr/local/bin/$binary" \
    --config.workingdir / \
    --config.label "org.opencontainers.image.title=$name" \
    --config.label "org.opencontainers.image.description=$description" \
    --config.label "org.opencontainers.image.version=$version" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0"
  umoci gc --layout "$layout"
  tar -C "$layout" -cf "$out/$name-$version.oci.tar" .
  echo "image $name:$version: $layout ($(du -sh "$layout" | cut -f1))"
}

image broker strait-broker "The Strait MQTT broker"
image operator strait-operator "The Strait operator" /etc/ssl/certs/ca-certificates.crt
