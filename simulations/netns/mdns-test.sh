#!/usr/bin/env bash
# mDNS discovery between network namespaces, with real avahi-daemon and dbus-daemon per namespace.
#
#   simulations/netns/mdns-test.sh [PROBE_BINARY]      (needs root; run by `make test-mdns`)
#
# Builds N namespaces on a bridge (hub namespace, mcast_snooping off). In each, a private mount
# namespace with a tmpfs on /run hosts its own dbus-daemon and avahi-daemon (own host-name=,
# allow-interfaces=eth0), so nothing touches the host's /run. Then:
#   1. every namespace publishes a node with `gquic-mdns-probe publish`;
#   2. every namespace browses and must resolve the other N-1 node IDs;
#   3. one publisher is killed (SIGKILL) and a running browser must see its goodbye ("lost").
# Everything the script starts is stopped by the EXIT trap: processes, namespaces, temp files.
set -euo pipefail

N=${GQUIC_MDNS_NODES:-3}
PROBE=${1:-.build/debug/gquic-mdns-probe}
PROBE=$(readlink -f "$PROBE")
CLUSTER="mdnstest-$$"
TAG="gqm$$"
TMP=$(mktemp -d /tmp/gquic-mdns.XXXXXX)
PIDS=()
GROUPS_STARTED=()
NSS=()

