#!/usr/bin/env python3
"""Live-migration benchmark: tern against QEMU on the same RAM image, over loopback.

The image: 1 GiB of guest RAM, 256 MiB of random bytes at 16 MiB, the rest zero. tern boots it
as an ELF64 payload (the random bytes a data segment, the code a loop that parks the vCPU);
QEMU gets the same bytes with -device loader. Both migrate to a second process of their own
kind; QEMU's max-bandwidth is raised so that neither is capped. Configurations: one plain TCP
connection, TLS 1.3 with X.509 (QEMU: tls-creds-x509 on the same directory), N connections
(QEMU: multifd with N channels), and N over TLS. Plain TCP senders/receivers measure what
loopback itself carries (one stream, N parallel streams, into fresh memory), in the same run.
"""
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

TERN = sys.argv[1]
GUESTS = sys.argv[2]
RUNS = int(os.environ.get("TERN_BENCH_RUNS", "5"))
CONNS = int(os.environ.get("TERN_BENCH_CONNECTIONS", "4"))
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RANDOM_MIB = 256
RANDOM_GPA = 16 << 20
WORK = tempfile.mkdtemp(prefix="tern-bench-migrate-")


def write_image():
    data = os.urandom(RANDOM_MIB << 20)
    raw = os.path.join(WORK, "random.bin")
    with open(raw, "wb") as f:
        f.write(data)
    # mov dx, 0x502 (the park port); out dx, al; jmp back: parks the vCPU for good, and if a
    # restore runs it again it parks again.
    code = bytes.fromhex("66ba0205eeebf9")
    code_gpa = 0x100000
    phdrs = [(code_gpa, code), (RANDOM_GPA, data)]
    ehsize, phsize = 64, 56
    offset = ehsize + phsize * len(phdrs)
    header = struct.pack("<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, 2, 62, 1,
                         code_gpa, ehsize, 0, 0, ehsize, phsize, len(phdrs), 64, 0, 0)
    table, body = b"", b""
    for gpa, blob in phdrs:
        pad = (-(offset + len(body))) % 4096
        body += b"\0" * pad
        table += struct.pack("<IIQQQQQQ", 1, 7, offset + len(body), gpa, gpa, len(blob),
                             len(blob), 4096)
        body += blob
    elf = os.path.join(WORK, "image.elf")
    with open(elf, "wb") as f:
        f.write(header + table + body)
    return elf, raw


