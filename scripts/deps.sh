#!/usr/bin/env bash
# Installs the Debian packages GQUIC builds and tests with, and only those that are missing.
# Idempotent and quiet when everything is present. Needs root (or sudo) the first time.
set -euo pipefail

# Libraries the package links (pkg-config names are checked by SwiftPM) and the tools tests drive:
# zstd (anchor), ngtcp2 sample peers (interop), avahi + dbus (mDNS in namespaces), skopeo (OCI
# export check), iproute2 + nftables (network-namespace harness), prometheus (promtool).
PACKAGES=(
  pkg-config
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev libnghttp3-dev
  libavahi-client-dev libzstd-dev libssl-dev
  zstd ngtcp2-server ngtcp2-client
  avahi-daemon avahi-utils dbus
  skopeo iproute2 nftables util-linux
  ${GQUIC_EXTRA_PACKAGES:-}
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: done"
