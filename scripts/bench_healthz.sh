#!/usr/bin/env bash
# /healthz latency while BENCH_IDLE (default 2000) idle connections are open (printed, not asserted):
# starts the daemon with the default connection cap, opens the idle connections (they never send a
# byte), then times BENCH_PROBES (default 200) /healthz requests, each on a new connection like a probe.
# The baseline is the same probes with no idle connections, in the same invocation.
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
[ -x "$L" ] || { echo "bench_healthz: $L is missing (make build)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec .venv/bin/python - "$L" <<'PY'
import json, os, socket, subprocess, sys, tempfile, time

binary = sys.argv[1]
idle_n = int(os.environ.get("BENCH_IDLE", "2000"))
probes = int(os.environ.get("BENCH_PROBES", "200"))
tmp = tempfile.mkdtemp()
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
os.makedirs(f"{tmp}/ck")
open(f"{tmp}/c.toml", "w").write(
    f'data_dir = "{tmp}/data"\nlisten = "127.0.0.1:{port}"\n[[run]]\nname = "r"\nwatch = ["{tmp}/ck"]\n')
d = subprocess.Popen([binary, "daemon", "--config", f"{tmp}/c.toml"], stderr=open(f"{tmp}/log", "w"))

def healthz():
    t = time.perf_counter()
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    c.close()
    ok = data.startswith(b"HTTP/1.1 200")
    return time.perf_counter() - t, ok

deadline = time.time() + 60
while True:
    try:
        if healthz()[1]:
            break
    except OSError:
        pass
    if time.time() > deadline or d.poll() is not None:
        sys.exit("the daemon did not start:\n" + open(f"{tmp}/log").read())
    time.sleep(0.05)

def run(label):
    lat, fails = [], 0
    for _ in range(probes):
        try:
            dt, ok = healthz()
            lat.append(dt)
            fails += not ok
        except OSError:
            fails += 1
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")
    print(f"healthz {label}: {len(lat)} answered, {fails} failed, p50 {pct(0.5):.2f} ms, "
          f"p99 {pct(0.99):.2f} ms, max {pct(1.0):.2f} ms")
    return pct(0.5)

base = run("no idle connections")
idle = []
t = time.perf_counter()
for _ in range(idle_n):
    try:
        idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    except OSError as e:
        print(f"opening idle connections: {e} after {len(idle)}"); break
print(f"opened {len(idle)} idle connections in {time.perf_counter() - t:.2f} s")
loaded = run(f"with {len(idle)} idle connections")
print(f"ratio p50 loaded / baseline: {loaded / base:.2f}")
for c in idle:
    c.close()
d.terminate(); d.wait()
PY