log() { echo "mdns-test: $*"; }
die() { log "FAIL: $*"; for f in "$TMP"/*.out "$TMP"/*.log; do [[ -s $f ]] && { echo "--- $f"; tail -n 20 "$f"; }; done; exit 1; }

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  # Holders stop their avahi-daemon and dbus-daemon and reap them on SIGTERM.
  for f in "$TMP"/holder.*; do [[ -f $f ]] && kill -TERM "$(cat "$f")" 2>/dev/null; done
  for k in $(seq 50); do
    alive=0; for pgid in "${GROUPS_STARTED[@]}"; do kill -0 -- "-$pgid" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && break; sleep 0.1
  done
  # Each holder was started with setsid: its process group (id = its pid) holds its dbus-daemon
  # and avahi-daemon; kill exactly those groups.
  for pgid in "${GROUPS_STARTED[@]}"; do kill -KILL -- "-$pgid" 2>/dev/null; done
  sleep 0.2
  for ns in "${NSS[@]}"; do ip netns delete "$ns" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || { log "needs root (network namespaces)"; exit 1; }
[[ -x $PROBE ]] || { log "no probe binary at $PROBE (swift build --product gquic-mdns-probe)"; exit 1; }
for tool in ip unshare nsenter dbus-daemon avahi-daemon setsid; do
  command -v "$tool" >/dev/null || { log "missing $tool (make deps)"; exit 1; }
done

HUB="${TAG}hub"
ip netns add "$HUB"; NSS+=("$HUB")
ip -n "$HUB" link add br0 type bridge mcast_snooping 0
ip -n "$HUB" link set br0 up

for i in $(seq 1 "$N"); do
  ns="${TAG}n$i"
  ip netns add "$ns"; NSS+=("$ns")
  ip link add "${TAG}v$i" type veth peer name eth0 netns "$ns"
  ip link set "${TAG}v$i" netns "$HUB"
  ip -n "$HUB" link set "${TAG}v$i" master br0 up
  ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  cat > "$TMP/avahi.$i.conf" <<CONF
[server]
host-name=${TAG}-node$i
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
[reflector]
[rlimits]
CONF
  # The holder: a new session (so cleanup can kill its whole group), a private mount namespace with
  # tmpfs on /run, dbus-daemon and avahi-daemon in the foreground of background jobs, then sleep.
  setsid ip netns exec "$ns" unshare --mount --propagation private sh -c '
    mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/dbus /run/avahi-daemon
    dbus-daemon --system --nofork --nopidfile >"$0/dbus.$1.log" 2>&1 &
    D=$!
    for k in $(seq 100); do [ -S /run/dbus/system_bus_socket ] && break; sleep 0.05; done
    avahi-daemon --no-chroot --no-rlimits -f "$0/avahi.$1.conf" >"$0/avahi.$1.log" 2>&1 &
    A=$!
    trap "kill $A; wait $A; kill $D; wait $D; exit 0" TERM
    echo $$ >"$0/holder.$1"
    while kill -0 $A 2>/dev/null; do sleep 1 & wait $!; done' "$TMP" "$i" &
  GROUPS_STARTED+=("$!")
done

for i in $(seq 1 "$N"); do
  for k in $(seq 100); do [[ -s $TMP/holder.$i ]] && break; sleep 0.05; done
  [[ -s $TMP/holder.$i ]] || die "namespace $i did not come up"
done
# Wait for every avahi-daemon to finish probing its host name.
for i in $(seq 1 "$N"); do
  for k in $(seq 100); do grep -q "Server startup complete" "$TMP/avahi.$i.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "Server startup complete" "$TMP/avahi.$i.log" || die "avahi-daemon $i did not start"
done
log "$N namespaces, each with dbus-daemon + avahi-daemon, on a bridge"

# Runs a command inside namespace i's network and mount namespaces (so it reaches that
# namespace's D-Bus system bus at /run/dbus). Background jobs call nsenter directly, so $! is the
# probe's own pid (nsenter execs it).
inns() { local i=$1; shift; nsenter -t "$(cat "$TMP/holder.$i")" -m -n "$@"; }

# 1. Publish one node per namespace.
for i in $(seq 1 "$N"); do
  nsenter -t "$(cat "$TMP/holder.$i")" -m -n "$PROBE" publish --cluster "$CLUSTER" --port $((7400 + i)) >"$TMP/publish.$i.out" 2>&1 &
  PIDS+=("$!"); echo "$!" >"$TMP/publisher.$i"
done
for i in $(seq 1 "$N"); do
  for k in $(seq 100); do grep -q '^published' "$TMP/publish.$i.out" && break; sleep 0.1; done
  grep -q '^published' "$TMP/publish.$i.out" || die "node $i did not publish"
done
declare -A ID
for i in $(seq 1 "$N"); do ID[$i]=$(awk '/^node /{print $2; exit}' "$TMP/publish.$i.out"); done
log "published: ${ID[*]}"

# A long-running browser in namespace 1 watches for the goodbye later.
nsenter -t "$(cat "$TMP/holder.1")" -m -n "$PROBE" browse --cluster "$CLUSTER" --seconds 60 >"$TMP/watch.out" 2>&1 &
WATCH=$!; PIDS+=("$WATCH")

# 2. Every namespace must find the other N-1 nodes.
start=$(date +%s.%N)
for i in $(seq 1 "$N"); do
  inns "$i" "$PROBE" browse --cluster "$CLUSTER" --expect $((N - 1)) --ignore "${ID[$i]}" --seconds 20 \
    >"$TMP/browse.$i.out" 2>&1 || die "namespace $i did not find the other $((N - 1)) nodes"
  for j in $(seq 1 "$N"); do
    [[ $j == "$i" ]] && continue
    grep -q "^found ${ID[$j]} 10.77.0.$j:$((7400 + j)) cluster=$CLUSTER v=1" "$TMP/browse.$i.out" \
      || die "namespace $i did not resolve node $j (${ID[$j]}) at 10.77.0.$j:$((7400 + j))"
  done
done
log "every namespace resolved the other $((N - 1)) node IDs with address, port, cluster and version ($(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $start}") s)"

# 3. Kill the last publisher outright; avahi-daemon withdraws its records and sends the goodbye.
victim=$N
for k in $(seq 100); do grep -q "^found ${ID[$victim]}" "$TMP/watch.out" && break; sleep 0.1; done
victim_pid=$(cat "$TMP/publisher.$victim")
kill -KILL "$victim_pid"
wait "$victim_pid" 2>/dev/null || true
t0=$(date +%s.%N)
for k in $(seq 100); do grep -q "^lost ${ID[$victim]}" "$TMP/watch.out" && break; sleep 0.1; done
grep -q "^lost ${ID[$victim]}" "$TMP/watch.out" || die "no goodbye for node $victim seen in namespace 1"
log "goodbye for killed node $victim seen in namespace 1 after $(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $t0}") s"
# The others are still there.
for j in $(seq 1 $((N - 1))); do
  grep -q "^lost ${ID[$j]}" "$TMP/watch.out" && die "node $j was reported lost but is alive"
done
log "mDNS probe phase passed"

# 4. Real daemons: one gquic-peer per namespace, no seeds, mDNS on. They must find each other
#    through avahi, agree on membership, and mark a killed one dead.
PEER=$(dirname "$PROBE")/gquic-peer
if [[ -x $PEER ]]; then
  PEER_CLUSTER="peers-$$"
  declare -A PEER_PID
  for i in $(seq 1 "$N"); do
    "$PEER" init --data "$TMP/peer$i" >/dev/null
    GQUIC_NODE_CLUSTER=$PEER_CLUSTER nsenter -t "$(cat "$TMP/holder.$i")" -m -n \
      "$PEER" run --data "$TMP/peer$i" --listen "10.77.0.$i:7400" >"$TMP/peer.$i.log" 2>&1 &
    PEER_PID[$i]=$!; PIDS+=("$!")
  done
  alive_on() {  # live members (self included) that node $1 sees
    "$PEER" status --data "$TMP/peer$1" --json 2>/dev/null | python3 -c 'import json,sys; print(sum(1 for m in json.load(sys.stdin)["members"] if m["state"].startswith("alive")))' 2>/dev/null || echo 0
  }
  start=$(date +%s.%N)
  for i in $(seq 1 "$N"); do
    for k in $(seq 300); do [[ $(alive_on "$i") == "$N" ]] && break; sleep 0.1; done
    [[ $(alive_on "$i") == "$N" ]] || die "daemon $i sees $(alive_on "$i") of $N members (no seeds: mDNS only)"
  done
  log "$N gquic-peer daemons found each other by mDNS alone and agree on $N live members ($(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $start}") s)"
  victim_id=$("$PEER" status --data "$TMP/peer$N" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["node"]["id"])')
  state_of_victim() {  # the killed daemon's state in node $1's view
    "$PEER" status --data "$TMP/peer$1" --json 2>/dev/null | python3 -c 'import json,sys
v=[m["state"] for m in json.load(sys.stdin)["members"] if m["id"]==sys.argv[1]]; print(v[0] if v else "absent")' "$victim_id" 2>/dev/null
  }
  kill -KILL "${PEER_PID[$N]}"
  t0=$(date +%s.%N)
  for i in $(seq 1 $((N - 1))); do
    for k in $(seq 300); do [[ $(state_of_victim "$i") == dead ]] && break; sleep 0.1; done
    [[ $(state_of_victim "$i") == dead ]] || die "daemon $i has the killed daemon as $(state_of_victim "$i"), not dead"
  done
  log "every other daemon marked the killed one dead within $(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $t0}") s"
  for i in $(seq 1 $((N - 1))); do kill -TERM "${PEER_PID[$i]}"; done
else
  log "no gquic-peer next to the probe; daemon phase skipped"
fi
log "PASS"
