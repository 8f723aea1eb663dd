"""The segment retrained with a candidate's noise: the realisation a CNR prediction stands for.

From the recorded state at the switch step, each step t of the segment runs as the training
loop runs it, open loop: the learning rate and batch of the recorded step, the mean
gradient in one pass (``training.batches.accumulate_gradient``), the candidate's xi~_t
added to ``.grad``, global-norm clipping and ``torch.optim.AdamW``. The noise is the
candidate's map of the recorded draw (no controller, no logger): with ``recorded`` it is
the base run's segment again. The metrics are read after each horizon's step.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import pandas as pd
import torch

from preregistration.design import RunSpec
from training.batches import accumulate_gradient, forward_chunk
from training.config import StudyConfig
from training.replay.candidates import FlatMap
from training.replay.metrics import MetricFn, evaluate
from training.replay.segment import RecordedSegment
from training.resume import load_resume_state
from training.run_setup import RunSetup, setup_run


@dataclass
class Retrainer:
    """A run set up once at the recorded state; ``retrain`` restores that state each time."""

    run: RunSetup
    segment: RecordedSegment
    model_state: dict
    optimizer_state: dict

    @classmethod
    def at_switch(
        cls, spec: RunSpec, cfg: StudyConfig, corpus: dict, reference: pd.DataFrame | None,
        segment: RecordedSegment, state_path,
    ) -> Retrainer:  # fmt: skip
        run = setup_run(spec, cfg, corpus, reference)
        load_resume_state(state_path, spec, cfg, run.model, run.optimizer, run.logger)
        return cls(
            run, segment, copy.deepcopy(run.model.state_dict()),
            copy.deepcopy(run.optimizer.state_dict()),
        )  # fmt: skip

    def retrain(
        self, noise: FlatMap, horizons: tuple[int, ...], metrics: dict[str, MetricFn]
    ) -> tuple[dict[int, dict[str, float]], float]:
        """({horizon: {metric: value}}, seconds) of the segment retrained with ``noise``."""
        run, seg = self.run, self.segment
        model, optimizer = run.model, run.optimizer
        model.load_state_dict(self.model_state)
        optimizer.load_state_dict(copy.deepcopy(self.optimizer_state))
        params = [p for p in model.parameters() if p.requires_grad]
        sizes = [p.numel() for p in params]
        values: dict[int, dict[str, float]] = {}
        start = time.perf_counter()
        model.train()
        for t, step in enumerate(seg.steps[: max(horizons)], start=1):
            for group in optimizer.param_groups:
                group["lr"] = step.lr
            optimizer.zero_grad(set_to_none=True)
            n = len(step.indices)
            accumulate_gradient(
                run.forward, run.net, run.family.loss,
                lambda idx: run.family.batch(run.train, idx).to(run.device), step.indices,
                group=n, chunk=forward_chunk(run.train_cfg, n), autocast=run.autocast, sync=True,
            )  # fmt: skip
            xi = noise(step)
            with torch.no_grad():
                for p, piece in zip(params, xi.split(sizes), strict=True):
                    p.grad.add_(piece.view_as(p.grad).to(p.grad.dtype))
            torch.nn.utils.clip_grad_norm_(params, run.train_cfg.grad_clip)
            optimizer.step()
            if t in horizons:
                at = {name: p.detach() for name, p in model.named_parameters()}
                values[t] = evaluate(metrics, at)
        return values, time.perf_counter() - start
