#!/usr/bin/env bash
# The federated demo (issue 18, docs/federation.md): a 3-node NATS hub
# cluster, Jiyuan's three demo zones each as its own zone aggregator with its
# agent (simulated meters and declarations, as `zonesync-demo`) and its own
# NATS leaf node in its own JetStream domain, and a Jiyuan city center
# reading the hub stream. Prints the center's dashboard URL; Ctrl-C stops
# everything it started.
#
#   scripts/federation-demo.sh              # builds the binaries first (cargo build)
#   scripts/federation-demo.sh --no-build   # uses target/debug as it is
#
# Needs nats-server (scripts/test.sh installs it: apt-get install nats-server).
# Ports: picked from FEDERATION_DEMO_PORT (default 14200) upwards, skipping
# any in use; the center's HTTP port is printed. Files: a temporary directory
# (FEDERATION_DEMO_DIR to keep them elsewhere), removed on exit unless given.
set -euo pipefail

cd "$(dirname "$0")/.."
build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (see --help)" >&2; exit 2 ;;
  esac
done

nats_server=$(command -v nats-server || true)
[ -z "$nats_server" ] && [ -x /usr/sbin/nats-server ] && nats_server=/usr/sbin/nats-server
if [ -z "$nats_server" ]; then
  echo "nats-server is not installed: run scripts/test.sh (or apt-get install nats-server)" >&2
  exit 1
fi

if [ "$build" = 1 ]; then
  echo "== building zonesync-demo and zonesync-aggregator"
  cargo build -q -p zonesync-demo -p zonesync-aggregator --bins
fi
bin="${CARGO_TARGET_DIR:-target}/debug"
for b in zonesync-demo zonesync-aggregator; do
  [ -x "$bin/$b" ] || { echo "$bin/$b is missing: run without --no-build" >&2; exit 1; }
done

if [ -n "${FEDERATION_DEMO_DIR:-}" ]; then
  dir="$FEDERATION_DEMO_DIR"; keep=1; mkdir -p "$dir"
else
  dir=$(mktemp -d -t zonesync-federation-demo.XXXXXX); keep=0
fi

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping ..."
  # Children first in reverse order (the center, then the zones, then NATS), each by its own pid.
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ "$keep" = 1 ] || rm -rf "$dir"
  echo "stopped"
}
trap stop EXIT
trap 'exit 130' INT TERM

