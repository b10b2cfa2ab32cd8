"""External stress (Definitions 3, 7–9): attacks as small classes on one base, and the choice of their magnitude ε.

`base` holds the `Attack` base class (the chores every attack shares), the one sign-gradient step and the registry
`ATTACKS`; `fgsm` and `pgd` one attack each; `epsilon` the ε searches and accuracy along an attack. Adding an attack
is one module: a frozen dataclass subclass of `Attack` decorated with `register_attack(name)`.
"""
from .base import ATTACKS, Attack, as_attack, input_gradient, register_attack, sign_step
from .fgsm import FGSM, fgsm
from .pgd import PGD
from .epsilon import MAX_EPSILON, accuracy, epsilon_correct, epsilon_curve, largest_epsilon, search_epsilon

__all__ = ["ATTACKS", "Attack", "FGSM", "MAX_EPSILON", "PGD", "accuracy", "as_attack", "epsilon_correct",
           "epsilon_curve", "fgsm", "input_gradient", "largest_epsilon", "register_attack", "search_epsilon",
           "sign_step"]
