rule train:
    input:
        unpack(get_reference_trace),
        corpus=CORPUS,
        plan=config["plan"],
    output:
        checkpoint=f"{TRACES}/{{condition}}/seed{{seed}}/checkpoint.pt",
        trace=f"{TRACES}/{{condition}}/seed{{seed}}/trace.parquet",
        layers=f"{TRACES}/{{condition}}/seed{{seed}}/layers.parquet",
        meta=f"{TRACES}/{{condition}}/seed{{seed}}/meta.json",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{condition}}_seed{{seed}}.tsv"
    log:
        f"{RESULTS}/logs/train/{{condition}}_seed{{seed}}.log",
    threads: config.get("threads_per_run", 1)
    resources:
        **get_run_resources("train"),
    params:
        launcher=get_launcher,
        config_json=get_config_json,
        out=lambda w, output: str(Path(output.meta).parent),
        reference=get_reference_arg,
    conda:
        ENV
    shell:
        "{params.launcher} -m training.run --config-json {params.config_json} "
        "--corpus {input.corpus} --condition {wildcards.condition} --seed {wildcards.seed} "
        "--out {params.out} {params.reference} > {log} 2>&1"
