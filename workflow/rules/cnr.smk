# Counterfactual Noise Replay (issue 21; plan section replay, deviation D10): exploratory,
# after training. The base runs the plan registers record their state every
# replay.record_every steps (declared here as the replay/ directory of their run); one
# job per base run then predicts, for each switch point, every candidate's change of each
# metric and retrains the segment with each candidate (python -m training.replay validate).
# Without a replay registered at this scale the file adds no rule and no output.
from training.replay.plan import replay_plan  # noqa: E402

REPLAY = replay_plan(PLAN, config["scale"], config["plan"])
REPLAY_DIR = f"{RESULTS}/replay"


def cnr_case_files():
    """Every replay case's predictions.csv and retrains.csv; none without a replay at this
    scale, and with analysis_only those of an earlier study only if all of them exist."""
    if REPLAY is None:
        return []
    files = [
        f"{REPLAY_DIR}/{REPLAY.base_condition}/seed{seed}/{name}.csv"
        for seed in REPLAY.base_seeds
        for name in ("predictions", "retrains")
    ]
    if ANALYSIS_ONLY and not all(Path(f).exists() for f in files):
        return []
    return files


if REPLAY is not None and not ANALYSIS_ONLY:
    _BASE = {
        "condition": re.escape(REPLAY.base_condition),
        "seed": "|".join(str(s) for s in REPLAY.base_seeds),
    }
    _BASE_RUN = f"{TRACES}/{{condition}}/seed{{seed}}"

    # The base runs are trained by the same command; their rule also declares the states
    # they record (training.run reads the plan and records them).
    if config["one_job_per_run"]:

        use rule train_and_evaluate as train_and_evaluate_replay_base with:
            output:
                **rules.train_and_evaluate.output,
                replay=directory(f"{_BASE_RUN}/replay"),
            wildcard_constraints:
                **_BASE,

        ruleorder: train_and_evaluate_replay_base > train_and_evaluate

    else:

        use rule train as train_replay_base with:
            output:
                **rules.train.output,
                replay=directory(f"{_BASE_RUN}/replay"),
            wildcard_constraints:
                **_BASE,

        ruleorder: train_replay_base > train

    rule cnr_case:
        input:
            unpack(get_reference_trace),
            meta=f"{_BASE_RUN}/meta.json",
            replay=f"{_BASE_RUN}/replay",
            corpus=CORPUS,
            plan=config["plan"],
        output:
            predictions=f"{REPLAY_DIR}/{{condition}}/seed{{seed}}/predictions.csv",
            retrains=f"{REPLAY_DIR}/{{condition}}/seed{{seed}}/retrains.csv",
        wildcard_constraints:
            **_BASE,
        benchmark:
            f"{RESULTS}/benchmarks/cnr_case/{{condition}}_seed{{seed}}.tsv"
        log:
            f"{RESULTS}/logs/cnr_case/{{condition}}_seed{{seed}}.log",
        threads: config.get("threads_per_run", 1)
        resources:
            **get_resources("train"),
        params:
            launcher=get_launcher,
            config_json=get_config_json,
            run_dir=lambda w, input: str(Path(input.meta).parent),
            out=lambda w, output: str(Path(output.predictions).parent),
        conda:
            ENV
        shell:
            "{params.launcher} -m training.replay validate --config-json {params.config_json} "
            "--run-dir {params.run_dir:q} --corpus {input.corpus:q} --out {params.out:q} "
            "> {log:q} 2>&1"
