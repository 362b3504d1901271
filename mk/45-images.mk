# Container images of the broker and the operator (scripts/images.sh):
# FROM scratch around static binaries, written as OCI image layouts by
# Debian's umoci, no daemon and no base image. `make e2e` runs them.
IMAGES_DIR := $(abspath $(BENCH_TARGET_DIR))/images

.PHONY: images

images:
	scripts/images.sh $(IMAGES_DIR)
