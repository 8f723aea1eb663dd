# Counterfactual Noise Replay (seed 002 §4, issue 21, deviation D10; exploratory, never in
# the confirmatory family): the replay job's per-case files (workflow/rules/cnr.smk, whose
# cnr_case_files() lists every case's predictions.csv and retrains.csv; included before
# this file) gathered into three tables, the validation figure and the validation table's
# report page, in one job (analysis.report.cnr_page). Figure and page are marked for the
# report's exploratory section; rule report_pages asks for this job only when
# cnr_case_files() lists files, so a plan without replay needs none of it.
from analysis.report.pages import SECTIONS  # noqa: E402


rule cnr_tables:
    input:
        cases=lambda wildcards: cnr_case_files(),
        plan=config["plan"],
    output:
        predictions=f"{TABLES}/cnr_predictions.csv",
        retrains=f"{TABLES}/cnr_retrains.csv",
        validation=f"{TABLES}/cnr_validation.csv",
        validation_md=f"{TABLES}/cnr_validation.md",
        figure=report(
            f"{FIGURES}/cnr_predicted_vs_realised.png",
            caption="../report/cnr_predicted_vs_realised.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "Noise replay: predicted against realised"},
        ),
        figure_pdf=f"{FIGURES}/cnr_predicted_vs_realised.pdf",
        page=report(
            f"{RESULTS}/report/cnr_validation.html",
            caption="../report/cnr_validation.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "Noise replay against retraining"},
        ),
    benchmark:
        f"{RESULTS}/benchmarks/cnr_tables.tsv"
    log:
        f"{RESULTS}/logs/cnr_tables.log",
    params:
        launcher=JOB_LAUNCHER,
        # the case directories: the folders of the listed files, each once
        cases=lambda wildcards, input: sorted({str(Path(f).parent) for f in input.cases}),
        tables_dir=lambda wildcards, output: str(Path(output.validation).parent),
        figures_dir=lambda wildcards, output: str(Path(output.figure).parent),
        # the bootstrap of cnr_validation's Spearman CI: the plan's analysis seed
        seed=int(PLAN.get("random_seeds", {}).get("analysis", 0)),
    localrule: True
    conda:
        ENV
    shell:
        "{params.launcher} -m workflow.scripts.cnr_tables --cases {params.cases:q} "
        "--tables-dir {params.tables_dir:q} --figures-dir {params.figures_dir:q} "
        "--plan {input.plan:q} --report-page {output.page:q} --seed {params.seed} 2> {log:q}"
