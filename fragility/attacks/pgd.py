"""PGD, projected gradient descent in L∞ (Madry et al., 2018): sign steps, each projected back onto the ε-ball.

From x (or, with `random_start`, from x + U(−ε, ε) drawn per example), `steps` signed-gradient steps of `step_size`,
each followed by the projection onto the ε-ball around x (and into `clip` when given). With steps = 1,
step_size = ε and no random start it is FGSM, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import checks
from .base import Attack, register_attack, sign_step, uniform_noise

MAX_STEPS = 10_000
STEP_SHARE = 2.5  # the default step size is STEP_SHARE · ε / steps (Madry et al.'s choice)


@register_attack("pgd")
@dataclass(frozen=True)
class PGD(Attack):
    """L∞ projected gradient descent: x_{t+1} = Π_ε(x_t + step_size · sign(∇ CE(f(x_t), y))), x_0 = x.

    Args:
        epsilon: the radius ε ≥ 0 of the ball around x (None: chosen by the sweep's ε search).
        steps: the number of steps (≥ 1).
        step_size: the size of each step (default 2.5 · ε / steps).
        random_start: start from x + U(−ε, ε); the draw of each example depends on (seed, its number in the test
            set) alone, so that the sweep engine and the oracle draw the same whatever their batches.
        seed: seeds the random start.
        clip: optional (low, high) bounds, applied after every step.

    Example:
        >>> x_adv = fr.PGD(0.1, steps=10)(model, x, y)
    """

    steps: int = 10
    step_size: float | None = None
    random_start: bool = False
    seed: int = 0

    def check(self) -> None:
        self._set("steps", int(checks.require(self.steps, checks.whole(1, MAX_STEPS), "steps")))
        if self.step_size is not None:
            self._set("step_size", checks.number(self.step_size, "step_size", low=0))
        self._set("random_start", checks.flag(self.random_start, "random_start"))
        self._set("seed", checks.count(self.seed, "seed", 0))

    def perturb(self, gradient, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        eps = self.epsilon
        size = STEP_SHARE * eps / self.steps if self.step_size is None else self.step_size
        delta, current = torch.zeros_like(x), x
        if self.random_start:
            delta = (eps * uniform_noise(self.seed, index, x)).clamp(-eps, eps)
            current = self.bound(x + delta)
            delta = current - x if self.clip is not None else delta
        for _ in range(self.steps):
            delta = sign_step(delta, gradient(current), size).clamp(-eps, eps)  # the projection onto the ε-ball
            current = self.bound(x + delta)
            if self.clip is not None:
                delta = current - x
        return current
