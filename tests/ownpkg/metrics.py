"""Metrics of one's own, named by import path: a loss (lower is better) and a log-likelihood (higher is better, and
negative)."""
import math

import torch.nn.functional as F

import fragility as fr


def nll(logits, labels):
    """Cross-entropy of each example: a loss, lower is better."""
    return F.cross_entropy(logits, labels, reduction="none")


def negative_nll(logits, labels):
    """The log-likelihood of each example's label: higher is better, and negative."""
    return -F.cross_entropy(logits, labels, reduction="none")


NLL = fr.metric(nll, higher_is_better=False, chance=math.log(10))  # chance: a uniform guess over 10 classes
