"""Gaussian weight noise: θ̃ = θ + σ_i · std(θ_layer) · z, σ_i = α_i · scale, z ~ N(0, 1).

z is drawn anew for each layer and index, seeded by (seed, layer, i) alone, so that a sweep repeats and different
indices draw independently; each layer's noise is scaled by that layer's own standard deviation, also in the
`global` unit (whose layers get the local units' draws). No weight is removed: n_filtered = 0, the baseline φ̄ of
Eq. 10 is 1, and r_x is the area of β̄ − 1. At σ = 0 the network is the unperturbed one.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import checks
from .base import Stress, register_stress


def noise(shape, seed: int, layer: str, i: int) -> torch.Tensor:
    """z ~ N(0, 1) of this shape, float64, drawn from (seed, layer, i) alone."""
    key = hashlib.blake2b(f"{seed}/{layer}/{i}".encode(), digest_size=8).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float64)


@register_stress("gaussian")
@dataclass(frozen=True)
class GaussianNoise(Stress):
    """θ + σ_i · std(θ_layer) · z with σ_i = (i/A) · scale; `threshold` is σ_i (in units of each layer's std).

    Args:
        scale: σ at α = 1 (≥ 0).
        seed: seeds the draws (with the layer's name and the index).
    """

    removes: ClassVar[bool] = False
    scale: float = 1.0
    seed: int = 0

    def check(self) -> None:
        self._set("scale", checks.number(self.scale, "scale", low=0))
        self._set("seed", checks.count(self.seed, "seed", 0))

    def sigma(self, i: int, A: int) -> float:
        """σ_i = α_i · scale."""
        return i / A * self.scale

    def thresholds(self, A: int, lo: float, hi: float) -> torch.Tensor:
        return torch.tensor([self.sigma(i, A) for i in range(A + 1)], dtype=torch.float64)

    def unchanged(self, i: int, A: int) -> bool:
        return self.sigma(i, A) == 0

    def change(self, theta, i, A, lo, hi, layer):
        if self.unchanged(i, A):
            return None
        z = noise(theta.shape, self.seed, layer, i).to(theta.device)
        return theta + (self.sigma(i, A) * theta.std(correction=0)) * z
