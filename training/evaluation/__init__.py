"""The end-of-run evaluations of one trained model, written as tidy tables.

- ``scores``           ICL accuracy against shots, memorization, copy and validation loss
                       (the scores table's registered measures)
- ``probes``           every end-of-run probe on fixed inputs, as scores rows
- ``curvature``        sharpness three ways: top Hessian eigenvalue, SAM sharpness, Fisher
                       trace
- ``heads``            induction and copying heads: attention patterns, per-head scores
- ``icl_vs_gd``        in-context learning against gradient descent on the same
                       demonstrations
- ``memorization``     memorization by likelihood and a zero-shot format control
- ``lm_eval_adapter``  a checkpoint as an lm-evaluation-harness model, with its tokenizer
- ``lm_eval_suite``    the project's lm-eval tasks (``lm_eval_tasks/*.yaml``): their
                       local data, run offline, tidy scores
- ``run_evaluation``   the evaluate job of a language run and the score job of a
                       regression run, from the run's checkpoint

``icl_vs_gd`` is the module of the function ``icl_vs_gd.icl_vs_gd``; the package exports
the module's other names (a name equal to its module's would be shadowed by it).

Reads a trained model and the corpora; imports nothing of the training loop, the run
commands or the paper scale (the import-linter contracts of ``pyproject.toml`` check it).
"""

from __future__ import annotations

from preregistration.lazy_exports import lazy_exports

_MODULES: dict[str, tuple[str, ...]] = {
    "scores": (
        "EVAL_SEED_OFFSET",
        "answer_accuracy",
        "induction_score",
        "score_model",
    ),
    "probes": (
        "PROBE_SEED_OFFSET",
        "uniform_prefix_matching",
        "curvature_rows",
        "head_rows",
        "icl_vs_gd_rows",
        "memorization_rows",
        "probe_scores",
    ),
    "curvature": (
        "LossClosure",
        "hessian_top_eigenvalue",
        "sam_sharpness",
        "fisher_trace",
    ),
    "heads": (
        "attention_pattern",
        "head_contributions",
        "attention_output",
        "record_layers",
        "direct_logits",
        "earlier_successor_mask",
        "prefix_matching_scores",
        "copying_scores",
        "repeated_random_sequences",
        "head_scores",
        "induction_head_score",
    ),
    "icl_vs_gd": (
        "Predictor",
        "order_spread",
        "order_sensitivity",
        "top_overlap",
        "cosine",
        "label_probs",
        "icl_prompts",
        "finetune_copies",
        "copies_label_probs",
    ),
    "memorization": (
        "answer_log_likelihood",
        "recall_likelihood",
        "format_accuracy",
        "zero_shot_format",
    ),
    "lm_eval_adapter": (
        "WORD_PREFIX",
        "SyntheticTokenizer",
        "load_checkpoint",
        "PneGPT",
    ),
    "lm_eval_suite": (
        "TASK_DIR",
        "TASKS",
        "METRICS",
        "LM_EVAL_SEED_OFFSET",
        "task_documents",
        "write_task_data",
        "task_config",
        "lm_eval_scores",
    ),
    "run_evaluation": (
        "LANGUAGE_TABLES",
        "evaluate_language_run",
        "write_language_evaluation",
        "score_regression_run",
        "write_regression_scores",
    ),
}

__all__, _OWNER, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
