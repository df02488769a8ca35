#!/usr/bin/env bash
# Brings up K namespaces on a bridge (each with a rate cap, optional loss and its own dbus + avahi),
# prints how to reach them, and tears everything down on Ctrl-C or when COMMAND finishes.
# Usage: simulations/netns/up.sh K [--rate 100mbit] [--loss PERCENT] [--no-avahi] [-- COMMAND …]
#   Inside COMMAND: GQ_NETNS_PREFIX, GQ_NETNS_SUBNET and GQ_NETNS_NODES are set; node i is
#   namespace $GQ_NETNS_PREFIX-n$i at $GQ_NETNS_SUBNET.$i.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
[ $# -ge 1 ] && [ "$1" -ge 1 ] 2>/dev/null || { sed -n '2,6p' "$0"; exit 2; }
K=$1; shift
RATE=100mbit; LOSS=0; AVAHI=1
while [ $# -gt 0 ]; do
    case $1 in
        --rate) RATE=$2; shift 2 ;;
        --loss) LOSS=$2; shift 2 ;;
        --no-avahi) AVAHI=0; shift ;;
        --) shift; break ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
trap netns_down EXIT INT TERM
netns_up "$K"
for i in $(seq 1 "$K"); do
    netns_rate "$i" "$RATE"
    [ "$LOSS" != 0 ] && netns_loss "$i" "$LOSS"
    bus=""
    [ "$AVAHI" = 1 ] && bus=$(netns_avahi "$i")
    echo "node $i: ip netns exec $(netns_node "$i") …   address $(netns_ip "$i")${bus:+   DBUS_SYSTEM_BUS_ADDRESS=$bus}"
done
export GQ_NETNS_PREFIX GQ_NETNS_SUBNET GQ_NETNS_NODES
if [ $# -gt 0 ]; then "$@"; else echo "up; Ctrl-C tears down"; while true; do sleep 3600; done; fi
