"""Top-k accuracy: the label among the k largest logits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .. import checks
from ..errors import FragilityError
from .base import Metric, register_metric


@register_metric("topk")
@dataclass(frozen=True)
class TopK(Metric):
    """Top-k accuracy: whether fewer than k classes rank above the label, ranking by logit and, on equal logits, by
    class index (as ``argmax`` does: `TopK(1)` is `Accuracy`). Named ``top<k>``."""

    k: int = 5
    higher_is_better: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "k", int(checks.require(self.k, checks.whole(1, 999_999), "k")))

    @property
    def name(self) -> str:
        return f"top{self.k}"

    def values(self, logits, labels):
        own = logits.gather(-1, labels[:, None])
        lower = torch.arange(logits.shape[-1], device=logits.device) < labels[:, None]
        return ((logits > own) | ((logits == own) & lower)).sum(-1) < self.k

    def chance(self, labels, classes):
        """max(k/K, the share of the k most frequent labels), at most 1."""
        counts = torch.bincount(labels.cpu(), minlength=classes).sort(descending=True).values
        return min(1.0, max(self.k / classes, float(counts[:self.k].sum()) / len(labels)))

    def check(self, logits, labels):
        if self.k >= logits.shape[-1]:
            raise FragilityError(f"metric top{self.k}: k must be less than the model's {logits.shape[-1]} classes "
                                 f"(top-{logits.shape[-1]} accuracy is 1 whatever the network); got k={self.k}.")
        super().check(logits, labels)
