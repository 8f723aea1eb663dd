"""The study report's own pages, built from the study's tidy outputs.

Snakemake's report (``snakemake --report results/report.html``) opens on the
workflow description, then lists the results marked with ``report()`` by
category. This module writes what the report cannot take from the study's
outputs as they are:

- ``summary_rst``: the description the report opens on: the audit verdict
  (``audit.json``), the confirmatory tests (T1, ``t1_confirmatory.csv``), beside them
  what P-NE* is made of in each arm (``clock_summary.csv``, exploratory) and the
  precision H2 and H3 achieved with their power on the runs (``precision.csv``,
  exploratory), with a replay registered the Counterfactual Noise Replay's predictions
  against retraining (``cnr_validation.csv``, exploratory), the runs and their exclusions
  (T2, ``t2_inventory.csv``) and the sections that follow;
- ``markdown_page``: an HTML page of one of the study's Markdown files (the tables
  of ``analysis.report.study_tables.markdown``, ``audit.md``), which the report shows inline,
  where a CSV could only be downloaded;
- ``deviations_page``: the deviations log (``preregistration/deviations.yaml``);
- ``software_page``: software versions pinned in the plan, recorded by every run
  (its ``meta.json``) and installed where the report was built.

Every input is read with a check that names the file and what was expected.
"""

from __future__ import annotations

import html
import json
import platform
import re
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.exploratory.clock import arm_sentence
from analysis.exploratory.cnr import cnr_sentences
from analysis.exploratory.precision import precision_sentences
from analysis.report.formatting import format_p, format_value
from analysis.report.html_render import html_page, html_table, markdown_html
from preregistration.deviations import load_deviations
from preregistration.plan import PlanError, load_plan
from preregistration.tables import TableError, read_table

# The report's categories, in reading order (the report sorts them by name).
SECTIONS = {
    "verdict": "1. Verdict and confirmatory tests",
    "H1": "2. H1 monotonicity",
    "H2": "3. H2 phase sensitivity",
    "H3": "4. H3 source equivalence",
    "H4": "5. H4 ICL-memorization trade-off",
    "exploratory": "6. Exploratory and estimator checks",
    "inventory": "7. Runs inventory and exclusions",
    "deviations": "8. Deviations from the plan",
    "software": "9. Software versions",
}


def markdown_page(md_path: str | Path, out_path: str | Path) -> Path:
    """Write ``md_path`` (a table or the audit, in Markdown) as an HTML page."""
    md_path, out_path = Path(md_path), Path(out_path)
    if not md_path.exists():
        raise FileNotFoundError(f"{md_path}: file not found (written by the analysis stage)")
    text = md_path.read_text()
    if not text.startswith("# "):
        raise ValueError(f"{md_path}: expected a Markdown file starting with a '# ' title")
    title = text.splitlines()[0][2:].strip()
    body = markdown_html(text) + f"\n<p><small>Source: <code>{html.escape(md_path.name)}</code>"
    body += " (full precision in the CSV beside it).</small></p>" if md_path.suffix == ".md" else ""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(html_page(title, body))
    return out_path


def read_audit(path: str | Path) -> dict:
    """``audit.json`` (``analysis.audit.findings.AuditResult.as_dict``), checked."""
    path = Path(path)
    try:
        audit = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot be read as the audit's JSON ({exc})") from exc
    missing = [k for k in ("passed", "checks", "deviations", "plan_sha256") if k not in audit]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing} of the audit's JSON")
    return audit


def confirmatory_rows(t1: pd.DataFrame) -> list[list[str]]:
    """Hypothesis, test, estimate [CI], p, Holm p and decision of every non-exploratory row.

    Numbers by ``analysis.report.formatting``: the estimate and its CI with 3 significant
    digits throughout (``small=0``: no digit dropped below 1e-3, as this summary
    has always shown them), p-values by ``format_p``.
    """
    rows = []
    for r in t1[t1["label"] != "exploratory"].itertuples(index=False):
        estimate, low, high = (
            format_value(v, digits=3, small=0) for v in (r.estimate, r.ci_low, r.ci_high)
        )
        ci = f" [{low}, {high}]" if np.isfinite(r.ci_low) else ""
        p, p_holm = format_p(r.p), format_p(r.p_holm)
        rows.append([r.hypothesis, r.test, f"{estimate}{ci}", p, p_holm, r.decision])
    return rows


def _rst_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """An rst list-table (cells may hold any text)."""
    out = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        out += [f"   * - {row[0]}"] + [f"     - {c}" for c in row[1:]]
    return out


def _rst_escape(text: str) -> str:
    """Text safe inside rst: no markup characters, no Jinja delimiters."""
    return re.sub(r"([*`|_\\{}%#])", r"\\\1", str(text))


