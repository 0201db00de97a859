#!/usr/bin/env bash
# Live-migration benchmark (not part of the test suite): tern against QEMU (Debian's
# qemu-system-x86) on the same 1 GiB RAM image over loopback, tern's throughput against a plain
# loopback sender/receiver, and tern's downtime for an idle and a dirtying guest. All in one
# run; see scripts/lib/bench_migrate.py. TERN_BENCH_RUNS sets the runs per side (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lib/deps.sh qemu-system-x86 gnutls-bin
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
exec python3 scripts/lib/bench_migrate.py build/tern build/tests/guest
