"""Check of `make cluster-test`: the run whose SLURM job was cancelled resumed to the same trace.

    python cluster/test/check_resume.py RUN_DIR TRAIN_LOG REFERENCE_DIR STEP_AT_CANCEL

RUN_DIR holds the run the cancelled job left (its resume state) and its retry
finished; TRAIN_LOG is the retry's training log. The check trains the same run
again, uninterrupted, into REFERENCE_DIR (the config and corpus recorded in the
run's meta.json, on this machine), then requires: the retry started from the
saved state, not from step 1 (its progress bar opens at a nonzero token count);
the two traces (table ``steps``) are equal; the final models are equal.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import torch

from training import run as training_run
from training.checkpoints import load_plain


def first_progress_tokens(log: Path) -> str:
    """The token count of the first progress-bar update in a training log (tqdm, unit 'tok')."""
    match = re.search(r"\|\s*([0-9.]+[kMG]?)/[0-9.]+[kMG]?\s*\[", log.read_text(errors="replace"))
    if match is None:
        raise SystemExit(f"{log}: no progress bar found")
    return match.group(1)


def main(run_dir: Path, train_log: Path, reference: Path, step_at_cancel: int) -> int:
    meta = json.loads((run_dir / "meta.json").read_text())
    corpus = Path(meta["config"]["results"]) / "data" / "corpus.pt"
    training_run.main(
        [
            "--config-json", json.dumps(meta["config"]), "--corpus", str(corpus),
            "--condition", meta["condition"], "--seed", str(meta["seed"]), "--out", str(reference),
        ]
    )  # fmt: skip
    start = first_progress_tokens(train_log)
    resumed = pd.read_parquet(run_dir / "trace.parquet")
    uninterrupted = pd.read_parquet(reference / "trace.parquet")
    pd.testing.assert_frame_equal(resumed, uninterrupted, check_exact=True)
    model_a = load_plain(run_dir / "checkpoint.pt")["model"]
    model_b = load_plain(reference / "checkpoint.pt")["model"]
    assert model_a.keys() == model_b.keys()
    different = [k for k in model_a if not torch.equal(model_a[k], model_b[k])]
    if different:
        raise SystemExit(f"resumed and uninterrupted models differ in {different}")
    if start in ("0", "0.00"):
        raise SystemExit(f"{train_log}: the retried job started from token 0, not from its state")
    print(
        f"resume check: job cancelled after step {step_at_cancel} had been saved; the retry "
        f"started at {start} tokens; {len(resumed)} trace rows and the final model equal an "
        f"uninterrupted run's ({meta['steps']} steps, status {meta['status']})"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    raise SystemExit(
        main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    )