def summary_rst(
    audit_path: str | Path,
    t1_path: str | Path,
    t2_path: str | Path,
    deviations_path: str | Path,
    clock_path: str | Path | None = None,
    precision_path: str | Path | None = None,
    cnr_path: str | Path | None = None,
) -> str:
    """The report's opening text (reStructuredText): verdict, T1, runs, sections.

    With ``clock_path`` (``clock_summary.csv``), one sentence per arm after T1 says how
    far integrated P-NE* can be told from the step-size clock there
    (``analysis.exploratory.clock.arm_sentence``). With ``precision_path``
    (``precision.csv``), one sentence each for H2 and H3 gives the CI width achieved
    against the registered margin and the power on the runs' SD
    (``analysis.exploratory.precision.precision_sentence``). With ``cnr_path``
    (``cnr_validation.csv``, when the plan registers a replay), one sentence per metric at
    the largest horizon sets the replay's predictions against retraining
    (``analysis.exploratory.cnr.cnr_sentences``). Section names are the report's
    categories; Snakemake turns `` `name`_ `` into a link that opens the category.
    """
    audit = read_audit(audit_path)
    t1 = read_table(Path(t1_path), "tests")
    t2 = _read_inventory(t2_path)
    deviations = load_deviations(deviations_path).entries
    checks = audit["checks"]
    n_pass = sum(bool(c["passed"]) for c in checks)
    if audit["passed"]:
        verdict = (
            f"**Audit: PASSED.** The executed study matches its pre-registration: {n_pass} of "
            f"{len(checks)} checks pass; every difference is declared in the deviations log "
            f"({len(deviations)} entries)."
        )
    else:
        verdict = f"**Audit: FAILED.** {len(checks) - n_pass} of {len(checks)} checks fail:"
    title = _rst_escape(
        f"Study report: gradient noise and in-context learning ({audit.get('scale')} scale)"
    )
    lines = [title, "=" * len(title), "", verdict, ""]
    for c in checks:
        lines += [f"- {_rst_escape(c['title'])}: {_rst_escape(f)}" for f in c["failures"]]
    plan = f"Plan sha256 ``{audit['plan_sha256'][:12]}``, locked at {audit.get('locked_at')}."
    lines += ["", plan, "", "Confirmatory tests (T1)", "-" * 23, ""]
    header = ["hypothesis", "test", "estimate [CI]", "p", "Holm p", "decision"]
    rows = [[_rst_escape(c) for c in row] for row in confirmatory_rows(t1)]
    lines += _rst_table(header, rows)
    if clock_path is not None:
        lines += _clock_lines(clock_path)
    if precision_path is not None:
        lines += _precision_lines(precision_path)
    if cnr_path is not None:
        lines += _cnr_lines(cnr_path)
    excluded = t2[t2["excluded"]]
    reasons = Counter(excluded["exclusion_reason"])
    why = "; ".join(f"{n} {_rst_escape(r)}" for r, n in reasons.items())
    lines += [
        "",
        f"Runs: {len(t2)} recorded, {len(t2) - len(excluded)} analysed, {len(excluded)} "
        f"excluded{f' ({why})' if why else ''}.",
        "",
        "Sections",
        "--------",
        "",
        "Each section (menu on the left, under Results) lists figures and tables with a "
        "caption that says what they show and how to read them; the eye icon opens one. "
        "Workflow (this page) and Statistics give the jobs that made them.",
        "",
    ]
    lines += [f"- `{name}`_" for name in SECTIONS.values()]
    return "\n".join(lines) + "\n"


def _clock_lines(path: str | Path) -> list[str]:
    """What P-NE* is made of, per arm, in words (exploratory; ``clock_summary.csv``)."""
    summary = read_table(Path(path), "clock_summary")
    arms = summary.loc[summary["analysis"] == "correlation", "scope"].drop_duplicates()
    intro = (
        "P-NE*_t = (eta_t / B_t) x the noise fraction Tr(PCP) / Tr(PFP): how far integrated "
        "P-NE* can be told from the step-size clock sum_t eta_t / B_t, which the design sets, "
        "in each arm (tables in the H1 section)."
    )
    sentences = [arm_sentence(summary, arm) for arm in arms]
    return _section("What P-NE* is made of (exploratory, beside H1)", intro, sentences)


def _precision_lines(path: str | Path) -> list[str]:
    """H2's and H3's precision and power on the runs, in words (exploratory; ``precision.csv``)."""
    table = read_table(Path(path), "precision")
    intro = (
        "The width of the CI each test gave against what the plan registers, and the power of "
        "the registered test at the registered seeds with the SD observed in the runs; no seed "
        "count or decision changes (table in the verdict section)."
    )
    title = "Precision achieved and power on the runs (exploratory, beside H2 and H3)"
    return _section(title, intro, precision_sentences(table))


def _cnr_lines(path: str | Path) -> list[str]:
    """The replay's predictions against retraining, in words (exploratory;
    ``cnr_validation.csv``)."""
    table = read_table(Path(path), "cnr_validation")
    intro = (
        "From a finished run, Counterfactual Noise Replay predicts by linearising the AdamW "
        "updates how each metric would change had the injected noise been another, and "
        "retraining from the switch point measures it; against the SGD-form Jacobian, J = I "
        "and no change as baselines, and a fresh draw of the noise as the floor (table and "
        "figure in the exploratory section; no registered test)."
    )
    return _section("Counterfactual noise replay (exploratory)", intro, cnr_sentences(table))


