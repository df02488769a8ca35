#!/usr/bin/env bash
# Real gquic-peer daemons in network namespaces fetching one blob from one seed at the same moment.
#
#   swarm.sh test              1 seed + 4 peers, 64 MiB, no caps: every copy must verify (make test)
#   swarm.sh bench [N…]        1 seed + N peers (default 4 8), 256 MiB, each node's upload capped at
#                              100 Mbit/s with tc tbf; completion times vs the fluid lower bound, and
#                              a BitTorrent swarm (aria2c + opentracker) in the same namespaces
#
# Environment: BIN (gquic-peer/gquic-fetch directory, default .build/release for bench and
# .build/debug for test), MIB (blob size), RATE (tbf rate, e.g. 100mbit), JSON (bench output file),
# ARIA=0 (bench: skip the aria2c anchor, for quick before/after runs of our side; writes no JSON),
# KEEP_LOGS=DIR (keep the daemons' logs: test mode on failure, bench mode in DIR/nN after each run).
# Needs root. Everything it starts lives in namespaces it creates and is removed at the end.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

MODE=${1:-test}; shift || true
if [ "$MODE" = test ]; then BIN=${BIN:-.build/debug}; MIB=${MIB:-64}; RATE=${RATE:-}; SIZES=(4)
else BIN=${BIN:-.build/release}; MIB=${MIB:-256}; RATE=${RATE:-100mbit}; SIZES=("${@:-4}"); [ $# -gt 0 ] || SIZES=(4 8); fi
BIN=$(cd "$BIN" && pwd)
JSON=${JSON:-simulations/results/bench-swarm-netns.json}
WORK=$(mktemp -d /tmp/gquic-swarm.XXXXXX)
chmod 755 "$WORK"   # opentracker drops to nobody and must read its whitelist here
PORT=7400

fail() { echo "swarm: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (network namespaces)"
for b in gquic-peer gquic-fetch; do [ -x "$BIN/$b" ] || fail "no $BIN/$b; build first"; done
cleanup() { netns_down; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

head -c $((MIB << 20)) /dev/urandom > "$WORK/blob.bin"
SUM=$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)
MAXN=0; for n in "${SIZES[@]}"; do [ "$n" -gt "$MAXN" ] && MAXN=$n; done
netns_up $((MAXN + 1))
if [ -n "$RATE" ]; then for i in $(seq 1 $((MAXN + 1))); do netns_rate "$i" "$RATE"; done; fi
echo "swarm: $((MAXN + 1)) namespaces up ($GQ_NETNS_SUBNET.0/24), blob $MIB MiB${RATE:+, upload $RATE per node}"

# Bytes node 1 (the seed) has sent through its uplink's qdisc, frame headers included.
seed_wire_bytes() { netns_exec 1 tc -s qdisc show dev eth0 | awk '/Sent/ { print $2; exit }'; }

# run_gquic N: seed = node 1, peers = nodes 2..N+1; prints one line per peer
# "i seconds ok|BAD committed": seconds until `get` has written its verified copy out of the store
# (-o, not fsynced), committed = seconds until the blob was verified and committed in the store (the same minus
# the export call, which `get --json` times; older gquic-fetch: minus seconds − transfer_seconds).
run_gquic() {
    local n=$1 i pids=() seed
    seed="$(netns_ip 1):$PORT"
    for i in $(seq 1 $((n + 1))); do
        rm -rf "$WORK/g$i"; "$BIN/gquic-peer" init --data "$WORK/g$i" >/dev/null
        local seeds=(); [ "$i" -gt 1 ] && seeds=(--seed "$seed")
        netns_exec "$i" "$BIN/gquic-peer" run --data "$WORK/g$i" --listen "$(netns_ip "$i"):$PORT" --no-mdns \
            --log-level "${LOGLEVEL:-warning}" "${seeds[@]}" 2>"$WORK/g$i.log" &
    done
    for i in $(seq 1 $((n + 1))); do
        for _ in $(seq 100); do [ -S "$WORK/g$i/control.sock" ] && break; sleep 0.1; done
        [ -S "$WORK/g$i/control.sock" ] || fail "gquic-peer $i did not start: $(tail -3 "$WORK/g$i.log")"
    done
    local d; d=$("$BIN/gquic-fetch" add --data "$WORK/g1" "$WORK/blob.bin")
    [ "$d" = "sha256:$SUM" ] || fail "add printed $d"
    # Let membership link everyone (the swarm asks linked peers and cluster-state holders).
    for _ in $(seq 100); do
        local all=1
        for i in $(seq 1 $((n + 1))); do
            [ "$("$BIN/gquic-peer" status --data "$WORK/g$i" --json | python3 -c 'import json,sys; print(sum(1 for m in json.load(sys.stdin)["members"] if m["state"].startswith("alive")))')" = $((n + 1)) ] || all=0
        done
        [ $all = 1 ] && break; sleep 0.2
    done
    # Like aria2c, which writes into its file and does not fsync it, the copy is not fsynced
    # (--no-sync; gquic-fetch builds without the flag fsync it). The store's copy is durable anyway.
    local nosync=(); "$BIN/gquic-fetch" get --help 2>&1 | grep -q -- --no-sync && nosync=(--no-sync)
    local wire0; wire0=$(seed_wire_bytes)
    local t0; t0=$(now)
    for i in $(seq 2 $((n + 1))); do
        ( "$BIN/gquic-fetch" get --data "$WORK/g$i" "$d" -o "$WORK/g$i.out" "${nosync[@]}" --json >"$WORK/g$i.get.json" 2>"$WORK/g$i.get.err"
          echo "$? $(now)" > "$WORK/g$i.done" ) &
        pids+=($!)
    done
    wait "${pids[@]}"
    for i in $(seq 2 $((n + 1))); do
        read -r rc t < "$WORK/g$i.done"
        local verdict=BAD
        [ "$rc" = 0 ] && [ "$(sha256sum "$WORK/g$i.out" | cut -d' ' -f1)" = "$SUM" ] && verdict=ok
        local ex; ex=$(python3 -c 'import json,sys
try: j = json.load(open(sys.argv[1]))
except Exception: print(0); sys.exit()
print(j.get("export_seconds") or float(j["seconds"]) - float(j.get("transfer_seconds") or j["seconds"]))' "$WORK/g$i.get.json")
        echo "$i $(secs "$t0" "$t") $verdict $(awk -v a="$(secs "$t0" "$t")" -v e="$ex" 'BEGIN { printf "%.2f", a - e }')"
        rm -f "$WORK/g$i.out"
    done
    # CPU-seconds (user + system) of all daemons over the run, load-independent, unlike wall time.
    # What the seed uploaded: the fluid bound assumes each byte of the blob leaves it once.
    "$BIN/gquic-peer" status --data "$WORK/g1" --json 2>/dev/null | python3 -c 'import json, sys
links = json.load(sys.stdin).get("links", [])
sent = sum(sum(l.get("sent_bytes", {}).values()) for l in links)
wire = int(sys.argv[2])
print("seed sent %.1f MiB over its links (%.3f× the blob), %.1f MiB on the wire (%.3f×: with packet headers, ACKs, retransmissions)"
      % (sent / 2**20, sent / (int(sys.argv[1]) * 2**20), wire / 2**20, wire / (int(sys.argv[1]) * 2**20)))' "$MIB" $(( $(seed_wire_bytes) - wire0 )) > "$WORK/seed" 2>/dev/null || true
    # Minor page faults too: each is a page of memory touched for the first time (on a VM whose
    # freed memory goes back to the host, one of the costlier things a daemon does per byte).
    local ticks=0 faults=0 p
    for i in $(seq 1 $((n + 1))); do
        p=$(pgrep -f "gquic-peer run --data $WORK/g$i " | head -1); [ -n "$p" ] && [ -r "/proc/$p/stat" ] || continue
        ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
        faults=$((faults + $(awk '{ print $10 }' "/proc/$p/stat")))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$n" -v mib="$MIB" -v f="$faults" \
        'BEGIN { printf "%.1f CPU-s in all daemons, %.2f CPU-s per GiB received, %.0f minor faults per MiB received\n", t / hz, t / hz / (n * mib / 1024), f / (n * mib) }' > "$WORK/cpu"
    for i in $(seq 1 $((n + 1))); do netns_exec "$i" pkill -TERM -f "gquic-peer run --data $WORK/g$i" || true; done
    sleep 0.5
    if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS/n$n" && cp "$WORK"/g*.log "$KEEP_LOGS/n$n"/; fi
}

# run_aria N: the same swarm with aria2c (BitTorrent), opentracker on the seed's node.
run_aria() {
    local n=$1 i pids=() tracker
    tracker="http://$(netns_ip 1):6969/announce"
    rm -rf "$WORK/bt"; mkdir -p "$WORK/bt"
    mktorrent -a "$tracker" -l 18 -o "$WORK/bt/blob.torrent" "$WORK/blob.bin" >/dev/null
    # Debian's opentracker is built with a whitelist: allow this torrent's info hash.
    aria2c -S "$WORK/bt/blob.torrent" | sed -n 's/^Info Hash: //p' > "$WORK/bt/whitelist"
    printf 'listen.tcp_udp %s:6969\naccess.whitelist %s\n' "$(netns_ip 1)" "$WORK/bt/whitelist" > "$WORK/bt/opentracker.conf"
    netns_exec 1 opentracker -f "$WORK/bt/opentracker.conf" >"$WORK/bt/opentracker.log" 2>&1 &
    sleep 0.3
    local common=(--enable-dht=false --enable-dht6=false --bt-enable-lpd=false --file-allocation=none --seed-ratio=0.0
                  --bt-max-peers=0 --summary-interval=0 --console-log-level=warn --bt-tracker-connect-timeout=5
                  --bt-request-peer-speed-limit=0 --listen-port=6881 --allow-overwrite=true)
    mkdir -p "$WORK/bt/1" && ln "$WORK/blob.bin" "$WORK/bt/1/blob.bin"
    netns_exec 1 aria2c "${common[@]}" --check-integrity=true --bt-seed-unverified=true -d "$WORK/bt/1" "$WORK/bt/blob.torrent" >"$WORK/bt/1.log" 2>&1 &
    sleep 1
    local t0; t0=$(now)
    for i in $(seq 2 $((n + 1))); do
        mkdir -p "$WORK/bt/$i"
        printf '#!/bin/sh\ndate +%%s.%%N > %s/bt/%s.done\n' "$WORK" "$i" > "$WORK/bt/hook$i.sh"; chmod +x "$WORK/bt/hook$i.sh"
        netns_exec "$i" aria2c "${common[@]}" --on-bt-download-complete="$WORK/bt/hook$i.sh" -d "$WORK/bt/$i" \
            "$WORK/bt/blob.torrent" >"$WORK/bt/$i.log" 2>&1 &
    done
    local deadline=$(( $(date +%s) + 300 ))
    while [ "$(date +%s)" -lt $deadline ]; do
        local done=0
        for i in $(seq 2 $((n + 1))); do [ -s "$WORK/bt/$i.done" ] && done=$((done + 1)); done
        [ $done = "$n" ] && break; sleep 0.2
    done
    for i in $(seq 2 $((n + 1))); do
        local verdict=BAD t
        if [ -s "$WORK/bt/$i.done" ]; then
            t=$(cat "$WORK/bt/$i.done")
            [ "$(sha256sum "$WORK/bt/$i/blob.bin" | cut -d' ' -f1)" = "$SUM" ] && verdict=ok
            echo "$i $(secs "$t0" "$t") $verdict"
        else
            echo "$i 300 BAD"
        fi
    done
    for i in $(seq 1 $((n + 1))); do netns_exec "$i" pkill -TERM aria2c || true; done
    netns_exec 1 pkill -TERM opentracker || true
    sleep 0.5
}

# summary NAME N RESULTS: median and max completion, all verified?
summary() {
    echo "$3" | sort -k2 -g | awk -v name="$1" -v n="$2" -v bound="$4" '
        { t[NR] = $2; if ($3 != "ok") bad++ }
        END { med = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
              printf "%-8s N=%-2d median %6.2f s  max %6.2f s  (max/bound %.2fx)  %s\n", name, n, med, t[NR], t[NR] / bound,
                     bad ? bad " copies FAILED" : "all copies verified" }'
}

if [ "$MODE" = test ]; then
    res=$(run_gquic 4)
    echo "$res" | sed 's/^/swarm: peer /'
    bad=$(echo "$res" | awk '$3 != "ok"' | wc -l)
    if [ "$bad" != 0 ]; then
        for i in $(echo "$res" | awk '$3 != "ok" { print $1 }'); do
            echo "swarm: peer $i: gquic-fetch said: $(cat "$WORK/g$i.get.err" 2>/dev/null | tail -3)"
            echo "swarm: peer $i: daemon log tail:"; tail -n 15 "$WORK/g$i.log" | sed 's/^/    /'
        done
        echo "swarm: seed log tail:"; tail -n 15 "$WORK/g1.log" | sed 's/^/    /'
        if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$WORK"/g*.log "$WORK"/g*.get.err "$KEEP_LOGS"/ && echo "swarm: logs kept in $KEEP_LOGS"; fi
        fail "$bad of 4 copies missing or corrupt"
    fi
    echo "swarm: 1 seed + 4 peers fetched $MIB MiB in namespaces; all copies verify"
    exit 0
fi

ARIA=${ARIA:-1}
if [ "$ARIA" != 0 ]; then command -v aria2c >/dev/null && command -v opentracker >/dev/null && command -v mktorrent >/dev/null \
    || fail "the anchor needs aria2c, opentracker and mktorrent (make deps installs them)"; fi
rate_bps=$(echo "$RATE" | awk '/mbit$/ { sub("mbit", ""); print $0 * 1e6; next } /gbit$/ { sub("gbit", ""); print $0 * 1e9; next } { print $0 }')
echo "{" > "$JSON.tmp"; first=1
for n in "${SIZES[@]}"; do
    bound=$(awk -v f=$((MIB << 20)) -v u="$rate_bps" -v n="$n" 'BEGIN { a = f * 8 / u; b = n * f * 8 / (u + n * u); printf "%.2f", (a > b) ? a : b }')
    echo "== N=$n: fluid lower bound max(F/u_s, N·F/(u_s+Σu_i)) = $bound s"
    ours=$(run_gquic "$n"); echo "$ours" | sed 's/^/   gquic peer /'; echo "   gquic: $(cat "$WORK/cpu")"
    [ -s "$WORK/seed" ] && echo "   gquic: $(cat "$WORK/seed")"
    summary gquic "$n" "$ours" "$bound"
    summary "  (committed)" "$n" "$(echo "$ours" | awk '{ print $1, $4, $3 }')" "$bound"
    [ "$ARIA" = 0 ] && continue
    bt=$(run_aria "$n"); echo "$bt" | sed 's/^/   aria2c peer /'
    summary aria2c "$n" "$bt" "$bound"
    [ $first = 1 ] || echo "," >> "$JSON.tmp"; first=0
    printf '"N=%s": {"bound_s": %s, "gquic": [%s], "gquic_committed": [%s], "aria2c": [%s]}' "$n" "$bound" \
        "$(echo "$ours" | awk '{ printf "%s%s", (NR > 1 ? ", " : ""), $2 }')" \
        "$(echo "$ours" | awk '{ printf "%s%s", (NR > 1 ? ", " : ""), $4 }')" \
        "$(echo "$bt" | awk '{ printf "%s%s", (NR > 1 ? ", " : ""), $2 }')" >> "$JSON.tmp"
done
echo "}" >> "$JSON.tmp"
if [ "$ARIA" = 0 ]; then rm -f "$JSON.tmp"; echo "no aria2c anchor (ARIA=0): $JSON left as it was (load average $(cut -d' ' -f1-3 /proc/loadavg))"; exit 0; fi
mv "$JSON.tmp" "$JSON"
echo "wrote $JSON (load average $(cut -d' ' -f1-3 /proc/loadavg))"
