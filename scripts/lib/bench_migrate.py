#!/usr/bin/env python3
"""Live-migration benchmark: tern against QEMU on the same RAM image, over loopback.

The image: 1 GiB of guest RAM, 256 MiB of random bytes at 16 MiB, the rest zero. tern boots it
as an ELF64 payload (the random bytes a data segment, the code a loop that parks the vCPU);
QEMU gets the same bytes with -device loader. Both migrate to a second process of their own
kind; QEMU's max-bandwidth is raised so that neither is capped. A plain TCP sender/receiver
measures what loopback itself carries, in the same run.
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


def tern_dest():
    err = os.path.join(WORK, "dst.err")
    p = subprocess.Popen([TERN, "run", "--incoming", "tcp:127.0.0.1:0", "--serial", "none"],
                         stderr=open(err, "w"))
    assert wait_for(lambda: "waiting" in open(err).read()), open(err).read()
    port = int(re.search(r"127\.0\.0\.1:(\d+)", open(err).read()).group(1))
    return p, port


def tern_migrate(kernel, cmdline, settle):
    """One tern migration; returns the completed event's data."""
    dst, port = tern_dest()
    sock = os.path.join(WORK, "src.sock")
    src = subprocess.Popen([TERN, "run", "--mem", "1G", "--cpus", "2", "--serial", "none",
                            "--kernel", kernel, "--cmdline", cmdline, "--api-socket", sock])
    assert wait_for(lambda: os.path.exists(sock))
    time.sleep(settle)
    out = subprocess.run([TERN, "migrate", "--api-socket", sock, f"tcp:127.0.0.1:{port}",
                          "--json"], capture_output=True, text=True, check=True).stdout
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


def qemu_migrate(raw):
    port = free_port()
    dst, dq = qemu(raw, ["-incoming", f"tcp:127.0.0.1:{port}"], "dst")
    src, sq = qemu(raw, [], "src")
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


def loopback_rate(fresh=False):
    """Bytes/s a plain sender/receiver pair moves over loopback: 2 GiB into one reused buffer,
    or (fresh) 256 MiB into fresh anonymous memory, as a destination's guest RAM is."""
    total = (RANDOM_MIB << 20) if fresh else (2 << 30)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = [0]

    def receive():
        c, _ = srv.accept()
        if fresh:
            import mmap
            area = mmap.mmap(-1, total)
        view = memoryview(area if fresh else bytearray(1 << 20))
        while got[0] < total:
            n = c.recv_into(view[got[0]:] if fresh else view)
            if not n:
                break
            got[0] += n
        c.close()

    t = threading.Thread(target=receive)
    t.start()
    s = socket.create_connection(("127.0.0.1", port))
    chunk = os.urandom(1 << 20)
    t0 = time.time()
    for _ in range(total >> 20):
        s.sendall(chunk)
    s.close()
    t.join()
    return total / (time.time() - t0)


def main():
    elf, raw = write_image()
    have_qemu = shutil.which("qemu-system-x86_64") is not None
    tern_ms, qemu_ms, tern_rates = [], [], []
    for _ in range(RUNS):
        done = tern_migrate(elf, "", 0.3)
        tern_ms.append(done["total_ms"])
        raw_bytes = done["raw_pages"] * 4096
        tern_rates.append(raw_bytes / (done["total_ms"] / 1e3))
        if have_qemu:
            qemu_ms.append(qemu_migrate(raw)[0])
    loop = statistics.median([loopback_rate() for _ in range(3)])
    loop_fresh = statistics.median([loopback_rate(fresh=True) for _ in range(3)])
    idle = statistics.median([tern_migrate(elf, "", 0.3)["downtime_ms"] for _ in range(3)])
    memstamp = os.path.join(GUESTS, "memstamp.elf")
    dirty = [tern_migrate(memstamp, "mib=256 passes=0 rate=64 every=1000000", 1.0)
             for _ in range(3)]
    dirty_down = statistics.median([d["downtime_ms"] for d in dirty])

    t_med = statistics.median(tern_ms)
    print(f"image: 1 GiB guest RAM, {RANDOM_MIB} MiB random, the rest zero; {RUNS} runs each")
    print(f"tern total time, median:            {t_med:8.1f} ms   (runs: "
          + ", ".join(f"{x:.0f}" for x in tern_ms) + ")")
    if have_qemu:
        q_med = statistics.median(qemu_ms)
        print(f"QEMU total time, median:            {q_med:8.1f} ms   (runs: "
              + ", ".join(f"{x:.0f}" for x in qemu_ms) + ")")
        print(f"tern/QEMU total-time ratio:         {t_med / q_med:8.2f}      (target <= 0.5)")
    else:
        print("QEMU: qemu-system-x86_64 not installed; no ratio (apt-get install qemu-system-x86)")
    rate = statistics.median(tern_rates)
    print(f"raw loopback TCP, plain sender:     {loop / 2**20:8.0f} MiB/s")
    print(f"raw loopback into fresh memory:     {loop_fresh / 2**20:8.0f} MiB/s   (the receiver "
          "lands 256 MiB in new pages, as a destination must)")
    print(f"tern non-zero pages / total time:   {rate / 2**20:8.0f} MiB/s = {rate / loop:.2f} "
          f"of loopback (target >= 0.85), {rate / loop_fresh:.2f} of loopback into fresh memory")
    print(f"tern downtime, idle guest:          {idle:8.2f} ms   (target <= 5)")
    print(f"tern downtime, memstamp 64 MiB/s:   {dirty_down:8.2f} ms   (target <= 50; passes "
          + ", ".join(str(d["pass"]) for d in dirty) + ")")


try:
    main()
finally:
    shutil.rmtree(WORK, ignore_errors=True)
