"""Plays the coordinator's side of the TCP join (docs/worker-protocol.md, "Over TCP") against
``python -m landscaped_worker --connect``, without the Rust coordinator. One case per run:

    python tests/python/tcp_join_check.py join|closed|refused|busy|no_token|timeout

prints ``ok CASE`` when the worker did what the spec says, else fails with what differed.
Driven by tests/python_worker_tcp.rs.
"""

import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

from landscaped_worker import msgpack  # noqa: E402
from landscaped_worker.server import read_frame, write_frame  # noqa: E402

# Generous: the worker imports torch before it dials.
WAIT = 120

LAUNCHER_VARS = (
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE",
    "JOB_COMPLETION_INDEX", "LANDSCAPED_TOKEN", "LANDSCAPED_TOKEN_FILE", "LANDSCAPED_CONTRACT",
)  # fmt: skip


def worker(addr, extra_env, *args):
    """Starts the worker with a clean launcher environment plus ``extra_env``."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["PYTHONPATH"] = os.path.join(ROOT, "python") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra_env)
    cmd = [sys.executable, "-m", "landscaped_worker", "--connect", addr, *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def refusing():
    """A socket bound to a free loopback port and not listening: connections to it are refused (Linux
    answers the SYN with a reset), and no other process can take the port while it is held. (Binding
    port 0, releasing it and binding the number again races with parallel tests.)"""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


def listener(s=None):
    """Listens on ``s`` (a :func:`refusing` socket, from then on accepting) or a new free port."""
    s = s or refusing()
    s.listen(4)
    s.settimeout(WAIT)
    return s


def resets_sent():
    """The kernel's count of TCP resets sent (Tcp OutRsts in /proc/net/snmp): a dial to a refusing socket
    adds one."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("OutRsts")])


def wait_for(what, cond, proc):
    """Polls ``cond`` every 20 ms for up to WAIT s while the worker runs."""
    deadline = time.monotonic() + WAIT
    while not cond():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(
                "the worker exited (%d) before %s; stderr:\n%s" % (proc.returncode, what, err.decode(errors="replace"))
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.02)


class Peer:
    """The coordinator's end of one accepted connection."""

    def __init__(self, lsock, proc):
        try:
            self.sock, _ = lsock.accept()
        except socket.timeout:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError("the worker never connected; stderr:\n%s" % err.decode(errors="replace")) from None
        self.sock.settimeout(WAIT)
        self.inp, self.out = self.sock.makefile("rb"), self.sock.makefile("wb")

    def recv(self):
        frame = read_frame(self.inp)
        return None if frame is None else msgpack.decode(frame)

    def send(self, value):
        write_frame(self.out, msgpack.encode(value))

    def close(self):
        for f in (self.inp, self.out, self.sock):
            f.close()


def finish(proc):
    out, err = proc.communicate(timeout=WAIT)
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def lines(text):
    return [line for line in text.splitlines() if line.strip()]


def check_join(j, proc, expect):
    assert set(j) == {"join"}, "first frame %r is not a join" % j
    j = j["join"]
    want = {"protocol": 1, "host": socket.gethostname(), "pid": proc.pid, **expect}
    assert set(j) == set(want), "join fields %s, expected %s" % (sorted(j), sorted(want))
    for k, v in want.items():
        assert j[k] == v and type(j[k]) is type(v), "join[%r] = %r, expected %r" % (k, j[k], v)


def case_join():
    """Token from $LANDSCAPED_TOKEN, ranks from torchrun's RANK and Open MPI's local rank (the first found
    per field), the contract id: joined, then hello and shutdown over the socket, exit 0."""
    lsock = listener()
    addr = "127.0.0.1:%d" % lsock.getsockname()[1]
    env = {"LANDSCAPED_TOKEN": " s3cret\n", "RANK": "3", "OMPI_COMM_WORLD_RANK": "7",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "WORLD_SIZE": "8"}  # fmt: skip
    proc = worker(addr, env, "--contract", "c0ffee")
    peer = Peer(lsock, proc)
    check_join(
        peer.recv(), proc, {"token": "s3cret", "rank": 3, "local_rank": 1, "world_size": 8, "contract": "c0ffee"}
    )
    peer.send({"joined": {"worker": 0}})
    peer.send({"id": 1, "body": {"op": "hello", "protocol": 1, "client": "tcp_join_check"}})
    r = peer.recv()
    assert r["id"] == 1 and r["body"]["reply"] == "hello", r
    assert r["body"]["protocol"] == 1 and r["body"]["backend"] == "python" and r["body"]["pid"] == proc.pid, r
    assert "cpu" in r["body"]["devices"], r
    peer.send({"id": 2, "body": {"op": "shutdown"}})
    assert peer.recv() == {"id": 2, "body": {"reply": "ok"}}
    assert peer.recv() is None, "the worker did not close the connection after shutdown"
    code, out, err = finish(proc)
    assert code == 0, "exit %d after shutdown; stderr:\n%s" % (code, err)
    assert out == "", "the TCP worker wrote to stdout: %r" % out
    assert "joined the coordinator at %s as worker 0" % addr in err, err


