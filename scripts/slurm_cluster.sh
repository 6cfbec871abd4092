#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the `slurm` tests and for trying sweeps locally.
#   scripts/slurm_cluster.sh start    # installs slurm-wlm if missing (root, Debian), starts munge+slurmctld+slurmd
#   scripts/slurm_cluster.sh stop     # stops the daemons this script started (by pid)
#   scripts/slurm_cluster.sh env      # prints `export SLURM_CONF=...` for your shell
# State lives in $SLURM_LOCAL_DIR (default /tmp/tokensmith-slurm). Needs root: it runs munged as the munge user
# and slurmd as root, as on a real cluster node. SLURM_CTLD_PORT / SLURMD_PORT (default 6817 / 6818) let a second
# cluster (e.g. the `slurm` tests') run beside one that is already up; both share one munged.
set -euo pipefail
DIR="${SLURM_LOCAL_DIR:-/tmp/tokensmith-slurm}"
CONF="$DIR/slurm.conf"
CTLD_PORT="${SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURMD_PORT:-6818}"

install_if_missing() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "slurm-wlm is not installed and this is not root: apt-get install slurm-wlm" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm >/dev/null
  fi
}

write_conf() {
  mkdir -p "$DIR"/{state,spool,log,run}
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
  cat > "$CONF" <<CONF
ClusterName=local
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmdSpoolDir=$DIR/spool
StateSaveLocation=$DIR/state
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
MinJobAge=3600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
}

start() {
  install_if_missing
  write_conf
  export SLURM_CONF="$CONF"
  mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  if ! munge -n >/dev/null 2>&1; then  # no munged answering yet: start one and remember its pid
    runuser -u munge -- munged
    for _ in $(seq 1 20); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$DIR/run/munged.ours"
  fi
  slurmctld -D -i -f "$CONF" >"$DIR/log/slurmctld.out" 2>&1 & echo $! > "$DIR/run/ctld.ours"
  slurmd -D -N localhost -f "$CONF" >"$DIR/log/slurmd.out" 2>&1 & echo $! > "$DIR/run/slurmd.ours"
  for _ in $(seq 1 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
      echo "SLURM up: export SLURM_CONF=$CONF"; return 0
    fi
    sleep 0.5
  done
  echo "SLURM did not come up; logs in $DIR/log" >&2; tail -5 "$DIR/log/"*.log >&2 || true; exit 1
}

# slurmstepd processes of this cluster's jobs (their environment carries our SLURM_CONF); they outlive slurmd
# and retry their "job complete" RPC forever when the daemons stop first.
our_stepds() {
  local p
  for p in $(pgrep -x slurmstepd || true); do
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "SLURM_CONF=$CONF" && echo "$p"
  done
}

stop() {
  # Let finished jobs report back (and cancel running ones) before the daemons go.
  if [ -f "$DIR/run/ctld.ours" ] && kill -0 "$(cat "$DIR/run/ctld.ours")" 2>/dev/null; then
    SLURM_CONF="$CONF" scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 1 100); do
      [ -z "$(SLURM_CONF="$CONF" squeue -h 2>/dev/null)" ] && [ -z "$(our_stepds)" ] && break
      sleep 0.2
    done
  fi
  local pids=()
  for f in "$DIR/run/slurmd.ours" "$DIR/run/ctld.ours"; do
    [ -f "$f" ] && { pids+=("$(cat "$f")"); kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; }
  done
  for _ in $(seq 1 50); do  # wait until they are gone, so that a restart can bind the same ports
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.2
  done
  for p in $(our_stepds); do kill -KILL "$p" 2>/dev/null || true; done  # stepd blocks SIGTERM; its slurmd is gone
  if [ -f "$DIR/run/munged.ours" ]; then
    local pid
    pid=$(cat "$DIR/run/munged.ours")
    [[ "$pid" =~ ^[0-9]+$ ]] || pid=$(cat /run/munge/munged.pid 2>/dev/null || true)  # older marker: "started"
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -f "$DIR/run/munged.ours"
  fi
  echo "SLURM stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
