#!/usr/bin/env bash
# Builds tern and runs the bundled demo guests on /dev/kvm: hello, then memstamp on 2 vCPUs
# stamping and verifying 64 MiB of guest RAM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lib/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

echo "\$ tern run --mem 64M --kernel build/tests/guest/hello.elf"
build/tern run --mem 64M --kernel build/tests/guest/hello.elf
echo
echo "\$ tern run --mem 256M --cpus 2 --kernel build/tests/guest/memstamp.elf --cmdline 'mib=64 passes=3'"
build/tern run --mem 256M --cpus 2 --kernel build/tests/guest/memstamp.elf --cmdline 'mib=64 passes=3'
echo "demo: guest exited with status $?"
