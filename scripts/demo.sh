#!/usr/bin/env bash
# make demo: three GQUIC peers on loopback, a 64 MiB sample layer added on one and pulled by the
# other two over QUIC, then `gquic-peer status`. Everything runs from a temporary directory and is
# stopped and removed at the end, whatever happens.
set -euo pipefail
BIN=${BIN:-.build/debug}
WORK=$(mktemp -d /tmp/gquic-demo.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "1. three nodes, each with its own identity and data directory (in $WORK)"
PORTS=()
for n in alpha beta gamma; do
  "$BIN/gquic-peer" init --data "$WORK/$n" | sed -n 2p | sed "s/^/   $n: /"
  PORTS+=("$(free_port)")
done

say "2. start them on loopback; beta and gamma join through alpha"
"$BIN/gquic-peer" run --data "$WORK/alpha" --listen "127.0.0.1:${PORTS[0]}" --no-mdns --log-level warning 2>"$WORK/alpha.log" & PIDS+=($!)
sleep 0.5
"$BIN/gquic-peer" run --data "$WORK/beta"  --listen "127.0.0.1:${PORTS[1]}" --seed "127.0.0.1:${PORTS[0]}" --no-mdns --log-level warning 2>"$WORK/beta.log" & PIDS+=($!)
"$BIN/gquic-peer" run --data "$WORK/gamma" --listen "127.0.0.1:${PORTS[2]}" --seed "127.0.0.1:${PORTS[0]}" --no-mdns --log-level warning 2>"$WORK/gamma.log" & PIDS+=($!)
for n in alpha beta gamma; do
  for _ in $(seq 50); do [ -S "$WORK/$n/control.sock" ] && break; sleep 0.1; done
done
for _ in $(seq 50); do
  members=$("$BIN/gquic-peer" status --data "$WORK/alpha" --json | python3 -c 'import json,sys; print(sum(1 for m in json.load(sys.stdin)["members"] if m["state"].startswith("alive")))')
  [ "$members" -ge 3 ] && break; sleep 0.2
done
echo "   alpha sees $members live members"

say "3. make a 64 MiB sample layer (a tar of generated files) and add it on alpha"
mkdir -p "$WORK/layer/usr/lib/game" "$WORK/layer/etc"
head -c $((40 << 20)) /dev/urandom > "$WORK/layer/usr/lib/game/assets.pak"
python3 -c 'import sys; sys.stdout.write("".join(f"line {i} of a compressible config file\n" for i in range(700000)))' > "$WORK/layer/etc/game.cfg"
tar -C "$WORK/layer" -cf "$WORK/layer.tar" . && ls -l "$WORK/layer.tar" | awk '{printf "   layer.tar: %.1f MiB\n", $5/1048576}'
DIGEST=$("$BIN/gquic-fetch" add --data "$WORK/alpha" "$WORK/layer.tar")
echo "   alpha holds $DIGEST"

say "4. beta pulls it from the mesh"
"$BIN/gquic-fetch" get --data "$WORK/beta" "$DIGEST" -o "$WORK/beta-layer.tar"
say "5. gamma pulls it (alpha and beta both serve chunks now)"
"$BIN/gquic-fetch" get --data "$WORK/gamma" "$DIGEST" -o "$WORK/gamma-layer.tar"
cmp "$WORK/layer.tar" "$WORK/beta-layer.tar" && cmp "$WORK/layer.tar" "$WORK/gamma-layer.tar" && echo "   both copies are byte-exact"

say "6. an OCI image: beta adds a layout, gamma pulls it by name"
python3 scripts/make-oci-layout.py "$WORK/image" --name demo/game-server:1.0 --layers 3 --layer-mib 4 >/dev/null
"$BIN/gquic-fetch" add --data "$WORK/beta" "oci:$WORK/image" | sed 's/^/   beta added /'
for _ in $(seq 50); do "$BIN/gquic-fetch" refs --data "$WORK/gamma" | grep -q demo/game-server && break; sleep 0.1; done
"$BIN/gquic-fetch" pull --data "$WORK/gamma" demo/game-server:1.0 -o "$WORK/pulled-image"
if command -v skopeo >/dev/null; then
  skopeo inspect "oci:$WORK/pulled-image" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("   skopeo inspect: %s/%s, %d layers, %s..." % (d["Os"], d["Architecture"], len(d["Layers"]), d["Digest"][:19]))'
fi

say "7. gquic-peer status on gamma"
"$BIN/gquic-peer" status --data "$WORK/gamma"

say "8. shut everything down (SIGTERM)"
for p in "${PIDS[@]}"; do kill -TERM "$p"; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()
echo "   all peers stopped; removing $WORK"
