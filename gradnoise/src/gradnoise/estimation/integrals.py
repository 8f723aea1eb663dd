"""Integrated exposures that do not depend on the logging stride (DESIGN §2; issue 8, item 2).

Between logging steps the logger holds the latest estimate of the noise
diagonal diag(C) and of each curvature proxy's diagonal diag(F^k). Every step t
applies its own preconditioner P_t and learning rate eta_t to them:

    Tr_t(C)   = sum_j P_t,j^2 diag(C)_j / B            (held C, this step's P)
    int P-NE  += eta_t Tr_t(C)
    int P-NE* += eta_t Tr_t(C) / max(floor_t, sum_j P_t,j^2 diag(F)_j)

in O(D) per step (one matrix-vector product, no extra backward pass). The
logger refreshes P_t at every logging step and every r-th step
(``NoiseLogger(precond_interval=r)``, default 4) and reuses the latest traces in
between: Adam's P moves on the time scale 1 / (1 - beta2) >= 20 steps, so P at
most r - 1 = 3 steps old changes the integral by well under 1 % (measured:
tests/training/test_pne_stride.py), at a quarter of the per-step cost. Holding
the scalar trace instead would hold P as well; Adam's P changes fastest early
(at step 1 it is 1/|g_1|, about 10^4 times its later values), which made the
held-trace integral mostly an artefact of the stride. What is held is only the
noise and curvature of the data, which change slowly; the logger adds dense
early logging (steps 1, 2, 4, ... below N) for the first steps, where those
change fastest too.

The B_simple integrals ``int_trace_cov`` and ``int_grad_sq`` sum the held
Tr(C) and |G|^2 over steps, so their ratio is the run's noise scale as a ratio
of step-averaged numerator and denominator (McCandlish et al. 2018, App. A).

The step-size clock ``int_clock`` = sum_t eta_t / B is what P-NE* is made of
besides the noise: P-NE*_t = (eta_t / B) f_t with the noise fraction
f_t = Tr(P C P) / max(floor, Tr(P F P)) (C and F per example; with the empirical
Fisher diag(F) = G_bar^2 + diag(C) (1 - 1/B), f_t <= B / (B - 1) unless noise is
injected, whose B Tr(P Sigma P) joins the numerator). So int P-NE* / int_clock is the
clock-weighted mean of the held noise fraction: a run whose f_t stays near 1 has an
integrated P-NE* equal to its clock, whatever its noise. It is summed at every step,
like the exposures.
"""

from __future__ import annotations

import math

import torch

from gradnoise.estimation.formulas import curvature_floor, effective, pne, pne_eta2, pne_star

# The curvature proxies with a diagonal the integral can re-weight every step.
DIAGONAL_CURVATURES = ("fisher", "ggn", "true_fisher")
INTEGRATED = (
    "int_pne",
    "int_pne_star",
    "int_pne_eff",
    "int_pne_star_eff",
    "int_pne_eta2",
    "int_pne_star_fisher",
    "int_pne_star_ggn",
    "int_pne_star_true_fisher",
    "int_trace_cov",
    "int_grad_sq",
    "int_clock",
)


