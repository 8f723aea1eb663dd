"""The columns of the per-step tables of a run: ``STEPS`` (the P-NE trace) and ``LAYERS``.

Name, type, unit and meaning of each column (``preregistration.contracts.Column``);
``preregistration.tables`` turns them into contracts.
"""

from __future__ import annotations

from preregistration.contracts import Column

_c = Column  # _c(name, dtype, unit, meaning[, nullable]): one line per column


# Per-step P-NE quantities (DESIGN §2, seed 003). Held estimates: the value of the
# latest logging step. "potential" uses unclipped fp32 gradients; "effective"
# multiplies the noise covariance by the squared clip factor the update really used.
STEPS = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c(
        "step",
        "int",
        "optimizer steps",
        "optimizer step t (1-based) after which the row was logged",
    ),
    _c("tokens", "int", "tokens", "training tokens seen up to and including step t"),
    _c("lr", "float", "-", "learning rate eta_t used by step t"),
    _c("train_loss", "float", "nats/token", "mean training loss of step t's global batch"),
    _c(
        "val_loss",
        "float",
        "nats/token",
        "validation loss after step t (NaN when the step did not validate)",
        nullable=True,
    ),
    _c("validated", "bool", "-", "whether the validation loss was measured after step t"),
    _c("grad_norm", "float", "-", "L2 norm of the unclipped global-batch gradient at step t"),
    _c(
        "clip_coef",
        "float",
        "-",
        "factor c_t = min(1, max_norm/grad_norm) the update used at step t",
    ),
    _c(
        "clip_rate",
        "float",
        "fraction",
        "share of steps since the previous row whose update was clipped",
    ),
    _c("global_batch", "int", "sequences", "B_t = m * K * W"),
    _c(
        "trace_pcp",
        "float",
        "-",
        "Tr(P_t C_t P_t)/B_t from the K*W micro-batch gradients (potential)",
    ),
    _c("trace_pfp", "float", "-", "Tr(P_t F_t P_t), registered curvature proxy (empirical Fisher)"),
    _c("pne", "float", "-", "P-NE_t = eta_t Tr(P C P)/B (potential)"),
    _c("pne_star", "float", "-", "P-NE*_t = P-NE_t / max(floor, Tr(P F P)) (potential)"),
    _c("pne_eff", "float", "-", "effective P-NE_t = c_t^2 P-NE_t (after clipping)"),
    _c("pne_star_eff", "float", "-", "effective P-NE*_t = c_t^2 P-NE*_t (after clipping)"),
    _c("pne_eta2", "float", "-", "eta_t^2 Tr(P C P)/B, the eta-squared variant of seeds 000/001"),
    _c(
        "b_simple",
        "float",
        "sequences",
        "Tr(C)/|G|^2 of step t alone (McCandlish et al. 2018; biased upwards)",
    ),
    _c(
        "int_pne",
        "float",
        "-",
        "sum over steps s <= t of eta_s Tr(P C_held P)/B, P at most 3 steps old (potential)",
    ),
    _c("int_pne_star", "float", "-", "integrated P-NE* (potential)"),
    _c("int_pne_eff", "float", "-", "integrated effective P-NE (each step's own c_s^2)"),
    _c("int_pne_star_eff", "float", "-", "integrated effective P-NE*"),
    _c("int_pne_eta2", "float", "-", "integrated eta-squared variant"),
    _c(
        "int_clock",
        "float",
        "1/sequences",
        "step-size clock: sum over every step s <= t of eta_s / B_s; int_pne_star / int_clock "
        "is the clock-weighted mean noise fraction Tr(P C P) / Tr(P F P)",
    ),
    # added by the estimator (gradnoise.estimation.logger): diagnostics of the same logging step.
    _c("trace_cov", "float", "-", "Tr(C_t), trace of the per-example gradient covariance"),
    _c(
        "grad_sq",
        "float",
        "-",
        "unbiased |G_t|^2 = |G_bar|^2 - Tr(C)/B (< 0 possible when noise dominates)",
    ),
    _c(
        "trace_pfp_fisher",
        "float",
        "-",
        "Tr(P F P) with the empirical Fisher diagonal, whatever the proxy",
    ),
    _c("pne_star_fisher", "float", "-", "P-NE*_t with the empirical Fisher denominator"),
    _c(
        "int_pne_star_fisher",
        "float",
        "-",
        "integrated P-NE* with the empirical Fisher denominator",
    ),
    _c(
        "trace_pgp_ggn",
        "float",
        "-",
        "Tr(P G P), G the generalized Gauss-Newton (probes through the logits; NaN when off)",
        nullable=True,
    ),
    _c("pne_star_ggn", "float", "-", "P-NE*_t with the GGN denominator", nullable=True),
    _c(
        "int_pne_star_ggn", "float", "-", "integrated P-NE* with the GGN denominator", nullable=True
    ),
    _c(
        "trace_pfp_true_fisher",
        "float",
        "-",
        "Tr(P F P), F the true Fisher (labels sampled from the model; NaN when off)",
        nullable=True,
    ),
    _c(
        "pne_star_true_fisher",
        "float",
        "-",
        "P-NE*_t with the true-Fisher denominator",
        nullable=True,
    ),
    _c(
        "int_pne_star_true_fisher",
        "float",
        "-",
        "integrated P-NE* with the true-Fisher denominator",
        nullable=True,
    ),
    _c(
        "trace_php_hessian",
        "float",
        "-",
        "Hutchinson Tr(P H P) of the raw, indefinite loss Hessian (reported only; NaN when off)",
        nullable=True,
    ),
    _c(
        "b_simple_window",
        "float",
        "sequences",
        "B_simple = sum Tr(C) / sum |G|^2 over the latest b_simple_window (16) logged estimates",
    ),
    _c(
        "int_trace_cov",
        "float",
        "-",
        "sum over steps <= t of the held Tr(C) (numerator of b_simple_run)",
    ),
    _c(
        "int_grad_sq",
        "float",
        "-",
        "sum over steps <= t of the held unbiased |G|^2 (denominator of b_simple_run)",
    ),
    _c(
        "b_simple_run",
        "float",
        "sequences",
        "B_simple of the run so far: int_trace_cov / int_grad_sq (ratio of step means)",
    ),
    _c("spectrum_top", "float", "-", "top eigenvalue of P C P / B from the randomized sketch"),
    _c(
        "spectrum_top_share",
        "float",
        "fraction",
        "share of the sketched trace in the top sketch_rank eigenvalues",
        nullable=True,
    ),
    _c(
        "eff_rank",
        "float",
        "-",
        "participation ratio (sum l)^2/sum l^2 of P C P / B (<= K*W - 1)",
        nullable=True,
    ),
    _c(
        "hill_tail_index",
        "float",
        "-",
        "Hill tail index of the centred micro-batch gradient coordinates",
        nullable=True,
    ),
    # Noise arms (issue 10; training/noise_arms.py): NaN for runs without a controller.
    _c(
        "noise_scale",
        "float",
        "-",
        "controller multiplier s_t of the injected covariance at this step (noise arms)",
        nullable=True,
    ),
    _c(
        "target_int_pne_star",
        "float",
        "-",
        "controller target at this step: the reference's int P-NE* (injection) or the budget ramp",
        nullable=True,
    ),
    _c(
        "int_pne_star_injected",
        "float",
        "-",
        "integrated P-NE* due to the injected covariance so far (0 without injection)",
        nullable=True,
    ),
)

# The measures training.evaluation.scores writes to the scores table; the first three are
# accuracies in [0, 1]. The end-of-run probes' measures are PROBE_RUN_MEASURES (below).


LAYERS = (
    _c("run_id", "str", "-", "condition/seed identifier of the run"),
    _c("step", "int", "optimizer steps", "logged optimizer step t"),
    _c("layer", "str", "-", "module name, e.g. blocks.0.attn.qkv"),
    _c("n_params", "int", "parameters", "number of parameters of the module"),
    _c("trace_pcp", "float", "-", "the module's part of Tr(P C P)/B"),
    _c("trace_pfp", "float", "-", "the module's part of Tr(P F P), empirical Fisher"),
    _c("trace_cov", "float", "-", "the module's part of Tr(C)"),
    _c("grad_sq", "float", "-", "the module's part of the unbiased |G|^2"),
    _c("pne", "float", "-", "the module's part of P-NE_t (potential)"),
    _c("pne_star", "float", "-", "the module's P-NE over the whole model's curvature trace"),
    _c("pne_eff", "float", "-", "the module's part of effective P-NE_t"),
)
