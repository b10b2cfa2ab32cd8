"""fragility: fragile, robust and antifragile parameters of deep networks under synaptic filtering and FGSM.

The reproducible companion to Pravin et al., "Fragility, robustness and antifragility in deep learning",
Artificial Intelligence 327 (2024) 104060.
"""
from .attacks import fgsm, search_epsilon
from .engine import sweep
from .errors import FragilityError
from .filters import FILTERS, synaptic_mask
from .naive import sweep_naive
from .store import layer_order, open_results
from .studies import open_study
from .scores import baseline, characterize, combined, display_normalize, scaled, scores

__all__ = [
    "FILTERS", "FragilityError", "baseline", "characterize", "combined", "display_normalize", "fgsm", "layer_order", "open_results",
    "open_study", "scaled",
    "scores", "search_epsilon", "sweep", "sweep_naive", "synaptic_mask",
]
