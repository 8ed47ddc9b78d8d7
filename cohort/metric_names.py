"""The names of the evaluation metrics, with no dependencies, for config validation
(``train.select_by``) and model selection; ``cohort.metrics`` computes them."""

METRICS = ("acc", "nll", "brier", "ece", "cw_ece", "adaece")
LOWER_IS_BETTER = {"nll", "brier", "ece", "cw_ece", "adaece", "pairwise_kl"}
SELECTABLE = (*METRICS, *(f"c_{m}" for m in METRICS))
"""What ``train.select_by`` may select on: each metric, before and after temperature scaling."""
