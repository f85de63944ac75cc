#!/usr/bin/env bash
# Stops what scripts/slurm-up.sh started: slurmd, slurmctld, slurmdbd, MariaDB and munged,
# in that order, each waited for. Job records and Slurm's saved state stay on disk, so that
# slurm-up.sh brings back the same cluster. Safe to run when nothing runs.
set -euo pipefail

stop() {  # stop the daemon of pid file $1, waiting up to 20 s for it to exit
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null || return 0
  local pid; pid=$(cat "$1"); kill "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  echo "slurm-down: process $pid (from $1) did not exit" >&2; return 1
}
stop /run/slurmd.pid
stop /run/slurmctld.pid
stop /run/slurmdbd.pid
if command -v mariadb-admin >/dev/null && mariadb-admin ping >/dev/null 2>&1; then
  mariadb-admin shutdown
fi
stop /run/munge/munged.pid
