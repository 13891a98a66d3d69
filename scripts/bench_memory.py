"""The daemon's peak memory while it is fed one checkpoint (issue: memory bounded by a budget, not by
what a file claims): a sparse safetensors file whose header claims a 2^40-element tensor (4 KiB on disk,
its apparent size matching), and 1 GiB and 8 GiB checkpoints in f32 and bf16 (16 tensors each, random
values, written in chunks so the writer stays small). For each file: a fresh daemon watching an empty
folder, the file renamed in, the daemon's outcome (recorded, or refused with its one line) and its peak
RSS (VmHWM from /proc), then the daemon is stopped and the files removed.

usage: bench_memory.py LANDSCAPED WORK_DIR [SIZES_GIB]   (SIZES_GIB default "1,8")"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import numpy as np

L, WORK = sys.argv[1], sys.argv[2]
SIZES = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "1,8").split(",")]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def write_safetensors(path, tensors, fill):
    """tensors: [(name, dtype, shape)]; fill(name, nbytes) yields the bytes in chunks."""
    size = {"F32": 4, "BF16": 2}
    header, off = {}, 0
    for name, dt, shape in tensors:
        n = int(np.prod(shape)) * size[dt]
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        if fill is None:
            f.truncate(8 + len(h) + off)  # sparse: the apparent size matches the header's claim
            return
        for name, dt, shape in tensors:
            for chunk in fill(dt, int(np.prod(shape))):
                f.write(chunk)


def random_fill(dt, n, chunk=1 << 24):
    rng = np.random.default_rng(n)
    left = n
    while left:
        k = min(chunk, left)
        x = rng.standard_normal(k, dtype=np.float32) * 0.02
        if dt == "BF16":
            yield (x.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        else:
            yield x.tobytes()
        left -= k


def peak_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def metrics(port):
    try:
        return urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    except Exception:
        return ""


def feed(label, make):
    case = os.path.join(WORK, label)
    subprocess.run(["rm", "-rf", case], check=True)
    watch, data, staging = (os.path.join(case, d) for d in ("watch", "data", "staging"))
    for d in (watch, data, staging):
        os.makedirs(d)
    port = free_port()
    cfg = os.path.join(case, "landscaped.toml")
    with open(cfg, "w") as f:
        f.write(
            'data_dir = "%s"\nlisten = "127.0.0.1:%d"\nquiet_period_secs = 0.5\n[[run]]\nname = "m"\nwatch = ["%s"]\n'
            % (data, port, watch)
        )
    src = make(staging)
    on_disk = os.stat(src).st_blocks * 512
    claimed = os.stat(src).st_size  # the apparent size (the sparse file's claim)
    log = open(os.path.join(case, "daemon.log"), "w")
    d = subprocess.Popen(
        [L, "daemon", "--config", cfg],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=dict(os.environ, LANDSCAPED_LOG="info"),
    )
    t = time.time()
    while "landscaped_" not in metrics(port):
        time.sleep(0.1)
        if time.time() - t > 60:
            sys.exit("bench_memory: the daemon did not start")
    idle = peak_kb(d.pid)
    os.rename(src, os.path.join(watch, os.path.basename(src)))
    t0 = time.time()
    outcome = None
    while outcome is None and time.time() - t0 < 1800:
        time.sleep(0.2)
        text = open(os.path.join(case, "daemon.log")).read()
        if "checkpoint recorded" in text:
            outcome = "recorded"
        elif "refused" in text or "WARN" in text or "ERROR" in text:
            outcome = next(l for l in text.splitlines() if "WARN" in l or "ERROR" in l or "refused" in l)
            outcome = "refused: " + outcome.split(": ", 1)[-1][:160]
    secs = time.time() - t0
    peak = peak_kb(d.pid)
    d.send_signal(signal.SIGTERM)
    d.wait(timeout=60)
    archive = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(data) for f in fs)
    print(
        "  %-28s %8.1f MB peak RSS (idle %.1f MB; peak/idle %.2fx; checkpoint size/peak %.0fx); %s in %.1f s; "
        "file %.2f GB on disk, %.3g GB claimed, store+archive %.2f GB"
        % (
            label,
            peak / 1024,
            idle / 1024,
            peak / idle,
            claimed / (peak * 1024),
            outcome or "no outcome",
            secs,
            on_disk / 1e9,
            claimed / 1e9,
            archive / 1e9,
        ),
        flush=True,
    )
    PEAKS[label] = (peak, claimed)
    subprocess.run(["rm", "-rf", case], check=True)


def sparse(staging):
    p = os.path.join(staging, "claims-2p40.safetensors")
    write_safetensors(p, [("w", "F32", [1 << 20, 1 << 20])], None)
    return p


def dense(gib, dt):
    def make(staging):
        p = os.path.join(staging, "model-%dgib-%s.safetensors" % (gib, dt.lower()))
        per = (gib << 30) // 16 // (4 if dt == "F32" else 2)
        rows = 4096
        write_safetensors(p, [("layer%02d.weight" % i, dt, [rows, per // rows]) for i in range(16)], random_fill)
        return p

    return make


PEAKS = {}
print("load before: %.2f %.2f %.2f" % os.getloadavg())
print(
    "daemon peak memory per checkpoint fed (a fresh daemon each; default budget and limits); ratios: peak/idle "
    "(the same daemon before the file arrived), checkpoint size/peak (what loading it whole would hold):"
)
feed("sparse 2^40 f32 claim", sparse)
for g in SIZES:
    for dt in ("F32", "BF16"):
        feed("%d GiB %s" % (g, dt.lower()), dense(g, dt))
if len(SIZES) > 1:  # bounded: the peak's growth against the size's
    lo, hi = min(SIZES), max(SIZES)
    for dt in ("f32", "bf16"):
        (p1, c1), (p2, c2) = PEAKS["%d GiB %s" % (lo, dt)], PEAKS["%d GiB %s" % (hi, dt)]
        print("  %s: peak RSS %d GiB / %d GiB %.2fx for %.0fx the bytes" % (dt, hi, lo, p2 / p1, c2 / c1))
print("load after: %.2f %.2f %.2f" % os.getloadavg())
