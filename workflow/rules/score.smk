rule score:
    input:
        corpus=f"{RESULTS}/data/corpus.pt",
        checkpoint=f"{TRACES}/{{condition}}/seed{{seed}}/checkpoint.pt",
    output:
        f"{TRACES}/{{condition}}/seed{{seed}}/scores.parquet",
    benchmark:
        f"{RESULTS}/benchmarks/score/{{condition}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/score/{{condition}}_seed{{seed}}.log",
    threads: config.get("threads_per_run", 1)
    params:
        evaluate=config["evaluate"],
        run_id=lambda w: f"{w.condition}_s{w.seed}",
    conda:
        ENV
    script:
        "../scripts/score_run.py"
