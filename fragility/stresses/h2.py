"""h2, the ideal low-pass filter (Eq. 8): at index i it removes every weight θ ≥ t_i = hi − iΔ, Δ = (hi − lo)/A.

It removes at least the largest weight at i = 0 and every weight at i = A; ties at the threshold are removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Stress, grid, register_stress


@register_stress("h2")
@dataclass(frozen=True)
class H2(Stress):
    """Ideal low-pass filter (Eq. 8): keeps θ < hi − iΔ; `threshold` is t_i in weight units."""

    def thresholds(self, A: int, lo: float, hi: float) -> torch.Tensor:
        return grid(A, lo, hi, descending=True)

    def keep(self, theta, i, A, lo, hi, layer):
        return theta < float(self.thresholds(A, lo, hi)[i])
