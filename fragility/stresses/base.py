"""What every internal stress shares: the `Stress` base class, the weights of a sweep unit it acts on (`Weights`)
and the registry of stresses by name.

An internal stress changes the weights θ of a sweep unit — one layer, or every filterable layer at once for
`global` — at each index i = 0..A (α_i = i/A), and counts n_filtered, the weights it removed (set to zero), which
the baseline φ̄ = 1 − n_filtered / n_params of Eq. 10 uses. Two kinds:

- removal stresses (`removes = True`: h1, h2, h3, random) give a keep-mask B per layer, and θ̃ = B ⊙ θ (Eq. 1). The
  sweep evaluates each distinct mask of a unit once (a hash of its masks); a mask that removes nothing is the
  unperturbed network;
- other stresses (`removes = False`: gaussian) give new values. They remove nothing, so n_filtered = 0, φ̄ = 1 and
  r_x of Eq. 14 is the area of β̄ − 1; an index where the stress changes nothing (`unchanged`) is the unperturbed
  network.

Stresses register under a name with `register_stress`, so that profiles (`filters: [h1, gaussian]`) and
`fr.sweep(filters=…)` find them, also when they are defined outside this package.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from .. import checks
from ..errors import FragilityError
from ..registry import class_registrar

MAX_INTERVALS = 10_000  # the paper: 25; each threshold costs a pass over the test set


def check_weights(theta: torch.Tensor, name: str = "the weights") -> None:
    """Refuse weights the method is undefined for: NaN/Inf, or all zeros (Definition 1)."""
    if theta.numel() == 0:
        raise FragilityError(f"{name} are empty: filter a layer that has weights.")
    if not torch.isfinite(theta).all():
        raise FragilityError(f"{name} contain NaN or Inf: load a healthy checkpoint before filtering.")
    if not theta.any():
        raise FragilityError(f"{name} are all zero: synaptic filtering needs non-zero weights (Definition 1).")


def check_intervals(A) -> int:
    """A, a whole number of intervals ≥ 1 (numpy integers accepted), as an int."""
    return int(checks.require(A, checks.Rule(lambda v: checks.is_whole(v) and 1 <= v <= MAX_INTERVALS,
                                             f"the number of threshold intervals, a whole number in "
                                             f"1..{MAX_INTERVALS}"), "A"))


def grid(A: int, lo: float, hi: float, descending: bool = False) -> torch.Tensor:
    """lo + iΔ (hi − iΔ when descending) for i = 0..A, Δ = (hi − lo)/A, float64, ending exactly at lo and hi."""
    i = torch.arange(A + 1, dtype=torch.float64)
    delta = (hi - lo) / A
    t = (hi - i * delta) if descending else (lo + i * delta)
    t[0], t[A] = (hi, lo) if descending else (lo, hi)
    return t


@dataclass
class Weights:
    """The weights a stress acts on in one sweep unit: `theta` (as the network holds them) and `theta64` (float64)
    by parameter name, and the unit's range [lo, hi] (min and max over all of them)."""

    theta: dict[str, torch.Tensor]
    lo: float
    hi: float
    theta64: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        self.theta64 = self.theta64 or {n: w.to(torch.float64) for n, w in self.theta.items()}

    @classmethod
    def of(cls, theta: dict[str, torch.Tensor]) -> Weights:
        """The unit of these weights, its range their min and max."""
        return cls(theta, min(float(t.min()) for t in theta.values()), max(float(t.max()) for t in theta.values()))


