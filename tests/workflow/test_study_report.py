"""The study report: `make report` on the smoke study writes one self-contained HTML
file; a headless browser (Debian's chromium) opens it on the audit verdict and the
confirmatory table, and shows every figure in it."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.report.pages import (
    SECTIONS,
    markdown_page,
    read_audit,
    software_table,
    summary_rst,
)
from analysis.report.study_tables import markdown
from preregistration.tables import write_table

REPO = Path(__file__).resolve().parents[2]

# Figure -> the report category it belongs to (the hypothesis it bears on).
FIGURES = {
    "fig1_pne_icl.png": SECTIONS["H1"],
    "fig2_phase.png": SECTIONS["H2"],
    "fig3_equivalence.png": SECTIONS["H3"],
    "fig4_frontier.png": SECTIONS["H4"],
    "fig6_clipping.png": SECTIONS["exploratory"],
    "icl_curves.png": SECTIONS["exploratory"],
    "fig5_induction_sharpness.png": SECTIONS["exploratory"],
    "clock_decomposition.png": SECTIONS["H1"],
}
PAGES = {
    "audit.html": SECTIONS["verdict"],
    "t1_confirmatory.html": SECTIONS["verdict"],
    "precision.html": SECTIONS["verdict"],
    "h1.html": SECTIONS["H1"],
    "clock_summary.html": SECTIONS["H1"],
    "clock_runs.html": SECTIONS["H1"],
    "t3_equivalence.html": SECTIONS["H3"],
    "t4_loss_matching.html": SECTIONS["H3"],
    "sensitivity.html": SECTIONS["exploratory"],
    "power.html": SECTIONS["exploratory"],
    "noise_control.html": SECTIONS["H3"],
    "evaluation.html": SECTIONS["exploratory"],
    "h1_regression.html": SECTIONS["exploratory"],
    "regression_shots.html": SECTIONS["exploratory"],
    "regression_excess.html": SECTIONS["exploratory"],
    "t2_inventory.html": SECTIONS["inventory"],
    "deviations.html": SECTIONS["deviations"],
    "software.html": SECTIONS["software"],
}

# Run in the report after it loads: read the page it opens on, then show every
# figure through the report's own image view and wait for the browser to decode
# it; parse every HTML page the report embeds. The result goes into the DOM.
CHECK_SCRIPT = """
<script>
window.addEventListener("load", async () => {
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  const LIST = "#app table.text-white";  // a section's list of results, in the menu
  const out = {figures: {}, pages: {}, categories: {}, errors: [], done: false};
  window.addEventListener("error", (e) => out.errors.push(e.message));
  const pre = document.createElement("pre");
  pre.id = "render-check";
  document.body.appendChild(pre);
  const save = () => { pre.textContent = JSON.stringify(out); };  // what is known so far
  try {
    for (let i = 0; i < 100 && !document.querySelector("#app .prose"); i++) await wait(100);
    const prose = document.querySelector("#app .prose");
    out.landing = prose ? prose.innerText : null;
    out.menu = Array.from(document.querySelectorAll("#app li")).map((li) => li.innerText.trim());
    for (const category of Object.keys(categories)) {  // each section's list of results
      app.setView({navbarMode: "menu"});
      for (let i = 0; i < 20 && document.querySelector(LIST); i++) await wait(100);
      app.showCategory(category);
      let rows = 0;
      for (let i = 0; i < 20 && rows === 0; i++) {
        await wait(100);
        rows = document.querySelectorAll(LIST + " tbody tr").length;
      }
      out.categories[category] = rows;
      save();
    }
    for (const [path, entry] of Object.entries(results)) {
      if (entry.mime_type.startsWith("image/")) {
        app.setView({content: "img", contentPath: entry.data_uri, resultPath: path});
        let img;
        for (let i = 0; i < 20 && !img; i++) {
          await wait(100);
          img = Array.from(document.querySelectorAll("#app img"))
            .find((el) => el.getAttribute("src") === entry.data_uri);
        }
        if (!img) { out.figures[path] = {shown: false}; continue; }
        for (let i = 0; i < 20 && !(img.complete && img.naturalWidth > 0); i++) await wait(100);
        out.figures[path] = {shown: true, width: img.naturalWidth, height: img.naturalHeight};
        save();
      } else if (entry.mime_type === "text/html") {
        const bytes = Uint8Array.from(atob(entry.data_uri.split(";base64,")[1]),
                                      (c) => c.charCodeAt(0));
        const doc = new DOMParser().parseFromString(new TextDecoder().decode(bytes), "text/html");
        out.pages[path] = {title: doc.title, rows: doc.querySelectorAll("tbody tr").length};
      }
    }
    out.done = true;
  } catch (e) { out.errors.push(String(e)); }
  save();
});
</script>
"""


def chromium() -> str:
    """Debian's chromium; .ci/run installs it, so under CI its absence is a failure."""
    path = shutil.which("chromium")
    if path is None:
        reason = "chromium not found (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def study_report(smoke_study: Path, tmp_path_factory) -> tuple[Path, float]:
    """`make report` on the smoke study; the report's path and the build's wall time."""
    config = yaml.safe_load((REPO / "config/smoke.yaml").read_text())
    config["results"] = str(smoke_study)
    config_path = tmp_path_factory.mktemp("report") / "smoke.yaml"
    config_path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    proc = subprocess.run(
        ["make", "report", f"CONFIG={config_path}"], cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise AssertionError(f"make report failed:\n{proc.stdout}\n{proc.stderr}")
    return smoke_study / "report.html", seconds


def embedded(report: Path, name: str) -> dict | str:
    """The value of ``var <name> = ...;`` in the report's ``<script id="<name>">``
    (results, categories)."""
    pattern = rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>'
    match = re.search(pattern, report.read_text(), flags=re.DOTALL)
    assert match, f"{report}: no embedded '{name}'"
    return json.loads(match.group(1))


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def decode_data_uri(uri: str) -> bytes:
    assert uri.startswith("data:") and ";base64," in uri, uri[:80]
    return base64.b64decode(uri.split(";base64,", 1)[1])


def test_every_figure_and_table_is_embedded_with_a_caption(study_report, smoke_study: Path):
    report, _ = study_report
    results = embedded(report, "results")
    by_name = {Path(p).name: entry for p, entry in results.items()}
    assert set(by_name) == set(FIGURES) | set(PAGES)
    categories = embedded(report, "categories")
    for name, section in {**FIGURES, **PAGES}.items():
        entry = by_name[name]
        assert section in categories, f"{name}: no category {section!r}"
        paths = [p for sub in categories[section].values() for p in sub]
        assert any(Path(p).name == name for p in paths), f"{name} not under {section}"
        caption = re.sub(r"<[^>]+>", "", entry["caption"])
        assert len(caption.split()) >= 25, f"{name}: caption too short: {caption!r}"
    for name in FIGURES:  # the very bytes of the figure, not a link to it
        data = decode_data_uri(by_name[name]["data_uri"])
        assert data == (smoke_study / "figures" / name).read_bytes(), name


def test_report_is_self_contained(study_report):
    report, _ = study_report
    text = report.read_text()
    # Nothing fetched when the file opens: no external script, stylesheet or image.
    assert not re.search(r"<(script|img|iframe)[^>]+src=[\"']?(https?:|//)", text)
    assert not re.search(r"<link[^>]+href=[\"']?(https?:|//)", text)
    for entry in embedded(report, "results").values():
        assert entry["data_uri"].startswith("data:"), entry["name"]


def test_browser_opens_on_verdict_and_shows_every_figure(
    study_report, smoke_study: Path, tmp_path: Path
):
    browser = chromium()
    report, _ = study_report
    page = tmp_path / "report_check.html"
    head, body_end, tail = report.read_text().rpartition("</body>")  # the document's own
    page.write_text(head + CHECK_SCRIPT + body_end + tail)
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=30000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="render-check">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    assert match, f"the check did not run in chromium:\n{proc.stderr[-3000:]}"
    check = json.loads(html.unescape(match.group(1)) or "{}")
    assert check.get("errors") == [] and check.get("done"), f"in chromium: {check}"

    # It opens on the audit verdict, then T1's registered tests in plan order.
    audit = json.loads((smoke_study / "audit.json").read_text())
    landing = check["landing"]
    verdict = "Audit: PASSED" if audit["passed"] else "Audit: FAILED"
    assert landing.index(verdict) < landing.index("Confirmatory tests (T1)")
    t1 = pd.read_csv(smoke_study / "tables/t1_confirmatory.csv", keep_default_na=False)
    registered = t1[t1["label"] != "exploratory"]
    positions = [landing.index(h) for h in registered["hypothesis"]]
    assert positions == sorted(positions)
    for decision in registered["decision"]:
        assert decision in landing
    # The sections, in reading order, in the report's menu.
    menu = [item for item in check["menu"] if item in SECTIONS.values()]
    assert menu[: len(SECTIONS)] == list(SECTIONS.values())

    # Every section lists its results (the report's table view renders).
    categories = embedded(report, "categories")
    expected = {c: sum(len(paths) for paths in sub.values()) for c, sub in categories.items()}
    assert check["categories"] == expected
    # Every figure shown by the report's image view, decoded at its full size.
    shown = {Path(p).name: v for p, v in check["figures"].items()}
    assert set(shown) == set(FIGURES)
    for name, view in shown.items():
        width, height = png_size((smoke_study / "figures" / name).read_bytes())
        assert view == {"shown": True, "width": width, "height": height}, name
    # Every table page parses, with its rows.
    pages = {Path(p).name: v for p, v in check["pages"].items()}
    assert set(pages) == set(PAGES)
    t2_rows = len(pd.read_csv(smoke_study / "tables/t2_inventory.csv"))
    assert pages["t2_inventory.html"]["rows"] == t2_rows
    assert pages["t1_confirmatory.html"]["rows"] == len(t1)
    assert all(v["rows"] > 0 for v in pages.values()), pages


class _Cells(HTMLParser):
    """The text of every table cell of an HTML page, row by row."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_table_page_shows_every_cell_of_its_markdown(tmp_path: Path):
    df = pd.DataFrame(
        {"run_id": ["a_s0", "b<s1>"], "excluded": [False, True], "p": [0.01234567, float("nan")]}
    )
    md = tmp_path / "t.md"
    md.write_text(markdown(df, "T9: a table", ["a note with **bold** and `code`"]))
    page = markdown_page(md, tmp_path / "t.html").read_text()
    parser = _Cells()
    parser.feed(page)
    assert parser.rows == [
        ["run_id", "excluded", "p"],
        ["a_s0", "no", "0.01235"],
        ["b<s1>", "yes", "–"],
    ]
    assert "<h1>T9: a table</h1>" in page and "<strong>bold</strong>" in page
    assert "b&lt;s1&gt;" in page  # cell text is escaped, never markup


def t1_row(hypothesis: str, decision: str, p: float) -> dict:
    return {
        "hypothesis": hypothesis,
        "label": "confirmatory",
        "test": "mixed_effects_slope",
        "outcome": "icl_auc",
        "sidedness": "greater",
        "alpha": 0.05,
        "margin": float("nan"),
        "family": "confirmatory",
        "estimate": 0.02,
        "ci_low": 0.01,
        "ci_high": 0.03,
        "p": p,
        "p_holm": min(1.0, 4 * p),
        "n_runs": 24,
        "decision": decision,
    }


def test_summary_opens_with_a_failed_verdict_and_its_failures(tmp_path: Path):
    audit = {
        "passed": False,
        "scale": "cpu",
        "plan_sha256": "ab" * 32,
        "locked_at": "2026-11-24T21:45:49+00:00",
        "deviations": [],
        "checks": [
            {"title": "plan matches its lock", "passed": False, "failures": ["plan edited"]},
            {"title": "design as registered", "passed": True, "failures": []},
        ],
    }
    (tmp_path / "audit.json").write_text(json.dumps(audit))
    t1 = pd.DataFrame([t1_row("H1", "supported", 0.001), t1_row("H4", "not supported", 0.4)])
    write_table(t1, "tests", tmp_path / "t1.csv")
    t2 = pd.DataFrame(
        {"run_id": ["a", "b", "c"], "excluded": [False, True, True]}
        | {"exclusion_reason": ["", "diverged", "diverged"]}
    )
    t2.to_csv(tmp_path / "t2.csv", index=False)
    deviations = REPO / "preregistration/deviations.yaml"
    text = summary_rst(
        tmp_path / "audit.json", tmp_path / "t1.csv", tmp_path / "t2.csv", deviations
    )
    assert text.index("**Audit: FAILED.** 1 of 2 checks fail") < text.index("(T1)")
    assert "plan matches its lock: plan edited" in text
    assert text.index("- H1") < text.index("- supported") < text.index("- H4")
    assert "Runs: 3 recorded, 1 analysed, 2 excluded (2 diverged)." in text


def test_damaged_audit_json_names_the_file(tmp_path: Path):
    path = tmp_path / "audit.json"
    path.write_text('{"passed": true')
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_audit(path)
    path.write_text('{"passed": true}')
    with pytest.raises(ValueError, match="checks"):
        read_audit(path)


def test_software_table_flags_a_run_off_its_pin(tmp_path: Path):
    pinned = yaml.safe_load((REPO / "preregistration/plan.yaml").read_text())["software"]["pins"]
    metas = []
    for i, torch in enumerate([pinned["torch"] + "+cpu", "9.9.9"]):
        meta = {"packages": {"torch": torch, "numpy": pinned["numpy"]}, "python": "3.11.7"}
        metas.append(tmp_path / f"meta{i}.json")
        metas[-1].write_text(json.dumps(meta))
    table = software_table(REPO / "preregistration/plan.yaml", metas).set_index("package")
    assert (
        table.loc["torch", "recorded_by_runs"] == f"{pinned['torch']}+cpu (1 runs), 9.9.9 (1 runs)"
    )
    assert not table.loc["torch", "agrees"]
    assert table.loc["python", "recorded_by_runs"] == "3.11.7 (2 runs)"
    (tmp_path / "meta0.json").write_text("{}")
    with pytest.raises(ValueError, match="meta0.json"):
        software_table(REPO / "preregistration/plan.yaml", metas)


def test_snakemake_lint_finds_nothing():
    """Snakemake's own conventions (a log for every rule, no hard-coded path prefix in
    params, ...) hold for the whole workflow."""
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    proc = subprocess.run(
        [snakemake, "--lint", "--configfile", "config/config.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in output, output
