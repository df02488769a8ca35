#!/usr/bin/env bash
# Installs the Debian packages GQUIC builds and tests with, and only those that are missing.
# Idempotent and quiet when everything is present. Needs root (or sudo) the first time.
set -euo pipefail

# Each area lists what it needs in scripts/deps.d/<area>.txt (package names, # comments).
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t PACKAGES < <(sed 's/#.*//' "$here"/deps.d/*.txt | tr -s ' \t' '\n' | grep -v '^$' | sort -u)

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
