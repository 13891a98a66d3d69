"""The worker over TCP: ``python -m landscaped_worker --connect HOST:PORT`` dials a coordinator
(``landscaped slice … --workers-listen ADDR --expect N``) instead of being started by it, for workers placed
by a cluster's launcher (srun, mpirun, torchrun, a Kubernetes Indexed Job). docs/worker-protocol.md, "Over
TCP", is the normative description; docs/scale-out.md has the launcher recipes.

The exchange: the worker dials (retrying, a launcher may start it before the coordinator listens), sends
one ``{"join": {...}}`` frame with the shared token and the launcher's ranks, and reads ``{"joined": ...}``
(then the usual protocol follows on the socket, starting with ``hello``) or ``{"refused": {"reason"}}``.
Frames are the pipe's frames: a 4-byte little-endian length and MessagePack.

Exit codes: 0 the session ended (``shutdown`` or the coordinator closed the connection), 1 no connection
within the timeout or a broken exchange, 2 bad arguments or no token, 3 refused by the coordinator.
"""

import os
import socket
import sys
import time

from . import PROTOCOL_VERSION, msgpack
from .server import FrameError, read_frame, write_frame

DEFAULT_CONNECT_TIMEOUT = 300.0
# Dial every 0.5 s at first, backing off to every 2 s.
FIRST_RETRY, LAST_RETRY = 0.5, 2.0
# How long the worker waits for the coordinator's answer to its join.
JOIN_ANSWER_TIMEOUT = 60.0

# The launchers' variables, in the order they are looked up (the first one set wins), per field.
RANK_VARS = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "JOB_COMPLETION_INDEX")
LOCAL_RANK_VARS = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")
WORLD_SIZE_VARS = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3

# Join attempts at most (each refused as busy, or cut off before an answer), within --connect-timeout.
MAX_ATTEMPTS = 200


class Again(Exception):
    """The coordinator was busy, or closed the connection before answering: dial again after ``after`` s
    (if time is left; else ``stop`` ends the worker)."""

    def __init__(self, after, stop):
        super().__init__(str(stop))
        self.after = after
        self.stop = stop


class Stop(Exception):
    """Ends the worker with one line on stderr and an exit code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def say(msg):
    print("landscaped_worker: %s" % msg, file=sys.stderr, flush=True)


def parse_address(addr):
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port)."""
    host, sep, port = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        p = int(port)
    except ValueError:
        p = -1
    if not sep or not host or not 0 < p < 65536:
        raise Stop(EXIT_USAGE, "--connect %r: expected HOST:PORT (e.g. node12:9470 or [::1]:9470)" % addr)
    return host, p


def launcher_ranks(env=None):
    """(rank, local_rank, world_size) from the launcher's variables; None where none is set (or not an int)."""
    env = os.environ if env is None else env

    def first(names):
        for n in names:
            v = env.get(n, "").strip()
            if v:
                try:
                    return int(v)
                except ValueError:
                    continue
        return None

    return first(RANK_VARS), first(LOCAL_RANK_VARS), first(WORLD_SIZE_VARS)


def _read_token_file(path, what, deadline):
    """The trimmed contents of a token file. A file that isn't there yet is waited for until ``deadline``:
    the coordinator creates it when it starts, maybe after the launcher started this worker."""
    announced = False
    while True:
        try:
            with open(path, "rb") as f:
                raw = f.read(1 << 16)
            break
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise Stop(EXIT_USAGE, "no token: the token file %s (%s) does not exist" % (path, what)) from None
            if not announced:
                say("waiting for the token file %s (%s) to appear" % (path, what))
                announced = True
            time.sleep(0.5)
        except OSError as e:
            raise Stop(EXIT_USAGE, "cannot read the token file %s (%s): %s" % (path, what, e.strerror or e)) from None
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Stop(EXIT_USAGE, "the token file %s (%s) is not UTF-8 text" % (path, what)) from None
    if not token:
        raise Stop(EXIT_USAGE, "no token: the token file %s (%s) is empty" % (path, what))
    return token


def find_token(token_file, deadline, env=None):
    """The shared token: ``--token-file``, else ``$LANDSCAPED_TOKEN``, else the file ``$LANDSCAPED_TOKEN_FILE``."""
    env = os.environ if env is None else env
    if token_file:
        return _read_token_file(token_file, "--token-file", deadline)
    token = env.get("LANDSCAPED_TOKEN", "").strip()
    if token:
        return token
    path = env.get("LANDSCAPED_TOKEN_FILE", "").strip()
    if path:
        return _read_token_file(path, "$LANDSCAPED_TOKEN_FILE", deadline)
    raise Stop(
        EXIT_USAGE,
        "no token: no --token-file given, $LANDSCAPED_TOKEN and $LANDSCAPED_TOKEN_FILE are not set; give the "
        "coordinator's token one of these ways (docs/scale-out.md)",
    )


def dial(host, port, deadline, timeout):
    """A connected socket, retrying every 0.5 s (backing off to 2 s) until ``deadline`` (``timeout`` s after
    the start, for the message)."""
    delay = FIRST_RETRY
    while True:
        left = deadline - time.monotonic()
        try:
            # Name resolution is retried too: a Kubernetes service's name may appear after its pod starts.
            sock = socket.create_connection((host, port), timeout=max(1.0, min(left, 10.0)))
            return sock
        except OSError as e:
            last = e.strerror or str(e) or type(e).__name__
        left = deadline - time.monotonic()
        if left <= 0:
            raise Stop(
                EXIT_FAILED,
                "could not connect to the coordinator at %s:%d within %g s (last error: %s); is it listening there "
                "(--workers-listen), and reachable from this host?" % (host, port, timeout, last),
            )
        time.sleep(min(delay, left))
        delay = min(delay * 2, LAST_RETRY)


