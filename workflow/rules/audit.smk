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
    localrule: True
    conda:
        ENV
    script:
        "../scripts/audit.py"