def case_closed():
    """Token from the file $LANDSCAPED_TOKEN_FILE, ranks from Slurm's variables, no contract id, and a
    listener that opens after the worker started: it retries, joins, and ends with exit 0 when the
    coordinator closes the connection."""
    early = refusing()
    addr = "127.0.0.1:%d" % early.getsockname()[1]
    token_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), "tcp_join_check_token_%d" % os.getpid())
    with open(token_file, "w") as f:
        f.write("from-a-file\n")
    try:
        env = {"LANDSCAPED_TOKEN_FILE": token_file, "SLURM_PROCID": "5", "SLURM_LOCALID": "0", "SLURM_NTASKS": "6"}
        resets = resets_sent()
        proc = worker(addr, env, "--connect-timeout", "100")
        # Refused at least once (the kernel sent a reset; another process's reset can only make this
        # case start listening sooner, never fail it), then the same socket starts listening.
        wait_for("a refused dial", lambda: resets_sent() > resets, proc)
        lsock = listener(early)
        peer = Peer(lsock, proc)
        check_join(
            peer.recv(), proc, {"token": "from-a-file", "rank": 5, "local_rank": 0, "world_size": 6, "contract": None}
        )
        peer.send({"joined": {"worker": 4}})
        peer.close()
        code, out, err = finish(proc)
        assert code == 0, "exit %d when the coordinator closed; stderr:\n%s" % (code, err)
    finally:
        os.unlink(token_file)


def case_refused():
    """A wrong token answered `refused`: the reason on stderr, exit 3."""
    lsock = listener()
    addr = "127.0.0.1:%d" % lsock.getsockname()[1]
    token_file = os.path.join(os.environ.get("TMPDIR", "/tmp"), "tcp_join_check_wrong_%d" % os.getpid())
    with open(token_file, "w") as f:
        f.write("wrong")
    try:
        # --token-file wins over $LANDSCAPED_TOKEN.
        proc = worker(addr, {"LANDSCAPED_TOKEN": "right", "JOB_COMPLETION_INDEX": "2"}, "--token-file", token_file)
        peer = Peer(lsock, proc)
        check_join(
            peer.recv(), proc, {"token": "wrong", "rank": 2, "local_rank": None, "world_size": None, "contract": None}
        )
        peer.send({"refused": {"reason": "wrong token"}})
        peer.close()
        code, out, err = finish(proc)
    finally:
        os.unlink(token_file)
    assert code == 3, "exit %d when refused; stderr:\n%s" % (code, err)
    assert lines(err)[-1] == "landscaped_worker: refused by the coordinator at %s: wrong token" % addr, err


def case_busy():
    """A coordinator too busy to read the join (`refused` with `retry_after_ms`), then one that closes the
    connection before answering: the worker dials again each time (it is not refused for good), joins on
    the third connection, and ends with exit 0."""
    lsock = listener()
    addr = "127.0.0.1:%d" % lsock.getsockname()[1]
    proc = worker(addr, {"LANDSCAPED_TOKEN": "t"}, "--connect-timeout", "60")
    peer = Peer(lsock, proc)
    assert set(peer.recv()) == {"join"}
    peer.send(
        {"refused": {"reason": "too many connections are still sending their join (256); retry", "retry_after_ms": 100}}
    )
    peer.close()
    peer = Peer(lsock, proc)
    assert set(peer.recv()) == {"join"}
    peer.close()
    peer = Peer(lsock, proc)
    assert set(peer.recv()) == {"join"}
    peer.send({"joined": {"worker": 0}})
    peer.close()
    code, out, err = finish(proc)
    assert code == 0, "exit %d after joining on the third try; stderr:\n%s" % (code, err)
    assert "joined the coordinator at %s as worker 0" % addr in err, err


def case_no_token():
    """No token anywhere: one line naming the three places, exit 2, without dialling."""
    nobody = refusing()
    proc = worker("127.0.0.1:%d" % nobody.getsockname()[1], {})
    code, out, err = finish(proc)
    assert code == 2, "exit %d without a token; stderr:\n%s" % (code, err)
    assert len(lines(err)) == 1, "expected one line:\n%s" % err
    for where in ("--token-file", "$LANDSCAPED_TOKEN", "$LANDSCAPED_TOKEN_FILE"):
        assert where in err, "the line does not name %s: %s" % (where, err)


def case_timeout():
    """Nothing listening and --connect-timeout 1: one line, exit 1."""
    nobody = refusing()
    addr = "127.0.0.1:%d" % nobody.getsockname()[1]
    proc = worker(addr, {"LANDSCAPED_TOKEN": "t"}, "--connect-timeout", "1")
    code, out, err = finish(proc)
    assert code == 1, "exit %d after the timeout; stderr:\n%s" % (code, err)
    assert len(lines(err)) == 1, "expected one line:\n%s" % err
    assert "could not connect to the coordinator at %s within 1 s" % addr in err, err


CASES = {
    "join": case_join,
    "closed": case_closed,
    "refused": case_refused,
    "busy": case_busy,
    "no_token": case_no_token,
    "timeout": case_timeout,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        sys.exit("usage: tcp_join_check.py %s" % "|".join(CASES))
    CASES[sys.argv[1]]()
    print("ok %s" % sys.argv[1])
