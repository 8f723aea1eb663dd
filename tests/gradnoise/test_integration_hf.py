"""The Hugging Face adapter logs what the manual-mode NoiseLogger logs on the same training.

A tiny classifier (a plain ``nn.Module`` whose ``forward(x, labels)`` returns the mean
cross-entropy, so the Trainer divides each micro-batch loss by K) trains for a few steps
under ``transformers.Trainer`` with gradient accumulation, binding norm clipping, the
Trainer's own fused AdamW and linear learning-rate decay, with
``gradnoise.integrations.transformers.NoiseCallback``; the reference is a plain loop
that drives ``NoiseLogger`` by hand from the same initial weights, on the same batches in
the same order (sequential sampling), with the same optimizer and schedule. Every step
logs (log_interval=1, while the Trainer's own logging_steps is larger); every numeric
column must agree up to float rounding, and each record must reach the Trainer's logs.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import pytest
import torch
import transformers

from gradnoise.estimation.logger import NoiseLogger
from gradnoise.integrations.transformers import NoiseCallback

D_IN, HIDDEN, CLASSES = 6, 8, 4
MICRO, N_MICRO, STEPS, LR, MAX_NORM = 4, 2, 5, 1e-2, 0.05  # MAX_NORM binds: clips
BETAS, EPS = (0.9, 0.95), 1e-8
OPTIONS = {"log_interval": 1, "sketch_width": 64, "hill_max_samples": 4096}
REL = 1e-5  # float rounding: both sides compute the same sums in another order


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Classifier(torch.nn.Module):
    """Two layers; the loss is the mean cross-entropy over the micro-batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(
            OrderedDict(
                hidden=torch.nn.Linear(D_IN, HIDDEN),
                act=torch.nn.Tanh(),
                out=torch.nn.Linear(HIDDEN, CLASSES),
            )
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        logits = self.net(x)
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


class TokenWeighted(Classifier):
    """Takes the Trainer's loss keywords, as its language models do: the summed loss over
    ``num_items_in_batch``, the label count of all K micro-batches (here K m, equal
    counts), which the Trainer then does not divide by K."""

    def forward(self, x, labels, num_items_in_batch=None, **loss_kwargs):
        logits = self.net(x)
        loss = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
        return {"loss": loss / num_items_in_batch, "logits": logits}


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    n_examples = STEPS * N_MICRO * MICRO
    inputs = torch.randn(n_examples, D_IN, generator=gen)
    labels = torch.randint(0, CLASSES, (n_examples,), generator=gen)
    return inputs, labels


def train_hf(tmp_path, model: torch.nn.Module) -> tuple[NoiseCallback, transformers.Trainer]:
    inputs, labels = make_data()
    dataset = [{"x": x, "labels": y} for x, y in zip(inputs, labels, strict=True)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=MICRO,
        gradient_accumulation_steps=N_MICRO, max_steps=STEPS, learning_rate=LR,
        adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS, weight_decay=0.0,
        max_grad_norm=MAX_NORM, lr_scheduler_type="linear", warmup_steps=0,
        optim="adamw_torch_fused", train_sampling_strategy="sequential", logging_steps=1000,
        report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    callback = NoiseCallback(**OPTIONS)
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=dataset, callbacks=[callback]
    )
    trainer.train()
    return callback, trainer


def manual_records() -> list[dict]:
    """The reference: NoiseLogger driven by hand, the Trainer's step written out."""
    inputs, labels = make_data()
    model = Classifier()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0, fused=True
    )
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, 0, STEPS)
    logger = NoiseLogger(model, optimizer, n_micro=N_MICRO, micro_batch_size=MICRO, **OPTIONS)
    records = []
    for step in range(1, STEPS + 1):
        logger.begin_step(step)
        start = (step - 1) * N_MICRO * MICRO
        for j in range(N_MICRO):
            idx = slice(start + j * MICRO, start + (j + 1) * MICRO)
            (model(inputs[idx], labels[idx])["loss"] / N_MICRO).backward()
            logger.after_micro_backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM))
        clip_coef = min(1.0, MAX_NORM / (grad_norm + 1e-6))
        lr = optimizer.param_groups[0]["lr"]  # the update's lr: the schedule steps after it
        optimizer.step()
        records.append(logger.after_update(lr, grad_norm, clip_coef))
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    return records


def numeric(record: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def _same(a: float, b: float, scale: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= REL * max(abs(a), abs(b)) + 1e-9 * scale


def assert_logs_manual_records(callback: NoiseCallback, trainer: transformers.Trainer) -> None:
    """The callback's records equal the manual ones, and each is in the Trainer's log."""
    assert callback.tap is None, "detached when training ends"
    expected = manual_records()
    assert len(callback.records) == len(expected) == STEPS, "every step logs (log_interval=1)"
    for step, (one, ref) in enumerate(zip(callback.records, expected, strict=True), start=1):
        assert ref["clip_rate"] == 1.0, "the clipping binds, so clip_coef matters"
        for key, value in numeric(ref).items():
            scale = ref["trace_cov"] if key == "grad_sq" else abs(value)
            if key == "b_simple" and abs(ref["grad_sq"]) < 1e-3 * ref["trace_cov"]:
                continue  # |G|^2 within rounding of 0: Tr(C) / |G|^2 is huge, of either sign
            assert _same(one[key], value, scale), f"step {step} {key}: {one[key]!r} vs {value!r}"
    logged = [entry for entry in trainer.state.log_history if "pne/pne" in entry]
    assert [entry["step"] for entry in logged] == list(range(1, STEPS + 1))
    for entry, record in zip(logged, callback.records, strict=True):
        assert {k: entry[f"pne/{k}"] for k in numeric(record)} == numeric(record)


def test_hf_callback_logs_the_manual_records(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback, trainer = train_hf(tmp_path, Classifier())
    assert not [w for w in caught if "gradnoise" in str(w.message)], "a mean loss: no warning"
    assert_logs_manual_records(callback, trainer)


def test_hf_callback_token_weighted_loss_with_equal_counts(tmp_path):
    """num_items_in_batch weighting equals the mean convention when the counts are equal;
    the callback says that it cannot check this."""
    with pytest.warns(UserWarning, match="num_items_in_batch"):
        callback, trainer = train_hf(tmp_path, TokenWeighted())
    assert_logs_manual_records(callback, trainer)
