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
        launcher=JOB_LAUNCHER,
        # <traces>/<condition>/seed<seed>/meta.json -> <traces>
        traces=lambda wildcards, input: str(Path(input.meta[0]).parents[2]),
        scale=config["scale"],
    localrule: True
    conda:
        ENV
    shell:
        "{params.launcher} -m workflow.scripts.collect_runs --traces {params.traces:q} "
        "--plan {input.plan:q} --scale {params.scale:q} --runs {output.runs:q} "
        "--steps {output.steps:q} --scores {output.scores:q} 2> {log:q}"


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
        launcher=JOB_LAUNCHER,
        scale=config["scale"],
        out_dir=lambda wildcards, output: str(Path(output[0]).parent),
    # on the longest path of `make analysis` (collect, these tables, figures): first
    priority: 2
    localrule: True
    conda:
        ENV
    shell:
        "{params.launcher} -m workflow.scripts.analysis_tables --runs {input.runs:q} "
        "--plan {input.plan:q} --scale {params.scale:q} --out-dir {params.out_dir:q} 2> {log:q}"


# The exploratory tables, in one job beside the confirmatory ones (one process start,
# one import of the statistics): analysis/report/exploratory_tables.py names each.
rule exploratory_tables:
    input:
        runs=f"{TABLES}/runs.parquet",
        steps=f"{TABLES}/steps.parquet",
        scores=f"{TABLES}/scores.parquet",
        plan=config["plan"],
    output:
        [f"{TABLES}/{t}.{ext}" for t in EXPLORATORY_TABLES for ext in ("csv", "md")],
    benchmark:
        f"{RESULTS}/benchmarks/exploratory_tables.tsv"
    log:
        f"{RESULTS}/logs/exploratory_tables.log",
    params:
        launcher=JOB_LAUNCHER,
        scale=config["scale"],
        tables_dir=lambda wildcards, input: str(Path(input.runs).parent),
        # the runs that log the extra curvature proxies (config train.curvature_proxy_arms;
        # all runs when unset): the sensitivity table compares those
        curvature_proxy_arms=(
            ""
            if config["train"].get("curvature_proxy_arms") is None
            else " ".join(
                ["--curvature-proxy-arms"]
                + [shlex.quote(a) for a in config["train"]["curvature_proxy_arms"]]
            )
        ),
    localrule: True
    conda:
        ENV
    shell:
        "{params.launcher} -m workflow.scripts.exploratory_tables "
        "--tables-dir {params.tables_dir:q} --plan {input.plan:q} --scale {params.scale:q} "
        "{params.curvature_proxy_arms} 2> {log:q}"
