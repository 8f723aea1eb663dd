"""Small, consistent per-run files and study directories for the audit and damage tests.

``write_run`` writes what ``training.run`` writes for one run (meta.json,
trace.parquet, scores.parquet, layers.parquet), with the trainer's invariants: the
trace ends at the stop step (a validation step, or the diverging step of a
diverged run), tokens = step * global_batch * block_size, integrated exposures
grow, and rows of logging steps that are not validation steps carry NaN val_loss.
``Study`` lays out a smoke-scale study (plan copy, lock, deviations, per-run
files, tables from ``analysis.runs.collection``) in a temporary directory.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.audit.checks import run_audit
from analysis.runs.collection import collect
from analysis.runs.ending import max_steps
from preregistration.design import RunSpec, expand_design
from preregistration.lock import lock_plan, study_paths
from preregistration.plan import decide, load_plan, plan_hash, registered_tests
from preregistration.plan_doc import write_markdown
from preregistration.tables import columns, write_table

REPO = Path(__file__).resolve().parents[1]
SCALE = "smoke"
BLOCK = 32  # block_size the synthetic runs record in meta.json's config
SHOTS = (0, 1, 2, 4, 8)
D1 = {
    "id": "D1",
    "what": "H2 and H3 not run: their arms are not implemented yet",
    "why": "phase_schedule and noise_injection do not exist yet",
    "when": "2026-11-24",
    "data_seen": "none",
    "covers": {"not_run": ["H2", "H3"]},
}


def _val_losses(spec: RunSpec, status: str, n: int) -> list[float]:
    target = spec.target_val_loss
    above = [target + 1.0 - 0.8 * i / max(1, n - 1) for i in range(n)]  # all > target
    if status == "reached_target":
        return above[:-1] + [target - 0.05]
    if status == "diverged":
        return above[:-1] + [math.nan]
    return above


def trace_frame(spec: RunSpec, status: str) -> pd.DataFrame:
    """A trace of ``spec`` that ends as ``status`` says (table ``steps``)."""
    cap = max_steps(spec.token_cap, spec.global_batch, BLOCK)
    steps = [1, 3, 5, cap if status == "token_cap" else 10]
    val = _val_losses(spec, status, len(steps))
    val[1] = math.nan  # a logging step that is not a validation step
    rng = np.random.default_rng(spec.seed * 1000 + spec.global_batch)
    pne = rng.uniform(0.5, 1.5, len(steps))
    data = {c: np.full(len(steps), 0.5) for c in columns("steps")}
    data |= {
        "run_id": [spec.run_id] * len(steps),
        "step": steps,
        "tokens": [s * spec.global_batch * BLOCK for s in steps],
        "global_batch": [spec.global_batch] * len(steps),
        "train_loss": [v + 0.05 for v in _val_losses(spec, "token_cap", len(steps))],
        "val_loss": val,
        "validated": [not math.isnan(v) for v in val],
        "pne": pne,
        "pne_star": pne / 10,
    }
    for name in ("int_pne", "int_pne_star", "int_pne_eff", "int_pne_star_eff", "int_pne_eta2"):
        data[name] = np.cumsum(pne) * (1 + 0.1 * spec.seed)
    data["int_pne_star_fisher"] = data["int_pne_star"]
    data["int_pne_star_ggn"] = data["int_pne_star"] * 1.1
    data["int_pne_star_true_fisher"] = data["int_pne_star"] * 1.2
    data["int_clock"] = np.asarray(steps, dtype=float) * data["lr"] / spec.global_batch
    data["int_trace_cov"] = np.cumsum(pne) * 10
    data["int_grad_sq"] = np.cumsum(pne)
    data["b_simple_run"] = data["int_trace_cov"] / data["int_grad_sq"]
    if status == "diverged":
        data["train_loss"][-1] = math.inf
    return pd.DataFrame(data)


def scores_frame(spec: RunSpec, icl_level: float) -> pd.DataFrame:
    """Scores of one trained model (table ``scores``)."""
    rows = [("icl_accuracy", k, min(1.0, icl_level + 0.02 * k), 0.25, 64) for k in SHOTS]
    rows += [
        ("in_weights_accuracy", -1, 0.5, 0.25, 16),
        ("fact_recall", -1, 0.4, 0.125, 16),
        ("induction_score", -1, 0.1, 0.0, 64),
        ("val_loss", -1, spec.target_val_loss, math.nan, 128),
    ]
    frame = pd.DataFrame(rows, columns=["measure", "shots", "value", "chance", "n_items"])
    return frame.assign(run_id=spec.run_id)[columns("scores")]


def write_run(traces: Path, spec: RunSpec, sha: str, status: str = "reached_target") -> Path:
    """The files ``training.run`` and ``score`` write for one run; returns its directory."""
    directory = traces / spec.condition / f"seed{spec.seed}"
    directory.mkdir(parents=True, exist_ok=True)
    trace = trace_frame(spec, status)
    write_table(trace, "steps", directory / "trace.parquet")
    icl_level = 0.3 + 0.01 * spec.global_batch + 0.02 * spec.seed
    write_table(scores_frame(spec, icl_level), "scores", directory / "scores.parquet")
    layers = pd.DataFrame({c: [0.1, 0.2] for c in columns("layers")})
    layers = layers.assign(run_id=spec.run_id, step=1, layer=["blocks.0.attn", "blocks.0.mlp"])
    write_table(layers.assign(n_params=[100, 200]), "layers", directory / "layers.parquet")
    val = trace["val_loss"].to_numpy()
    finite = val[np.isfinite(val)]
    last = int(trace["step"].iloc[-1])
    meta = spec.as_dict() | {
        "status": status,
        "steps": last,
        "tokens": last * spec.global_batch * BLOCK,
        "final_val_loss": float(finite[-1]) if len(finite) and status != "diverged" else None,
        "wall_time_s": 1.5,
        "plan_hash": sha,
        "world_size": 1,
        "config": {"scale": SCALE, "model": {"block_size": BLOCK}},
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2))
    return directory


def t1_frame(plan: dict) -> pd.DataFrame:
    """Table T1 as the analysis writes it: H1, H4 and the control ran; H2, H3 not run."""
    results = {  # estimate, p, p_holm of the tests that ran
        "H1": (0.10, 0.004, 0.016),
        "H4": (-0.05, 0.20, 0.60),
        "loss_matching": (0.001, 0.01, np.nan),
    }
    rows = []
    for reg in registered_tests(plan, SCALE).to_dict("records"):
        est, p, p_holm = results.get(reg["hypothesis"], (np.nan, np.nan, np.nan))
        row = {k: reg[k] for k in ["hypothesis", "label", "test", "outcome", "sidedness"]}
        row |= {k: reg[k] for k in ["alpha", "margin", "family"]}
        row |= {"estimate": est, "ci_low": est - 0.1, "ci_high": est + 0.1, "p": p}
        row |= {"p_holm": p_holm, "n_runs": 0 if np.isnan(p) else 7, "decision": ""}
        if np.isnan(p):
            row["decision"] = f"not run (no runs of arm {reg['arms']})"
        else:
            row["decision"] = decide(plan, row)
        rows.append(row)
    rows.append(
        rows[0]
        | {"hypothesis": "H1 spearman", "label": "exploratory", "test": "spearman"}
        | {"family": "", "p_holm": np.nan, "decision": "exploratory"}
    )
    return pd.DataFrame(rows)


class Study:
    """A smoke-scale study on disk: plan, lock, deviations, per-run files and tables."""

    def __init__(self, root: Path):
        self.root = root
        self.plan = root / "preregistration" / "plan.yaml"
        self.lock = root / "preregistration" / "plan.lock.json"
        self.deviations = root / "preregistration" / "deviations.yaml"
        self.results = root / "results"
        self.traces = self.results / "runs"
        self.tables = self.results / "tables"
        self.runs = self.tables / "runs.parquet"
        self.t1 = self.tables / "t1_confirmatory.csv"
        self.config = {
            "scale": SCALE,
            "plan": str(self.plan),
            "lock": str(self.lock),
            "results": str(self.results),
        }

    @classmethod
    def create(cls, root: Path, statuses: dict[str, str] | None = None) -> Study:
        """Plan copy, D1, lock, and one run per registered spec (status by run id)."""
        study = cls(root)
        study.plan.parent.mkdir(parents=True)
        shutil.copyfile(REPO / "preregistration" / "plan.yaml", study.plan)
        write_markdown(study.plan)
        study.write_deviations(D1)
        lock_plan(study_paths(study.config))
        sha = plan_hash(study.plan)
        for spec in study.specs():
            write_run(study.traces, spec, sha, (statuses or {}).get(spec.run_id, "reached_target"))
        return study

    def specs(self) -> list[RunSpec]:
        return expand_design(load_plan(self.plan), SCALE)

    def run_dir(self, run_id: str) -> Path:
        spec = next(s for s in self.specs() if s.run_id == run_id)
        return self.traces / spec.condition / f"seed{spec.seed}"

    def collect(self) -> pd.DataFrame:
        """Write runs, steps and scores tables from the per-run files; the runs table."""
        runs, _ = collect(
            self.traces,
            self.plan,
            SCALE,
            self.runs,
            self.tables / "steps.parquet",
            self.tables / "scores.parquet",
        )
        return runs

    def write_t1(self) -> None:
        write_table(t1_frame(load_plan(self.plan)), "tests", self.t1)

    def audit(self):
        return run_audit(self.config)

    def write_deviations(self, *entries: dict) -> None:
        self.deviations.write_text(yaml.safe_dump({"deviations": list(entries)}))
