#!/usr/bin/env bash
# Network benchmark, in network namespaces it makes (root): UDP echo through tern's virtio-net
# (the freestanding vnet guest on a TAP of a bridge) against the same traffic over a host veth
# pair to a plain socket echo service, in the same run: datagrams and bytes echoed per second
# with 64 datagrams in flight, small (64-byte) and 1472-byte payloads, and the ratio. Then a
# live migration of the guest between two terns on two TAPs of the bridge under 1000 datagrams
# a second: how many were lost and the longest gap.
# Environment: SECS (per case, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lib/deps.sh
[ "$(id -u)" = 0 ] || { echo "bench-net: needs root (namespaces, TAPs, a bridge, veth)" >&2; exit 1; }
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null

secs=${SECS:-5}
ns=tern-bench-$$
peer=$ns-peer
work=$(mktemp -d /tmp/tern-bench-net-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # Whatever still runs in the namespaces (a guest that moved to the destination) ends too.
    for n in "$ns" "$peer"; do ip netns pids "$n" 2>/dev/null | xargs -r kill 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
    ip netns del "$peer" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
in_ns() { ip netns exec "$ns" "$@"; }

ip netns add "$ns"
ip netns add "$peer"
in_ns ip link set lo up
in_ns ip link add br0 type bridge
for t in tap0 tap1; do
    in_ns ip tuntap add "$t" mode tap
    in_ns ip link set "$t" master br0 up
done
in_ns ip addr add 10.0.0.1/24 dev br0
in_ns ip link set br0 up
ip link add v0 netns "$ns" type veth peer name v1 netns "$peer"
in_ns ip addr add 10.1.0.1/24 dev v0 && in_ns ip link set v0 up
ip -n "$peer" addr add 10.1.0.2/24 dev v1 && ip -n "$peer" link set v1 up

in_ns build/tern run --kernel build/tests/guest/vnet.elf --net tap=tap0 --cmdline every=0 \
    --api-socket "$work/src.sock" >"$work/src.out" 2>&1 &
pids+=($!)
ip netns exec "$peer" build/udpbench echo 7 &
pids+=($!)
for _ in $(seq 200); do grep -q "features" "$work/src.out" && break; sleep 0.05; done

printf '%-18s %12s %10s %12s %10s %8s\n' payload "tern pkt/s" "tern MB/s" "veth pkt/s" \
    "veth MB/s" ratio
for size in 64 1472; do
    read -r t_pps t_mbs < <(in_ns build/udpbench load 10.0.0.2 7 "$size" "$secs")
    read -r v_pps v_mbs < <(in_ns build/udpbench load 10.1.0.2 7 "$size" "$secs")
    printf '%-18s %12.0f %10.1f %12.0f %10.1f %8.2f\n' "$size bytes" "$t_pps" "$t_mbs" "$v_pps" \
        "$v_mbs" "$(python3 -c "print($t_pps / $v_pps)")"
done
echo "(echoes a second with 64 datagrams in flight; tern: host -> TAP -> virtio-net -> guest and back)"

in_ns build/tern run --incoming tcp:127.0.0.1:4480 --net tap=tap1 >"$work/dst.out" 2>&1 &
pids+=($!)
for _ in $(seq 200); do grep -q "waiting for a migration" "$work/dst.out" && break; sleep 0.05; done
in_ns build/udpbench stream 10.0.0.2 7 1000 4 >"$work/stream" &
stream=$!
sleep 1
in_ns build/tern migrate --api-socket "$work/src.sock" tcp:127.0.0.1:4480 | grep -E "downtime"
wait "$stream"
read -r sent back lost gap <"$work/stream"
echo "migration under 1000 datagrams/s: $sent sent, $back echoed, $lost lost, longest gap $gap ms"