def _section(title: str, intro: str, sentences) -> list[str]:
    """An rST section of the opening page: its title, an intro and one bullet a sentence."""
    escaped = _rst_escape(title)
    lines = ["", escaped, "-" * len(escaped), "", _rst_escape(intro), ""]
    return lines + [f"- {_rst_escape(sentence)}" for sentence in sentences]


def _read_inventory(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: file not found (table T2, written by the analysis stage)")
    t2 = pd.read_csv(path, keep_default_na=False)
    missing = {"run_id", "excluded", "exclusion_reason"} - set(t2.columns)
    if missing:
        raise TableError(f"{path}: missing column(s) {sorted(missing)} of table T2")
    bad = ~t2["excluded"].astype(str).isin(["True", "False"])
    if bad.any():
        rows = list(t2.index[bad][:5])
        raise TableError(f"{path}: column 'excluded' must be True/False (rows {rows})")
    t2["excluded"] = t2["excluded"].astype(str) == "True"
    return t2


def deviations_page(deviations_path: str | Path, out_path: str | Path) -> Path:
    """Write the deviations log as an HTML table: id, when, what, why, data seen, covers."""
    log = load_deviations(deviations_path)
    rows = [
        [
            d.id,
            d.when,
            " ".join(d.what.split()),
            " ".join(d.why.split()),
            " ".join(d.data_seen.split()),
            json.dumps(d.covers, sort_keys=True),
            ", ".join(d.scales) if d.scales else "all",
        ]
        for d in log.entries
    ]
    header = ["id", "when", "what changed", "why", "data seen", "covers", "scales"]
    body = f"<h1>Deviations from the locked plan</h1><p>Source: <code>{log.path}</code>, "
    body += f"{len(rows)} entries.</p>" + html_table(header, rows)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(html_page("Deviations", body))
    return out_path


def recorded_versions(meta_paths: list[str | Path]) -> dict[str, Counter]:
    """Package -> Counter of the versions the runs recorded (``meta.json``: packages, python)."""
    seen: dict[str, Counter] = {}
    for path in map(Path, meta_paths):
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot be read as a run's meta.json ({exc})") from exc
        if not isinstance(meta.get("packages"), dict) or "python" not in meta:
            raise ValueError(f"{path}: expected keys 'packages' (a mapping) and 'python'")
        for name, version in {**meta["packages"], "python": meta["python"]}.items():
            seen.setdefault(name, Counter())[str(version)] += 1
    return seen


def _installed(name: str) -> str:
    if name == "python":
        return platform.python_version()
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def software_table(plan_path: str | Path, meta_paths: list[str | Path]) -> pd.DataFrame:
    """One row per package: pinned in the plan, recorded by the runs, installed here.

    ``agrees`` is True when every recorded and installed version equals the pin
    (local build tags such as ``+cpu`` ignored); packages the plan does not pin
    agree when runs and installation agree.
    """
    plan = load_plan(plan_path)
    software = plan.get("software")
    if not isinstance(software, dict) or not isinstance(software.get("pins"), dict):
        raise PlanError(f"{plan_path}: expected 'software.pins' (package: version)")
    pins = {str(k): str(v) for k, v in software["pins"].items()}
    pins["python"] = str(software.get("python", ""))
    recorded = recorded_versions(meta_paths)
    rows = []
    for name in [*pins, *sorted(set(recorded) - set(pins))]:
        runs = recorded.get(name, Counter())
        installed = _installed(name)
        versions = {v.split("+")[0] for v in runs} | {installed.split("+")[0]}
        pin = pins.get(name, "")
        if pin:
            agrees = all(v == pin or v.startswith(pin + ".") for v in versions)
        else:
            agrees = len(versions) == 1
        rows.append(
            {
                "package": name,
                "pinned": pin or "–",
                "recorded_by_runs": ", ".join(f"{v} ({n} runs)" for v, n in sorted(runs.items()))
                or "–",
                "installed_here": installed,
                "agrees": agrees,
            }
        )
    return pd.DataFrame(rows)


def software_page(
    plan_path: str | Path, meta_paths: list[str | Path], out_path: str | Path
) -> Path:
    """Write ``software_table`` as an HTML page."""
    table = software_table(plan_path, meta_paths)
    rows = [
        [str(v) if not isinstance(v, bool) else ("yes" if v else "NO") for v in r]
        for r in table.itertuples(index=False)
    ]
    body = (
        "<h1>Software versions</h1><p>Pinned in the plan (<code>software</code>), recorded by "
        f"each of the {len(meta_paths)} runs in its <code>meta.json</code>, and installed where "
        "this report was built. Python is pinned to its minor version.</p>"
        + html_table(list(table.columns), rows)
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(html_page("Software versions", body))
    return out_path
