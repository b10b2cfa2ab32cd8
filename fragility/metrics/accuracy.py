"""Top-1 accuracy, the paper's response β (Sec. 4.2) and the default metric."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import DEFAULT, Metric, register_metric


@register_metric("accuracy")
@dataclass(frozen=True)
class Accuracy(Metric):
    """Top-1 accuracy, the paper's β: whether the largest logit is the label's (the first largest, on ties)."""

    name: ClassVar[str] = DEFAULT
    higher_is_better: ClassVar[bool] = True

    def values(self, logits, labels):
        return logits.argmax(-1) == labels

    def chance(self, labels, classes):
        """c = max(1/K, the share of the most frequent label)."""
        share = float(torch.bincount(labels.cpu(), minlength=classes).max()) / len(labels)
        return max(1 / classes, share)
