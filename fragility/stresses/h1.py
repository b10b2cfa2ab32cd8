"""h1, the ideal high-pass filter (Eq. 7): at index i it removes every weight θ ≤ t_i = lo + iΔ, Δ = (hi − lo)/A.

It removes at least the smallest weight at i = 0 and every weight at i = A; ties at the threshold are removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Stress, grid, register_stress


@register_stress("h1")
@dataclass(frozen=True)
class H1(Stress):
    """Ideal high-pass filter (Eq. 7): keeps θ > lo + iΔ; `threshold` is t_i in weight units."""

    def thresholds(self, A: int, lo: float, hi: float) -> torch.Tensor:
        return grid(A, lo, hi)

    def keep(self, theta, i, A, lo, hi, layer):
        return theta > float(self.thresholds(A, lo, hi)[i])
