"""What the daemon benchmarks share: finding the port a daemon bound (it is started with
listen = "127.0.0.1:0" and names its address in daemon.json), and a process's CPU time and resident
memory from /proc."""

import json
import os
import time


def bound_port(data_dir, proc, limit=30.0):
    """The port the daemon `proc` (started with listen = "127.0.0.1:0") bound, from its daemon.json."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with open(os.path.join(data_dir, "daemon.json")) as f:
                ident = json.load(f)
            if ident.get("pid") == proc.pid:
                return int(ident["listen"].rsplit(":", 1)[1])
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.kill()
    raise SystemExit("the daemon did not write its daemon.json")


def cpu_seconds(pid):
    """User + system CPU seconds process `pid` has used (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    """Process `pid`'s resident memory now, MB (VmRSS); NaN if /proc does not say."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
