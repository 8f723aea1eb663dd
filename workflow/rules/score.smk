# The scores of a run of a family without a language model (e.g. the in-context
# regression family); a language run's scores come with its probes and lm-eval
# tasks from one evaluation process (evaluate.smk).
rule score:
    input:
        checkpoint=f"{TRACES}/{{condition}}/seed{{seed}}/checkpoint.pt",
    output:
        f"{TRACES}/{{condition}}/seed{{seed}}/scores.parquet",
    wildcard_constraints:
        condition=family_condition_pattern("regression"),
    benchmark:
        f"{RESULTS}/benchmarks/score/{{condition}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/score/{{condition}}_seed{{seed}}.log",
    threads: config.get("threads_per_run", 1)
    resources:
        **get_resources("score", "regression"),
    params:
        run_id=lambda w: f"{w.condition}_s{w.seed}",
    conda:
        ENV
    script:
        "../scripts/score_run.py"
