"""What the daemon benchmarks share: finding the port a daemon bound (it is started with
listen = "127.0.0.1:0" and names its address in daemon.json)."""

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
