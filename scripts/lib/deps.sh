#!/usr/bin/env bash
# Installs the Debian packages tern's build and tests need, where they are missing.
# Usage: scripts/lib/deps.sh [extra packages...]
set -euo pipefail

packages=(cmake make gcc libc6-dev pkg-config libuv1-dev zlib1g-dev libcriterion-dev python3 libjansson-dev libgnutls28-dev gnutls-bin libisal-dev liburing-dev iproute2 iputils-ping clang libclang-rt-dev "$@")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null; then
    SUDO=(sudo)
else
    echo "deps: missing packages ${missing[*]} and not root; install them with apt-get" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
