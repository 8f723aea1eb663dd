"""The economy tier's hooks: two squared norms per parameter and micro-batch, every step.

``attach(..., tier="economy")`` logs P-NE, P-NE* and B_simple at every step under
the preconditioner of the previous step, P_{t-1}, without a buffer of the
gradient's size (``gradnoise.estimation.norm_form`` holds the formulas):

1. each parameter's tensor hook receives d_j, its increment of micro-batch j, and
   adds |P_{t-1} d_j|^2 and |d_j|^2 to the step's (K, groups, 2) sums (times K^2 / S^2:
   g_j = K d_j in the units of the applied gradient, S the GradScaler's scale);
   P_{t-1} is read from Adam's second moments, which the update has not yet
   changed (P = 1 before Adam's first step; SGD: P = 1), in a temporary of the
   parameter's size (of D / 16 coordinates for a larger parameter);
2. after the K-th backward pass the same two norms of the accumulated pre-clip
   gradient G_bar: from ``.grad`` on one process, from the averaged buckets of
   DDP's communication hook under W > 1 (``gradnoise.tap.norms``), where |g_pre|
   for the clip coefficient is read as well;
3. the optimizer's step post-hook reads eta_t and c_t as ``NoiseTap`` does and
   turns the sums into the step's record (under DDP after one all-reduce of the
   (K, groups, 2) sums).

Not in this tier: per-layer rows, the spectrum and the tail index, curvature
proxies other than the empirical Fisher, declared injected noise, and the full
consistency check (only its scalar form, ``norm_form.check_variance``).
"""

from __future__ import annotations

import math

import torch

from gradnoise.estimation.micro_stream import CHUNKS, MIN_CHUNK
from gradnoise.estimation.norm_form import NormFormEstimate
from gradnoise.tap.norms import tensor_norms
from gradnoise.tap.tap import NoiseTap

ECONOMY_OPTIONS = ("eps_rel",)  # the NoiseLogger options this tier honours


