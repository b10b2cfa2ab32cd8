"""h3, the pulse wave (Eq. 9): at index i it removes the weights of one window, t_i − Δ/2 < θ ≤ t_i + Δ/2 around
t_i = lo + iΔ, Δ = (hi − lo)/A.

The windows are half-open below and closed above, and the outer ones open-ended, so that they partition the real
line: every weight is removed at exactly one i.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Stress, grid, register_stress


def window_edges(A: int, lo: float, hi: float) -> torch.Tensor:
    """Window edges b_0..b_{A+1}: window i is (b_i, b_{i+1}], with open outer ends so that the windows partition."""
    k = torch.arange(A + 2, dtype=torch.float64)
    edges = lo + (k - 0.5) * ((hi - lo) / A)
    edges[0], edges[-1] = -float("inf"), float("inf")
    return edges


@register_stress("h3")
@dataclass(frozen=True)
class H3(Stress):
    """Pulse wave (Eq. 9): removes lo + (i − ½)Δ < θ ≤ lo + (i + ½)Δ; `threshold` is the window centre t_i."""

    def thresholds(self, A: int, lo: float, hi: float) -> torch.Tensor:
        return grid(A, lo, hi)

    def keep(self, theta, i, A, lo, hi, layer):
        edges = window_edges(A, lo, hi)
        return ~((theta > edges[i]) & (theta <= edges[i + 1]))
