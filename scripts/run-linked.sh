#!/usr/bin/env bash
# Starts two single-node clusters on loopback, linked both ways for '#':
#   east: MQTT 127.0.0.1:1883, admin 127.0.0.1:8080, link listener 127.0.0.1:7950
#   west: MQTT 127.0.0.1:2883, admin 127.0.0.1:9080
# West dials east (one side dialling is enough; both directions flow). Ctrl-C stops both.
set -euo pipefail

bin=${STRAIT_BROKER:-target/release/strait-broker}
dir=target/run-linked
mkdir -p "$dir"
# The link's secret stays with west, the dialling side; east keeps only its hash.
[ -s "$dir/west-to-east.secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/west-to-east.secret"
"$bin" link-credential west < "$dir/west-to-east.secret" > "$dir/east-link-credentials"

cat > "$dir/east.yaml" <<YAML
node: {cluster: east, name: east-0}
listeners: [{bind: "127.0.0.1:1883"}]
admin: {bind: "127.0.0.1:8080"}
linkListener: {bind: "127.0.0.1:7950", credentialsFile: $dir/east-link-credentials}
links:
  - {name: west, export: ["#"], import: ["#"]}
YAML
cat > "$dir/west.yaml" <<YAML
node: {cluster: west, name: west-0}
listeners: [{bind: "127.0.0.1:2883"}]
admin: {bind: "127.0.0.1:9080"}
links:
  - name: east
    endpoints: ["127.0.0.1:7950"]
    secretFile: $dir/west-to-east.secret
    export: ["#"]
    import: ["#"]
YAML

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
"$bin" --config "$dir/east.yaml" & pids+=($!)
"$bin" --config "$dir/west.yaml" & pids+=($!)
echo "east (MQTT 1883) and west (MQTT 2883) are linked both ways for '#'; try"
echo "  mosquitto_sub -p 2883 -t 'demo/#' -v   and   mosquitto_pub -p 1883 -t demo/hi -m 'hello from east'"
echo "  curl -s http://127.0.0.1:8080/api/v1/links"
wait