class ExposureIntegral:
    """Running sums of the integrated exposures of one run; resumable.

    Parameters
    ----------
    curvature : the registered proxy (``int_pne_star`` uses it).
    proxies : the diagonal proxies estimated besides ``fisher`` (their
        ``int_pne_star_<proxy>`` stays NaN otherwise).
    global_batch : B = m K W.
    eps_rel : floor of a curvature trace relative to the empirical Fisher trace.
    """

    def __init__(self, curvature: str, proxies: tuple[str, ...], global_batch: int, eps_rel: float):
        self.curvature, self.global_batch, self.eps_rel = curvature, global_batch, eps_rel
        self.rows = ("cov", "fisher", *[p for p in DIAGONAL_CURVATURES[1:] if p in proxies])
        self.sums = {k: 0.0 for k in INTEGRATED}
        for proxy in DIAGONAL_CURVATURES[1:]:
            if proxy not in self.rows:
                self.sums[f"int_pne_star_{proxy}"] = math.nan
        self.held: torch.Tensor | None = None  # (len(rows), D) held diagonals
        self.held_scalars: dict[str, float] = {}
        self.last_traces: dict[str, float] = {}  # under the latest P^2 given to add_step
        self.latest_precond_sq: torch.Tensor | None = None  # the latest P^2 given to add_step
        self.injected_sum = 0.0  # int P-NE* of injected noise (gradnoise.injection.gradient_noise)

    def hold(
        self,
        diagonals: dict[str, torch.Tensor],
        trace_cov: float,
        grad_sq: float,
        stacked: torch.Tensor | None = None,
    ) -> None:
        """Replace the held diagonals (keys ``self.rows``) and the B_simple terms.

        ``stacked`` (2, D), when given, holds the cov and Fisher diagonals in that
        order; with no diagonal proxy it is kept as it is (no copy).
        """
        missing = [r for r in self.rows if r not in diagonals]
        if missing:
            raise RuntimeError(f"NoiseLogger: no estimate of {missing} at this logging step")
        if stacked is not None and stacked.shape[0] == len(self.rows):
            self.held = stacked
        else:
            self.held = torch.stack([diagonals[r].float() for r in self.rows])
        self.held_scalars = {"trace_cov": trace_cov, "grad_sq": grad_sq}

    def traces(self, precond_sq: torch.Tensor) -> dict[str, float]:
        """Tr(P C P)/B (``trace_pcp``) and Tr(P F^k P) of every held proxy, for this step's P^2."""
        # one dot product per row: a row's trace does not depend on which other proxies
        # are held (a (q, D) @ D product rounds differently for another q)
        values = {r: float(row @ precond_sq) for r, row in zip(self.rows, self.held, strict=True)}
        traces = {"trace_pcp": values.pop("cov") / self.global_batch}
        return traces | values

    def add_step(
        self,
        precond_sq: torch.Tensor | None,
        lr: float,
        clip_coef: float,
        injected: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Add step t's exposure (its P_t^2, eta_t and clip factor c_t); return its traces.

        ``precond_sq`` None reuses the traces of the latest P^2 given (a step
        between two refreshes of P, ``NoiseLogger(precond_interval=...)``).
        ``injected`` is diag(Sigma_t) of noise added to this step's mean gradient
        (issue 10): Tr(P Sigma_t P) joins Tr(P C P) / B in every integral, and
        eta_t Tr(P Sigma_t P) / max(floor, Tr(P F P)) is summed in ``injected_sum``.
        """
        if precond_sq is not None:
            self.last_traces = self.traces(precond_sq)
            self.latest_precond_sq = precond_sq
        traces = self.last_traces
        if injected is not None:
            injected_trace = float(self.latest_precond_sq @ injected)
            traces = traces | {"trace_pcp": traces["trace_pcp"] + injected_trace}
            floor = curvature_floor(self.eps_rel, traces["fisher"])
            self.injected_sum += pne(lr, pne_star(injected_trace, traces[self.curvature], floor))
        trace, sums = traces["trace_pcp"], self.sums
        floor = curvature_floor(self.eps_rel, traces["fisher"])
        ratios = {k: pne_star(trace, traces[k], floor) for k in self.rows[1:]}
        sums["int_pne"] += pne(lr, trace)
        sums["int_pne_eff"] += effective(pne(lr, trace), clip_coef)
        sums["int_pne_eta2"] += pne_eta2(lr, trace)
        sums["int_pne_star"] += pne(lr, ratios[self.curvature])
        sums["int_pne_star_eff"] += effective(pne(lr, ratios[self.curvature]), clip_coef)
        for proxy, ratio in ratios.items():
            sums[f"int_pne_star_{proxy}"] += pne(lr, ratio)
        sums["int_trace_cov"] += self.held_scalars["trace_cov"]
        sums["int_grad_sq"] += self.held_scalars["grad_sq"]
        sums["int_clock"] += lr / self.global_batch
        return traces

    def injected_rate(self, injected: torch.Tensor, lr: float) -> float:
        """eta Tr(P Sigma P) / max(floor, Tr(P F P)) under the latest P (NaN before any P)."""
        if self.latest_precond_sq is None or not self.last_traces:
            return math.nan
        traces = self.last_traces
        floor = curvature_floor(self.eps_rel, traces["fisher"])
        trace = float(self.latest_precond_sq @ injected)
        return pne(lr, pne_star(trace, traces[self.curvature], floor))

    def state_dict(self) -> dict:
        return {
            "sums": dict(self.sums),
            "rows": self.rows,
            "held": None if self.held is None else self.held.cpu().clone(),
            "held_scalars": dict(self.held_scalars),
            "last_traces": dict(self.last_traces),
            "latest_precond_sq": None
            if self.latest_precond_sq is None
            else self.latest_precond_sq.cpu().clone(),
            "injected_sum": self.injected_sum,
        }

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        if tuple(state["rows"]) != self.rows:
            raise ValueError(
                f"NoiseLogger state holds proxies {tuple(state['rows'])}, this logger {self.rows}"
            )
        missing = [k for k in INTEGRATED if k not in state["sums"]]
        if missing:
            raise ValueError(
                f"NoiseLogger state lacks the integrals {missing} (saved by an older gradnoise): "
                "they cannot be rebuilt from the state; start the run again"
            )
        self.sums = {k: float(state["sums"][k]) for k in INTEGRATED}
        self.held = None if state["held"] is None else state["held"].to(device)
        self.held_scalars = {k: float(v) for k, v in state["held_scalars"].items()}
        self.last_traces = {k: float(v) for k, v in state["last_traces"].items()}
        latest = state["latest_precond_sq"]
        self.latest_precond_sq = None if latest is None else latest.to(device)
        self.injected_sum = float(state["injected_sum"])
