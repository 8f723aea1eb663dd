rule collect_runs:
    input:
        meta=run_files("meta.json"),
        trace=run_files("trace.parquet"),
        scores=run_files("scores.parquet"),
        # probes and lm-eval (evaluate.smk); read when present, so not asked of released traces
        evaluation=[] if ANALYSIS_ONLY else run_files("probes.parquet") + run_files("lm_eval.parquet"),
        plan=config["plan"],
    output:
        runs=f"{TABLES}/runs.parquet",
        steps=f"{TABLES}/steps.parquet",
        scores=f"{TABLES}/scores.parquet",
    benchmark:
        f"{RESULTS}/benchmarks/collect_runs.tsv"
    log:
        f"{RESULTS}/logs/collect_runs.log",
    params:
        # <traces>/<condition>/seed<seed>/meta.json -> <traces>
        traces=lambda wildcards, input: str(Path(input.meta[0]).parents[2]),
        scale=config["scale"],
    localrule: True
    conda:
        ENV
    script:
        "../scripts/collect_runs.py"


rule analysis_tables:
    input:
        runs=f"{TABLES}/runs.parquet",
        plan=config["plan"],
    output:
        [f"{TABLES}/{t}.{ext}" for t in ANALYSIS_TABLES for ext in ("csv", "md")],
    benchmark:
        f"{RESULTS}/benchmarks/analysis_tables.tsv"
    log:
        f"{RESULTS}/logs/analysis_tables.log",
    params:
        scale=config["scale"],
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    localrule: True
    conda:
        ENV
    script:
        "../scripts/analysis_tables.py"


rule sensitivity_table:
    input:
        runs=f"{TABLES}/runs.parquet",
        steps=f"{TABLES}/steps.parquet",
    output:
        csv=f"{TABLES}/sensitivity.csv",
        md=f"{TABLES}/sensitivity.md",
    benchmark:
        f"{RESULTS}/benchmarks/sensitivity_table.tsv"
    log:
        f"{RESULTS}/logs/sensitivity_table.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/sensitivity_table.py"


rule power_table:
    input:
        runs=f"{TABLES}/runs.parquet",
        plan=config["plan"],
    output:
        csv=f"{TABLES}/power.csv",
        md=f"{TABLES}/power.md",
    benchmark:
        f"{RESULTS}/benchmarks/power_table.tsv"
    log:
        f"{RESULTS}/logs/power_table.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/power_table.py"


rule evaluation_table:
    input:
        runs=f"{TABLES}/runs.parquet",
    output:
        csv=f"{TABLES}/evaluation.csv",
        md=f"{TABLES}/evaluation.md",
    benchmark:
        f"{RESULTS}/benchmarks/evaluation_table.tsv"
    log:
        f"{RESULTS}/logs/evaluation_table.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/evaluation_table.py"
