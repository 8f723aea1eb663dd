#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine, CPU only, for `make cluster-test`.
#
#   cluster/test/start_slurm.sh DIR
#
# Installs Debian's slurm-wlm and munge when missing (apt-get), then starts, with
# their state, logs and config under DIR: a munged on its own socket with its own
# key, slurmctld and slurmd (Slurm 22.05) on ports 16817/16818, with accounting off
# (the test profile queries job status with squeue; MinJobAge keeps finished jobs
# visible to it). Outside DIR it writes only /etc/slurm/slurm.conf (a copy of
# DIR/slurm.conf, for job steps; refused when a SLURM config is already there),
# which stop_slurm.sh removes. Writes DIR/env, to be sourced by every client
# (SLURM_CONF), and DIR/pids, which cluster/test/stop_slurm.sh DIR reads.
set -euo pipefail
dir=${1:?usage: $0 DIR}
# The daemons run as root (slurmd starts jobs as their users): re-run under sudo otherwise.
[ "$(id -u)" = 0 ] || exec sudo --preserve-env=PATH "$0" "$@"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    echo "installing slurm-wlm and munge (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
fi
version=$(slurmctld -V | awk '{print $2}')
echo "Slurm $version" >&2

node=$(hostname -s)
cpus=$(nproc)
# Advertise at least 4 CPUs so that training jobs and the snakemake job steps can
# overlap on a 2-core machine (slurmd accepts it with config_overrides).
slots=$(( cpus < 4 ? 4 : cpus ))
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"
chmod 700 "$dir/munge"

# munge: own key, own socket; slurm finds it through AuthInfo.
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
socket="$dir/munge/munge.socket"
munged --force --socket="$socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munged.seed"

cat > "$dir/slurm.conf" <<EOF
ClusterName=pnetest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay in squeue's view for 10 minutes: the status query can see them.
MinJobAge=600
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 CPUs=$slots RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
# Slurm reads plugstack.conf beside slurm.conf; an empty one keeps /etc's out.
: > "$dir/plugstack.conf"
echo "export SLURM_CONF=$dir/slurm.conf" > "$dir/env"
export SLURM_CONF="$dir/slurm.conf"
# The Snakemake job step drops SLURM_* variables (SLURM_CONF too) before its srun, so
# srun inside a job reads the default path: the config goes there as well, only on a
# machine without a SLURM setup of its own, and stop_slurm.sh removes it again.
etc_conf=/etc/slurm/slurm.conf
if [ -e "$etc_conf" ] && ! cmp -s "$etc_conf" "$dir/slurm.conf"; then
    echo "$etc_conf exists: this machine has a SLURM setup; the test cluster needs that" \
        "path for job steps and will not overwrite it" >&2
    munged --stop --socket="$socket" || true
    exit 1
fi
mkdir -p /etc/slurm
cp "$dir/slurm.conf" "$etc_conf"
echo "$etc_conf" > "$dir/installed_conf"

slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF" -N "$node"
echo "$(cat "$dir/munge/munged.pid")" > "$dir/pids"
for _ in $(seq 1 60); do
    [ -s "$dir/slurmctld.pid" ] && [ -s "$dir/slurmd.pid" ] && break
    sleep 0.5
done
cat "$dir/slurmctld.pid" "$dir/slurmd.pid" >> "$dir/pids"
for _ in $(seq 1 60); do
    state=$(sinfo -h -N -o %t 2>/dev/null || true)
    case "$state" in idle*|mix*|alloc*) break ;; esac
    sleep 1
done
case "$state" in
    idle*|mix*|alloc*) echo "one-node cluster up: node $node ($slots CPU slots), state $state" >&2 ;;
    *) echo "slurm did not come up (node state '$state'); logs in $dir/log" >&2
       tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
       exit 1 ;;
esac
