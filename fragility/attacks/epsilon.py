"""The choice of an attack's magnitude ε and accuracy along it (Definitions 3, 8, 9): `search_epsilon`
(constraint 3), `largest_epsilon` (ε_E, constraint 2), `epsilon_correct` and `epsilon_curve`.

Each takes `attack` (default FGSM; its own ε is ignored, these choose it). For a single-step attack the input
gradient is computed once and every ε after it costs one forward pass; an iterative attack (PGD) runs again for each
ε. Every function evaluates the network in eval() mode and gives it back exactly as it was.
"""
from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from .. import checks
from ..errors import FragilityError
from ..preserve import inputs_copied, preserved
from .base import _inputs, as_attack

MAX_EPSILON = 4.0  # largest ε searched, in normalized input units (≈ the full range of normalized MNIST pixels)


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of x classified as y (the model's mode as it is)."""
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return correct / len(y)


def _classes(model, x) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def adversary(attack, model, x: torch.Tensor, y: torch.Tensor, batch_size: int):
    """ε ↦ the attack's adversarial inputs at ε against the model as it is (call inside its chores): a single-step
    attack's gradient is computed here once, an iterative attack runs again for each ε."""
    if attack.single_step:
        grad = attack.gradient(model, x, y, batch_size)
        return lambda eps: attack.along(x, grad, eps)
    return lambda eps: attack.at(eps).craft(model, x, y, batch_size)


def search_epsilon(model, x: torch.Tensor, y: torch.Tensor, ratio: float = 0.5, tol: float = 0.02,
                   max_epsilon: float = MAX_EPSILON, steps: int = 40, batch_size: int = 500, attack=None) -> float:
    """ε with acc(f(x_ε)) ≈ ratio · acc(f(x)), by bisection (constraint 3, Definition 9).

    Also checks constraint 1 (the attack lowers accuracy) and constraint 2 (acc(f(x_ε)) · K > 1, K classes).

    Args:
        model: the network.
        x, y: test inputs and labels.
        ratio: the target ρ in (0, 1).
        tol: the accepted distance between acc(f(x_ε)) / acc(f(x)) and ρ, below min(ρ, 1 − ρ) (a wider one would
            accept ratios on the far side of ρ's neighbours, e.g. 0.12 for ρ = 0.5).
        max_epsilon: the largest ε searched (> 0).
        steps: bisection steps at most.
        batch_size: examples per pass.
        attack: the attack whose ε is searched (default FGSM; an Attack or a registered name).

    Returns:
        ε ≥ 0, in normalized input units.

    Raises:
        FragilityError: bad arguments, a clean accuracy too low for constraint 2, or no ε within tolerance.
    """
    ratio = checks.number(ratio, "ratio", 0, 1, open_low=True, open_high=True)
    tol = checks.number(tol, "tol", low=0)
    if tol >= min(ratio, 1 - ratio):
        raise FragilityError(f"tol must be below min(ratio, 1 − ratio) = {min(ratio, 1 - ratio):g} for ratio "
                             f"{ratio:g}, or it does not bound the accuracy ratio; got {tol:g}.")
    max_epsilon = checks.number(max_epsilon, "max_epsilon", low=0, open_low=True)
    steps = int(checks.require(steps, checks.whole(1, 1000), "steps"))
    attack = as_attack(attack)
    model, x, y, batch_size = _inputs(model, x, y, batch_size)
    with preserved(model), inputs_copied(model):
        model.eval()
        attacked = adversary(attack, model, x, y, batch_size)
        classes = _classes(model, x)
        clean = accuracy(model, x, y, batch_size)
        if clean * ratio * classes <= 1:
            raise FragilityError(
                f"clean accuracy {clean:.3f} is too low: {ratio} of it is at or below chance (1/{classes}), so no ε "
                "satisfies constraint 2. Train the model further before stressing it.")

        def rel(eps):
            return accuracy(model, attacked(eps), y, batch_size) / clean

        lo, hi = 0.0, max_epsilon
        if rel(hi) > ratio + tol:
            raise FragilityError(
                f"{attack.label} up to ε = {max_epsilon} keeps {rel(hi):.2f} of the clean accuracy (target {ratio}): "
                "constraint 1 fails; pass a fixed epsilon or a larger max_epsilon.")
        best = (float("inf"), hi, 0.0)
        for _ in range(steps):
            mid = (lo + hi) / 2
            r = rel(mid)
            best = min(best, (abs(r - ratio), mid, r))
            if abs(r - ratio) <= tol:
                return mid
            lo, hi = (mid, hi) if r > ratio else (lo, mid)
    raise FragilityError(
        f"no ε gives {ratio} ± {tol} of the clean accuracy (closest: {best[2]:.3f} at ε = {best[1]:.4g}); "
        "the test subset is probably too small for that tolerance: use more test images or pass epsilon.")


def largest_epsilon(model, x: torch.Tensor, y: torch.Tensor, max_epsilon: float = MAX_EPSILON, grid: int = 64,
                    steps: int = 30, batch_size: int = 500, attack=None) -> float:
    """ε_E of Definition 8 (constraint 2): the largest ε up to which the attack's accuracy stays above chance,
    acc · K > 1.

    ε grows on a grid of `grid` steps up to `max_epsilon` until accuracy first falls to chance, then bisection
    narrows the crossing; ε_E is the last ε still above chance before it. Chance is 1/K, or the share of the most
    frequent label when that is larger: FGSM often sends every input to one class, and accuracy then settles at that
    class's share of the labels instead of falling below 1/K. `attack`: default FGSM.

    Raises:
        FragilityError: the clean accuracy is already at chance, or the attack never reaches chance up to
            max_epsilon.
    """
    max_epsilon = checks.number(max_epsilon, "max_epsilon", low=0, open_low=True)
    grid = int(checks.require(grid, checks.whole(1, 10_000), "grid"))
    steps = int(checks.require(steps, checks.whole(1, 1000), "steps"))
    attack = as_attack(attack)
    model, x, y, batch_size = _inputs(model, x, y, batch_size)
    with preserved(model), inputs_copied(model):
        model.eval()
        attacked = adversary(attack, model, x, y, batch_size)
        classes = _classes(model, x)

        chance = max(1 / classes, float(torch.bincount(y, minlength=classes).max()) / len(y))

        def above(eps):
            return accuracy(model, attacked(eps), y, batch_size) > chance

        if not above(0.0):
            raise FragilityError(f"the clean accuracy is at or below chance ({chance:.3f}): there is no ε_E.")
        points = np.linspace(0, max_epsilon, grid + 1)
        crossing = next((k for k in range(1, len(points)) if not above(points[k])), None)
        if crossing is None:
            raise FragilityError(f"{attack.label} keeps accuracy above chance up to ε = {max_epsilon}: pass a larger "
                                 "max_epsilon.")
        lo, hi = points[crossing - 1], points[crossing]
        for _ in range(steps):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if above(mid) else (lo, mid)
    return float(lo)


def epsilon_correct(model, x, y=None, *, epsilons, batch_size: int = 500, attack=None) -> xr.DataArray:
    """Which examples are classified correctly under the attack (default FGSM) at each magnitude: booleans
    correct(epsilon, image) (Definition 3's S_ε), `image` numbering the examples 0 … n − 1.

    A single-step attack's gradient is computed once and each ε costs one forward pass. x, y may be tensors or a
    DataLoader.
    """
    eps = np.asarray(epsilons, dtype=float) if isinstance(epsilons, (list, tuple, np.ndarray)) else None
    if eps is None or eps.ndim != 1 or eps.size == 0 or not np.all(np.isfinite(eps)) or np.any(eps < 0):
        raise FragilityError(f"epsilons must be a non-empty list of finite numbers ≥ 0; got {epsilons!r}.")
    attack = as_attack(attack)
    model, x, y, batch_size = _inputs(model, x, y, batch_size)
    with preserved(model), inputs_copied(model):
        model.eval()
        attacked = adversary(attack, model, x, y, batch_size)
        with torch.no_grad():
            values = [torch.cat([model(xb).argmax(1) == yb for xb, yb in zip(attacked(e).split(batch_size),
                                                                             y.split(batch_size))]).cpu().numpy()
                      for e in eps]
    out = xr.DataArray(np.stack(values), coords={"epsilon": eps, "image": np.arange(len(y))},
                       dims=("epsilon", "image"), name="correct")
    out.attrs["long_name"] = f"example classified correctly under {attack.label} of magnitude ε"
    return out


def epsilon_curve(model, x, y=None, *, epsilons, batch_size: int = 500, attack=None) -> xr.DataArray:
    """Accuracy against the attack's magnitude (default FGSM): accuracy(epsilon) (Definition 3's S_ε).

    A single-step attack's gradient is computed once and each ε costs one forward pass. x, y may be tensors or a
    DataLoader.
    """
    found = epsilon_correct(model, x, y, epsilons=epsilons, batch_size=batch_size, attack=attack)
    out = found.mean("image").rename("accuracy")
    out.attrs["long_name"] = found.attrs["long_name"].replace("example classified correctly", "accuracy")
    return out
