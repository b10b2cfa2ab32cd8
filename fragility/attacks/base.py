"""What every attack shares: the `Attack` base class, the one sign-gradient step every attack takes, and the registry
of attacks by name.

An attack is a small frozen dataclass: its magnitude ε and its parameters are fields, `check` validates them and
`perturb` crafts adversarial inputs for one batch from a function that gives the loss's input gradient. The base owns
the chores: argument checks, eval mode, giving the model back exactly as it was (`fragility.preserve.preserved`),
batching and the device. The sweep engine runs the same `perturb` against each filtered network through its cached
upstream part (`fragility.passes`), so that the engine and the plain oracle craft the same inputs.

Attacks register under a name with `register_attack`, so that profiles (`attack: {name: pgd, steps: 10}`) and
`fr.sweep(attack="pgd")` find them, also when they are defined outside this package.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .. import checks
from ..errors import FragilityError
from ..registry import class_registrar
from ..preserve import inputs_copied, preserved


def sign_step(x: torch.Tensor, grad: torch.Tensor, size: float) -> torch.Tensor:
    """x + size · sign(grad): the signed-gradient step of Definition 7, the one every attack takes."""
    return x + size * grad.sign()


def input_gradient(forward: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇ₓ Σ CE(forward(x), y), the gradient of the summed cross-entropy with respect to the inputs x."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        F.cross_entropy(forward(x).float(), y, reduction="sum").backward(inputs=[x])
    return x.grad


@functools.lru_cache(maxsize=1 << 16)
def _uniform(seed: int, index: int, shape: tuple) -> torch.Tensor:
    key = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)
    return torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1


def uniform_noise(seed: int, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """U(−1, 1) noise shaped like `like`, row r drawn from (seed, index[r]) alone: the same example gets the same draw
    whatever the batching (a sweep's batches, the oracle's, K masks folded into one batch)."""
    rows = [_uniform(seed, int(j), tuple(like.shape[1:])) for j in index.tolist()]
    return torch.stack(rows).to(like.device, like.dtype)


def _inputs(model, x, y, batch_size):
    """The checked network, inputs on its device and batch size."""
    model = checks.model(model)
    batch_size = checks.count(batch_size, "batch_size")
    x, y = checks.examples(x, y)
    params = next(iter(model.parameters()), None)
    where = params.device if params is not None else torch.device("cpu")
    return model, x.to(where), y.to(where), batch_size


def _clip(value):
    ok = (isinstance(value, (tuple, list)) and len(value) == 2 and all(checks.is_real(c) for c in value)
          and value[0] <= value[1])
    if not ok:
        raise FragilityError(f"clip must be (low, high), finite numbers with low ≤ high; got {value!r}.")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class Attack:
    """An external stress on the inputs (Definition 7): x ↦ x_adv at magnitude ε, in the model's (normalized) input
    units.

    Subclasses are frozen dataclasses that add their parameters as fields, validate them in `check` and craft in
    `perturb`; a single-step attack (`single_step = True`, such as FGSM) instead gives `along`, the adversarial input
    at any ε from one input gradient, which lets the ε searches compute the gradient once.

    Args:
        epsilon: the magnitude ε ≥ 0, or None when it is yet to be chosen (`fr.sweep` searches it, constraint 3).
        clip: optional (low, high) bounds for the adversarial inputs; none by default (the authors do not clip).

    Example:
        >>> x_adv = fr.PGD(0.1, steps=10)(model, x, y)
    """

    epsilon: float | None = None
    _: KW_ONLY
    clip: tuple[float, float] | None = None

    name: ClassVar[str] = ""  # set by `register_attack`
    single_step: ClassVar[bool] = False

    def __post_init__(self):
        if self.epsilon is not None:
            self._set("epsilon", checks.number(self.epsilon, "epsilon", low=0))
        if self.clip is not None:
            self._set("clip", _clip(self.clip))
        self.check()

    def _set(self, field: str, value) -> None:
        """Store a checked value in a field of this frozen instance (for `check`)."""
        object.__setattr__(self, field, value)

    def check(self) -> None:
        """Validate the subclass's own parameters: one FragilityError naming the parameter (store normalized
        values with `self._set`)."""

    @property
    def label(self) -> str:
        """The attack's name in text: its class name (FGSM, PGD…)."""
        return type(self).__name__

    @property
    def parameters(self) -> dict:
        """Its parameters besides ε, JSON-friendly (a sweep's `attack_parameters` attribute)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "epsilon"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def at(self, epsilon: float) -> Attack:
        """The same attack at magnitude `epsilon`."""
        return dataclasses.replace(self, epsilon=epsilon)

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """x clamped into `clip`, or x itself without one."""
        return x.clamp(*self.clip) if self.clip is not None else x

    def along(self, x: torch.Tensor, grad: torch.Tensor, epsilon: float) -> torch.Tensor:
        """A single-step attack's adversarial inputs at magnitude `epsilon`, from the input gradient `grad` at x."""
        raise NotImplementedError(f"{self.label} is not a single-step attack")

    def perturb(self, gradient: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                index: torch.Tensor) -> torch.Tensor:
        """The adversarial inputs of one batch at ε.

        Args:
            gradient: x' ↦ ∇ₓ' Σ CE(f(x'), y), the input gradient of the attacked network (call it with x itself
                for the gradient at the clean inputs: the engine reuses what it cached for them).
            x: the batch of clean inputs.
            index: each row's example number in the whole test set (seeds per-example random draws).
        """
        return self.along(x, gradient(x), self.epsilon)

    def ready(self) -> float:
        """ε, refused when it is not set."""
        if self.epsilon is None:
            raise FragilityError(f"{self.label}'s epsilon is not set: give it, e.g. {self.label}(0.1), or let "
                                 "fr.sweep search it (epsilon='auto').")
        return self.epsilon

    def gradient(self, model, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The input gradient ∇ₓ Σ CE(f(x), y) in batches (the model as it is: call inside its chores)."""
        return torch.cat([input_gradient(model, xb, yb) for xb, yb in zip(x.split(batch_size), y.split(batch_size))])

    def craft(self, model, x: torch.Tensor, y: torch.Tensor, batch_size: int, start: int = 0) -> torch.Tensor:
        """`perturb` batch by batch against the model as it is (call inside its chores)."""
        parts = []
        for k, (xb, yb) in enumerate(zip(x.split(batch_size), y.split(batch_size))):
            first = start + k * batch_size
            index = torch.arange(first, first + len(xb))
            parts.append(self.perturb(functools.partial(input_gradient, model, y=yb), xb, index).detach())
        return torch.cat(parts)

    def __call__(self, model, x, y=None, *, batch_size: int = 500, start: int = 0) -> torch.Tensor:
        """The adversarial inputs x_adv against `model` at ε, shape of x.

        Args:
            model: the network (evaluated in eval() mode; given back exactly as it was).
            x, y: inputs and integer labels (or a DataLoader of (x, y) batches).
            batch_size: examples per backward pass.
            start: the test-set number of x's first example (seeds a per-example random draw, if the attack has one).
        """
        self.ready()
        start = checks.count(start, "start", 0)
        model, x, y, batch_size = _inputs(model, x, y, batch_size)
        with preserved(model), inputs_copied(model):
            model.eval()
            return self.craft(model, x, y, batch_size, start)


ATTACKS: dict[str, type[Attack]] = {}


def register_attack(name: str):
    """Class decorator: register an `Attack` subclass under `name`, for profiles and `fr.sweep(attack=name)`.

    Example:
        >>> @register_attack("bim")
        ... @dataclass(frozen=True)
        ... class BIM(Attack): ...
    """
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise FragilityError(f"an attack's name must be lower-case letters, digits, '-' or '_'; got {name!r}.")

    return class_registrar(ATTACKS, Attack, name, "an attack", "name")


def as_attack(value, name: str = "attack") -> Attack:
    """An Attack from an Attack, a registered attack's name (its defaults) or None (FGSM); else one FragilityError."""
    if value is None:
        return ATTACKS["fgsm"]()
    if isinstance(value, Attack):
        return value
    if isinstance(value, str) and value in ATTACKS:
        return ATTACKS[value]()
    raise FragilityError(f"{name} must be an attack such as fr.FGSM(0.1) or fr.PGD(0.1, steps=10), or the name of a "
                         f"registered one ({', '.join(ATTACKS)}); got {checks._shown(value)}.")
