"""fragility: fragile, robust and antifragile parameters of deep networks under synaptic filtering and FGSM.

The reproducible companion to Pravin et al., "Fragility, robustness and antifragility in deep learning",
Artificial Intelligence 327 (2024) 104060.
"""
from . import figures, studies  # noqa: F401 (each chapter and study registers itself)
from .attacks import fgsm, largest_epsilon, search_epsilon
from .engine import sweep
from .errors import FragilityError
from .filters import FILTERS, synaptic_mask
from .naive import sweep_naive
from .scores import baseline, characterize, combined, display_normalize, scaled, scores
from .store import layer_order, open_results
from .studies import open_study
from .verdicts import claims

__all__ = [
    "FILTERS", "FragilityError", "baseline", "characterize", "claims", "combined", "display_normalize", "fgsm",
    "largest_epsilon", "layer_order", "open_results", "open_study", "scaled", "scores", "search_epsilon", "sweep",
    "sweep_naive", "synaptic_mask",
]
