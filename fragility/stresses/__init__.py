"""Internal stresses (Eq. 1, 7–10): what a sweep does to a unit's weights at each threshold index, as small classes
on one base.

`base` holds the `Stress` base class, the unit's weights (`Weights`) and the registry `STRESSES`; one module per
stress: `h1`, `h2`, `h3` (the synaptic filters of Eq. 7–9), `random` (seed 003's random removal) and `gaussian`
(weight noise). Adding a stress is one module: a frozen dataclass subclass of `Stress` decorated with
`register_stress(name)`. The combined response of Eq. 13 stays a derived quantity of h1–h3 (`fragility.scores`).
"""
from .base import STRESSES, Stress, Weights, as_stresses, check_intervals, check_weights, register_stress
from .h1 import H1
from .h2 import H2
from .h3 import H3
from .random import RandomRemoval, random_mask, removal_count
from .gaussian import GaussianNoise

__all__ = ["GaussianNoise", "H1", "H2", "H3", "RandomRemoval", "STRESSES", "Stress", "Weights", "as_stresses",
           "check_intervals", "check_weights", "random_mask", "register_stress", "removal_count"]
