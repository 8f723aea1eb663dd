# One job per run (config one_job_per_run, the CPU scales): the run is trained and
# then evaluated in the same process (training.run_and_evaluate), which starts the
# interpreter and imports torch once instead of twice. It calls the functions of the
# separate train, evaluate and score rules (train.smk, evaluate.smk, score.smk; the
# cluster keeps those apart, each job with its own resources) and writes the same
# files at the same paths.
_RUN = f"{TRACES}/{{condition}}/seed{{seed}}"


rule train_and_evaluate:
    input:
        unpack(get_reference_trace),
        # the training corpus for training and the scores; the synthetic corpus for the
        # probes and the lm-eval tasks, built on its families
        corpus=CORPUS,
        synthetic=f"{RESULTS}/data/corpus.pt",
        data=rules.lm_eval_data.output,
        plan=config["plan"],
    output:
        checkpoint=f"{_RUN}/checkpoint.pt",
        trace=f"{_RUN}/trace.parquet",
        layers=f"{_RUN}/layers.parquet",
        meta=f"{_RUN}/meta.json",
        scores=f"{_RUN}/scores.parquet",
        probes=f"{_RUN}/probes.parquet",
        lm_eval=f"{_RUN}/lm_eval.parquet",
    wildcard_constraints:
        condition=family_condition_pattern("language"),
    benchmark:
        f"{RESULTS}/benchmarks/train_and_evaluate/{{condition}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/train_and_evaluate/{{condition}}_seed{{seed}}.log",
    threads: config.get("threads_per_run", 1)
    resources:
        **get_resources("train"),
    params:
        launcher=get_launcher,
        config_json=get_config_json,
        out=lambda w, output: str(Path(output.meta).parent),
        reference=get_reference_arg,
        data_dir=lambda wildcards, input: str(Path(input.data[0]).parent),
        # what the evaluation reads (as in rule evaluate): a change reruns the job
        evaluate=config["evaluate"],
        probes=config["probes"],
        tasks=config["lm_eval"]["tasks"],
    conda:
        ENV
    shell:
        "{params.launcher} -m training.run_and_evaluate --config-json {params.config_json} "
        "--corpus {input.corpus} --synthetic {input.synthetic} --lm-eval-data {params.data_dir} "
        "--condition {wildcards.condition} --seed {wildcards.seed} --out {params.out} "
        "{params.reference} > {log} 2>&1"


rule train_and_score:
    input:
        unpack(get_reference_trace),
        corpus=CORPUS,
        plan=config["plan"],
    output:
        checkpoint=f"{_RUN}/checkpoint.pt",
        trace=f"{_RUN}/trace.parquet",
        layers=f"{_RUN}/layers.parquet",
        meta=f"{_RUN}/meta.json",
        scores=f"{_RUN}/scores.parquet",
    wildcard_constraints:
        condition=family_condition_pattern("regression"),
    benchmark:
        f"{RESULTS}/benchmarks/train_and_score/{{condition}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/train_and_score/{{condition}}_seed{{seed}}.log",
    threads: config.get("threads_per_run", 1)
    resources:
        **get_resources("train", "regression"),
    params:
        launcher=get_launcher,
        config_json=get_config_json,
        out=lambda w, output: str(Path(output.meta).parent),
        reference=get_reference_arg,
    conda:
        ENV
    shell:
        "{params.launcher} -m training.run_and_evaluate --config-json {params.config_json} "
        "--corpus {input.corpus} --condition {wildcards.condition} --seed {wildcards.seed} "
        "--out {params.out} {params.reference} > {log} 2>&1"
