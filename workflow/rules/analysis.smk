rule collect_runs:
    input:
        meta=run_files("meta.json"),
        trace=run_files("trace.parquet"),
        scores=run_files("scores.parquet"),
        # probes and lm-eval (evaluate.smk); read when present, so not asked of released traces
        evaluation=(
            []
            if ANALYSIS_ONLY
            else language_run_files("probes.parquet") + language_run_files("lm_eval.parquet")
        ),
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
    params:
        scale=config["scale"],
    localrule: True
    conda:
        ENV
    script:
        "../scripts/power_table.py"


rule noise_control_table:
    input:
        runs=f"{TABLES}/runs.parquet",
    output:
        csv=f"{TABLES}/noise_control.csv",
        md=f"{TABLES}/noise_control.md",
    benchmark:
        f"{RESULTS}/benchmarks/noise_control_table.tsv"
    log:
        f"{RESULTS}/logs/noise_control_table.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/noise_control_table.py"


rule h1_regression:
    input:
        runs=f"{TABLES}/runs.parquet",
        scores=f"{TABLES}/scores.parquet",
        plan=config["plan"],
    output:
        csv=f"{TABLES}/h1_regression.csv",
        md=f"{TABLES}/h1_regression.md",
        shots_csv=f"{TABLES}/regression_shots.csv",
        shots_md=f"{TABLES}/regression_shots.md",
    benchmark:
        f"{RESULTS}/benchmarks/h1_regression.tsv"
    log:
        f"{RESULTS}/logs/h1_regression.log",
    localrule: True
    conda:
        ENV
    params:
        out_dir=lambda wildcards, output: str(Path(output.csv).parent),
    script:
        "../scripts/h1_regression.py"


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
