#!/usr/bin/env bash
# Multi-process test of the product (issue 9): three gquic-peer daemons on loopback form a cluster; a
# blob added on one is fetched byte-exact on the others through gquic-fetch; status --json shows three
# members; SIGTERM stops each within 2 s with the store consistent; bad config, a second daemon on
# one data directory, and gquic-fetch against a stopped daemon fail clearly. Prints "N passed, N failed".
set -uo pipefail
BIN=${BIN:-.build/debug}
WORK=$(mktemp -d /tmp/gquic-e2e.XXXXXX)
PIDS=()
pass=0; fail=0
ok()   { echo "ok   - $*"; pass=$((pass + 1)); }
bad()  { echo "FAIL - $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for n in a b c; do "$BIN/gquic-peer" init --data "$WORK/$n" >/dev/null; done
PA=$(port); PB=$(port); PC=$(port)
"$BIN/gquic-peer" run --data "$WORK/a" --listen "127.0.0.1:$PA" --no-mdns 2>"$WORK/a.log" & PIDS+=($!)
sleep 0.3
"$BIN/gquic-peer" run --data "$WORK/b" --listen "127.0.0.1:$PB" --seed "127.0.0.1:$PA" --no-mdns 2>"$WORK/b.log" & PIDS+=($!)
"$BIN/gquic-peer" run --data "$WORK/c" --listen "127.0.0.1:$PC" --seed "127.0.0.1:$PA" --no-mdns 2>"$WORK/c.log" & PIDS+=($!)
for n in a b c; do for _ in $(seq 100); do [ -S "$WORK/$n/control.sock" ] && break; sleep 0.1; done; done

alive() { "$BIN/gquic-peer" status --data "$WORK/$1" --json | python3 -c 'import json,sys; print(sum(1 for m in json.load(sys.stdin)["members"] if m["state"].startswith("alive")))'; }
for _ in $(seq 50); do [ "$(alive a)" = 3 ] && [ "$(alive b)" = 3 ] && [ "$(alive c)" = 3 ] && break; sleep 0.2; done
for n in a b c; do check "status --json on $n shows three live members" [ "$(alive $n)" = 3 ]; done

# A client that connects to the control socket and hangs up at once must not kill the daemon.
python3 -c 'import socket,sys
for _ in range(20):
    s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.close()' "$WORK/a/control.sock"
sleep 0.3
survived() { kill -0 "${PIDS[0]}" 2>/dev/null && [ "$(alive a)" = 3 ]; }
check "a client hanging up on the control socket does not kill the daemon" survived

head -c $((24 << 20)) /dev/urandom > "$WORK/blob.bin"
D=$("$BIN/gquic-fetch" add --data "$WORK/a" "$WORK/blob.bin")
check "add through the daemon prints the digest" [ "$D" = "sha256:$(sha256sum "$WORK/blob.bin" | cut -d' ' -f1)" ]
"$BIN/gquic-fetch" get --data "$WORK/b" "$D" -o "$WORK/b.bin" --json >"$WORK/b.get.json" 2>&1
check "b fetched the blob byte-exact" cmp -s "$WORK/blob.bin" "$WORK/b.bin"
check "… written while it arrived (get --json says streamed), no partial file left" \
  sh -c "grep -q '\"streamed\":\"true\"' '$WORK/b.get.json' && ! ls -a '$WORK' | grep -q gquic-partial"
"$BIN/gquic-fetch" get --data "$WORK/c" "$D" -o "$WORK/c.bin" >/dev/null 2>&1
check "c fetched the blob byte-exact" cmp -s "$WORK/blob.bin" "$WORK/c.bin"
check "ls on c lists the blob" sh -c "'$BIN/gquic-fetch' ls --data '$WORK/c' | grep -q '$D'"

# OCI images: added as a layout on a (its ref name recorded cluster-wide), pulled by name on c.
python3 scripts/make-oci-layout.py "$WORK/img" --name gquic/e2e:1.0 --layers 3 --layer-mib 2 >/dev/null
added=$("$BIN/gquic-fetch" add --data "$WORK/a" "oci:$WORK/img" 2>&1)
check "add oci:LAYOUT through the daemon prints the image digest and name" sh -c "echo '$added' | grep -q '^sha256:[0-9a-f]\{64\} gquic/e2e:1.0$'"
for _ in $(seq 50); do "$BIN/gquic-fetch" refs --data "$WORK/c" | grep -q 'gquic/e2e:1.0' && break; sleep 0.1; done
check "refs on c lists the name added on a (replicated cluster state)" sh -c "'$BIN/gquic-fetch' refs --data '$WORK/c' | grep -q 'gquic/e2e:1.0'"
"$BIN/gquic-fetch" pull --data "$WORK/c" gquic/e2e:1.0 -o "$WORK/pulled" >"$WORK/pull.out" 2>&1
check "pull by name on c writes an OCI layout with every blob byte-exact" diff -r "$WORK/img/blobs" "$WORK/pulled/blobs"
check "skopeo inspect accepts the pulled layout" sh -c "skopeo inspect 'oci:$WORK/pulled' >/dev/null 2>&1 || { cat '$WORK/pull.out'; false; }"
out=$("$BIN/gquic-fetch" pull --data "$WORK/b" gquic/nope:9 -o "$WORK/nope" 2>&1); rc=$?
check "pull of an unknown name exits 75 and says how to list names" sh -c "[ $rc -eq 75 ] && echo '$out' | grep -q 'gquic-fetch refs'"

curl -s --unix-socket "$WORK/a/control.sock" http://gquic/metrics > "$WORK/metrics.txt"
check "/metrics has the link and store series" grep -q '^gquic_link_sent_bytes_total{class="bulk"}' "$WORK/metrics.txt"
check "/metrics carries the transport's counters" grep -q '^gquic_quic_packets_lost_total' "$WORK/metrics.txt"
check "promtool check metrics accepts a live /metrics scrape" sh -c "promtool check metrics < '$WORK/metrics.txt' >'$WORK/promtool.out' 2>&1 || { cat '$WORK/promtool.out'; false; }"

# Streamed get interrupted: a seed whose uploads are capped (2 MiB/s) holds 16 MiB; c's get is stopped
# mid-transfer by SIGINT (it asks the daemon to drop the partial file) and by SIGKILL (the daemon sees
# the get's pid gone within half a second). Either way nothing is left at or next to -o.
"$BIN/gquic-peer" init --data "$WORK/s" >/dev/null
GQUIC_TRANSFER_BULK_RATE=2MiB "$BIN/gquic-peer" run --data "$WORK/s" --listen "127.0.0.1:$(port)" --seed "127.0.0.1:$PA" --no-mdns 2>"$WORK/s.log" & PIDS+=($!)
for _ in $(seq 100); do [ -S "$WORK/s/control.sock" ] && break; sleep 0.1; done
head -c $((16 << 20)) /dev/urandom > "$WORK/slow.src"
DS=$("$BIN/gquic-fetch" add --data "$WORK/s" "$WORK/slow.src")
mkdir -p "$WORK/out"
partials() { ls -a "$WORK/out" | grep -c gquic-partial; }
for how in INT KILL; do
  "$BIN/gquic-fetch" get --data "$WORK/c" "$DS" -o "$WORK/out/slow-$how.bin" >/dev/null 2>&1 & g=$!
  for _ in $(seq 60); do [ "$(partials)" -ge 1 ] && break; sleep 0.05; done
  check "a streamed get has its partial file next to -o mid-transfer ($how case)" [ "$(partials)" = 1 ]
  kill -"$how" "$g"; wait "$g" 2>/dev/null; rc=$?
  [ "$how" = INT ] && check "get exits 130 on SIGINT" [ "$rc" = 130 ]
  sleep 1
  check "after SIGKILL or SIGINT of get ($how) no partial file and no output remain" \
    sh -c "[ \"\$(ls -a '$WORK/out' | grep -c -e gquic-partial -e slow-$how)\" = 0 ]"
done
kill -TERM "${PIDS[3]}"; wait "${PIDS[3]}" 2>/dev/null; PIDS=("${PIDS[@]:0:3}")

# Join-token admission: t1 requires a token; t2 (no token) is refused, t3 (the token) joins.
TOKEN=$("$BIN/gquic-peer" token)
for n in t1 t2 t3; do "$BIN/gquic-peer" init --data "$WORK/$n" >/dev/null; done
PT=$(port)
GQUIC_SECURITY_JOIN_TOKEN=$TOKEN "$BIN/gquic-peer" run --data "$WORK/t1" --listen "127.0.0.1:$PT" --no-mdns 2>"$WORK/t1.log" & PIDS+=($!)
sleep 0.3
"$BIN/gquic-peer" run --data "$WORK/t2" --listen "127.0.0.1:$(port)" --seed "127.0.0.1:$PT" --no-mdns 2>"$WORK/t2.log" & PIDS+=($!)
GQUIC_SECURITY_JOIN_TOKEN=$TOKEN "$BIN/gquic-peer" run --data "$WORK/t3" --listen "127.0.0.1:$(port)" --seed "127.0.0.1:$PT" --no-mdns 2>"$WORK/t3.log" & PIDS+=($!)
for _ in $(seq 50); do [ -S "$WORK/t1/control.sock" ] && [ "$(alive t1)" = 2 ] && break; sleep 0.2; done
sleep 1
check "with a join token set, a node holding it joins and one without is refused" [ "$(alive t1)" = 2 ]
check "… and the node without the token sees no live peer" [ "$(alive t2)" = 1 ]
for p in "${PIDS[@]:3}"; do kill -TERM "$p"; wait "$p" 2>/dev/null; done
PIDS=("${PIDS[@]:0:3}")

"$BIN/gquic-peer" run --data "$WORK/a" --listen 127.0.0.1:0 --no-mdns >"$WORK/second.out" 2>&1
check "a second daemon on the same data directory is refused" grep -q "already running" "$WORK/second.out"

for i in 0 1 2; do
  p=${PIDS[$i]}; start=$(date +%s%N); kill -TERM "$p"
  while kill -0 "$p" 2>/dev/null && [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 5000 ]; do sleep 0.02; done
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  check "daemon $i stopped on SIGTERM in ${ms} ms (limit 2000)" [ "$ms" -le 2000 ]
done
PIDS=()
check "c's store verifies clean after shutdown" "$BIN/gquic-fetch" verify --store "$WORK/c/store"

# Cluster state is durable: b, restarted alone (its peers are down), still knows the image name.
"$BIN/gquic-peer" run --data "$WORK/b" --listen "127.0.0.1:$PB" --no-mdns 2>"$WORK/b2.log" & PIDS+=($!)
for _ in $(seq 100); do [ -S "$WORK/b/control.sock" ] && "$BIN/gquic-fetch" refs --data "$WORK/b" >/dev/null 2>&1 && break; sleep 0.1; done
check "cluster state survives a restart (b alone still knows gquic/e2e:1.0)" sh -c "'$BIN/gquic-fetch' refs --data '$WORK/b' | grep -q 'gquic/e2e:1.0'"
kill -TERM "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null; PIDS=()

out=$("$BIN/gquic-fetch" get --data "$WORK/a" "$D" -o "$WORK/x.bin" 2>&1); rc=$?
check "gquic-fetch against a stopped daemon exits non-zero" [ "$rc" -ne 0 ]
check "… and says no daemon is running" sh -c "echo '$out' | grep -q 'no gquic-peer is running'"

printf '[node]\nlisten = "127.0.0.1:1"\nclustr = "x"\n' > "$WORK/bad.conf"
"$BIN/gquic-peer" run --data "$WORK/a" --config "$WORK/bad.conf" >"$WORK/bad.out" 2>&1
check "a malformed config names the key and line" grep -q "bad.conf:3: unknown key node.clustr (did you mean node.cluster?)" "$WORK/bad.out"

echo "peer-e2e: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