def wait_for(predicate, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def make_creds():
    creds = os.path.join(WORK, "creds")
    subprocess.run([os.path.join(SOURCE_DIR, "tests/integration/make-creds.sh"), "x509", creds,
                    "bench-CA"], check=True)
    return creds


def tern_dest(extra=()):
    err = os.path.join(WORK, "dst.err")
    p = subprocess.Popen([TERN, "run", "--incoming", "tcp:127.0.0.1:0", "--serial", "none",
                          *extra], stderr=open(err, "w"))
    assert wait_for(lambda: "waiting" in open(err).read()), open(err).read()
    port = int(re.search(r"127\.0\.0\.1:(\d+)", open(err).read()).group(1))
    return p, port


def tern_migrate(kernel, cmdline, settle, tls=None, conns=1):
    """One tern migration; returns the completed event's data."""
    dst, port = tern_dest(["--tls-creds", tls] if tls else [])
    sock = os.path.join(WORK, "src.sock")
    src = subprocess.Popen([TERN, "run", "--mem", "1G", "--cpus", "2", "--serial", "none",
                            "--kernel", kernel, "--cmdline", cmdline, "--api-socket", sock])
    assert wait_for(lambda: os.path.exists(sock))
    time.sleep(settle)
    extra = (["--tls-creds", tls] if tls else []) + ["--connections", str(conns)]
    out = subprocess.run([TERN, "migrate", "--api-socket", sock, f"tcp:127.0.0.1:{port}",
                          "--json", *extra], capture_output=True, text=True, check=True).stdout
    done = [json.loads(l)["data"] for l in out.splitlines() if '"completed"' in l][-1]
    src.wait(timeout=30)
    dst.terminate()
    dst.wait(timeout=30)
    return done


class Qmp:
    def __init__(self, path):
        for _ in range(500):  # the socket file appears before QEMU listens on it
            self.s = socket.socket(socket.AF_UNIX)
            try:
                self.s.connect(path)
                break
            except ConnectionRefusedError:
                self.s.close()
                time.sleep(0.01)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg or "error" in msg:
                if "error" in msg:
                    raise RuntimeError(f"{name}: {msg['error']}")
                return msg["return"]


def qemu(raw, extra, name):
    qmp = os.path.join(WORK, name + ".qmp")
    p = subprocess.Popen(["qemu-system-x86_64", "-accel", "kvm", "-cpu", "qemu64,-pni", "-m",
                          "1G", "-smp", "2", "-display", "none", "-serial", "none",
                          "-monitor", "none", "-nodefaults", "-device",
                          f"loader,file={raw},addr={RANDOM_GPA:#x},force-raw=on", "-qmp",
                          f"unix:{qmp},server=on,wait=off"] + extra,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not wait_for(lambda: os.path.exists(qmp) or p.poll() is not None) or p.poll() is not None:
        raise RuntimeError("qemu did not start: " + p.stderr.read().decode())
    return p, Qmp(qmp)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def qemu_migrate(raw, tls=None, conns=1):
    """One QEMU migration: multifd with conns channels when conns > 1, tls-creds-x509 on the
    same directory as tern's when tls. Returns (total ms, downtime ms)."""
    port = free_port()
    def tls_obj(endpoint):
        return ["-object", f"tls-creds-x509,id=tls0,dir={tls},endpoint={endpoint},"
                "verify-peer=on"] if tls else []
    dst, dq = qemu(raw, ["-incoming", "defer"] + tls_obj("server"), "dst")
    src, sq = qemu(raw, tls_obj("client"), "src")
    for q in (sq, dq):
        if conns > 1:
            q.cmd("migrate-set-capabilities",
                  capabilities=[{"capability": "multifd", "state": True}])
            q.cmd("migrate-set-parameters", **{"multifd-channels": conns})
        if tls:
            q.cmd("migrate-set-parameters", **{"tls-creds": "tls0"})
    dq.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
    time.sleep(1.0)
    sq.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
    t0 = time.time()
    sq.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
    while True:
        info = sq.cmd("query-migrate")
        if info.get("status") in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.005)
    wall = (time.time() - t0) * 1e3
    assert info["status"] == "completed", info
    for p in (src, dst):
        p.kill()
        p.wait()
    return info.get("total-time", wall), info.get("downtime")


def loopback_rate(fresh=False, streams=1):
    """Bytes/s plain sender/receiver pairs move over loopback: 2 GiB over `streams` parallel
    connections into reused buffers, or (fresh) 256 MiB into fresh anonymous memory, as a
    destination's guest RAM is."""
    total = (RANDOM_MIB << 20) if fresh else (2 << 30)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(streams)
    port = srv.getsockname()[1]
    share = total // streams

    def receive():
        c, _ = srv.accept()
        got = 0
        if fresh:
            import mmap
            area = mmap.mmap(-1, share)
        view = memoryview(area if fresh else bytearray(1 << 20))
        while got < share:
            n = c.recv_into(view[got:] if fresh else view)
            if not n:
                break
            got += n
        c.close()

    def send():
        s = socket.create_connection(("127.0.0.1", port))
        chunk = os.urandom(1 << 20)
        for _ in range(share >> 20):
            s.sendall(chunk)
        s.close()

    # Threads share one interpreter lock; separate processes send and receive for real.
    import multiprocessing
    receivers = [threading.Thread(target=receive) for _ in range(streams)]
    for t in receivers:
        t.start()
    t0 = time.time()
    senders = [multiprocessing.Process(target=send) for _ in range(streams)]
    for p in senders:
        p.start()
    for p in senders:
        p.join()
    for t in receivers:
        t.join()
    return total / (time.time() - t0)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    elf, raw = write_image()
    creds = make_creds()
    have_qemu = shutil.which("qemu-system-x86_64") is not None
    configs = [("plain, 1 connection", None, 1), ("TLS 1.3, 1 connection", creds, 1),
               (f"plain, {CONNS} connections", None, CONNS),
               (f"TLS 1.3, {CONNS} connections", creds, CONNS)]
    results = {}
    for name, tls, conns in configs:
        t, q = [], []
        for _ in range(RUNS):
            t.append(tern_migrate(elf, "", 0.3, tls, conns))
            if have_qemu:
                q.append(qemu_migrate(raw, tls, conns))
        results[name] = (t, q)
    loop = median([loopback_rate() for _ in range(3)])
    loop_n = median([loopback_rate(streams=CONNS) for _ in range(3)])
    loop_fresh = median([loopback_rate(fresh=True) for _ in range(3)])
    idle = median([tern_migrate(elf, "", 0.3)["downtime_ms"] for _ in range(3)])
    memstamp = os.path.join(GUESTS, "memstamp.elf")
    dirty = [tern_migrate(memstamp, "mib=256 passes=0 rate=64 every=1000000", 1.0)
             for _ in range(3)]
    dirty_down = median([d["downtime_ms"] for d in dirty])

    def rate(d):
        return d["raw_pages"] * 4096 / (d["total_ms"] / 1e3)

    print(f"image: 1 GiB guest RAM, {RANDOM_MIB} MiB random, the rest zero; {RUNS} runs each, "
          "medians")
    print(f"raw loopback TCP, one plain sender:  {loop / 2**20:8.0f} MiB/s")
    print(f"raw loopback TCP, {CONNS} parallel senders: {loop_n / 2**20:6.0f} MiB/s")
    print(f"raw loopback into fresh memory:      {loop_fresh / 2**20:8.0f} MiB/s   (the receiver "
          "lands 256 MiB in new pages, as a destination must)")
    print()
    print(f"{'configuration':24} {'tern ms':>8} {'MiB/s':>6} {'down ms':>8} "
          f"{'QEMU ms':>8} {'down ms':>8} {'tern/QEMU':>9}")
    plain_rate = None
    for name, _, conns in configs:
        t, q = results[name]
        t_ms = median([d["total_ms"] for d in t])
        t_rate = median([rate(d) for d in t])
        t_down = median([d["downtime_ms"] for d in t])
        q_ms = median([x[0] for x in q])
        q_down = median([x[1] for x in q if x[1] is not None])
        print(f"{name:24} {t_ms:8.0f} {t_rate / 2**20:6.0f} {t_down:8.1f} {q_ms:8.0f} "
              f"{q_down:8.1f} {t_ms / q_ms:9.2f}")
        results[name] = (t_rate, conns)
        if name.startswith("plain, 1"):
            plain_rate = t_rate
    if not have_qemu:
        print("QEMU: qemu-system-x86_64 not installed; no QEMU column (apt-get install "
              "qemu-system-x86)")
    r1 = results["plain, 1 connection"][0]
    print()
    print(f"tern, 1 connection / plain loopback sender:   {r1 / loop:5.2f}   (target >= 0.85); "
          f"/ loopback into fresh memory: {r1 / loop_fresh:.2f}")
    print(f"tern over TLS / plain tern, 1 connection:     "
          f"{results['TLS 1.3, 1 connection'][0] / plain_rate:5.2f}")
    print(f"tern, {CONNS} connections / {CONNS} parallel loopback streams: "
          f"{results[f'plain, {CONNS} connections'][0] / loop_n:5.2f}")
    print(f"tern over TLS, {CONNS} connections / plain tern, {CONNS}: "
          f"{results[f'TLS 1.3, {CONNS} connections'][0] / results[f'plain, {CONNS} connections'][0]:5.2f}")
    print(f"tern downtime, idle guest:          {idle:8.2f} ms   (target <= 5)")
    print(f"tern downtime, memstamp 64 MiB/s:   {dirty_down:8.2f} ms   (target <= 50; passes "
          + ", ".join(str(d["pass"]) for d in dirty) + ")")


try:
    main()
finally:
    shutil.rmtree(WORK, ignore_errors=True)
