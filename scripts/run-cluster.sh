#!/usr/bin/env bash
# Starts a three-node Strait cluster on loopback: MQTT on 127.0.0.1:1883-1885,
# admin on 127.0.0.1:8080-8082, peers on 127.0.0.1:7946-7948. Ctrl-C stops all.
set -euo pipefail

bin=${STRAIT_BROKER:-target/release/strait-broker}
dir=target/run-cluster
mkdir -p "$dir"
# One secret for the whole cluster, made once.
[ -s "$dir/cluster-secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/cluster-secret"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for i in 0 1 2; do
  cat > "$dir/node-$i.yaml" <<YAML
node: {cluster: local, name: node-$i}
listeners: [{bind: "127.0.0.1:$((1883 + i))"}]
admin: {bind: "127.0.0.1:$((8080 + i))"}
cluster:
  bind: "127.0.0.1:$((7946 + i))"
  secretFile: $dir/cluster-secret
  peers: ["127.0.0.1:7946", "127.0.0.1:7947", "127.0.0.1:7948"]
YAML
  "$bin" --config "$dir/node-$i.yaml" &
  pids+=($!)
done
echo "cluster 'local': MQTT on 127.0.0.1:1883, :1884, :1885; try"
echo "  mosquitto_sub -p 1883 -t 'demo/#' -v   and   mosquitto_pub -p 1885 -t demo/hi -m hello"
echo "  curl -s http://127.0.0.1:8080/api/v1/cluster"
wait
