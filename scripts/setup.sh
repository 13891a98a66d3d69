#!/usr/bin/env bash
# Sets up everything the build, the tests and the demo need, on a fresh machine or again (idempotent).
#
# - A Python venv with PyTorch 2.13.0 (libtorch for tch) and the reference libraries, cached OUTSIDE the
#   repo under $LANDSCAPED_CACHE (default ~/.cache/landscaped), keyed by Python version and by a hash of
#   python/requirements.txt: a second set-up, or a fresh clone on the same machine, reuses it in seconds.
# - Links it into the repo as .venv, and torch's folder as .libtorch, which .cargo/config.toml points
#   tch at: plain `cargo build` / `cargo test` then work with no environment variables, and build.rs
#   puts torch's lib folder on the binary's rpath (no LD_LIBRARY_PATH needed).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'landscaped setup: %s\n' "$*" >&2; exit 1; }

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 ||
  die "python3 not found. Install Python 3.10+ with venv and pip (Debian: apt-get install python3 python3-venv python3-pip), or set PYTHON=/path/to/python3."
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
  die "$PYTHON has no venv/ensurepip module. Install it (Debian: apt-get install python3-venv) and run 'make setup' again."

pyver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
reqhash=$(sha256sum python/requirements.txt | cut -c1-12)
cache=${LANDSCAPED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/landscaped}
venv="$cache/venv-torch2.13.0-py$pyver-$reqhash"

if [ ! -f "$venv/.complete" ]; then
  echo "landscaped setup: installing PyTorch 2.13.0 and test libraries into $venv (about 2 minutes, 5 GB; once per machine)"
  mkdir -p "$cache"
  rm -rf "$venv.partial"
  "$PYTHON" -m venv "$venv.partial" || die "could not create a venv at $venv.partial (disk full? permissions?)"
  "$venv.partial/bin/python" -m pip install --quiet --disable-pip-version-check -r python/requirements.txt ||
    die "pip could not install python/requirements.txt into $venv.partial. Check that PyPI is reachable and the disk has ~6 GB free, then run 'make setup' again."
  # The venv's scripts hard-code its path: build it under .partial, then move it whole. Recreate pip's
  # entry points only through `python -m`, which does not depend on the folder name.
  rm -rf "$venv"
  mv "$venv.partial" "$venv"
  touch "$venv/.complete"
fi
# Every script in the venv's bin/ (activate, pip, torchrun's #! line) named the .partial folder: point them
# at the final one. Also repairs venvs cached by an older set-up, which fixed only activate (so
# .venv/bin/torchrun failed with "required file not found"). Symlinks (bin/python) are left alone.
if grep -lIsq -- "$venv.partial" "$venv/pyvenv.cfg" "$venv"/bin/* 2>/dev/null; then
  find "$venv/bin" "$venv/pyvenv.cfg" -maxdepth 1 -type f -exec grep -lIs -- "$venv.partial" {} + |
    xargs -r sed -i "s#$venv.partial#$venv#g"
fi

torchdir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))') ||
  die "the venv at $venv is broken (torch does not import). Delete it and run 'make setup' again."
ln -sfn "$venv" .venv
ln -sfn "$torchdir" .libtorch
echo "landscaped setup: ready (venv $venv, libtorch $torchdir)"