@dataclass(frozen=True)
class Stress:
    """An internal stress: for a unit's weights at index i of A, the stressed weights and how many it removed.

    Subclasses are frozen dataclasses (their parameters are fields, checked in `check`). A removal stress gives
    `keep`; any other gives `change` (and `unchanged`). `thresholds` gives the value the sweep stores as each
    index's `threshold` (weight units for h1–h3; each stress documents its own).
    """

    name: ClassVar[str] = ""  # set by `register_stress`
    removes: ClassVar[bool] = True

    def __post_init__(self):
        self.check()

    def _set(self, name: str, value) -> None:
        """Store a checked value in a field of this frozen instance (for `check`)."""
        object.__setattr__(self, name, value)

    def check(self) -> None:
        """Validate the stress's parameters: one FragilityError naming the parameter."""

    @property
    def parameters(self) -> dict:
        """Its parameters, JSON-friendly (a sweep's `stress_parameters` attribute)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def thresholds(self, A: int, lo: float, hi: float) -> torch.Tensor:
        """The value stored as `threshold` at i = 0..A (float64): here α_i = i/A."""
        return torch.arange(A + 1, dtype=torch.float64) / A

    def keep(self, theta: torch.Tensor, i: int, A: int, lo: float, hi: float, layer: str) -> torch.Tensor:
        """A removal stress's keep-mask (True = kept) of one layer's float64 weights at index i of A, [lo, hi] the
        unit's range, `layer` the parameter's name."""
        raise NotImplementedError(f"{type(self).__name__} gives no keep-mask")

    def change(self, theta: torch.Tensor, i: int, A: int, lo: float, hi: float, layer: str) -> torch.Tensor | None:
        """Another stress's new float64 weights of one layer at index i of A, or None when it changes nothing."""
        raise NotImplementedError(f"{type(self).__name__} gives no new weights")

    def unchanged(self, i: int, A: int) -> bool:
        """Whether a stress that changes values leaves every weight as it is at index i (σ = 0…)."""
        return False

    def masks(self, unit: Weights, i: int, A: int) -> dict[str, torch.Tensor]:
        """A removal stress's keep-masks of every layer of the unit at index i."""
        return {n: self.keep(w, i, A, unit.lo, unit.hi, n) for n, w in unit.theta64.items()}

    def effect(self, unit: Weights, i: int, A: int) -> tuple[int, bytes | None]:
        """(n_filtered, key) at index i: the weights removed, and a key equal for equal stressed weights, None when
        nothing changes (the unperturbed network)."""
        if not self.removes:
            return 0, None if self.unchanged(i, A) else f"{self!r}/{i}/{A}".encode()
        masks = self.masks(unit, i, A)
        removed = sum(int((~m).sum()) for m in masks.values())
        if removed == 0:
            return 0, None
        digest = hashlib.blake2b(digest_size=32)
        for m in masks.values():
            digest.update(np.packbits(m.cpu().numpy()).tobytes())
        return removed, digest.digest()

    def weights(self, unit: Weights, i: int, A: int) -> dict[str, torch.Tensor]:
        """The stressed weights of every layer of the unit at index i, as the network holds them: θ̃ = B ⊙ θ (Eq. 1)
        for a removal stress."""
        if self.removes:
            return {n: unit.theta[n] * m.to(unit.theta[n].device) for n, m in self.masks(unit, i, A).items()}
        out = {}
        for n, w in unit.theta64.items():
            new = self.change(w, i, A, unit.lo, unit.hi, n)
            out[n] = unit.theta[n] if new is None else new.to(unit.theta[n].dtype)
        return out


STRESSES: dict[str, type[Stress]] = {}


def register_stress(name: str):
    """Class decorator: register a `Stress` subclass under `name`, for profiles and `fr.sweep(filters=[name])`.

    Example:
        >>> @register_stress("prune")
        ... @dataclass(frozen=True)
        ... class Prune(Stress): ...
    """
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name) or name in ("global", "combined"):
        raise FragilityError(f"a stress's name must be lower-case letters, digits, '-' or '_' (not 'global' or "
                             f"'combined'); got {name!r}.")

    return class_registrar(STRESSES, Stress, name, "a stress", "name")


def as_stresses(value, name: str = "filters") -> tuple[Stress, ...]:
    """Stresses from registered names or Stress objects (one alone for a list of one), their names distinct; else
    one FragilityError."""
    value = [value] if isinstance(value, (str, Stress)) else value
    rule = checks.Rule(lambda v: (isinstance(v, (list, tuple)) and len(v) > 0
                                  and all(isinstance(s, Stress) or (isinstance(s, str) and s in STRESSES) for s in v)
                                  and len({s if isinstance(s, str) else s.name for s in v}) == len(v)),
                       f"a non-empty list of distinct names from {', '.join(STRESSES)} (or Stress objects)")
    checks.require(value, rule, name)
    return tuple(s if isinstance(s, Stress) else STRESSES[s]() for s in value)
