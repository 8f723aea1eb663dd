rule audit:
    input:
        runs=f"{TABLES}/runs.parquet",
        tests=f"{TABLES}/t1_confirmatory.csv",
        plan=config["plan"],
        lock=config["lock"],
    output:
        md=f"{RESULTS}/audit.md",
        json=f"{RESULTS}/audit.json",
    benchmark:
        f"{RESULTS}/benchmarks/audit.tsv"
    log:
        f"{RESULTS}/logs/audit.log",
    params:
        launcher=JOB_LAUNCHER,
        # the audit reads the plan, the lock, the results and the traces of the config
        config_json=get_config_json,
    localrule: True
    conda:
        ENV
    shell:
        "{params.launcher} -m workflow.scripts.audit --config-json {params.config_json} "
        "2> {log:q}"
