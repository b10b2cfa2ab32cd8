"""fragility: fragile, robust and antifragile parameters of deep networks under internal stress (synaptic filters…)
and attacks (FGSM…).

The reproducible companion to Pravin et al., "Fragility, robustness and antifragility in deep learning",
Artificial Intelligence 327 (2024) 104060.
"""
from . import figures, studies  # noqa: F401 (each chapter and study registers itself)
from .attacks import ATTACKS, FGSM, PGD, Attack, fgsm, largest_epsilon, register_attack, search_epsilon
from .engine import sweep
from .errors import FragilityError
from .filters import FILTERS, synaptic_mask
from .metrics import METRICS, Accuracy, FunctionMetric, Metric, TopK, as_metric, metric, register_metric
from .naive import sweep_naive
from .report import Report, report
from .scores import baseline, characterize, combined, display_normalize, scaled, scores
from .store import layer_order, open_results
from .stresses import STRESSES, Stress, register_stress
from .studies import open_study
from .verdicts import claims

__all__ = [
    "ATTACKS", "Accuracy", "Attack", "FGSM", "FILTERS", "FragilityError", "FunctionMetric", "METRICS", "Metric", "PGD",
    "Report", "STRESSES", "Stress", "TopK", "as_metric", "baseline", "characterize", "claims", "combined",
    "display_normalize", "fgsm", "largest_epsilon", "layer_order", "metric", "open_results", "open_study",
    "register_attack", "register_metric", "register_stress", "report", "scaled", "scores", "search_epsilon", "sweep",
    "sweep_naive", "synaptic_mask",
]
