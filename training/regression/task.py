"""In-context linear regression (Garg et al. 2022): prompts, their splits, the Bayes predictor.

A prompt is (x_1, f(x_1), ..., x_k, f(x_k)) with one weight vector per prompt,

    w ~ N(0, tau^2 I_d),  tau^2 = 1/d,     x_i ~ N(0, I_d),     y_i = w . x_i + sigma * eps_i,

eps_i ~ N(0, 1). With tau^2 = 1/d, E[y^2] = 1 + sigma^2: the squared error of a prediction
is already on the per-dimension scale of Garg et al. (who draw w ~ N(0, I_d) and divide
the error by d), and predicting 0 (the prior mean) scores 1 + sigma^2 at every shot.

The Bayes-optimal prediction of y_query from k demonstrations (X: k x d, y: k) under
squared loss is x_query . w_post, with the posterior mean of w (a Gaussian prior and a
Gaussian likelihood, e.g. Bishop 2006, eq. 3.53-3.54)

    w_post = (X^T X + lambda I_d)^{-1} X^T y,   lambda = sigma^2 / tau^2 = d sigma^2,

which is ridge regression with that lambda (``training.regression.baselines``); as
sigma -> 0 it tends to the minimum-norm least-squares solution X^+ y.

The registered settings of the family (plan ``design.scales.<scale>.arms.regression_sweep``)
are ``task: {d, k_max, sigma, n_train, n_val, n_eval, seed}`` and a ``model`` block;
``run_config`` turns them into the config a run of the family trains under.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from preregistration.design import arm_family
from preregistration.plan import PlanError, scale_design
from training.config import StudyConfig

FAMILY = "regression"  # plan design.arms.<arm>.family of the arms trained on this task
TASK_KEYS = ("d", "k_max", "sigma", "n_train", "n_val", "n_eval", "seed")
SPLIT_OFFSETS = {"train": 0, "val": 1, "eval": 2}  # split seed = task seed * 10 + offset


@dataclass(frozen=True)
class RegressionTask:
    d: int  # input dimension
    k_max: int  # demonstrations per prompt; the model predicts y at each of the k_max x's
    sigma: float  # observation noise standard deviation
    n_train: int  # prompts in the training split (indexed by the seed's data order)
    n_val: int  # prompts of the validation split (stopping rule)
    n_eval: int  # prompts of the fixed evaluation set (scores, baselines)
    seed: int  # data seed; every split is a function of it alone

    @property
    def tau2(self) -> float:
        """Prior variance of each weight coordinate, tau^2 = 1/d."""
        return 1.0 / self.d

    @property
    def ridge_lambda(self) -> float:
        """lambda = sigma^2 / tau^2 = d sigma^2: ridge with it is the Bayes posterior mean."""
        return self.sigma**2 / self.tau2

    @property
    def block_size(self) -> int:
        """Positions of a prompt: an x token and a y token per demonstration."""
        return 2 * self.k_max

    @classmethod
    def from_config(cls, block: dict, source: str = "config") -> RegressionTask:
        missing = [k for k in TASK_KEYS if k not in block]
        if missing:
            raise PlanError(f"{source}: regression task block lacks key(s) {missing}")
        task = cls(
            d=int(block["d"]),
            k_max=int(block["k_max"]),
            sigma=float(block["sigma"]),
            n_train=int(block["n_train"]),
            n_val=int(block["n_val"]),
            n_eval=int(block["n_eval"]),
            seed=int(block["seed"]),
        )
        if min(task.d, task.k_max, task.n_train, task.n_val, task.n_eval) < 1 or task.sigma < 0:
            raise PlanError(
                f"{source}: regression task needs d, k_max, n_train, n_val, n_eval >= 1 and "
                f"sigma >= 0; got {block}"
            )
        return task

    def sample(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """``n`` prompts from ``seed``: xs (n, k_max, d), ys (n, k_max), ws (n, d)."""
        gen = torch.Generator().manual_seed(seed)
        ws = torch.randn(n, self.d, generator=gen, dtype=torch.float64) * self.tau2**0.5
        xs = torch.randn(n, self.k_max, self.d, generator=gen, dtype=torch.float64)
        noise = torch.randn(n, self.k_max, generator=gen, dtype=torch.float64)
        ys = torch.einsum("nkd,nd->nk", xs, ws) + self.sigma * noise
        return {"xs": xs, "ys": ys, "ws": ws}

    def split(self, name: str) -> dict[str, torch.Tensor]:
        """The fixed split ``name`` (train | val | eval), drawn from its own seed."""
        size = {"train": self.n_train, "val": self.n_val, "eval": self.n_eval}[name]
        return self.sample(size, self.seed * 10 + SPLIT_OFFSETS[name])


def prompt_tokens(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Interleave a prompt into (n, 2 k, d + 1) input vectors: x_i as [x_i, 0], y_i as [0, y_i].

    The y token is embedded as [0, ..., 0, y] (Garg et al. 2022), so one linear read-in
    serves both kinds; the model predicts y_i from the x_i token at position 2 (i - 1).
    """
    n, k, d = xs.shape
    tokens = xs.new_zeros(n, k, 2, d + 1)
    tokens[:, :, 0, :d] = xs
    tokens[:, :, 1, d] = ys
    return tokens.reshape(n, 2 * k, d + 1)


