#!/usr/bin/env bash
# Integration test of the namespace harness: three namespaces on a bridge, each with its own
# dbus + avahi, per-node rate limits and loss rules; UDP through gquic-relay gains the configured
# delay (measured); afterwards nothing of ours is left.
# Usage: simulations/netns/test-netns.sh [path/to/gquic-relay]   (root; make test-netns runs it)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RELAY=${1:-$HERE/../../.build/debug/gquic-relay}
DELAY_MS=${DELAY_MS:-25}
# shellcheck source=lib.sh
. "$HERE/lib.sh"

fail() { echo "test-netns: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
[ -x "$RELAY" ] || fail "no relay binary at $RELAY; run swift build first"
trap netns_down EXIT INT TERM

echo "test-netns: bringing up 3 namespaces ($GQ_NETNS_PREFIX, $GQ_NETNS_SUBNET.0/24)"
netns_up 3
for i in 1 2 3; do netns_rate "$i" 100mbit; done
netns_loss 3 0   # the rule is installed and matches nothing: checks nftables works here
for i in 1 2 3; do
    addr=$(netns_avahi "$i")
    holder=$(cat "$GQ_NETNS_STATE/holder-$i")
    [ -S "/proc/$holder/root/run/dbus/system_bus_socket" ] || fail "dbus did not start in node $i: $(cat "$GQ_NETNS_STATE/avahi-$i.log")"
    [ -e "/proc/$holder/root/run/avahi-daemon/pid" ] || fail "avahi did not start in node $i: $(cat "$GQ_NETNS_STATE/avahi-$i.log")"
    echo "test-netns: node $i up at $(netns_ip "$i"), D-Bus $addr"
done
# mDNS across the bridge: node 2's avahi resolves node 3's host name (through node 2's own bus).
bus2="unix:path=/proc/$(cat "$GQ_NETNS_STATE/holder-2")/root/run/dbus/system_bus_socket"
resolved=""
for _ in $(seq 1 20); do
    resolved=$(DBUS_SYSTEM_BUS_ADDRESS=$bus2 netns_exec 2 avahi-resolve -4 -n "$GQ_NETNS_PREFIX-n3.local" 2>/dev/null || true)
    [ -n "$resolved" ] && break
    sleep 0.25
done
echo "$resolved" | grep -q "$(netns_ip 3)" || fail "node 2 could not resolve node 3 over mDNS (got: $resolved)"
echo "test-netns: mDNS works between namespaces: $resolved"

# Echo in node 3, relay in node 1 (forwarding to node 3 with DELAY_MS each way), probes from node 2.
netns_exec 3 "$RELAY" echo --listen "$(netns_ip 3):9001" &
netns_exec 1 "$RELAY" relay --listen "$(netns_ip 1):9000" --to "$(netns_ip 3):9001" --delay-ms "$DELAY_MS" &
sleep 0.5
direct=$(netns_exec 2 "$RELAY" probe --to "$(netns_ip 3):9001" --count 10 --interval-ms 10)
relayed=$(netns_exec 2 "$RELAY" probe --to "$(netns_ip 1):9000" --count 10 --interval-ms 10)
echo "test-netns: direct  $direct"
echo "test-netns: relayed $relayed (configured $DELAY_MS ms each way)"
p50() { echo "$1" | sed -n 's/.*p50=\([0-9.]*\).*/\1/p'; }
lost() { echo "$1" | sed -n 's/.*lost=\([0-9]*\).*/\1/p'; }
[ "$(lost "$direct")" = 0 ] && [ "$(lost "$relayed")" = 0 ] || fail "probes were lost"
want=$((2 * DELAY_MS))
awk -v got="$(p50 "$relayed")" -v base="$(p50 "$direct")" -v want="$want" 'BEGIN {
    extra = got - base
    if (extra < want - 1 || extra > want + 10) { printf "relay added %.2f ms, expected %d ms\n", extra, want; exit 1 }
    printf "test-netns: relay added %.2f ms to the round trip (expected %d ms)\n", extra, want }' \
    || fail "the relay's delay is off"

# Loss rule: 100% loss from node 2 makes its probes fail, proving the nftables path is live.
netns_loss 2 100
if netns_exec 2 "$RELAY" probe --to "$(netns_ip 3):9001" --count 3 --interval-ms 10 --timeout-ms 200 >/dev/null; then
    fail "a 100% loss rule let traffic through"
fi
echo "test-netns: nftables loss rule drops traffic"

netns_down
trap - EXIT INT TERM
left=$(netns_leftovers)
[ -z "$left" ] || fail "left behind: $left"
# No process of ours survives: the relay, echo, dbus and avahi ran only inside our namespaces.
for f in /proc/[0-9]*/cmdline; do
    if { tr '\0' ' ' <"$f"; } 2>/dev/null | grep -q -- "$GQ_NETNS_PREFIX-n\|$GQ_NETNS_SUBNET\."; then fail "process left: $f"; fi
done
echo "test-netns: PASS (torn down to nothing)"
