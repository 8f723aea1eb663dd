#!/usr/bin/env bash
# Stop the daemons cluster/test/start_slurm.sh DIR started (slurmd, slurmctld, munged),
# by the process ids it recorded in DIR/pids; nothing else is touched.
set -uo pipefail
dir=${1:?usage: $0 DIR}
# The daemons run as root (slurmd starts jobs as their users): re-run under sudo otherwise.
[ "$(id -u)" = 0 ] || exec sudo --preserve-env=PATH "$0" "$@"
[ -f "$dir/pids" ] || { echo "no $dir/pids: nothing to stop" >&2; exit 0; }
if [ -f "$dir/env" ]; then
    # shellcheck disable=SC1091
    . "$dir/env"
    # Jobs of this test cluster only; their steps end before the daemons go.
    scancel --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 1 30); do
        [ -z "$(squeue -h -t running,completing,pending 2>/dev/null)" ] && break
        sleep 0.5
    done
fi
pids=$(tac "$dir/pids")
for pid in $pids; do kill "$pid" 2>/dev/null || true; done
for pid in $pids; do
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
done
rm -f "$dir/pids"
if [ -f "$dir/installed_conf" ]; then
    conf=$(cat "$dir/installed_conf")
    cmp -s "$conf" "$dir/slurm.conf" && rm -f "$conf"  # only the copy start_slurm.sh made
    rm -f "$dir/installed_conf"
fi
echo "stopped slurmd, slurmctld and munged ($(echo $pids | tr '\n' ' '))" >&2
