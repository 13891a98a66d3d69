#!/usr/bin/env bash
# System packages the daemon tests need (idempotent; quick when present; needs root for apt-get):
#   systemd-analyze  (tests/daemon_files.rs: `systemd-analyze verify` on systemd/*.service)
#   prometheus, promtool  (tests/daemon_prometheus.rs: a real Prometheus scraping the daemon)
#   mpirun  (Debian's Open MPI, openmpi-bin: the scale-out tests start workers with
#            `mpirun --allow-run-as-root --oversubscribe -np 2 ...`, docs/scale-out.md)
set -euo pipefail
need=()
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || need+=(prometheus)
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "ci-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
