"""The Counterfactual Noise Replay's tables and report page (issue 21, D10; exploratory,
never in the confirmatory family), for the job of rule ``cnr_tables``
(``workflow/scripts/cnr_tables.py``, which draws the figure with ``figures.cnr``).

``cnr_tables`` gathers the replay job's per-case files
(``analysis.exploratory.cnr.gather_cnr``) and sets the predictions against the retrains
(``cnr_validation``); ``write_cnr_tables`` writes under ``tables_dir``, each through its
contract in ``preregistration/exploratory_columns.py``:

- ``cnr_predictions.csv``     every prediction, gathered [cnr_predictions]
- ``cnr_retrains.csv``        every retrain, gathered [cnr_retrains]
- ``cnr_validation.csv/.md``  per (method, metric, horizon) the predictions against the
  retrains [cnr_validation], the Markdown copy rounded, with notes and the report's
  sentences (``analysis.exploratory.cnr.cnr_notes``)

and, given ``report_page``, the HTML page of ``cnr_validation.md`` that the study report
shows (``analysis.report.pages.markdown_page``). The report's opening page words the table
(``analysis.report.pages.summary_rst``'s ``cnr_path``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from analysis.exploratory.cnr import cnr_notes, cnr_validation, gather_cnr
from analysis.report.pages import markdown_page
from analysis.report.study_tables import write_csv_and_markdown
from preregistration.tables import write_table

TITLE = "Counterfactual noise replay: predictions against retraining (exploratory)"


def cnr_tables(
    case_dirs: Iterable[str | Path],
    plan: dict | None = None,
    level: float = 0.9,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(predictions, retrains, validation) of the case directories ``case_dirs``.

    ``plan``: the plan whose ``replay.metrics`` the contracts admit (default
    ``preregistration/plan.yaml``); ``level``, ``n_boot``, ``seed``: the bootstrap CI of
    the validation's Spearman rho.
    """
    predictions, retrains = gather_cnr(case_dirs, plan)
    validation = cnr_validation(predictions, retrains, level=level, n_boot=n_boot, seed=seed)
    return predictions, retrains, validation


def write_cnr_tables(
    predictions: pd.DataFrame,
    retrains: pd.DataFrame,
    validation: pd.DataFrame,
    tables_dir: str | Path,
    plan: dict | None = None,
    report_page: str | Path | None = None,
) -> list[Path]:
    """Write the tables of the module docstring under ``tables_dir`` and, given
    ``report_page``, the HTML page of ``cnr_validation.md`` there; return their paths."""
    tables_dir = Path(tables_dir)
    paths = [
        write_table(predictions, "cnr_predictions", tables_dir / "cnr_predictions.csv", plan),
        write_table(retrains, "cnr_retrains", tables_dir / "cnr_retrains.csv", plan),
    ]
    paths += write_csv_and_markdown(
        validation, tables_dir, "cnr_validation", TITLE, cnr_notes(validation),
        table="cnr_validation", plan=plan,
    )  # fmt: skip
    if report_page is not None:
        paths.append(markdown_page(tables_dir / "cnr_validation.md", report_page))
    return paths