def regression_corpus(task: RegressionTask) -> dict:
    """Training and validation splits as float32 prompt tensors (n, 2 k_max, d + 1) plus targets.

    ``train``/``val`` hold the interleaved tokens; the y values are the last channel of
    the odd positions, so one tensor carries a prompt and its targets.
    """
    out: dict = {"family": FAMILY, "task": task}
    for name in ("train", "val"):
        split = task.split(name)
        out[name] = prompt_tokens(split["xs"], split["ys"]).float()
    return out


def query_predictions(out: torch.Tensor) -> torch.Tensor:
    """The model's y predictions (B, k) from its read-out (B, 2 k, 1): the x positions."""
    return out[:, 0::2, 0]


def regression_loss(net: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the y predictions at every x position (0..k-1 demonstrations seen)."""
    targets = tokens[:, 1::2, -1]  # (B, k)
    return torch.mean((query_predictions(net(tokens)) - targets) ** 2)


@torch.no_grad()
def regression_validation_loss(
    model: torch.nn.Module, val: torch.Tensor, chunk: int = 256
) -> float:
    """Mean squared error over every query position of the validation split."""
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for i in range(0, len(val), chunk):
        batch = val[i : i + chunk].to(device)
        total += regression_loss(model, batch).item() * len(batch)
    model.train()
    return total / len(val)


def run_config(cfg: StudyConfig, arm_block: dict, source: str = "plan") -> StudyConfig:
    """The config a run of the regression family trains under, from the study config and
    the arm's registered scale block (``task`` and ``model``).

    The model block is the study's with the family's registered overrides and
    ``block_size = 2 k_max``; an optional ``train`` block overrides training settings
    that leave the update unchanged (e.g. ``n_micro``, the K of the P-NE estimate);
    the P-NE* curvature is the empirical Fisher and the
    logits-based proxies are off (``ggn`` and ``true_fisher`` are defined through a
    categorical likelihood over logits; the regression loss has none), so the
    sensitivity table has no proxy rows for this family.
    """
    for key in ("task", "model"):
        if key not in arm_block:
            raise PlanError(f"{source}: the regression arm's scale block lacks {key!r}")
    task = RegressionTask.from_config(arm_block["task"], source)
    try:
        shape = {**arm_block["model"], "block_size": task.block_size}
        model = dataclasses.replace(cfg.model, **shape)
        train = dataclasses.replace(cfg.train, **arm_block.get("train", {}))
    except TypeError as err:  # a key that is no model or train setting
        raise PlanError(f"{source}: the regression arm's scale block: {err}") from err
    train = dataclasses.replace(train, curvature="fisher", curvature_proxies=[])
    return dataclasses.replace(cfg, regression=dict(arm_block["task"]), model=model, train=train)


def family_config(cfg: StudyConfig, plan: dict, arm: str, source: str = "plan") -> StudyConfig:
    """The config a run of ``arm`` trains under: ``run_config`` when the plan registers the
    arm with ``family: regression`` (design.arms), else ``cfg`` unchanged."""
    if arm_family(plan, arm) != FAMILY:
        return cfg
    return run_config(cfg, scale_design(plan, cfg.scale, source)["arms"][arm], source)
