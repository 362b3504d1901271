#!/usr/bin/env bash
# Installs or upgrades the operator's Helm chart on an API server, with Helm's
# Go SDK (PyPI's helm-python-sdk, installed once into a venv under the cache):
#
#   scripts/helm.sh install|upgrade|uninstall KUBECONFIG NAMESPACE [VALUES_FILE...]
#
# The release is named `strait`; the namespace is created when missing.
# STRAIT_CHART names another copy of the chart.
set -euo pipefail

source "$(dirname "$0")/helm-venv.sh"

"$VENV/bin/python" - "$CHART" "$@" <<'PY'
import sys
import yaml
import helm_python as helm

chart, verb, kubeconfig, namespace, *value_files = sys.argv[1:]
values = {}
for path in value_files:
    with open(path) as f:
        values.update(yaml.safe_load(f) or {})
config = helm.Config(kubeconfig_path=kubeconfig, namespace=namespace)
if verb == "install":
    release = config.install(chart, "strait", values, namespace=namespace, create_namespace=True)
elif verb == "upgrade":
    release = config.upgrade(chart, "strait", values, namespace=namespace)
elif verb == "uninstall":
    release = config.uninstall("strait")
else:
    sys.exit(f"helm.sh: unknown verb {verb!r} (install, upgrade or uninstall)")
print(f"helm {verb}: release strait in {namespace}, revision {getattr(release, 'version', '?')}")
PY
