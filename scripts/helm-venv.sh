# Sourced by the chart scripts: sets VENV to a Python venv under the cache
# with Helm's Go SDK (PyPI's helm-python-sdk) and PyYAML, installing them once,
# and CHART to the operator's chart (STRAIT_CHART overrides it: the tests
# install an older copy, then upgrade).
CACHE_DIR="${CACHE_DIR:-$HOME/.cache/strait}"
VENV="$CACHE_DIR/venv-helm"
CHART="${STRAIT_CHART:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/charts/strait-operator}"

test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import helm_python, yaml' 2>/dev/null || "$VENV/bin/pip" install -q 'helm-python-sdk>=0.2,<0.3' pyyaml
