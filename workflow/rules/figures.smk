rule figures:
    input:
        runs=f"{TABLES}/runs.parquet",
        tables=[f"{TABLES}/{t}.csv" for t in ANALYSIS_TABLES],
        plan=config["plan"],
    output:
        [f"{FIGURES}/{f}.{ext}" for f in FIGURE_STEMS[:4] for ext in ("png", "pdf")],
    benchmark:
        f"{RESULTS}/benchmarks/figures.tsv"
    log:
        f"{RESULTS}/logs/figures.log",
    params:
        tables_dir=TABLES,
        out_dir=FIGURES,
    localrule: True
    conda:
        ENV
    script:
        "../scripts/figures.py"


rule figure_clipping:
    input:
        runs=f"{TABLES}/runs.parquet",
        steps=f"{TABLES}/steps.parquet",
    output:
        png=f"{FIGURES}/fig6_clipping.png",
        pdf=f"{FIGURES}/fig6_clipping.pdf",
    benchmark:
        f"{RESULTS}/benchmarks/figure_clipping.tsv"
    log:
        f"{RESULTS}/logs/figure_clipping.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/figure_clipping.py"


rule figure_icl_curves:
    input:
        runs=f"{TABLES}/runs.parquet",
        scores=f"{TABLES}/scores.parquet",
    output:
        png=f"{FIGURES}/icl_curves.png",
        pdf=f"{FIGURES}/icl_curves.pdf",
    benchmark:
        f"{RESULTS}/benchmarks/figure_icl_curves.tsv"
    log:
        f"{RESULTS}/logs/figure_icl_curves.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/figure_icl_curves.py"
