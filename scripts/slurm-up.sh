#!/usr/bin/env bash
# Starts a real one-node Slurm cluster on this machine, so that tests can submit jobs to it.
#
# The machine's short host name is both the controller and the only compute node, in one
# partition "debug" (the default, no time limit) sized from nproc and /proc/meminfo. Debian's
# packages are installed with apt-get if missing, and the daemons are started directly, since
# test machines often have no systemd: munged (authentication), MariaDB and slurmdbd (the job
# records that sacct reads: submitit polls job states with sacct, and without it a job that
# dies before writing its result is never seen to end), slurmctld and slurmd. The script then
# waits until the node is idle. Safe to run again: what runs is kept, and a daemon whose
# configuration had to change is restarted. Must run as root; scripts/slurm-down.sh stops it all.
set -euo pipefail

die() { echo "slurm-up: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"

missing=""
for cmd in sbatch slurmctld slurmd slurmdbd munged mariadbd-safe; do
  command -v "$cmd" >/dev/null || missing="$missing $cmd"
done
if [ -n "$missing" ]; then
  log=/tmp/slurm-up-apt.log
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurm-wlm slurmdbd munge mariadb-server
  } >"$log" 2>&1 || die "missing:$missing; apt-get could not install slurm-wlm, slurmdbd, munge, mariadb-server (see $log)"
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
real_mb=$((mem_mb * 9 / 10))  # headroom for the system: slurmd drains a node that reports less

# The daemons talk over 127.0.0.1, not over whatever address the host name resolves to.
# Memory is a consumable resource: a job that names no --mem gets DefMemPerCPU per CPU (an
# equal share), so that one 1-CPU job per CPU runs at once instead of one job taking it all.
# A requeued job waits cred_expire + 1 seconds (default 120) before it may start again, and
# the scheduler then looks at it within sched_interval (default 60) seconds.
slurm_conf="# Written by scripts/slurm-up.sh: a one-node test cluster.
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((real_mb / cpus))
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=2
MpiDefault=none
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP"

# slurmdbd runs as root, so it logs in to MariaDB as root over the socket, with no password.
dbd_conf="# Written by scripts/slurm-up.sh.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid"

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() {  # stop the daemon of pid file $1, waiting up to 10 s for it to exit
  running "$1" || return 0
  local pid; pid=$(cat "$1"); kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
}
write() {  # write file $1 with mode $2 and content $3; fails (1) when it was already so
  [ "$(cat "$1" 2>/dev/null)" != "$3" ] || return 1
  printf '%s\n' "$3" >"$1" && chmod "$2" "$1"
}
wait_for() {  # run "$@" until it succeeds, for up to 30 s
  for _ in $(seq 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done; return 1
}

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if write /etc/slurm/slurmdbd.conf 600 "$dbd_conf"; then stop /run/slurmdbd.pid; fi
if write /etc/slurm/slurm.conf 644 "$slurm_conf"; then stop /run/slurmd.pid; stop /run/slurmctld.pid; fi

# munge authenticates Slurm's messages, with a key that only user munge may read.
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  key=/etc/munge/munge.key
  if [ ! -s "$key" ]; then
    mungekey --create --keyfile="$key" 2>/dev/null || dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
  fi
  chown munge:munge "$key" && chmod 0400 "$key"
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  runuser -u munge -- munged 2>/dev/null || runuser -u munge -- munged --force ||
    die "munged does not start (see /var/log/munge/munged.log)"
  wait_for sh -c 'munge -n </dev/null | unmunge' || die "munged runs but munge/unmunge fails"
fi

if ! mariadb-admin ping >/dev/null 2>&1; then
  install -d -o mysql -g mysql /run/mysqld
  setsid -f mariadbd-safe >/dev/null 2>&1 </dev/null
  wait_for mariadb-admin ping || die "MariaDB does not start (see /var/log/syslog or /var/lib/mysql/*.err)"
fi
if ! running /run/slurmdbd.pid; then
  slurmdbd || die "slurmdbd does not start (see /var/log/slurm/slurmdbd.log)"
  wait_for sacctmgr -n list cluster || die "slurmdbd does not answer (see /var/log/slurm/slurmdbd.log)"
fi
running /run/slurmctld.pid || slurmctld || die "slurmctld does not start (see /var/log/slurm/slurmctld.log)"
running /run/slurmd.pid || slurmd || die "slurmd does not start (see /var/log/slurm/slurmd.log)"

# Wait for the node to be usable; a node that comes back drained or down is resumed once.
resumed=0
for _ in $(seq 60); do
  state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null | head -n1 || true)
  case "$state" in
    idle|mixed|allocated|completing) exit 0 ;;
    drain*|down)
      if [ "$resumed" -eq 0 ]; then
        scontrol update nodename="$host" state=resume 2>/dev/null || true
        resumed=1
      fi ;;
  esac
  sleep 1
done
for log in /var/log/slurm/slurmdbd.log /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; do
  echo "== tail of $log" >&2; tail -n 15 "$log" >&2 2>/dev/null || true
done
die "node $host is not idle after 60 s (state: '${state:-no answer from slurmctld}')"
