# shellcheck shell=bash
# Network-namespace harness for real GQUIC peers (sourced by up.sh, test-netns.sh and benchmarks).
#
# Topology: a hub namespace holds a bridge (mcast_snooping 0, so mDNS crosses it); each node
# namespace gets one veth (eth0, 10.77.X.i/24) whose other end is a bridge port in the hub. Nothing
# is created in the host namespace, so runs never touch the host's interfaces and can run side by side.
#
# Per node: upload capped with `tc tbf` on eth0, loss with an nftables numgen rule, and (optionally)
# a dbus-daemon + avahi-daemon pair in a private mount namespace with a tmpfs on /run.
# Delay: the kernel here has no netem, so delay comes from `gquic-relay relay` (user space).
#
# Every name carries GQ_NETNS_PREFIX (default gqs<pid>) and netns_down removes all of it.

GQ_NETNS_PREFIX=${GQ_NETNS_PREFIX:-gqs$$}
GQ_NETNS_SUBNET=${GQ_NETNS_SUBNET:-10.77.$(( $$ % 200 + 20 ))}
GQ_NETNS_STATE=${GQ_NETNS_STATE:-/tmp/$GQ_NETNS_PREFIX.netns}
GQ_NETNS_NODES=0

netns_hub() { echo "$GQ_NETNS_PREFIX-hub"; }
netns_node() { echo "$GQ_NETNS_PREFIX-n$1"; }
netns_ip() { echo "$GQ_NETNS_SUBNET.$1"; }

# netns_up K: creates the hub, the bridge and K node namespaces.
netns_up() {
    local k=$1 hub i ns
    hub=$(netns_hub)
    mkdir -p "$GQ_NETNS_STATE"
    ip netns add "$hub"
    ip -n "$hub" link set lo up
    ip -n "$hub" link add br0 type bridge mcast_snooping 0
    ip -n "$hub" link set br0 up
    for i in $(seq 1 "$k"); do
        ns=$(netns_node "$i")
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$hub" link add "h$i" type veth peer name eth0 netns "$ns"
        ip -n "$hub" link set "h$i" master br0
        ip -n "$hub" link set "h$i" up
        ip -n "$ns" addr add "$(netns_ip "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    GQ_NETNS_NODES=$k
}

# netns_rate I RATE [BURST [LATENCY]]: caps node I's upload (egress of its eth0) with a token bucket,
# e.g. 100mbit. BURST is the bucket (default 256kb), LATENCY the longest a packet may queue, which
# sets the queue limit to RATE × LATENCY + BURST (default 100ms).
netns_rate() {
    ip netns exec "$(netns_node "$1")" tc qdisc replace dev eth0 root tbf rate "$2" burst "${3:-256kb}" latency "${4:-100ms}"
}

# netns_loss I PERCENT: drops PERCENT% of node I's outgoing packets (nftables; the kernel has no netem).
netns_loss() {
    local ns
    ns=$(netns_node "$1")
    ip netns exec "$ns" nft add table inet gqloss
    ip netns exec "$ns" nft add chain inet gqloss out '{ type filter hook output priority 0 ; }'
    if [ "$2" -ge 100 ]; then
        ip netns exec "$ns" nft add rule inet gqloss out oifname eth0 drop
    else
        ip netns exec "$ns" nft add rule inet gqloss out oifname eth0 numgen random mod 100 '<' "$2" drop
    fi
}

