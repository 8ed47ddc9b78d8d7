#!/usr/bin/env bash
# A SLURM on this machine, on loopback, for the tests and for trying the cluster launchers
# out:  slurm/local-cluster.sh up [--nodes N]|down|status|env
#
#   up      install Debian's slurm-wlm and munge when missing, write .slurm/slurm.conf
#           (the node line from `slurmd -C`, one partition named "debug"), start munged,
#           slurmctld and slurmd; returns once the node accepts jobs
#   up --nodes N   N nodes, node1..nodeN, each its own slurmd (`slurmd -N nodeI`, Debian's
#           build has MULTIPLE_SLURMD) with its own port, spool folder and log, and in its
#           own mount and UTS namespaces: its own hostname, an /etc/hosts that names every
#           node (nodeI is 127.0.1.I, all loopback), and a node-local scratch folder,
#           .slurm/scratch, a tmpfs that no other node (nor this shell) sees
#   down    stop the daemons this script started (by the pid files under .slurm/), only those
#   status  which of them run, and sinfo's view
#   env     the line that points SLURM's commands at this cluster:  eval "$(slurm/local-cluster.sh env)"
#
# Needs root (the daemons run as root, with proctrack/linuxproc and task/none: no cgroups).
# Everything it writes (config, munge key and socket, state, logs) lives in .slurm/, which
# git ignores; nothing under /etc is changed (the nodes' /etc/hosts is a bind mount inside
# their own mount namespaces).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
root="$repo/.slurm"
conf="$root/slurm.conf"
socket="$root/munge/munge.socket"
scratch="$root/scratch"  # with --nodes N: each node's own tmpfs here, seen by that node only
max_nodes=8

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

write_config() {  # write_config NODES
  local nodes="$1"
  mkdir -p "$root"/{munge,run,log,state/ctld,state/d}
  chmod 700 "$root/munge"
  [ -f "$root/munge/munge.key" ] || mungekey --create --keyfile="$root/munge/munge.key" >/dev/null
  local host node i
  host="$(hostname -s)"
  # `slurmd -C` prints this machine's real CPUs, sockets, cores and memory.
  node="$(slurmd -C | head -n1)"
  cat > "$conf" <<CONF
# Written by slurm/local-cluster.sh: a $nodes-node cluster on loopback.
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
SlurmctldPidFile=$root/run/slurmctld.pid
SlurmctldLogFile=$root/log/slurmctld.log
CONF
  if [ "$nodes" = 1 ]; then
    cat >> "$conf" <<CONF
SlurmdSpoolDir=$root/state/d
SlurmdPidFile=$root/run/slurmd.pid
SlurmdLogFile=$root/log/slurmd.log
CONF
  else
    # %n: each slurmd's own node name (MULTIPLE_SLURMD).
    cat >> "$conf" <<CONF
SlurmdSpoolDir=$root/state/d/%n
SlurmdPidFile=$root/run/slurmd-%n.pid
SlurmdLogFile=$root/log/slurmd-%n.log
CONF
  fi
  cat >> "$conf" <<CONF
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
CONF
  if [ "$nodes" = 1 ]; then
    cat >> "$conf" <<CONF
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  else
    # Every node reports this machine's CPUs: the nodes share its cores (oversubscribed).
    for i in $(seq 1 "$nodes"); do
      echo "${node/NodeName=$host /NodeName=node$i } NodeHostname=node$i NodeAddr=127.0.1.$i Port=$((6817 + i)) State=UNKNOWN" >> "$conf"
    done
    echo "PartitionName=debug Nodes=node[1-$nodes] Default=YES MaxTime=INFINITE State=UP" >> "$conf"
    # The nodes' /etc/hosts (bind-mounted in their namespaces): this machine's, and the node names.
    { cat /etc/hosts; for i in $(seq 1 "$nodes"); do echo "127.0.1.$i node$i"; done; } > "$root/hosts"
    mkdir -p "$scratch"
  fi
}

node_names() {  # the nodes of the written config: the host's name, or node1..nodeN
  sed -n 's/^NodeName=\([^ ]*\).*/\1/p' "$conf"
}

slurmd_pid_name() {  # the pid file's name of the slurmd serving node $1
  if [ "$1" = "$(hostname -s)" ]; then echo slurmd; else echo "slurmd-$1"; fi
}

start_slurmd() {  # start_slurmd NODE
  if [ "$1" = "$(hostname -s)" ]; then
    SLURM_CONF="$conf" slurmd -f "$conf"
    return
  fi
  # Its own mount and UTS namespaces, inherited by every job step it starts: the node's
  # hostname, an /etc/hosts naming all nodes, and a scratch tmpfs of its own.
  SLURM_CONF="$conf" unshare --mount --uts --propagation private sh -ec '
    hostname "$1"
    mount --bind "$2/hosts" /etc/hosts
    mount -t tmpfs -o size=256m,mode=1777 "scratch-$1" "$2/scratch"
    exec slurmd -N "$1" -f "$3"' sh "$1" "$root" "$conf"
}

