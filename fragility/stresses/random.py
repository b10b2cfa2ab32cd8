"""Random removal (seed 003): at index i a share p_i of each layer's weights is set to zero, in a random order.

For a layer of n weights, draw d fixes a random order of them, seeded by (seed, layer, draw) alone; share p sets the
first round(p·n) of that order to zero (halves round up), so that within a draw the removed sets grow with p. p_i is
α_i = i/A, or `fractions[i]` when given (the removal study's grid). For the `global` unit every layer loses the same
share of its own weights in its own order: its masks are the local units' masks.
"""
from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import checks
from ..errors import FragilityError
from .base import Stress, register_stress


def removal_count(n: int, p: float) -> int:
    """Weights removed from n at fraction p: round(p·n), halves rounded up."""
    return math.floor(p * n + 0.5)


def fractions(p) -> np.ndarray:
    """Distinct fractions in [0, 1]."""
    try:
        ps = np.array([np.nan]) if isinstance(p, (str, bytes, bool, dict)) or p is None else \
            np.atleast_1d(np.asarray(p, dtype=float))
    except (TypeError, ValueError):
        ps = np.array([np.nan])
    if ps.ndim != 1 or ps.size == 0 or not np.all((ps >= 0) & (ps <= 1)) or len(np.unique(ps)) != ps.size:
        raise FragilityError(f"p must be distinct fractions in [0, 1]; got {p!r}.")
    return ps


@functools.lru_cache(maxsize=4)  # a sweep asks for the same layer's order at every index in turn
def removal_order(n: int, seed: int, layer: str, draw: int) -> torch.Tensor:
    """The random removal order of draw `draw` of a layer of n weights, from (seed, layer, draw) alone."""
    key = hashlib.blake2b(f"{seed}/{layer}/{draw}".encode(), digest_size=8).digest()
    return torch.randperm(n, generator=torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1))


def random_mask(shape, p: float, *, seed: int = 0, layer: str = "", draw: int = 0) -> torch.Tensor:
    """Keep-mask (True = kept) of draw `draw` at fraction p for a weight of this shape and layer."""
    (p,) = fractions(p)
    n = math.prod(shape)
    keep = torch.ones(n, dtype=torch.bool)
    keep[removal_order(n, seed, layer, draw)[:removal_count(n, p)]] = False
    return keep.view(tuple(shape))


@register_stress("random")
@dataclass(frozen=True)
class RandomRemoval(Stress):
    """A random share p_i of each layer's weights removed; `threshold` is p_i.

    Args:
        seed, draw: seed the removal orders (with the layer's name).
        fractions: the share removed at each index, i = 0..len − 1 (default α_i = i/A).
    """

    seed: int = 0
    draw: int = 0
    fractions: tuple | None = None

    def check(self) -> None:
        self._set("seed", checks.count(self.seed, "seed", 0))
        self._set("draw", checks.count(self.draw, "draw", 0))
        if self.fractions is not None:
            self._set("fractions", tuple(float(p) for p in fractions(self.fractions)))

    def fraction(self, i: int, A: int) -> float:
        """p_i, the share removed at index i."""
        return self.fractions[i] if self.fractions is not None else i / A

    def thresholds(self, A: int, lo: float, hi: float) -> torch.Tensor:
        return torch.tensor([self.fraction(i, A) for i in range(A + 1)], dtype=torch.float64)

    def keep(self, theta, i, A, lo, hi, layer):
        return random_mask(theta.shape, self.fraction(i, A), seed=self.seed, layer=layer, draw=self.draw)
