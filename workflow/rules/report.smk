# The study report: `make report` runs the study's missing jobs, then
# `snakemake --report results/report.html` gathers every output marked report()
# into one self-contained HTML file. It opens on the summary written here
# (audit verdict, confirmatory tests, runs); the figures are marked where they
# are made (figures.smk), the tables' pages here (the noise replay's, exploratory and
# present only when the plan registers one, in cnr_tables.smk).
from preregistration.lock import study_paths  # noqa: E402
from analysis.report.pages import SECTIONS  # noqa: E402

REPORT = f"{RESULTS}/report"
DEVIATIONS = str(study_paths(config).deviations)

# What the report opens on; written by rule report_pages, read by `--report`.
report: str(Path(REPORT, "summary.rst").resolve())


# The report's opening text and its table pages, in one job.
rule report_pages:
    input:
        # The replay's validation table, worded on the opening page, only when the plan
        # registers a replay (cnr_case_files() of workflow/rules/cnr.smk lists case files)
        # and rule cnr_tables (workflow/rules/cnr_tables.smk) is included to make it; else
        # the report needs nothing of it. Asking for it brings in that job, whose figure
        # and table page are marked for the report's exploratory section.
        unpack(
            lambda wildcards: (
                {"cnr_validation_csv": f"{TABLES}/cnr_validation.csv"}
                if workflow.is_rule("cnr_tables") and globals().get("cnr_case_files", list)()
                else {}
            )
        ),
        audit_json=f"{RESULTS}/audit.json",
        t1_csv=f"{TABLES}/t1_confirmatory.csv",
        t2_csv=f"{TABLES}/t2_inventory.csv",
        clock_summary_csv=f"{TABLES}/clock_summary.csv",
        precision_csv=f"{TABLES}/precision.csv",
        audit=f"{RESULTS}/audit.md",
        t1=f"{TABLES}/t1_confirmatory.md",
        precision=f"{TABLES}/precision.md",
        h1=f"{TABLES}/h1.md",
        clock_summary=f"{TABLES}/clock_summary.md",
        clock_runs=f"{TABLES}/clock_runs.md",
        t3=f"{TABLES}/t3_equivalence.md",
        t4=f"{TABLES}/t4_loss_matching.md",
        sensitivity=f"{TABLES}/sensitivity.md",
        power=f"{TABLES}/power.md",
        noise_control=f"{TABLES}/noise_control.md",
        evaluation=f"{TABLES}/evaluation.md",
        h1_regression=f"{TABLES}/h1_regression.md",
        regression_shots=f"{TABLES}/regression_shots.md",
        regression_excess=f"{TABLES}/regression_excess.md",
        t2=f"{TABLES}/t2_inventory.md",
        deviations=DEVIATIONS,
        plan=config["plan"],
        meta=run_files("meta.json"),
    output:
        summary=f"{REPORT}/summary.rst",
        audit=report(
            f"{REPORT}/audit.html",
            caption="../report/audit.rst",
            category=SECTIONS["verdict"],
            labels={"item": "Audit"},
        ),
        t1=report(
            f"{REPORT}/t1_confirmatory.html",
            caption="../report/t1_confirmatory.rst",
            category=SECTIONS["verdict"],
            labels={"item": "Table T1"},
        ),
        precision=report(
            f"{REPORT}/precision.html",
            caption="../report/precision.rst",
            category=SECTIONS["verdict"],
            labels={"item": "Precision and power of H2 and H3"},
        ),
        h1=report(
            f"{REPORT}/h1.html",
            caption="../report/h1.rst",
            category=SECTIONS["H1"],
            labels={"item": "Table H1"},
        ),
        clock_summary=report(
            f"{REPORT}/clock_summary.html",
            caption="../report/clock_summary.rst",
            category=SECTIONS["H1"],
            labels={"item": "P-NE* against the step-size clock"},
        ),
        clock_runs=report(
            f"{REPORT}/clock_runs.html",
            caption="../report/clock_runs.rst",
            category=SECTIONS["H1"],
            labels={"item": "P-NE* and clock per run"},
        ),
        t3=report(
            f"{REPORT}/t3_equivalence.html",
            caption="../report/t3_equivalence.rst",
            category=SECTIONS["H3"],
            labels={"item": "Table T3"},
        ),
        t4=report(
            f"{REPORT}/t4_loss_matching.html",
            caption="../report/t4_loss_matching.rst",
            category=SECTIONS["H3"],
            labels={"item": "Table T4"},
        ),
        sensitivity=report(
            f"{REPORT}/sensitivity.html",
            caption="../report/sensitivity.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "Estimator sensitivity"},
        ),
        power=report(
            f"{REPORT}/power.html",
            caption="../report/power.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "Power"},
        ),
        noise_control=report(
            f"{REPORT}/noise_control.html",
            caption="../report/noise_control.rst",
            category=SECTIONS["H3"],
            labels={"item": "Noise control"},
        ),
        evaluation=report(
            f"{REPORT}/evaluation.html",
            caption="../report/evaluation.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "Evaluation measures"},
        ),
        h1_regression=report(
            f"{REPORT}/h1_regression.html",
            caption="../report/h1_regression.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "H1 on in-context regression"},
        ),
        regression_shots=report(
            f"{REPORT}/regression_shots.html",
            caption="../report/regression_shots.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "Regression error per shot"},
        ),
        regression_excess=report(
            f"{REPORT}/regression_excess.html",
            caption="../report/regression_excess.rst",
            category=SECTIONS["exploratory"],
            labels={"item": "Regression excess over Bayes ridge"},
        ),
        t2=report(
            f"{REPORT}/t2_inventory.html",
            caption="../report/t2_inventory.rst",
            category=SECTIONS["inventory"],
            labels={"item": "Table T2"},
        ),
        deviations=report(
            f"{REPORT}/deviations.html",
            caption="../report/deviations.rst",
            category=SECTIONS["deviations"],
            labels={"item": "Deviations log"},
        ),
        software=report(
            f"{REPORT}/software.html",
            caption="../report/software.rst",
            category=SECTIONS["software"],
            labels={"item": "Software versions"},
        ),
    benchmark:
        f"{RESULTS}/benchmarks/report_pages.tsv"
    log:
        f"{RESULTS}/logs/report_pages.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/report_pages.py"
