"""Synaptic filters h1, h2, h3 by name (Eq. 1, 7, 8, 9): the functional interface to the stresses of the same names
in `fragility.stresses` (one module each), kept for callers of `synaptic_mask` and `thresholds`."""
from __future__ import annotations

import torch

from . import checks
from .errors import FragilityError
from .stresses import STRESSES, check_intervals, check_weights
from .stresses.base import MAX_INTERVALS

FILTERS = ("h1", "h2", "h3")
__all__ = ["FILTERS", "MAX_INTERVALS", "check_filter", "check_intervals", "check_weights", "keep_mask", "masks",
           "synaptic_mask", "thresholds"]


def check_filter(kind: str) -> None:
    """Refuse unknown filter names."""
    if not isinstance(kind, str) or kind not in FILTERS:
        raise FragilityError(f"unknown filter {kind!r}: choose from {', '.join(FILTERS)}.")


def thresholds(kind: str, A: int, lo: float, hi: float) -> torch.Tensor:
    """t_i for i = 0..A in weight units, float64 (Eq. 7–9); the h3 value is the window centre.

    The grid ends exactly at lo and hi, so h1/h2 remove every weight at i = A.
    """
    check_filter(kind)
    return STRESSES[kind]().thresholds(check_intervals(A), lo, hi)


def synaptic_mask(theta: torch.Tensor, kind: str, i: int, A: int, lo: float | None = None,
                  hi: float | None = None) -> torch.Tensor:
    """Keep-mask B (True = kept) of filter `kind` at index i of A (Eq. 7 h1, Eq. 8 h2, Eq. 9 h3); θ̃ = B ⊙ θ (Eq. 1).

    h1 removes θ ≤ lo + iΔ, h2 removes θ ≥ hi − iΔ, h3 removes lo + (i−½)Δ < θ ≤ lo + (i+½)Δ, Δ = (hi − lo)/A.

    Args:
        theta: the weights (a floating-point tensor, finite, not all zero).
        kind: "h1", "h2" or "h3".
        i: the threshold index, 0..A.
        A: the number of intervals (the paper: 25).
        lo, hi: the threshold range; default min θ and max θ (local analysis). Pass the network-wide range for the
            global analysis.

    Returns:
        A boolean tensor of θ's shape, True where the weight is kept.

    Raises:
        FragilityError: an unknown filter, i or A out of range, NaN/Inf or all-zero weights, lo > hi.

    Example:
        >>> fr.synaptic_mask(model.conv1.weight, "h1", 5, 25).float().mean()  # share of conv1 kept at α = 0.2
    """
    check_filter(kind)
    A = check_intervals(A)
    i = int(checks.require(i, checks.whole(0, A), "the threshold index i"))
    if not isinstance(theta, torch.Tensor) or not theta.dtype.is_floating_point:
        raise FragilityError(f"theta must be a floating-point tensor of weights; got {type(theta).__name__}"
                             + (f" of dtype {theta.dtype}" if isinstance(theta, torch.Tensor) else "") + ".")
    check_weights(theta)
    lo = float(theta.min()) if lo is None else checks.number(lo, "lo")
    hi = float(theta.max()) if hi is None else checks.number(hi, "hi")
    if hi < lo:
        raise FragilityError(f"the threshold range is empty (lo={lo} > hi={hi}): pass lo ≤ hi.")
    return keep_mask(theta.detach().to(torch.float64), kind, i, A, lo, hi)


def keep_mask(w: torch.Tensor, kind: str, i: int, A: int, lo: float, hi: float) -> torch.Tensor:
    """`synaptic_mask` without the checks, for float64 weights already validated."""
    return STRESSES[kind]().keep(w, i, A, lo, hi, "")


def masks(theta: torch.Tensor, kind: str, A: int, lo: float | None = None, hi: float | None = None) -> torch.Tensor:
    """All A + 1 keep-masks of one filter, stacked along a new first dimension (i = 0..A)."""
    return torch.stack([synaptic_mask(theta, kind, i, A, lo, hi) for i in range(A + 1)])
