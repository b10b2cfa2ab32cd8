"""Synaptic filters h1, h2, h3: which weights survive at threshold index i (Eq. 1, 7, 8, 9)."""
from __future__ import annotations

import torch

from . import checks
from .errors import FragilityError

FILTERS = ("h1", "h2", "h3")
MAX_INTERVALS = 10_000  # the paper: 25; each threshold costs a pass over the test set


def check_weights(theta: torch.Tensor, name: str = "the weights") -> None:
    """Refuse weights the method is undefined for: NaN/Inf, or all zeros (Definition 1)."""
    if theta.numel() == 0:
        raise FragilityError(f"{name} are empty: filter a layer that has weights.")
    if not torch.isfinite(theta).all():
        raise FragilityError(f"{name} contain NaN or Inf: load a healthy checkpoint before filtering.")
    if not theta.any():
        raise FragilityError(f"{name} are all zero: synaptic filtering needs non-zero weights (Definition 1).")


def check_filter(kind: str) -> None:
    """Refuse unknown filter names."""
    if not isinstance(kind, str) or kind not in FILTERS:
        raise FragilityError(f"unknown filter {kind!r}: choose from {', '.join(FILTERS)}.")


def check_intervals(A) -> int:
    """A, a whole number of intervals ≥ 1 (numpy integers accepted), as an int."""
    return int(checks.require(A, checks.Rule(lambda v: checks.is_whole(v) and 1 <= v <= MAX_INTERVALS,
                                             f"the number of threshold intervals, a whole number in "
                                             f"1..{MAX_INTERVALS}"), "A"))


def thresholds(kind: str, A: int, lo: float, hi: float) -> torch.Tensor:
    """t_i for i = 0..A in weight units, float64 (Eq. 7–9); the h3 value is the window centre.

    The grid ends exactly at lo and hi, so h1/h2 remove every weight at i = A.
    """
    check_filter(kind)
    A = check_intervals(A)
    i = torch.arange(A + 1, dtype=torch.float64)
    delta = (hi - lo) / A
    t = (hi - i * delta) if kind == "h2" else (lo + i * delta)
    t[0], t[A] = (hi, lo) if kind == "h2" else (lo, hi)
    return t


def _window_edges(A: int, lo: float, hi: float) -> torch.Tensor:
    """h3 window edges b_0..b_{A+1}: window i is (b_i, b_{i+1}], with open outer ends so windows partition."""
    k = torch.arange(A + 2, dtype=torch.float64)
    edges = lo + (k - 0.5) * ((hi - lo) / A)
    edges[0], edges[-1] = -float("inf"), float("inf")
    return edges


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
    """`synaptic_mask` without the checks, for float64 weights already validated (the sweep's inner loop)."""
    if kind == "h3":
        edges = _window_edges(A, lo, hi)
        return ~((w > edges[i]) & (w <= edges[i + 1]))
    t = float(thresholds(kind, A, lo, hi)[i])
    return w > t if kind == "h1" else w < t


def masks(theta: torch.Tensor, kind: str, A: int, lo: float | None = None, hi: float | None = None) -> torch.Tensor:
    """All A + 1 keep-masks of one filter, stacked along a new first dimension (i = 0..A)."""
    return torch.stack([synaptic_mask(theta, kind, i, A, lo, hi) for i in range(A + 1)])
