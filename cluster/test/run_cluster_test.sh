#!/usr/bin/env bash
# `make cluster-test`: the smoke study through a real SLURM, with a cancelled and resumed job.
#
# 1. Starts a one-node SLURM cluster (cluster/test/start_slurm.sh; installs slurm-wlm
#    and munge when missing) in a temporary directory; stops its daemons on exit.
# 2. Runs the smoke study (config/smoke.yaml, results in the temporary directory,
#    the resume state saved at every logged step, a larger vocabulary so that runs
#    last long enough to be cancelled part-way) with
#    `snakemake --profile cluster/test`: every data, training and scoring job is an
#    sbatch job; statistics and figures run locally.
# 3. Once run bs4_fixed seed 0 has saved its resume state, cancels its SLURM job
#    with scancel; Snakemake retries it (retries in the profile) and the new job
#    resumes from <run>/resume.pt.
# 4. Checks that the retried job resumed (not restarted) and that its trace and
#    model equal an uninterrupted run of the same spec (cluster/test/check_resume.py).
# Leaves everything in $CLUSTER_TEST_DIR (default: a new /tmp/pne-cluster-test.*).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
export PATH="$repo/.venv/bin:$PATH"
t0=$(date +%s)
work=${CLUSTER_TEST_DIR:-$(mktemp -d /tmp/pne-cluster-test.XXXXXX)}
mkdir -p "$work"
victim_condition=bs4_fixed
victim_seed=0

cluster/test/start_slurm.sh "$work/slurm"
cleanup() {
    set +e  # every step of the cleanup runs, whatever failed before
    if [ -n "${smk_pid:-}" ] && [ -f "$work/snakemake.pid" ]; then
        # The snakemake this script started: under the SLURM executor it may not stop
        # on SIGTERM while it cancels its jobs.
        pid=$(cat "$work/snakemake.pid")
        kill "$pid" 2>/dev/null
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null
    fi
    cluster/test/stop_slurm.sh "$work/slurm"
    echo "cluster test: $(( $(date +%s) - t0 )) s wall; files in $work" >&2
}
trap cleanup EXIT
# shellcheck disable=SC1091
. "$work/slurm/env"

python - "$work" <<'EOF'
import sys, yaml
work = sys.argv[1]
config = yaml.safe_load(open("config/smoke.yaml"))
config["results"] = f"{work}/results"
config["train"]["checkpoint_interval"] = 1  # a resume state at every logged step
config["one_job_per_run"] = False  # a cluster keeps the train and evaluate jobs apart
# More copy and in-weights tokens than the smoke study's: the runs need 30-40 steps
# to the target instead of about 15, so a job can be cancelled part-way.
config["data"].update(copy_vocab=128, iw_items=64)
yaml.safe_dump(config, open(f"{work}/smoke.yaml", "w"), sort_keys=False)
EOF

# The exit status goes to a file: a finished background job stays a zombie until
# waited for, and `kill -0` cannot tell it from a running one.
rm -f "$work/snakemake.rc"
(
    snakemake --profile cluster/test --configfile "$work/smoke.yaml" \
        --slurm-logdir "$work/slurm_logs" > "$work/snakemake.log" 2>&1 &
    echo $! > "$work/snakemake.pid"
    rc=0
    wait $! || rc=$?
    echo "$rc" > "$work/snakemake.rc"
) &
smk_pid=$!

run_dir="$work/results/runs/$victim_condition/seed$victim_seed"
job=""
# The executor submits the ready train jobs at once, in no fixed order, to a cluster of
# four slots, so the victim's job may wait behind a dozen others in SLURM's queue: wait up
# to 10 minutes for its resume state (2 minutes was too short on 2026-12-07, with the job
# submitted 14th of 16; Snakemake's --prioritize did not change the submission order).
for _ in $(seq 1 3000); do
    [ -f "$work/snakemake.rc" ] && { echo "snakemake ended before the cancel" >&2; tail -n 40 "$work/snakemake.log" >&2; exit 1; }
    if [ -f "$run_dir/resume.pt" ]; then
        job=$(squeue -h -o '%i %k' | awk -v w="rule_train_wildcards_${victim_condition}_${victim_seed}" '$2 == w {print $1}')
        [ -n "$job" ] && break
    fi
    sleep 0.2
done
[ -n "$job" ] || { echo "the train job of $victim_condition seed $victim_seed never saved a resume state" >&2; exit 1; }
# Cancel at once (the run goes on while we look), then read the state it left: a killed
# job cannot remove it, and the state is written atomically (temp file, rename).
scancel "$job"
cp "$run_dir/resume.pt" "$work/resume_at_cancel.pt"
step=$(python -c 'import sys; from training.checkpoints import load_plain; print(load_plain(sys.argv[1])["step"])' "$work/resume_at_cancel.pt")
echo "cancelled SLURM job $job ($victim_condition seed $victim_seed; resume state at step $step)" >&2

wait "$smk_pid" || true
smk_pid=""
if [ "$(cat "$work/snakemake.rc")" != 0 ]; then
    echo "the smoke study failed under SLURM" >&2; tail -n 60 "$work/snakemake.log" >&2; exit 1
fi
grep -q "Error in rule train" "$work/snakemake.log" \
    || { echo "snakemake saw no failed train job after the scancel" >&2; exit 1; }
retry=$(squeue -h -t all -o '%i %k' | awk -v w="rule_train_wildcards_${victim_condition}_${victim_seed}" -v j="$job" '$2 == w && $1 != j {print $1}')
echo "retried as SLURM job(s) $retry; squeue's states of the run's jobs:" >&2
squeue -h -t all -o '%i %k %T' | awk -v w="rule_train_wildcards_${victim_condition}_${victim_seed}" '$2 == w' >&2
python cluster/test/check_resume.py "$run_dir" \
    "$work/results/logs/train/${victim_condition}_seed${victim_seed}.log" "$work/reference" "$step"
test -s "$work/results/audit.md" && test -s "$work/results/figures/fig1_pne_icl.png"
echo "cluster test passed: the smoke study ran through SLURM, $(ls "$work/results/runs"/*/seed*/meta.json | wc -l) runs" >&2
