# Counterfactual Noise Replay (issue 21; plan section replay, deviation D10): exploratory,
# after training. The base runs the plan registers record their state every
# replay.record_every steps (declared here as the replay/ directory of their run); one
# job per base run then predicts, for each switch point, every candidate's change of each
# metric and retrains the segment with each candidate (python -m training.replay validate),
# one job per base run and switch point, placed first among the ready jobs (priority) so
# that it runs beside the training of the other arms.
# Without a replay registered at this scale the file adds no rule and no output
# (REPLAY, REPLAY_DIR and cnr_case_files() are in common.smk).
if REPLAY is not None and not ANALYSIS_ONLY:
    _BASE = {
        "condition": re.escape(REPLAY.base_condition),
        "seed": "|".join(str(s) for s in REPLAY.base_seeds),
    }
    _SWITCH = "|".join(re.escape(f"{x:g}") for x in REPLAY.switch_points)
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
            predictions=f"{REPLAY_DIR}/{{condition}}/seed{{seed}}/switch{{switch}}/predictions.csv",
            retrains=f"{REPLAY_DIR}/{{condition}}/seed{{seed}}/switch{{switch}}/retrains.csv",
        wildcard_constraints:
            **_BASE,
            switch=_SWITCH,
        benchmark:
            f"{RESULTS}/benchmarks/cnr_case/{{condition}}_seed{{seed}}_switch{{switch}}.tsv"
        log:
            f"{RESULTS}/logs/cnr_case/{{condition}}_seed{{seed}}_switch{{switch}}.log",
        threads: config.get("threads_per_run", 1)
        priority: 10
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
            "--run-dir {params.run_dir:q} --corpus {input.corpus:q} --switch {wildcards.switch} "
            "--out {params.out:q} "
            "> {log:q} 2>&1"
