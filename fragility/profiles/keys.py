"""A profile's keys: what each must be (`CHECKS`: a check and the words of its error), which may be left out and
their defaults (`OPTIONAL`), what a model of a `models` mapping may set for itself (`OWN`), and the settings added after
the first shipped results, which enter the sweep hash only when they differ from their defaults (`LATER`)."""
from __future__ import annotations

import re

from .. import data, metrics, models, studies
from ..attacks import ATTACKS
from ..layers import WHAT as LAYERS
from ..plan import BATCHNORM, CRAFTED, MEMORY_FORMATS
from ..stresses import STRESSES

EPSILON_POLICIES = ("auto", "per-checkpoint")
THREADS = 2  # the documented default: every task of a profile computes with this many CPU threads
SEARCH_TOL = 0.02  # the ε search's tolerance on the accuracy ratio (fragility.attacks.search_epsilon)
MIN_SEARCHED = 25  # test images the search needs at least: ratios of k / n step by 1 / n ≤ 2 · SEARCH_TOL


def _count(low):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(ok):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and ok(v)


def _items(ok, increasing=False):
    """A non-empty list of distinct values each passing `ok` (in increasing order if asked)."""
    return lambda v: (isinstance(v, list) and len(v) > 0 and all(ok(x) for x in v) and len(set(v)) == len(v)
                      and (not increasing or v == sorted(v)))


def _models(v) -> bool:
    """A list of distinct model names, or a mapping of model names to their own seeds, epochs, every and filters (or
    null)."""
    if isinstance(v, dict):
        return len(v) > 0 and all(k in models.NAMES and (g is None or isinstance(g, dict)) for k, g in v.items())
    return _items(lambda m: m in models.NAMES)(v)


GRID = ("seeds", "epochs", "every")
OWN = GRID + ("filters", "memory_format")  # what a model of a `models` mapping may set for itself
# key: (check, what the value must be)
CHECKS = {
    "name": (lambda v: isinstance(v, str) and re.fullmatch(r"[\w.-]+", v) is not None and v.strip(".") != "",
             "a short name of letters, digits, '.', '-' or '_', not only dots (it names the results folder "
             "results/<name>)"),
    "description": (lambda v: isinstance(v, str), "a line of text"),
    "models": (_models, f"a list of distinct models from {', '.join(models.NAMES)}, or a mapping of them to their "
                        "own seeds, epochs, every, filters and checkpoints (or of names of your own to their "
                        "factory)"),
    "datasets": (_items(lambda v: v in data.NAMES), f"a list of distinct datasets from {', '.join(data.NAMES)}, or a "
                                                    "mapping of names to null or {factory, classes, kwargs}"),
    "seeds": (_items(_count(0)), "a list of distinct whole numbers ≥ 0"),
    "epochs": (_items(_count(1), increasing=True), "an increasing list of checkpoint epochs ≥ 1, e.g. [10, 20, 30]"),
    "every": (_count(1), "the checkpoint interval in epochs, a whole number ≥ 1"),
    "n_test": (lambda v: v is None or _count(1)(v), "the number of test images, a whole number ≥ 1, or null for all"),
    "A": (_count(1), "the number of threshold intervals, a whole number ≥ 1 (the paper: 25)"),
    "filters": (_items(lambda v: isinstance(v, str) and v in STRESSES),
                f"a list of distinct stresses from {', '.join(STRESSES)} (or another registered one)"),
    "attack": (lambda v: (isinstance(v, str) and (v in ATTACKS or v in CRAFTED))
               or (isinstance(v, dict) and isinstance(v.get("name"), str) and v["name"] in ATTACKS),
               f"an attack: {', '.join(ATTACKS)} (or another registered one), or a mapping of its name and "
               "parameters such as {name: pgd, steps: 10}"),
    "crafted": (lambda v: v is None or v in CRAFTED,
                "when the perturbation is crafted: fixed (once, against the unfiltered network: the paper) or adaptive "
                "(against each filtered network: the authors' code)"),
    "memory_format": (lambda v: v in MEMORY_FORMATS,
                      "channels_last (the default) or contiguous: the layout of the sweep's convolutions on CPU, "
                      "whichever is faster for the network (ResNet-50: contiguous); the two round differently"),
    "batchnorm": (lambda v: v in BATCHNORM, "running (BatchNorm's running statistics: eval mode, the paper's reading) "
                                            "or batch (each batch's own statistics, as the authors' notebook)"),
    "threads": (_count(1), f"the CPU threads every task computes with, a whole number ≥ 1 (default {THREADS}): "
                           "results are reproducible only at the same count"),
    "epsilon": (lambda v: v in EPSILON_POLICIES or _number(lambda x: x >= 0)(v),
                "auto (searched once per model and dataset), per-checkpoint, or a number ≥ 0"),
    "ratio": (_number(lambda x: 0 < x < 1), "the target accuracy ratio ρ of the ε search, between 0 and 1 (0.5)"),
    "batch_size": (_count(1), "the sweep's batch size, a whole number ≥ 1"),
    "train_batch_size": (_count(1), "the training batch size, a whole number ≥ 1 (the paper: 100)"),
    "lr": (_number(lambda x: 0 < x < 1), "Adam's learning rate, a number between 0 and 1 such as 0.001 (Adam moves "
                                         "every weight by about lr a step: 1 or more diverges)"),
    "depth": (_count(1), "the number of conv blocks of smallcnn, a whole number ≥ 1"),
    "weights": (lambda v: isinstance(v, list) and len(set(map(str, v))) == len(v)
                and all(isinstance(m, str) and m in models.NAMES for m in v),
                "a list of distinct models of the profile whose checkpoints' network weights are kept under "
                "weights/ (a few MB each: what a shipped results folder carries to be re-swept without retraining)"),
    "studies": (lambda v: v is None or isinstance(v, dict),
                f"a mapping of related studies ({', '.join(studies.STUDIES)}) to their settings"),
    "layers": (lambda v: v is None or isinstance(v, dict), LAYERS),
    "metric": (lambda v: isinstance(v, (str, dict)), "the response measured: accuracy (top-1, the default), top<k> or "
                                                     "{name: topk, k: 5}, or {function: 'module:function', name: …, "
                                                     "higher_is_better: …} (fragility.metrics)"),
}
OPTIONAL = {"depth": 2, "studies": None, "crafted": None, "batchnorm": "running", "memory_format": "channels_last",
            "threads": THREADS, "weights": [], "layers": None, "metric": metrics.DEFAULT}
# settings added after the first shipped results enter the sweep hash only when they differ from these defaults, so
# that stored results stay valid: (key, default)
LATER = {"batchnorm": "running", "threads": None, "memory_format": "channels_last"}
