"""Evaluation of classifier unlearning (spec image_mu.md §2): UA, RA, TA, MIA-Efficacy, RTE and Avg. Gap
against Retrain, collected in `Results` (text table, JSON, matplotlib figure)."""

from pyunlearn.eval.metrics import METRICS, avg_gap, evaluate, mia_efficacy
from pyunlearn.eval.report import RETRAIN, Results

__all__ = ["METRICS", "RETRAIN", "Results", "avg_gap", "evaluate", "mia_efficacy"]