class EconomyTap(NoiseTap):
    """``NoiseTap`` whose hooks keep squared norms only; a record at every step (``records``)."""

    def __init__(self, model, optimizer, **kwargs):
        unknown = sorted(set(kwargs["logger_options"]) - set(ECONOMY_OPTIONS))
        if unknown:
            raise TypeError(
                f"attach(tier='economy'): option(s) {unknown} belong to the standard and full "
                f"tiers; this one takes {list(ECONOMY_OPTIONS)}"
            )
        if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW | torch.optim.SGD):
            raise TypeError(
                "attach(tier='economy') supports Adam, AdamW and SGD (their preconditioner is "
                f"known); got {type(optimizer).__name__}"
            )
        self._adam = isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW)
        super().__init__(model, optimizer, **kwargs)
        group_of = {id(p): k for k, g in enumerate(optimizer.param_groups) for p in g["params"]}
        outside = len(optimizer.param_groups)  # trainable but not optimized: P = 0
        self._group = [group_of.get(id(p), outside) for p in self.params]
        self._group_index = torch.tensor(self._group, device=self.device)
        self._seen: list[tuple] = []  # (i, |x / (sqrt(v) + eps sqrt(c))|^2, |x|^2) of d_j
        self._mean_seen: list[tuple] = []  # the same of G_bar
        self._weights = torch.ones(len(self.params), 2, device=self.device)  # (c or 1, 1)
        self._sources: list = []  # per parameter: (v, eps sqrt(c)) of Adam, or None (P = 1)
        self._chunk = max(MIN_CHUNK, math.ceil(sum(self.sizes) / CHUNKS))

    def add_injected(self, cov_diag: torch.Tensor) -> None:
        raise RuntimeError(
            "gradnoise.tap: tier='economy' does not take declared injected noise (Tr(P Sigma P) "
            "needs a gradient-sized product); attach with tier='standard' or 'full'"
        )

    # -- the hooks -----------------------------------------------------------

    def _build_logger(self) -> None:
        self.logger = NormFormEstimate(
            n_micro=self.n_micro, micro_batch_size=self.micro_batch_size,
            world_size=self.world_size, n_groups=len(self.optimizer.param_groups) + 1,
            loss_reduction=self.loss_reduction,
            eps_rel=self._logger_options.get("eps_rel", 1e-6),
            process_group=self.process_group, device=self.device,
        )  # fmt: skip

    def _begin_step(self) -> None:
        if self.logger is None:
            raise RuntimeError(
                "gradnoise.tap: a backward pass before any forward pass through the model; "
                "pass attach(..., micro_batch_size=m) when the forward does not go through it"
            )
        if self._batch_seen is not None and self._batch_seen != self.micro_batch_size:
            raise RuntimeError(
                f"gradnoise.tap: step {self.step + 1} has a micro-batch of {self._batch_seen} "
                f"examples, the first had {self.micro_batch_size}; the estimate needs "
                "micro-batches of one size"
            )
        self._pre_norms = [None] * len(self.params)
        self._pre_scaled, self._injected, self._logging = self._scaled, None, True
        self._factor = self.n_micro / (float(self.scaler.get_scale()) if self._scaled else 1.0)
        self.logger.begin_step()
        self._seen, self._mean_seen = [], []
        self._read_preconditioner()

    def _on_grad(self, i: int, grad: torch.Tensor) -> None:
        if self._busy:
            return
        if not self._in_backward:
            self._begin_backward()
        flat = grad.reshape(-1)
        self._seen.append(
            (i, *self._norms_sq(i, flat if flat.dtype == torch.float32 else flat.float()))
        )

    def _end_backward(self) -> None:
        self._in_backward = False
        if self._seen:
            values, groups = self._collect(self._seen)
            self.logger.add_micro(self._backwards - 1, values, groups, self._factor)
        self._seen = []
        if self._backwards == self.n_micro and not self._ddp:
            grads = [p.grad for p in self.params]
            self._pre_norms = list(tensor_norms(grads, self.device))
            self._mean_seen = [(i, *self._norms_sq(i, g.reshape(-1).float()))
                               for i, g in enumerate(grads) if g is not None]  # fmt: skip

    def _on_bucket(self, bucket) -> None:
        if not self._active or self._busy or self._backwards != self.n_micro:
            return
        grads = bucket.gradients()
        norms = tensor_norms(grads, self.device)
        for p, g, norm in zip(bucket.parameters(), grads, norms, strict=True):
            i = self._index.get(id(p))
            if i is not None:
                self._pre_norms[i] = norm
                self._mean_seen.append((i, *self._norms_sq(i, g.reshape(-1).float())))

    def _after_step(self, optimizer, args, kwargs) -> None:
        if self._busy:
            return
        step, lr, pre_norm, clip_coef = self._step_inputs(optimizer)
        scale = float(self.scaler.get_scale()) if self._pre_scaled else 1.0
        if self._mean_seen:
            self.logger.add_mean(*self._collect(self._mean_seen), 1.0 / scale)
        record = self.logger.finish(step, lr, clip_coef)
        self.step, self._backwards, self._logging = step, 0, False
        self.last_grad_norm, self.last_clip_coef = pre_norm, clip_coef
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)

    # -- internals -----------------------------------------------------------

    def _read_preconditioner(self) -> None:
        """Where each parameter's P_{t-1} comes from this step, and the weights of its norms.

        Adam: P = 1 / (sqrt(v / c) + eps), c = 1 - beta2^t (``adam_precond``), so
        |P x|^2 = c |x / (sqrt(v) + eps sqrt(c))|^2 (as ``formulas._precond_sq_`` writes
        P^2): the hook divides by sqrt(v) + eps sqrt(c), and column 0 of the norms is
        weighted by c once per backward pass. P = 1 for SGD and before Adam's first
        step, 0 outside every parameter group.
        """
        self._sources, weights = [], []
        outside = len(self.optimizer.param_groups)
        for p, k in zip(self.params, self._group, strict=True):
            state = self.optimizer.state.get(p) if self._adam and k < outside else None
            if not state or "exp_avg_sq" not in state:
                self._sources.append(None)
                weights.append(0.0 if k == outside else 1.0)
                continue
            group = self.optimizer.param_groups[k]
            second = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
            correction = 1.0 - group["betas"][1] ** float(state["step"])
            self._sources.append((second.reshape(-1), group["eps"] * math.sqrt(correction)))
            weights.append(correction)
        self._weights[:, 0] = torch.tensor(weights, dtype=torch.float32)

    def _norms_sq(self, i: int, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(|x / (sqrt(v) + eps sqrt(c))|^2, |x|^2) of parameter i's flat fp32 x, 0-d tensors.

        Weighted by (c, 1) (``_read_preconditioner``): (|P_{t-1} x|^2, |x|^2), with one
        temporary of the parameter's size, or of ``micro_stream``'s chunk (D / 16) for a
        larger parameter.
        """
        plain = torch.dot(flat, flat)
        source = self._sources[i]
        if source is None:  # P = 1 (or 0, by its weight)
            return plain, plain
        second, shift = source
        if flat.numel() <= self._chunk:
            scaled = torch.sqrt(second.float()).add_(shift)
            scaled = torch.div(flat, scaled, out=scaled)
            return torch.dot(scaled, scaled), plain
        total = torch.zeros((), device=flat.device)
        for lo in range(0, flat.numel(), self._chunk):  # a large parameter: chunk-sized pieces
            scaled = torch.sqrt(second[lo : lo + self._chunk].float()).add_(shift)
            scaled = torch.div(flat[lo : lo + self._chunk], scaled, out=scaled)
            total += torch.dot(scaled, scaled)
        return total, plain

    def _collect(self, seen: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
        """(weighted (n_seen, 2) squared norms, group of each) of ``_norms_sq`` results."""
        index = torch.tensor([i for i, _, _ in seen], device=self.device)
        values = torch.stack([torch.stack([a for _, a, _ in seen]),
                              torch.stack([b for _, _, b in seen])], 1)  # fmt: skip
        return values.mul_(self._weights[index]), self._group_index[index]
