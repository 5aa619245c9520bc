#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for testing and trying lbtrain's cluster path
# (hydra/launcher=slurm, requeue, preemption drills). NOT a production cluster setup: root
# daemons, no accounting, no cgroups, a throwaway munge key.
#
# Partition `debug` (the default) is one node with all of the machine's CPUs. Partition
# `twonodes` is two more nodes on the same host (a slurmd each, on their own ports), each with
# half the CPUs, for multi-node jobs (`trainer.num_nodes=2`); they share the CPUs of `debug`, and
# their names do not resolve (jobs set MASTER_ADDR=127.0.0.1).
#
#   scripts/slurm-cluster.sh up     # install slurm-wlm + munge if missing, start the daemons
#   scripts/slurm-cluster.sh down   # stop the daemons it started (by their pid files)
#
# Everything it writes (config, munge key and socket, state, spool, logs, pid files) lives in
# $SLURM_DIR (default: .slurm/ in the repository). Clients find the cluster through
# SLURM_CONF=$SLURM_DIR/slurm.conf; `up` ends with the command of a sweep on it
# (conf/hydra/launcher/slurm_test.yaml: the slurm launcher config with this cluster's values).
set -euo pipefail

ROOT=$(realpath "$(dirname "$0")/..")
DIR=$(realpath -m "${SLURM_DIR:-$ROOT/.slurm}")
CONF=$DIR/slurm.conf
MUNGE_SOCKET=$DIR/munge/munge.socket
HOST=$(hostname -s)
NODES=("$HOST" "$HOST-n1" "$HOST-n2")  # a slurmd each

fail() { echo "slurm-cluster: $*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

check_host() {
  [ "$(uname -s)" = Linux ] || fail "needs Linux (this is $(uname -s)); use a real cluster instead"
  [ "$(id -u)" = 0 ] || fail "needs root (its daemons run as root); run it with sudo"
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
     || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    command -v apt-get >/dev/null || fail "slurm-wlm and munge are not installed and there is no apt-get to install them"
    echo "slurm-cluster: installing slurm-wlm and munge with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      slurm-wlm munge >/dev/null || fail "apt-get install slurm-wlm munge failed"
  fi
}

write_config() {
  local cpus half mem_mb
  cpus=$(nproc)
  half=$(( cpus / 2 > 0 ? cpus / 2 : 1 ))
  # all but 1 GiB of the machine's memory, in MiB, for jobs' --mem requests
  mem_mb=$(awk '/MemTotal/ {m = int($2 / 1024) - 1024; print (m > 512 ? m : 512)}' /proc/meminfo)
  cat >"$CONF" <<EOF
# Written by scripts/slurm-cluster.sh: a one-node test cluster ($cpus CPUs, $mem_mb MiB).
ClusterName=lbtrain
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may start again ~11 s later, not after the default 2 min
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
ReturnToService=2
# finished jobs stay visible to scontrol for 5 minutes (their Restarts count, their state)
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 Port=6818 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
NodeName=$HOST-n[1-2] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=6819-6820 CPUs=$half RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=twonodes Nodes=$HOST-n[1-2] MaxTime=INFINITE State=UP
EOF
}

up() {
  check_host
  mkdir -p "$DIR"/{log,state,munge} "${NODES[@]/#/$DIR/spool/}"
  chmod 755 "$DIR/munge"  # munged wants its socket's dir readable, not writable, by others
  [ -f "$DIR/munge.key" ] || { head -c 1024 /dev/urandom >"$DIR/munge.key"; chmod 600 "$DIR/munge.key"; }
  write_config
  alive "$DIR/munge/munged.pid" || munged --force --key-file="$DIR/munge.key" \
    --socket="$MUNGE_SOCKET" --pid-file="$DIR/munge/munged.pid" \
    --seed-file="$DIR/munge/munged.seed" --log-file="$DIR/log/munged.log"
  alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
  for node in "${NODES[@]}"; do
    alive "$DIR/slurmd-$node.pid" || slurmd -f "$CONF" -N "$node"
  done
  export SLURM_CONF=$CONF
  for _ in $(seq 30); do  # until every node takes jobs
    states=$(sinfo -h -N -o "%N %T" 2>/dev/null || echo "no answer")
    down=$(grep -v -E " (idle|mixed|allocated)" <<<"$states" || true)
    [ -z "$down" ] && break
    sleep 1
  done
  [ -z "$down" ] || fail "nodes did not come up ($(echo $down)); see $DIR/log/"
  echo "slurm-cluster: up: partition debug (1 node, $(nproc) CPUs) and twonodes; logs in $DIR/log"
  # the Python that has lbtrain (`make install`'s), so that the line runs as printed
  local python=python
  [ -x "$ROOT/.venv/bin/python" ] && python=$ROOT/.venv/bin/python
  echo "slurm-cluster: a sweep on it (sinfo, squeue and scancel need SLURM_CONF=$CONF too):"
  echo "SLURM_CONF=$CONF $python -m lbtrain.run -m hydra/launcher=slurm_test seed=0,1 trainer.max_epochs=1"
}

down() {
  if alive "$DIR/slurmctld.pid"; then  # jobs first, so that no training process outlives slurmd
    SLURM_CONF=$CONF squeue -h -o %i 2>/dev/null | xargs -r env SLURM_CONF="$CONF" scancel --full || true
    sleep 1
  fi
  for pidfile in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid" "$DIR/munge/munged.pid"; do
    [ -e "$pidfile" ] || continue
    alive "$pidfile" || { rm -f "$pidfile"; continue; }
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$pidfile"
  done
  echo "slurm-cluster: down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) fail "usage: $0 up|down" ;;
esac