def tune(sock):
    """No Nagle delay (one small frame per point); keep-alive so that a coordinator whose host died is
    noticed instead of waited for forever."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6)):
        opt = getattr(socket, name, None)
        if opt is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)
            except OSError:
                pass


def join_frame(token, contract, env=None):
    rank, local_rank, world_size = launcher_ranks(env)
    return {
        "join": {
            "protocol": PROTOCOL_VERSION,
            "token": token,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "rank": rank,
            "local_rank": local_rank,
            "world_size": world_size,
            "contract": contract or None,
        }
    }


def join(sock, inp, out, addr, token, contract):
    """Sends the join frame and reads the answer: the worker number, or a :class:`Stop`."""
    sock.settimeout(JOIN_ANSWER_TIMEOUT)
    try:
        write_frame(out, msgpack.encode(join_frame(token, contract)))
        frame = read_frame(inp)
    except socket.timeout:
        raise Stop(
            EXIT_FAILED, "the coordinator at %s did not answer the join within %g s" % (addr, JOIN_ANSWER_TIMEOUT)
        ) from None
    except (ConnectionResetError, BrokenPipeError) as e:
        raise Again(
            0.0, Stop(EXIT_FAILED, "the join exchange with the coordinator at %s broke: %s" % (addr, e))
        ) from None
    except (OSError, FrameError) as e:
        raise Stop(EXIT_FAILED, "the join exchange with the coordinator at %s broke: %s" % (addr, e)) from None
    if frame is None:
        raise Again(
            0.0, Stop(EXIT_FAILED, "the coordinator at %s closed the connection without answering the join" % addr)
        )
    try:
        answer = msgpack.decode(frame)
    except msgpack.DecodeError as e:
        raise Stop(
            EXIT_FAILED, "the coordinator at %s answered the join with undecodable bytes: %s" % (addr, e)
        ) from None
    if isinstance(answer, dict) and isinstance(answer.get("joined"), dict):
        sock.settimeout(None)
        return answer["joined"].get("worker")
    if isinstance(answer, dict) and isinstance(answer.get("refused"), dict):
        reason = answer["refused"].get("reason")
        stop = Stop(
            EXIT_REFUSED,
            "refused by the coordinator at %s: %s" % (addr, reason if isinstance(reason, str) else "(no reason given)"),
        )
        retry = answer["refused"].get("retry_after_ms")
        if isinstance(retry, int) and not isinstance(retry, bool) and retry >= 0:
            # Only busy: too many connections were still sending their join.
            raise Again(min(retry, 10_000) / 1000.0, stop)
        raise stop
    raise Stop(EXIT_FAILED, "the coordinator at %s answered the join with %r, not joined or refused" % (addr, answer))


def run(addr, token_file=None, contract=None, connect_timeout=DEFAULT_CONNECT_TIMEOUT):
    """The whole TCP worker; returns the exit code. The connect timeout counts from this call, and covers
    waiting for a token file too."""
    started = time.monotonic()
    try:
        return _run(addr, token_file, contract, connect_timeout, started)
    except Stop as s:
        say(str(s))
        return s.code


def _run(addr, token_file, contract, connect_timeout, started):
    host, port = parse_address(addr)
    if not connect_timeout > 0:
        raise Stop(EXIT_USAGE, "--connect-timeout %r: expected a positive number of seconds" % connect_timeout)
    deadline = started + connect_timeout
    token = find_token(token_file, deadline)
    contract = contract or os.environ.get("LANDSCAPED_CONTRACT", "").strip() or None
    # torch before dialling: the coordinator's hello follows the join at once, and importing torch can
    # take a while on a shared file system.
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise Stop(
            EXIT_FAILED,
            "the Python at %s has no torch (%s); run the worker with the Python you train with" % (sys.executable, e),
        ) from None
    from .server import serve
    from .session import Session

    pause = 0.25
    for attempt in range(1, MAX_ATTEMPTS + 1):
        sock = dial(host, port, deadline, connect_timeout)
        inp, out = sock.makefile("rb"), sock.makefile("wb")
        try:
            tune(sock)
            worker = join(sock, inp, out, addr, token, contract)
            break
        except Again as a:
            for f in (inp, out, sock):
                try:
                    f.close()
                except OSError:
                    pass
            wait = max(a.after, pause) + (os.getpid() * 2654435761 + attempt) % 250 / 1000.0
            if attempt == MAX_ATTEMPTS or time.monotonic() + wait > deadline:
                raise a.stop from None
            if attempt == 1:
                say("%s; trying again" % a.stop)
            time.sleep(wait)
            pause = min(pause * 2, 4.0)
        except BaseException:
            for f in (inp, out, sock):
                try:
                    f.close()
                except OSError:
                    pass
            raise
    try:
        say("joined the coordinator at %s as worker %s" % (addr, worker))
        try:
            serve(inp, out, Session())
        except (ConnectionResetError, BrokenPipeError):
            # The coordinator went away mid-request (it ends the session by closing, too): nothing to finish.
            say("the coordinator at %s closed the connection" % addr)
        except (OSError, FrameError) as e:
            raise Stop(EXIT_FAILED, "the connection to the coordinator at %s broke: %s" % (addr, e)) from None
        return EXIT_OK
    finally:
        for f in (inp, out, sock):
            try:
                f.close()
            except OSError:
                pass
