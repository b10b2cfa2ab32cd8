"""A metric of one's own: a per-example function of (logits, labels), with its name and direction."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .. import checks
from ..errors import FragilityError
from .base import Metric, check_name


def function_path(function) -> str:
    """'module:qualified name' of a function (what a profile names it by; not importable for a lambda or a local
    function)."""
    return f"{getattr(function, '__module__', '?')}:{getattr(function, '__qualname__', type(function).__name__)}"


@dataclass(frozen=True)
class FunctionMetric(Metric):
    """A function of one's own, ``function(logits, labels) -> (batch,)`` (logits as float32 or float64, labels int64),
    stored under `name`, with the direction in which it improves. `chance` is its chance level, if it has one (the
    above-chance scaling needs it). Made by `metric`."""

    function: Callable
    name: str
    higher_is_better: bool
    chance_level: float | None = None
    source: str = dataclasses.field(default="", compare=False)  # the import path it was named by, if any
    dtype: ClassVar[type] = np.float32

    def __post_init__(self):
        if not callable(self.function) or isinstance(self.function, Metric):
            raise FragilityError(f"metric function must be a function of (logits, labels); got "
                                 f"{checks._shown(self.function)}.")
        check_name(self.name)
        if not isinstance(self.higher_is_better, (bool, np.bool_)):
            raise FragilityError(f"higher_is_better must be True or False (True for an accuracy, False for a loss); "
                                 f"got {checks._shown(self.higher_is_better)}.")
        object.__setattr__(self, "higher_is_better", bool(self.higher_is_better))
        if self.chance_level is not None:
            object.__setattr__(self, "chance_level", checks.number(self.chance_level, "chance"))

    def values(self, logits, labels):
        return self.function(logits if logits.dtype in (torch.float32, torch.float64) else logits.float(), labels)

    def chance(self, labels, classes):
        return math.nan if self.chance_level is None else self.chance_level

    @property
    def settings(self) -> dict:
        out = {"function": self.source or function_path(self.function), "name": self.name,
               "higher_is_better": self.higher_is_better}
        return out if self.chance_level is None else {**out, "chance": self.chance_level}


def metric(function, *, name: str | None = None, higher_is_better: bool | None = None,
           chance: float | None = None) -> FunctionMetric:
    """A metric of one's own from a per-example function.

    Args:
        function: ``function(logits, labels) -> tensor (batch,)``; logits (batch, classes) as float32 (or float64),
            labels (batch,) int64. Its mean over the test examples is the response.
        name: the name its results are stored under (``<name>``, ``base_<name>``, …); default the function's name.
        higher_is_better: True for a score (an accuracy), False for a loss — required, since it decides which way
            fragile points (`fragility.scores`).
        chance: its value for a network that ignores its input (e.g. log K for cross-entropy), if it has one: the
            above-chance scaling needs it.

    Returns:
        A `FunctionMetric`; a sweep stores its per-example values as float32 and their mean (summed in float64) as the
        response, and refuses values that are not one finite number per example.

    Raises:
        FragilityError: a function that is not callable, a name that cannot name its variables (`check_name`),
            higher_is_better missing or not True/False, a chance level that is not a finite number.

    Example:
        >>> nll = fr.metric(lambda z, y: F.cross_entropy(z, y, reduction="none"), name="nll", higher_is_better=False)
        >>> ds = fr.sweep(model, x, y, metric=nll)          # ds.nll, ds.base_nll, ds.nll_per_image
    """
    if higher_is_better is None:
        raise FragilityError("higher_is_better must be True or False (True for an accuracy, False for a loss): it "
                             "decides which way fragile points; got None.")
    name = getattr(function, "__name__", None) if name is None else name
    return FunctionMetric(function, name, higher_is_better, chance)
