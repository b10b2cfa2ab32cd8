"""What every metric shares: the `Metric` base class (a per-example measure of the network whose mean over the test
examples is the sweep's response β), the names a metric may take, and the registry of metric kinds by name.

A metric registers its kind under a name with `register_metric`, so that profiles (``metric: {name: topk, k: 5}``) and
``fr.sweep(metric=name)`` find it, also when it is defined outside this package.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .. import checks, imports, store
from ..errors import FragilityError
from ..registry import class_registrar

DEFAULT = "accuracy"
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
TOP = re.compile(r"top([1-9][0-9]{0,5})")
# names the stored results, their combination and the derived quantities already use
RESERVED = frozenset({*store.VARIABLES, *store.DIMS, "image", "sample", "seed_weight", "test_accuracy",
                      "train_accuracy", "baseline", "scaled", "combined", "retention", "r_x", "r_xe", "r_e", "global"})


def check_name(name, what: str = "name") -> str:
    """`name` if it can name a metric's stored variables: lower-case letters, digits or '_' (a letter first, at most
    40), none of the names the results use, not 'base_…' nor '…_per_image'; else one FragilityError."""
    if (not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED or TOP.fullmatch(name)
            or name.startswith("base_") or name.endswith("_per_image")):
        raise FragilityError(f"a metric's {what} must be lower-case letters, digits or '_' starting with a letter (at "
                             "most 40), not a name the stored results use (accuracy, top<k>, correct, chance, epsilon, "
                             f"n_filtered, threshold, …), nor start with 'base_' or end with '_per_image'; got "
                             f"{checks._shown(name)}.")
    return name


@dataclass(frozen=True)
class Metric:
    """A per-example measure of the network, ``values(logits, labels) -> (batch,)``, whose mean over the test examples
    is the sweep's response β.

    Subclasses give `name` (the stored variable's), `higher_is_better` and `values`, and `chance` where the metric has
    a chance level. `dtype` is how the per-example values are stored: booleans for a hit-or-miss metric, else
    float32 (their mean is summed in float64).
    """

    kind: ClassVar[str] = ""  # set by `register_metric`
    dtype: ClassVar[type] = np.bool_

    def values(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The per-example values (batch,) for logits (batch, classes) and integer labels (batch,)."""
        raise NotImplementedError(f"{type(self).__name__} gives no values")

    def chance(self, labels: torch.Tensor, classes: int) -> float:
        """The metric's value for a network that ignores its input (the above-chance scaling's zero); NaN: none."""
        return math.nan

    def check(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Refuse, before a sweep computes anything, a metric that the model's first logits cannot give."""
        self.per_example(logits, labels)

    @property
    def settings(self) -> dict:
        """What defines it, JSON-friendly: its registered kind and parameters (a profile's `metric`, the sweep hash)."""
        return {"name": self.kind, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @property
    def variables(self) -> dict[str, str]:
        """The stored names of the response, by the default metric's (`fragility.store.metric_variables`)."""
        return store.metric_variables(self.name)

    @property
    def attrs(self) -> dict:
        """The Dataset attributes that record the metric: none for the default, so that its results stay as they
        were."""
        if self.name == DEFAULT:
            return {}
        return {"metric": self.name, "metric_higher_is_better": int(self.higher_is_better),
                "metric_definition": json.dumps(self.settings, sort_keys=True)}

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`values`, checked: one finite value per example, or one FragilityError."""
        try:
            found = self.values(logits, labels)
        except FragilityError:
            raise
        except Exception as err:  # the metric's own failure, reported in one line
            raise FragilityError(f"metric {self.name} failed on logits of shape {tuple(logits.shape)} "
                                 f"({imports.said(err)}).") from None
        if not isinstance(found, torch.Tensor) or tuple(found.shape) != (len(labels),) or found.is_complex():
            got = f"shape {tuple(found.shape)}" if isinstance(found, torch.Tensor) else type(found).__name__
            raise FragilityError(f"metric {self.name} must return one real value per example, a tensor of shape "
                                 f"({len(labels)},) for logits of shape {tuple(logits.shape)}; got {got}.")
        if found.dtype != torch.bool and not bool(torch.isfinite(found).all()):
            raise FragilityError(f"metric {self.name} gave {int((~torch.isfinite(found)).sum())} NaN or infinite "
                                 "value(s): a mean over the test examples would be meaningless.")
        return found

    def per_example(self, logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """The checked values as a numpy array of `dtype` (what the sweep stores per example)."""
        return self(logits, labels).detach().cpu().numpy().astype(self.dtype, copy=False)

    @staticmethod
    def mean(values: np.ndarray) -> np.ndarray:
        """The response from per-example values: their mean over the last axis (booleans: count / n)."""
        n = values.shape[-1]
        return values.sum(-1) / n if values.dtype == np.bool_ else values.sum(-1, dtype=np.float64) / n


METRICS: dict[str, type[Metric]] = {}


def register_metric(name: str):
    """Class decorator: register a `Metric` subclass under `name`, for profiles (``metric: {name: topk, k: 5}``) and
    ``fr.sweep(metric=name)``."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name == "function":
        raise FragilityError(f"a metric kind's name must be lower-case letters, digits or '_' (not 'function'); got "
                             f"{name!r}.")

    return class_registrar(METRICS, Metric, name, "a metric", "kind")
