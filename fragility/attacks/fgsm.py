"""FGSM, the fast gradient sign method (Definition 7): x_ε = x + ε · sign(∇ₓ CE(f(x, θ), y)), one step.

Its direction does not depend on ε, so the ε searches compute the gradient once and every ε after it costs one
forward pass (`along`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import checks
from .base import Attack, register_attack, sign_step


@register_attack("fgsm")
@dataclass(frozen=True)
class FGSM(Attack):
    """x_ε = x + ε · sign(∇ₓ CE(f(x, θ), y)) (Definition 7), in the model's input units; no clipping unless `clip`.

    Args:
        epsilon: the magnitude ε ≥ 0 (None: chosen by the sweep's ε search).
        clip: optional (low, high) bounds for x_ε.

    Example:
        >>> x_adv = fr.FGSM(0.1)(model, x, y)
    """

    single_step: ClassVar[bool] = True

    def along(self, x: torch.Tensor, grad: torch.Tensor, epsilon: float) -> torch.Tensor:
        return self.bound(sign_step(x, grad, epsilon))


def fgsm(model, x: torch.Tensor, y: torch.Tensor, epsilon: float, clip: tuple[float, float] | None = None,
         batch_size: int = 500) -> torch.Tensor:
    """x_ε = x + ε · sign(∇ₓ CE(f(x, θ), y)) (Definition 7): `FGSM(epsilon, clip=clip)(model, x, y)`.

    Args:
        model: the network (evaluated in eval() mode; given back as it was).
        x, y: inputs and integer labels.
        epsilon: the magnitude ε ≥ 0, in the model's (normalized) input units.
        clip: optional (low, high) bounds for x_ε.
        batch_size: examples per backward pass.

    Returns:
        The adversarial inputs, shape of x.
    """
    return FGSM(checks.number(epsilon, "epsilon", low=0), clip=clip)(model, x, y, batch_size=batch_size)