port_free() {  # another SLURM (say, another checkout's local cluster) may hold SLURM's ports
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    echo "local-cluster: port $1, which $2 needs, is taken (another SLURM running? stop it with its own 'down')" >&2
    exit 1
  fi
}

wait_for_nodes() {  # until every node of the config accepts jobs
  local i state ready names
  names="$(node_names | paste -sd, -)"
  for i in $(seq 1 60); do
    state="$(SLURM_CONF="$conf" sinfo -h -N -p debug -o '%N %t' 2>/dev/null || true)"
    ready="$(grep -cE ' (idle|mix|alloc)' <<<"$state" || true)"
    [ "$ready" = "$(node_names | wc -l)" ] && return 0
    if [ "$i" = 10 ] && grep -qE ' (down|drain)' <<<"$state"; then
      SLURM_CONF="$conf" scontrol update nodename="$names" state=resume 2>/dev/null || true
    fi
    sleep 1
  done
  echo "local-cluster: the nodes did not come up (sinfo says '$(echo ${state:-nothing})'); see $root/log/" >&2
  return 1
}

running_nodes() {  # how many slurmd of an earlier `up` still run (by their pid files)
  local file count=0
  for file in "$root"/run/slurmd*.pid; do
    [ -f "$file" ] || continue
    pid_of "$(basename "$file" .pid)" >/dev/null && count=$((count + 1))
  done
  echo "$count"
}

up() {  # up NODES
  local nodes="$1" running name i
  need_root up
  running="$(running_nodes)"
  if [ "$running" != 0 ] && [ "$running" != "$nodes" ]; then
    echo "local-cluster: a $running-node cluster runs here; stop it with 'down' before 'up --nodes $nodes'" >&2
    exit 1
  fi
  install_packages
  write_config "$nodes"
  # Checked before anything starts, so a refused `up` leaves nothing running.
  pid_of slurmctld >/dev/null || port_free 6817 slurmctld
  i=1
  for name in $(node_names); do
    pid_of "$(slurmd_pid_name "$name")" >/dev/null || port_free $((6817 + i)) "slurmd of $name"
    i=$((i + 1))
  done
  if ! pid_of munged >/dev/null; then
    # --force: the project folder's parents may be group-writable, which munged refuses by default.
    munged --force --socket="$socket" --key-file="$root/munge/munge.key" --pid-file="$root/run/munged.pid" \
      --log-file="$root/log/munged.log" --seed-file="$root/munge/munged.seed"
  fi
  if ! pid_of slurmctld >/dev/null; then
    SLURM_CONF="$conf" slurmctld -f "$conf"
  fi
  for name in $(node_names); do
    pid_of "$(slurmd_pid_name "$name")" >/dev/null || start_slurmd "$name"
  done
  wait_for_nodes
  echo "local-cluster: up (partition debug: $(SLURM_CONF="$conf" sinfo -h -p debug -o '%D node(s) %N, %c CPUs each')); state and logs in $root"
  echo "local-cluster: point SLURM's commands at it with:  export SLURM_CONF=$conf"
}

down() {
  local name pid i file slurmds=()
  for file in "$root"/run/slurmd*.pid; do
    [ -f "$file" ] && slurmds+=("$(basename "$file" .pid)")
  done
  for name in "${slurmds[@]}" slurmctld munged; do
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
  local name pid running=0 names=(munged slurmctld)
  [ -f "$conf" ] && for name in $(node_names); do names+=("$(slurmd_pid_name "$name")"); done
  [ -f "$conf" ] || names+=(slurmd)
  for name in "${names[@]}"; do
    if pid="$(pid_of "$name")"; then echo "$name: running (pid $pid)"; running=$((running + 1)); else echo "$name: not running"; fi
  done
  [ "$running" = "${#names[@]}" ] && SLURM_CONF="$conf" sinfo
  [ "$running" = "${#names[@]}" ]
}

parse_nodes() {  # the N of `up --nodes N` (1 without it)
  case "$#:${1:-}" in
    0:) echo 1 ;;
    2:--nodes)
      if [[ "$2" =~ ^[1-9][0-9]*$ ]] && [ "$2" -le "$max_nodes" ]; then echo "$2"; return; fi
      echo "local-cluster: --nodes must be a whole number from 1 to $max_nodes, not '$2'" >&2; exit 2 ;;
    *) echo "usage: slurm/local-cluster.sh up [--nodes N]" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  up) shift; nodes="$(parse_nodes "$@")"; up "$nodes" ;;
  down) down ;;
  status) status ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *) echo "usage: slurm/local-cluster.sh up [--nodes N]|down|status|env" >&2; exit 2 ;;
esac
