# End-of-run evaluation of every trained language model: its scores
# (training.evaluation.scores), the probes (training.evaluation.probes) and the project's
# lm-eval tasks, run offline on local data (training.evaluation.lm_eval_suite). One process
# per run loads the model once and writes the three tidy per-run tables
# (training.evaluation.run_evaluation); collect_runs joins them into runs.parquet, one
# column per measure. A run of another task family is scored alone (score.smk). With config
# one_job_per_run the train job evaluates its run itself (train_and_evaluate.smk).


rule evaluate:
    input:
        # the training corpus (token shards when the config has `text`) for the scores;
        # the synthetic corpus for the probes and the lm-eval tasks, built on its families
        corpus=CORPUS,
        synthetic=f"{RESULTS}/data/corpus.pt",
        checkpoint=f"{TRACES}/{{condition}}/seed{{seed}}/checkpoint.pt",
        data=rules.lm_eval_data.output,
    output:
        scores=f"{TRACES}/{{condition}}/seed{{seed}}/scores.parquet",
        probes=f"{TRACES}/{{condition}}/seed{{seed}}/probes.parquet",
        lm_eval=f"{TRACES}/{{condition}}/seed{{seed}}/lm_eval.parquet",
    wildcard_constraints:
        condition=family_condition_pattern("language"),
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{condition}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/evaluate/{{condition}}_seed{{seed}}.log",
    threads: config.get("threads_per_run", 1)
    resources:
        **get_resources("score"),
    params:
        evaluate=config["evaluate"],
        probes=config["probes"],
        tasks=config["lm_eval"]["tasks"],
        run_id=lambda w: f"{w.condition}_s{w.seed}",
        data_dir=lambda wildcards, input: str(Path(input.data[0]).parent),
    conda:
        ENV
    script:
        "../scripts/evaluate_run.py"
