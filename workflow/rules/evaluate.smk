# End-of-run evaluation of every trained model beside its scores (score.smk): the
# probes (training.probe_scores) and the project's lm-eval tasks, run offline on
# local data (training.lm_eval_suite). Each writes a tidy per-run table that
# collect_runs joins into runs.parquet, one column per measure.


rule lm_eval_data:
    input:
        corpus=f"{RESULTS}/data/corpus.pt",
    output:
        [f"{RESULTS}/lm_eval/data/{task}.jsonl" for task in config["lm_eval"]["tasks"]],
    benchmark:
        f"{RESULTS}/benchmarks/lm_eval_data.tsv"
    log:
        f"{RESULTS}/logs/lm_eval_data.log",
    params:
        lm_eval=config["lm_eval"],
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    localrule: True
    conda:
        ENV
    script:
        "../scripts/lm_eval_data.py"


rule probes:
    input:
        corpus=f"{RESULTS}/data/corpus.pt",
        checkpoint=f"{TRACES}/{{condition}}/seed{{seed}}/checkpoint.pt",
    output:
        f"{TRACES}/{{condition}}/seed{{seed}}/probes.parquet",
    benchmark:
        f"{RESULTS}/benchmarks/probes/{{condition}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/probes/{{condition}}_seed{{seed}}.log",
    threads: config.get("threads_per_run", 1)
    params:
        probes=config["probes"],
        run_id=lambda w: f"{w.condition}_s{w.seed}",
    conda:
        ENV
    script:
        "../scripts/probe_run.py"


rule lm_eval:
    input:
        corpus=f"{RESULTS}/data/corpus.pt",
        checkpoint=f"{TRACES}/{{condition}}/seed{{seed}}/checkpoint.pt",
        data=rules.lm_eval_data.output,
    output:
        f"{TRACES}/{{condition}}/seed{{seed}}/lm_eval.parquet",
    benchmark:
        f"{RESULTS}/benchmarks/lm_eval/{{condition}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/lm_eval/{{condition}}_seed{{seed}}.log",
    threads: config.get("threads_per_run", 1)
    params:
        tasks=config["lm_eval"]["tasks"],
        run_id=lambda w: f"{w.condition}_s{w.seed}",
        data_dir=lambda wildcards, input: str(Path(input.data[0]).parent),
    conda:
        ENV
    script:
        "../scripts/lm_eval_run.py"
