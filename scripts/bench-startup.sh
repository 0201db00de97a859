#!/usr/bin/env bash
# Startup benchmark: time from launching `tern run` to the first serial byte of the hello guest
# (median of 20), and tern's resident memory beyond guest RAM while a guest runs. Prints each
# figure with its ratio to the target (10 ms, 4 MiB; Firecracker publishes <= 8 CPU-ms to start
# and <= 5 MiB of overhead).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lib/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

python3 - <<'PY'
import os, signal, statistics, subprocess, time

tern = "build/tern"
hello = "build/tests/guest/hello.elf"
runs = []
for _ in range(20):
    t0 = time.perf_counter()
    p = subprocess.Popen([tern, "run", "--mem", "64M", "--kernel", hello],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    first = p.stdout.read(1)
    t1 = time.perf_counter()
    p.stdout.read()
    assert p.wait() == 0 and first, "hello failed"
    runs.append((t1 - t0) * 1000)
median = statistics.median(runs)
print(f"startup to first serial byte: median {median:.2f} ms over 20 runs "
      f"(min {min(runs):.2f}, max {max(runs):.2f}); target 10 ms: ratio {median / 10:.2f}")

# Resident memory beyond guest RAM: every mapping but guest RAM, which tern names
# [anon:tern-guest-ram] where the kernel supports VMA names, and is otherwise the one mapping of
# exactly --mem bytes.
p = subprocess.Popen([tern, "run", "--mem", "256M", "--cpus", "2", "--kernel",
                      "build/tests/guest/memstamp.elf", "--cmdline", "mib=64 passes=0 every=100000"],
                     stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
time.sleep(1.0)
guest_kib = other_kib = 0
current_is_guest = False
with open(f"/proc/{p.pid}/smaps") as f:
    for line in f:
        parts = line.split()
        if "-" in parts[0] and len(parts) >= 5 and ":" not in parts[0]:
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            current_is_guest = (line.rstrip().endswith("[anon:tern-guest-ram]")
                                or hi - lo == 256 << 20)
        elif parts[0] == "Rss:":
            if current_is_guest:
                guest_kib += int(parts[1])
            else:
                other_kib += int(parts[1])
p.send_signal(signal.SIGTERM)
p.wait()
print(f"RSS beyond guest RAM: {other_kib / 1024:.2f} MiB (guest RAM resident: {guest_kib / 1024:.1f} MiB); "
      f"target 4 MiB: ratio {other_kib / 1024 / 4:.2f}")
PY