next_port=${FEDERATION_DEMO_PORT:-14200}
port() { # the next free loopback port from next_port on, in $REPLY (no subshell: next_port moves)
  while (exec 3<>"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; do next_port=$((next_port + 1)); done
  REPLY=$next_port; next_port=$((next_port + 1))
}
wait_port() { # $1 port, $2 what
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not start (port $1); logs kept in $dir" >&2; keep=1; exit 1
}

zones=(jiyuan-hitech jiyuan-etdz jiyuan-services)
secret() { echo "demo-$1-$RANDOM$RANDOM$RANDOM"; }

# --- The hub: 3 clustered nodes, JetStream domain "hub", account FED with
# the center's user and one user per zone that may neither publish nor
# subscribe to any tally subject (tallies reach the hub by sourcing only).
center_pw=$(secret center)
users="      { user: \"center\", password: \"$center_pw\" }"
declare -A zone_pw
for z in "${zones[@]}"; do
  zone_pw[$z]=$(secret "$z")
  users="$users
      { user: \"$z\", password: \"${zone_pw[$z]}\", permissions: { publish: { deny: [\"zonesync.tallies.>\"] }, subscribe: { deny: [\"zonesync.tallies.>\"] } } }"
done
declare -a hub_client hub_route hub_leaf
for i in 1 2 3; do
  port; hub_client[$i]=$REPLY; port; hub_route[$i]=$REPLY; port; hub_leaf[$i]=$REPLY
done
for i in 1 2 3; do
  d="$dir/hub-$i"; mkdir -p "$d"
  routes=""
  for j in 1 2 3; do [ "$j" = "$i" ] || routes="$routes${routes:+,} \"nats-route://127.0.0.1:${hub_route[$j]}\""; done
  cat > "$d/nats.conf" <<EOF
server_name: hub-$i
listen: "127.0.0.1:${hub_client[$i]}"
jetstream { store_dir: "$d/js", domain: "hub" }
cluster { name: zonesync-hub, listen: "127.0.0.1:${hub_route[$i]}", routes: [$routes ] }
accounts {
  FED: {
    jetstream: enabled
    users: [
$users
    ]
  }
}
leafnodes { listen: "127.0.0.1:${hub_leaf[$i]}" }
EOF
  "$nats_server" -c "$d/nats.conf" 2>"$d/nats.log" & pids+=($!)
done
for i in 1 2 3; do wait_port "${hub_client[$i]}" "hub-$i"; done

# --- Each zone: a leaf node in its own domain, linked to the hub as the
# zone's user, and the zone's demo aggregator and agent publishing to it.
declare -A zone_http
for z in "${zones[@]}"; do
  d="$dir/$z"; mkdir -p "$d"
  port; leaf=$REPLY
  remotes=""
  for i in 1 2 3; do remotes="$remotes${remotes:+,} \"nats-leaf://$z:${zone_pw[$z]}@127.0.0.1:${hub_leaf[$i]}\""; done
  cat > "$d/leaf.conf" <<EOF
server_name: zone-$z
listen: "127.0.0.1:$leaf"
jetstream { store_dir: "$d/js", domain: "zone-$z" }
leafnodes { reconnect: 1, remotes: [ { urls: [$remotes ] } ] }
EOF
  "$nats_server" -c "$d/leaf.conf" 2>"$d/leaf.log" & pids+=($!)
  wait_port "$leaf" "zone $z's leaf node"
  port; zone_http[$z]=$REPLY
  port; zone_mqtt=$REPLY
  RUST_LOG=${RUST_LOG:-warn} "$bin/zonesync-demo" --data "$d/demo" --zone "$z" \
    --federation-nats "nats://127.0.0.1:$leaf" --http-port "${zone_http[$z]}" --mqtt-port "$zone_mqtt" \
    >"$d/demo.out" 2>"$d/demo.log" & pids+=($!)
done
for z in "${zones[@]}"; do wait_port "${zone_http[$z]}" "zone $z's aggregator"; done

# --- The Jiyuan city center: the demo's registry (the three zones of 济源),
# the hub stream sourcing each zone stream, its dashboard at /.
port; center_http=$REPLY
sources=""
for z in "${zones[@]}"; do
  sources="$sources
[[nats.source]]
zone = \"$z\"
domain = \"zone-$z\""
done
cat > "$dir/center.toml" <<EOF
registry = "$dir/${zones[0]}/demo/registry.toml"
stale_after_s = 30
[http]
listen = "127.0.0.1:$center_http"
[nats]
url = "nats://127.0.0.1:${hub_client[1]}"
user = "center"
password = "$center_pw"
domain = "hub"
create_stream = true
replicas = 3
$sources
EOF
RUST_LOG=${RUST_LOG:-info} "$bin/zonesync-aggregator" center -c "$dir/center.toml" \
  >"$dir/center.out" 2>"$dir/center.log" & pids+=($!)
wait_port "$center_http" "the center"

base="http://127.0.0.1:$center_http"
echo "zonesync federated demo is running (Ctrl-C stops it)"
echo "  center dashboard:   $base/"
echo "  city goals (济源):  $base/api/v1/cities/济源/goals"
echo "  province goals:     $base/api/v1/province/goals"
echo "  cities:             $base/api/v1/cities"
echo "  center status:      $base/api/v1/center/status"
for z in "${zones[@]}"; do
  echo "  zone $z: http://127.0.0.1:${zone_http[$z]}/dashboard/"
done
echo "  hub:                nats://127.0.0.1:${hub_client[1]} (3 nodes, JetStream domain hub)"
echo "  files and logs:     $dir"

# Until Ctrl-C, or until any process it started ends.
wait -n "${pids[@]}" || true
echo "a process ended; logs kept in $dir" >&2
keep=1
exit 1
