"""Command line of the replay: ``python -m training.replay {predict,validate}``.

``predict`` takes a base run's directory (a run the plan registers as a replay base: it
recorded ``replay/step*.pt``) and one or more candidates, and writes the tidy table of
CNR's pathwise predictions with each Jacobian (``cnr_predictions``: candidate, metric,
predicted change, interval, horizon, cost). ``validate`` is the study's replay stage for
one base run: the predictions of every registered candidate at every switch point, and the
retrains that measure them (``cnr_retrains``), into ``--out``.

The run's config and spec come from its ``meta.json`` and the plan it names; its reference
trace from the runs directory beside it (``<runs>/<reference>/seed<seed>/trace.parquet``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd
import torch

from preregistration.design import expand_design
from preregistration.plan import load_plan
from preregistration.tables import read_table, write_table
from training.config import study_config
from training.data.shards import load_corpus
from training.replay.case import run_case
from training.replay.plan import replay_plan


def load_base(run_dir: Path, config_json: str | None):
    """(config, spec, reference trace, replay plan) of the base run in ``run_dir``."""
    meta_path = run_dir / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"{meta_path}: cannot read the run's meta.json ({err})") from err
    raw = json.loads(config_json) if config_json else meta["config"]
    config = study_config(raw, "--config-json" if config_json else str(meta_path))
    plan = load_plan(config.plan)
    found = [
        s for s in expand_design(plan, config.scale, config.plan)
        if (s.condition, s.seed) == (meta["condition"], int(meta["seed"]))
    ]  # fmt: skip
    if not found:
        raise SystemExit(f"{meta_path}: the run is not registered at scale {config.scale!r}")
    spec = found[0]
    replay = replay_plan(plan, config.scale, config.plan)
    if replay is None or not replay.records(spec):
        raise SystemExit(
            f"{config.plan}: run {spec.run_id} is not a registered replay base at scale "
            f"{config.scale!r} (plan section replay)"
        )
    reference = None
    if spec.reference is not None:
        path = run_dir.parent.parent / spec.reference / f"seed{spec.seed}" / "trace.parquet"
        if not path.exists():
            raise SystemExit(f"{path}: the trace of {spec.run_id}'s reference is not there")
        reference = read_table(path, "steps")
    return config, spec, reference, replay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("predict", "validate"):
        p = sub.add_parser(name)
        p.add_argument("--run-dir", required=True, type=Path, help="the base run's directory")
        p.add_argument("--corpus", required=True, type=Path, help="the study's training corpus")
        p.add_argument("--config-json", help="resolved study config (default: the run's own)")
        p.add_argument(
            "--switch", type=float, action="append", default=None,
            help="switch point, a fraction of the run's steps (repeatable; predict: the plan's "
            "first, validate: every registered one)",
        )  # fmt: skip
    predict = sub.choices["predict"]
    predict.add_argument(
        "--candidate",
        action="append",
        required=True,
        help="a candidate noise (repeatable; training.replay.candidates)",
    )
    predict.add_argument("--out", required=True, type=Path, help="the table (.csv or .parquet)")
    predict.add_argument(
        "--expected-out", type=Path, default=None,
        help="also the expected (second-order) predictions, into this table (cnr_expected)",
    )  # fmt: skip
    predict.add_argument("--probes", type=int, default=8, help="probes of --expected-out")
    sub.choices["validate"].add_argument("--out", required=True, type=Path, help="a directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config, spec, reference, replay = load_base(args.run_dir, args.config_json)
    torch.set_num_threads(config.threads_per_run)
    corpus = load_corpus(args.corpus)
    if args.command == "predict":
        fraction = args.switch[0] if args.switch else replay.switch_points[0]
        probes = args.probes if args.expected_out is not None else 0
        table, expected = run_case(
            spec, config, corpus, reference, args.run_dir, replay, fraction,
            candidates=tuple(args.candidate), retrain=False, expected_probes=probes,
        )  # fmt: skip
        write_table(table, "cnr_predictions", args.out)
        if args.expected_out is not None:
            write_table(expected, "cnr_expected", args.expected_out)
        return 0
    unregistered = sorted(set(args.switch or ()) - set(replay.switch_points))
    if unregistered:
        raise SystemExit(
            f"{config.plan}: switch points {unregistered} are not registered "
            f"(replay.switch_points: {list(replay.switch_points)})"
        )
    predictions, retrains = [], []
    for fraction in args.switch or replay.switch_points:
        p, r = run_case(spec, config, corpus, reference, args.run_dir, replay, fraction)
        predictions.append(p)
        retrains.append(r)
    write_table(pd.concat(predictions), "cnr_predictions", args.out / "predictions.csv")
    write_table(pd.concat(retrains), "cnr_retrains", args.out / "retrains.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
