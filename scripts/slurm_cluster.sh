#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the `slurm` tests and for trying sweeps locally.
#   scripts/slurm_cluster.sh start    # installs slurm-wlm if missing (root, Debian), starts munge+slurmctld+slurmd
#   scripts/slurm_cluster.sh stop     # stops the daemons this script started (by pid)
#   scripts/slurm_cluster.sh env      # prints `export SLURM_CONF=...` for your shell
# State lives in $SLURM_LOCAL_DIR (default /tmp/tokensmith-slurm). Needs root: it runs munged as the munge user
# and slurmd as root, as on a real cluster node.
set -euo pipefail
DIR="${SLURM_LOCAL_DIR:-/tmp/tokensmith-slurm}"
CONF="$DIR/slurm.conf"

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
  if ! pgrep -x munged >/dev/null; then runuser -u munge -- munged; echo started > "$DIR/run/munged.ours"; fi
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

stop() {
  for f in "$DIR/run/slurmd.ours" "$DIR/run/ctld.ours"; do
    [ -f "$f" ] && { kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; }
  done
  if [ -f "$DIR/run/munged.ours" ]; then pkill -x munged || true; rm -f "$DIR/run/munged.ours"; fi
  echo "SLURM stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