# netns_avahi I: starts dbus-daemon and avahi-daemon for node I in a private mount namespace with a
# tmpfs on /run (nothing touches the host's /run). Prints the D-Bus address clients should use.
netns_avahi() {
    local i=$1 ns conf holder
    ns=$(netns_node "$i")
    conf="$GQ_NETNS_STATE/avahi-$i.conf"
    cat >"$conf" <<CONF
[server]
host-name=$GQ_NETNS_PREFIX-n$i
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
publish-workstation=yes
[reflector]
[rlimits]
CONF
    # The shell stays the parent of both daemons (no --fork/-D) and reaps them when they stop.
    ip netns exec "$ns" unshare --mount --propagation private sh -c "
        mount -t tmpfs -o mode=755 tmpfs /run &&
        mkdir -p /run/dbus /run/avahi-daemon || exit 1
        dbus-daemon --system --nofork &
        n=0; while [ ! -S /run/dbus/system_bus_socket ] && [ \$n -lt 100 ]; do sleep 0.05; n=\$((n+1)); done
        avahi-daemon --no-chroot --no-drop-root --no-rlimits -f '$conf' &
        wait" >"$GQ_NETNS_STATE/avahi-$i.log" 2>&1 &
    holder=$!
    echo "$holder" >"$GQ_NETNS_STATE/holder-$i"
    # Wait for the bus socket and avahi's pid file to appear inside the private /run.
    for _ in $(seq 1 50); do
        [ -S "/proc/$holder/root/run/dbus/system_bus_socket" ] && [ -e "/proc/$holder/root/run/avahi-daemon/pid" ] && break
        sleep 0.1
    done
    echo "unix:path=/proc/$holder/root/run/dbus/system_bus_socket"
}

# netns_preflight NAME BIN PROGRAM…: exits with "NAME: FAIL: …" unless we are root and every PROGRAM
# is built in BIN (benchmark scripts call it first).
netns_preflight() {
    local name=$1 bin=$2 b
    shift 2
    [ "$(id -u)" = 0 ] || { echo "$name: FAIL: needs root (network namespaces)" >&2; exit 1; }
    for b in "$@"; do
        [ -x "$bin/$b" ] || { echo "$name: FAIL: no $bin/$b; build first (swift build -c release)" >&2; exit 1; }
    done
}

# netns_bench_begin NAME: for benchmark scripts — a work directory in $WORK (under $TMPDIR), $PIDS
# for the processes the script starts, `fail MESSAGE` (prints "NAME: FAIL: MESSAGE", exits 1), and a
# trap that on any exit stops those processes, removes our namespaces and the work directory.
netns_bench_begin() {
    GQ_BENCH_NAME=$1
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gquic-$1.XXXXXX")
    PIDS=()
    fail() { echo "$GQ_BENCH_NAME: FAIL: $*" >&2; exit 1; }
    trap netns_bench_end EXIT INT TERM
}
netns_bench_end() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    netns_down
    rm -rf "$WORK"
}

# netns_exec I CMD…: runs a command in node I's namespace.
netns_exec() { local i=$1; shift; ip netns exec "$(netns_node "$i")" "$@"; }

# netns_down: kills every process in our namespaces, deletes them and the state directory.
# Safe to call more than once and on a half-built setup. Daemons go first, so the holder shells
# are still there to reap them.
netns_down() {
    local ns pids f holders=""
    for f in "$GQ_NETNS_STATE"/holder-*; do [ -e "$f" ] && holders="$holders $(cat "$f")"; done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$GQ_NETNS_PREFIX-" || true); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        for p in $pids; do case " $holders " in *" $p "*) ;; *) kill "$p" 2>/dev/null || true ;; esac; done
    done
    sleep 0.3
    for p in $holders; do kill "$p" 2>/dev/null || true; done
    sleep 0.1
    for ns in $(ip netns list | awk '{print $1}' | grep "^$GQ_NETNS_PREFIX-" || true); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] && { kill -9 $pids 2>/dev/null || true; }
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$GQ_NETNS_STATE"
}

# netns_leftovers: prints anything of ours that still exists (empty when clean).
netns_leftovers() {
    ip netns list | awk '{print $1}' | grep "^$GQ_NETNS_PREFIX-" || true
    [ -e "$GQ_NETNS_STATE" ] && echo "$GQ_NETNS_STATE"
    return 0
}
