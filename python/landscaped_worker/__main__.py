"""``python -m landscaped_worker``: the eager-PyTorch model worker.

With no arguments it speaks the worker protocol on stdin/stdout (started by ``landscaped --backend
python``); with ``--connect HOST:PORT`` it dials a coordinator over TCP instead (started by a cluster's
launcher, docs/scale-out.md).
"""

import argparse
import sys

DESCRIPTION = """\
The eager-PyTorch model worker of landscaped (docs/python-worker.md).

With no arguments it is started by landscaped (--backend python) and speaks the worker protocol on
stdin/stdout (docs/worker-protocol.md). With --connect it dials a coordinator started with
`landscaped slice ... --workers-listen ADDR --expect N` instead: one such worker per GPU, placed by
srun, mpirun, torchrun or a Kubernetes Indexed Job (recipes in docs/scale-out.md)."""

EPILOG = """\
token: --token-file PATH, else $LANDSCAPED_TOKEN, else the file named by $LANDSCAPED_TOKEN_FILE.
ranks: RANK/LOCAL_RANK/WORLD_SIZE, SLURM_PROCID/SLURM_LOCALID/SLURM_NTASKS,
  OMPI_COMM_WORLD_RANK/_LOCAL_RANK/_SIZE, PMI_RANK/PMI_SIZE, JOB_COMPLETION_INDEX (first found)
  are sent with the join; the coordinator picks the worker's GPU from the local rank.
exit codes: 0 session ended, 1 no connection within the timeout (or it broke), 2 bad arguments
  or no token, 3 refused by the coordinator (the reason is printed)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print("landscaped_worker: %s (see python -m landscaped_worker --help)" % message, file=sys.stderr)
        sys.exit(2)


def parser():
    p = _Parser(
        prog="python -m landscaped_worker",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", "-V", action="store_true", help="print the version and the protocol version")
    p.add_argument("--connect", metavar="HOST:PORT", help="dial the coordinator at HOST:PORT over TCP")
    p.add_argument("--token-file", metavar="PATH", help="read the shared token from PATH (with --connect)")
    p.add_argument(
        "--contract",
        metavar="ID",
        help="the model contract id the coordinator printed; default $LANDSCAPED_CONTRACT (with --connect)",
    )
    p.add_argument(
        "--connect-timeout",
        metavar="SECS",
        type=float,
        default=None,
        help="keep dialling (every 0.5 s, backing off to 2 s) for up to SECS; default 300 (with --connect)",
    )
    return p


def main(argv):
    args = parser().parse_args(argv)
    if args.version:
        from . import PROTOCOL_VERSION, __version__

        print("landscaped_worker %s (worker protocol %d)" % (__version__, PROTOCOL_VERSION))
        return 0
    if args.connect is None:
        given = [
            o
            for o, v in (
                ("--token-file", args.token_file),
                ("--contract", args.contract),
                ("--connect-timeout", args.connect_timeout),
            )
            if v is not None
        ]
        if given:
            print("landscaped_worker: %s only applies with --connect HOST:PORT" % given[0], file=sys.stderr)
            return 2
    # Ctrl-C in the caller's terminal (or the launcher's) reaches the worker too: end at once, as the
    # TorchScript worker does, rather than with a KeyboardInterrupt traceback (the caller reports and resumes).
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if args.connect is not None:
        from . import tcp

        timeout = tcp.DEFAULT_CONNECT_TIMEOUT if args.connect_timeout is None else args.connect_timeout
        return tcp.run(args.connect, args.token_file, args.contract, timeout)
    try:
        import torch  # noqa: F401
    except ImportError as e:
        limit = _address_space_limit()
        if limit is not None and ("failed to map" in str(e) or "cannot allocate" in str(e).lower()):
            print(
                "landscaped_worker: torch cannot be loaded within this worker's address-space limit of %.1f GiB "
                "(worker_memory_limit / --worker-memory-limit; torch maps about 3.2 GB once imported, give it at "
                "least 4G): %s" % (limit / 2**30, e),
                file=sys.stderr,
            )
            return 3
        print(
            "landscaped_worker: the Python at %s has no torch (%s); install PyTorch there or point --python at "
            "the environment you train with" % (sys.executable, e),
            file=sys.stderr,
        )
        return 3
    from .server import FrameError, private_stdout, serve
    from .session import Session

    out = private_stdout()
    try:
        serve(sys.stdin.buffer, out, Session())
    except (FrameError, BrokenPipeError) as e:
        print("landscaped_worker: %s" % e, file=sys.stderr)
        return 1
    return 0


def _address_space_limit():
    """This process's RLIMIT_AS in bytes, None when unlimited."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
