"""``python -m landscaped_worker``: the eager-PyTorch model worker (started by landscaped --backend python)."""

import sys


def main(argv):
    if any(a in ("--version", "-V") for a in argv):
        from . import PROTOCOL_VERSION, __version__

        print("landscaped_worker %s (worker protocol %d)" % (__version__, PROTOCOL_VERSION))
        return 0
    if argv:
        print(
            "landscaped_worker: unexpected argument %r; this program is started by landscaped and speaks the "
            "worker protocol on stdin/stdout (see docs/worker-protocol.md)" % argv[0],
            file=sys.stderr,
        )
        return 2
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(
            "landscaped_worker: the Python at %s has no torch (%s); install PyTorch there or point --python at "
            "the environment you train with" % (sys.executable, e),
            file=sys.stderr,
        )
        return 3
    # Ctrl-C in the caller's terminal reaches the worker too: end at once, as the TorchScript worker
    # does, rather than with a KeyboardInterrupt traceback (the caller reports and resumes).
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from .server import FrameError, private_stdout, serve
    from .session import Session

    out = private_stdout()
    try:
        serve(sys.stdin.buffer, out, Session())
    except (FrameError, BrokenPipeError) as e:
        print("landscaped_worker: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
