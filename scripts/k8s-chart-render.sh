#!/usr/bin/env bash
# Prints what the operator's Helm chart renders (release "strait" in namespace
# strait-system) for the values given as JSON in $1, as one YAML stream.
# Uses the same Helm SDK venv as k8s-chart-lint.sh, installing it if needed.
set -euo pipefail

CACHE_DIR="${CACHE_DIR:-$HOME/.cache/strait}"
VENV="$CACHE_DIR/venv-helm"
CHART="$(cd "$(dirname "$0")/.." && pwd)/charts/strait-operator"

test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import helm_python, yaml' 2>/dev/null || "$VENV/bin/pip" install -q 'helm-python-sdk>=0.2,<0.3' pyyaml

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
