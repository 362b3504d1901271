#!/usr/bin/env bash
# Lints the operator's Helm chart and checks what it renders, with Helm's Go
# SDK through PyPI's helm-python-sdk (installed once into a venv under the cache).
set -euo pipefail

source "$(dirname "$0")/helm-venv.sh"

"$VENV/bin/python" - "$CHART" <<'PY'
import glob, os, sys
import yaml
import helm_python as helm

chart_path = sys.argv[1]
result = helm.lint(chart_path, strict=True)
if result["errors"]:
    sys.exit(f"helm lint: {result['errors']}")

def render(values):
    chart = helm.Chart.load(chart_path)
    docs = []
    for text in chart.render(values, name="strait", namespace="strait-system", is_install=True).values():
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs

def kinds(docs):
    return sorted(d["kind"] for d in docs)

cluster_wide = render({})
# The CRDs are rendered (so `helm upgrade` updates them), kept on uninstall,
# and left out by a second release that sets crds.install=false.
crds = [d for d in cluster_wide if d["kind"] == "CustomResourceDefinition"]
assert sorted(d["metadata"]["name"] for d in crds) == ["clusterlinks.strait.dev", "mqttclusters.strait.dev"], crds
for crd in crds:
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep", crd["metadata"]
    with open(os.path.join(chart_path, "files", "crds", f"strait.dev_{crd['spec']['names']['plural']}.yaml")) as f:
        generated = yaml.safe_load(f)
    del crd["metadata"]["annotations"]
    assert crd == generated, f"{crd['metadata']['name']} renders differently from its generated file"
assert "CustomResourceDefinition" not in kinds(render({"crds": {"install": False}}))
assert "ClusterRole" in kinds(cluster_wide), kinds(cluster_wide)
namespaced = render({"watchNamespace": "mqtt"})
assert "ClusterRole" not in kinds(namespaced), "a namespaced install needs no cluster-wide rights"
deployment = next(d for d in cluster_wide if d["kind"] == "Deployment")
container = deployment["spec"]["template"]["spec"]["containers"][0]
assert container["securityContext"]["readOnlyRootFilesystem"] is True
for rule in next(d for d in cluster_wide if d["kind"] == "ClusterRole")["rules"]:
    assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
# The per-region values examples pass the schema and render.
for example in sorted(glob.glob(os.path.join(chart_path, "examples", "*.yaml"))):
    with open(example) as f:
        docs = render(yaml.safe_load(f))
    assert "ClusterRole" not in kinds(docs), f"{example} watches one namespace"

# values.schema.json refuses what the chart cannot use, naming the value.
for bad, name in [({"replicaCount": -1}, "replicaCount"), ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"), ({"replicas": 2}, "replicas")]:
    try:
        render(bad)
    except Exception as error:
        assert name in str(error), f"{bad}: {error}"
    else:
        sys.exit(f"values.schema.json accepted {bad}")
# The images the chart names are the ones `make images` builds: this version.
with open(os.path.join(chart_path, "Chart.yaml")) as f:
    app_version = yaml.safe_load(f)["appVersion"]
with open(os.path.join(chart_path, "..", "..", "Cargo.toml")) as f:
    import re
    workspace_version = re.search(r'^\[workspace\.package\]\nversion = "([^"]+)"', f.read(), re.M).group(1)
assert app_version == workspace_version, f"Chart appVersion {app_version} != workspace version {workspace_version}"
with open(os.path.join(chart_path, "values.yaml")) as f:
    defaults = yaml.safe_load(f)
assert defaults["brokerImage"] == f"ghcr.io/strait/broker:{app_version}", defaults["brokerImage"]
assert container["image"] == f"{defaults['image']['repository']}:{app_version}", container["image"]
print("chart: lint clean, renders cluster-wide and namespaced installs and the CRDs, refuses bad values")
PY
