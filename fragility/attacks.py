"""External stress: FGSM and the choice of its magnitude ε (SPEC §3, Definitions 3, 7, 8, 9)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import FragilityError

MAX_EPSILON = 4.0  # largest ε searched, in normalized input units (≈ the full range of normalized MNIST pixels)


def fgsm_direction(model, x: torch.Tensor, y: torch.Tensor, forward=None) -> torch.Tensor:
    """sign(∇ₓ CE(f(x), y)), the FGSM direction; `forward` replaces model(x) (e.g. a filtered network)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = (forward or model)(x)
        F.cross_entropy(logits.float(), y, reduction="sum").backward(inputs=[x])
    return x.grad.sign()


def fgsm(model, x: torch.Tensor, y: torch.Tensor, epsilon: float, clip: tuple[float, float] | None = None,
         batch_size: int = 500) -> torch.Tensor:
    """x_ε = x + ε · sign(∇ₓ CE(f(x, θ), y)) (Definition 7), in the model's input space; no clipping unless `clip`."""
    if not epsilon >= 0:
        raise FragilityError(f"epsilon must be a number ≥ 0, got {epsilon!r}.")
    chunks = [xb + epsilon * fgsm_direction(model, xb, yb)
              for xb, yb in zip(x.split(batch_size), y.split(batch_size))]
    out = torch.cat(chunks).detach()
    return out.clamp(*clip) if clip is not None else out


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of x classified as y."""
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return correct / len(y)


def search_epsilon(model, x: torch.Tensor, y: torch.Tensor, ratio: float = 0.5, tol: float = 0.02,
                   max_epsilon: float = MAX_EPSILON, steps: int = 40, batch_size: int = 500) -> float:
    """ε with acc(f(x_ε)) ≈ ratio · acc(f(x)), by bisection (SPEC §3, constraint 3).

    The FGSM direction does not depend on ε, so it is computed once and each step is a forward pass.
    Also checks constraint 1 (the attack lowers accuracy) and constraint 2 (acc(f(x_ε)) · K > 1, K classes).
    """
    if not 0 < ratio < 1:
        raise FragilityError(f"ratio must lie strictly between 0 and 1, got {ratio!r}.")
    was_training = model.training
    model.eval()
    try:
        direction = torch.cat([fgsm_direction(model, xb, yb) for xb, yb in zip(x.split(batch_size), y.split(batch_size))])
        with torch.no_grad():
            classes = model(x[:1]).shape[1]
        clean = accuracy(model, x, y, batch_size)
        if clean * ratio * classes <= 1:
            raise FragilityError(
                f"clean accuracy {clean:.3f} is too low: {ratio} of it is at or below chance (1/{classes}), so no ε "
                "satisfies constraint 2. Train the model further before stressing it.")

        def rel(eps):
            return accuracy(model, x + eps * direction, y, batch_size) / clean

        lo, hi = 0.0, max_epsilon
        if rel(hi) > ratio + tol:
            raise FragilityError(
                f"FGSM up to ε = {max_epsilon} keeps {rel(hi):.2f} of the clean accuracy (target {ratio}): "
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
    finally:
        model.train(was_training)
