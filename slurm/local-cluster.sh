#!/usr/bin/env bash
# A single-node SLURM on this machine, on loopback, for the tests and for trying the
# cluster launchers out:  slurm/local-cluster.sh up|down|status|env
#
#   up      install Debian's slurm-wlm and munge when missing, write .slurm/slurm.conf
#           (the node line from `slurmd -C`, one partition named "debug"), start munged,
#           slurmctld and slurmd; returns once the node accepts jobs
#   down    stop the daemons this script started (by the pid files under .slurm/), only those
#   status  which of them run, and sinfo's view
#   env     the line that points SLURM's commands at this cluster:  eval "$(slurm/local-cluster.sh env)"
#
# Needs root (the daemons run as root, with proctrack/linuxproc and task/none: no cgroups).
# Everything it writes (config, munge key and socket, state, logs) lives in .slurm/, which
# git ignores; nothing under /etc is changed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$repo/.slurm"
conf="$root/slurm.conf"
socket="$root/munge/munge.socket"
daemons=(slurmd slurmctld munged)   # stopped in this order, started in the reverse

pid_of() {  # the pid in a daemon's pid file, if that process still runs
  local file="$root/run/$1.pid" pid
  [ -f "$file" ] || return 1
  pid="$(cat "$file")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "local-cluster: '$1' needs root (the SLURM daemons run as root here); run it with sudo" >&2
    exit 1
  fi
}

install_packages() {
  local missing=()
  for p in slurm-wlm munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "local-cluster: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The packages' own services are not started: there is no init system in a container,
    # and this cluster runs its own daemons from .slurm/.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

write_config() {
  mkdir -p "$root"/{munge,run,log,state/ctld,state/d}
  chmod 700 "$root/munge"
  [ -f "$root/munge/munge.key" ] || mungekey --create --keyfile="$root/munge/munge.key" >/dev/null
  local host node
  host="$(hostname -s)"
  # `slurmd -C` prints this machine's real CPUs, sockets, cores and memory.
  node="$(slurmd -C | head -n1)"
  cat > "$conf" <<CONF
# Written by slurm/local-cluster.sh: a one-node cluster on loopback.
ClusterName=cohort-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$root/state/ctld
SlurmdSpoolDir=$root/state/d
SlurmctldPidFile=$root/run/slurmctld.pid
SlurmdPidFile=$root/run/slurmd.pid
SlurmctldLogFile=$root/log/slurmctld.log
SlurmdLogFile=$root/log/slurmd.log
# No cgroups here: processes are tracked through /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# No slurmdbd: sacct is unavailable (submitit says so, and works without it).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
# A requeued or signalled job's tasks get this long between SIGTERM and SIGKILL.
KillWait=30
# Finished jobs stay visible to squeue/scontrol for 10 minutes (there is no accounting).
MinJobAge=600
SlurmdTimeout=60
InactiveLimit=0
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

port_free() {  # another SLURM (say, another checkout's local cluster) may hold SLURM's ports
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "local-cluster: port $1, which $2 needs, is taken (another SLURM running? stop it with its own 'down')" >&2
    exit 1
  fi
}

wait_for_node() {
  local i state
  for i in $(seq 1 60); do
    state="$(SLURM_CONF="$conf" sinfo -h -p debug -o %t 2>/dev/null || true)"
    case "$state" in idle*|mix*|alloc*) return 0 ;; esac
    if [ "$i" = 10 ] && [[ "$state" == down* || "$state" == drain* ]]; then
      SLURM_CONF="$conf" scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true
    fi
    sleep 1
  done
  echo "local-cluster: the node did not come up (sinfo says '${state:-nothing}'); see $root/log/" >&2
  return 1
}

up() {
  need_root up
  install_packages
  write_config
  # Checked before anything starts, so a refused `up` leaves nothing running.
  pid_of slurmctld >/dev/null || port_free 6817 slurmctld
  pid_of slurmd >/dev/null || port_free 6818 slurmd
  if ! pid_of munged >/dev/null; then
    # --force: the project folder's parents may be group-writable, which munged refuses by default.
    munged --force --socket="$socket" --key-file="$root/munge/munge.key" --pid-file="$root/run/munged.pid" \
      --log-file="$root/log/munged.log" --seed-file="$root/munge/munged.seed"
  fi
  if ! pid_of slurmctld >/dev/null; then
    SLURM_CONF="$conf" slurmctld -f "$conf"
  fi
  if ! pid_of slurmd >/dev/null; then
    SLURM_CONF="$conf" slurmd -f "$conf"
  fi
  wait_for_node
  echo "local-cluster: up (partition debug, $(SLURM_CONF="$conf" sinfo -h -o '%c CPUs' -p debug)); state and logs in $root"
  echo "local-cluster: point SLURM's commands at it with:  export SLURM_CONF=$conf"
}

down() {
  local name pid i
  for name in "${daemons[@]}"; do
    pid="$(pid_of "$name" || true)"
    [ -n "$pid" ] || continue
    kill "$pid"
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "local-cluster: stopped $name (pid $pid)"
  done
  return 0
}

status() {
  local name pid running=0
  for name in munged slurmctld slurmd; do
    if pid="$(pid_of "$name")"; then echo "$name: running (pid $pid)"; running=$((running + 1)); else echo "$name: not running"; fi
  done
  [ "$running" = 3 ] && SLURM_CONF="$conf" sinfo
  [ "$running" = 3 ]
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) echo "usage: slurm/local-cluster.sh up|down|status|env" >&2; exit 2 ;;
esac
