#!/usr/bin/env bash
# Prints what the operator's Helm chart renders (release "strait" in namespace
# strait-system) for the values given as JSON in $1, as one YAML stream.
# Uses the Helm SDK venv of helm-venv.sh, as k8s-chart-lint.sh does.
set -euo pipefail

source "$(dirname "$0")/helm-venv.sh"

"$VENV/bin/python" - "$CHART" "${1:-{\}}" <<'PY'
import json
import sys
import yaml
import helm_python as helm

chart = helm.Chart.load(sys.argv[1])
values = json.loads(sys.argv[2])
docs = []
for text in chart.render(values, name="strait", namespace="strait-system", is_install=True).values():
    docs.extend(d for d in yaml.safe_load_all(text) if d)
print(yaml.safe_dump_all(docs))
PY
