"""Scale-out benchmark (make bench BENCH=scale): a 21x21 slice of the digits CNN computed by 1, 2 and 4
workers that dial in over TCP (`landscaped slice --workers-listen`, `landscaped-worker --connect`), one
intra-op thread each, rounds alternated, medians reported. Prints the grid loop time per worker count, the
parallel efficiency T1 / (n * Tn), and the coordinator's own cost: CPU seconds per grid point (user +
system of the `landscaped` process, from wait4) and its peak RSS.

usage: bench_scale.py LANDSCAPED WORKER CHECKPOINT MODEL_DIR OUT_DIR [GRID_N] [ROUNDS] [COUNTS]"""

import os
import re
import socket
import statistics
import subprocess
import sys
import time

L, W, CK, MD, OUT = sys.argv[1:6]
N = int(sys.argv[6]) if len(sys.argv) > 6 else 21
ROUNDS = int(sys.argv[7]) if len(sys.argv) > 7 else 3
COUNTS = [int(c) for c in (sys.argv[8] if len(sys.argv) > 8 else "1,2,4").split(",")]
TOKEN = "bench-scale-token"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def one(workers, tag):
    data = os.path.join(OUT, "data-%s" % tag)
    subprocess.run(["rm", "-rf", data], check=True)
    port = free_port()
    env = dict(os.environ, LANDSCAPED_DATA_DIR=data, LANDSCAPED_LOG="info", LANDSCAPED_TOKEN=TOKEN)
    grid = "--x=-1:1:%d" % N, "--y=-1:1:%d" % N
    coord = subprocess.Popen(
        [L, "slice", "--checkpoint", CK, "--model-dir", MD, *grid, "--seed", "3", "--batch-size", "256",
         "--persist-every", "5", "--threads", "1", "--workers-listen", "127.0.0.1:%d" % port,
         "--expect", str(workers), "--wait", "120"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ws = [subprocess.Popen([W, "--connect", "127.0.0.1:%d" % port, "--connect-timeout", "60"],
                           env=dict(os.environ, LANDSCAPED_TOKEN=TOKEN),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    err = coord.stderr.read()
    _, status, ru = os.wait4(coord.pid, 0)
    coord.returncode = os.waitstatus_to_exitcode(status)
    for w in ws:
        w.wait(timeout=60)
    if coord.returncode != 0:
        sys.exit("bench_scale: the coordinator failed:\n" + err)
    m = re.search(r"computed (\d+) points in ([0-9.]+) s", err)
    points, loop = int(m.group(1)), float(m.group(2))
    cpu = ru.ru_utime + ru.ru_stime
    return loop, cpu / points, ru.ru_maxrss / 1024.0, points


def main():
    loops = {n: [] for n in COUNTS}
    cpu = {n: [] for n in COUNTS}
    rss = {n: [] for n in COUNTS}
    for r in range(ROUNDS):
        for n in COUNTS:
            loop, per, mb, points = one(n, "%d-%d" % (n, r))
            loops[n].append(loop)
            cpu[n].append(per)
            rss[n].append(mb)
            print("  round %d: %d worker(s): grid %.3f s (%d points), coordinator %.0f us CPU/point, %.1f MB peak"
                  % (r + 1, n, loop, points, per * 1e6, mb), flush=True)
    t1 = statistics.median(loops[COUNTS[0]]) * COUNTS[0]
    print("scale-out, %dx%d slice of the digits CNN, workers over TCP on 127.0.0.1, 1 intra-op thread each, "
          "%d core(s), medians of %d rounds:" % (N, N, os.cpu_count(), ROUNDS))
    for n in COUNTS:
        tn = statistics.median(loops[n])
        print("  %d worker(s): grid %.3f s = %.1f points/s; parallel efficiency T1/(n*Tn) = %.2f; coordinator "
              "%.0f us CPU per point, peak RSS %.1f MB"
              % (n, tn, N * N / tn, t1 / (n * tn), statistics.median(cpu[n]) * 1e6, statistics.median(rss[n])))


main()
