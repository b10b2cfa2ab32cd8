"""The sweep engine: every unit × stress × threshold, on clean and adversarial inputs, into one xarray Dataset.

Speed comes from cutting the model's FX graph at the stressed layer: the part that does not depend on the layer
runs once per batch and its values are reused for every threshold; only the layer and what depends on it (residual
branches included) is recomputed, for K weight sets in one pass (`fragility.passes`). Thresholds at which a stress
changes nothing, or repeats an earlier mask of the unit, are not evaluated again. `fragility.plan` validates the
arguments; `fragility.naive` keeps the plain per-threshold loop as the oracle this engine is tested against. With
`partial=` each finished unit is kept in a file as the sweep goes, so that a stopped sweep resumes after its last
finished unit (`fragility.partial`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import copy

import numpy as np
import torch
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from .passes import _trace, count_correct, evaluate, resolve  # noqa: F401 (the studies import count_correct here)
from .plan import (BATCHNORM, CRAFTED, FILTERS, INPUTS, MEMORY_FORMATS, PRECISIONS, Plan,  # noqa: F401
                   batchnorm_statistics, filterable_layers, prepare, tf32, tf32_flags)
from . import checks
from . import partial as partials
from .preserve import preserved
from .provenance import provenance
from .stresses import Stress


def channels_last(plan: Plan) -> Plan:
    """The sweep on a channels-last copy of the network: the same weights, the convolutions in another layout.

    Which layout is faster depends on the network. `benchmarks/memory_format.py` (one thread of the project's 2-core
    CPU, 1×28×28 inputs, 200 images, A = 4, h1, six layers and `global`, the other core busy), channels-last time over
    contiguous time: ResNet-18 1.32, ResNet-50 1.49, ShuffleNet V2 1.03, SqueezeNet 1.1 0.76 (channels-last faster).
    Hence `sweep(memory_format=...)`, set per model by a profile; the default stays channels-last, the layout every
    result shipped before the option was computed in (the two layouts round differently, so a unit's numbers are
    reproduced exactly only in its own layout).

    Only for adversarial inputs crafted once (`crafted="fixed"`), which are already made (an adaptive attack's
    gradient signs would depend on the layout's rounding); a model without 4-D inputs is left as it is.
    """
    if plan.crafted != "fixed" or plan.x.dim() != 4:
        return plan
    layout = torch.channels_last
    model = copy.deepcopy(plan.model).to(memory_format=layout)
    modules = dict(model.named_modules())
    return dataclasses.replace(plan, model=model, x=plan.x.contiguous(memory_format=layout),
                               x_adv=plan.x_adv.contiguous(memory_format=layout),
                               weights={n: modules[n].weight.detach() for n in plan.weights})


def base_correct(plan: Plan) -> np.ndarray:
    """The unperturbed network's per-example metric (top-1: which examples it classifies correctly, booleans), clean
    and adversarial (adversary: f(x, θ)): (input, example)."""
    x_adv = plan.x_adv if plan.x_adv is not None else plan.attack(plan.model, plan.x, plan.y,
                                                                  batch_size=plan.batch_size)
    with torch.no_grad(), plan.autocast():
        return np.stack([np.concatenate([plan.metric.per_example(plan.model(xb), yb) for xb, yb in
                                         zip(inp.split(plan.batch_size), plan.y.split(plan.batch_size))])
                         for inp in (plan.x, x_adv)])


def to_dataset(plan: Plan, correct: np.ndarray, n_filtered: np.ndarray, base: np.ndarray, engine: str) -> xr.Dataset:
    """The sweep's Dataset from the per-example metric (top-1: which examples are classified correctly, booleans)
    (unit, filter, alpha, input, example) and, unperturbed, (input, example), and the filtered counts (unit, filter,
    alpha). The response is stored under the metric's names (`fragility.metrics`: accuracy, base_accuracy, correct
    and base_correct for top-1 accuracy)."""
    units, A, n, metric = plan.units, plan.A, len(plan.y), plan.metric
    names = metric.variables
    thr = np.array([[s.thresholds(A, *plan.range(unit)).numpy() for s in plan.stresses] for unit in units])
    coords = {"layer": units, "filter": list(plan.filters), "alpha": np.arange(A + 1) / A, "input": list(INPUTS),
              "image": plan.image}
    ds = xr.Dataset(
        {
            names["accuracy"]: (("layer", "filter", "alpha", "input"), metric.mean(correct)),
            "n_filtered": (("layer", "filter", "alpha"), n_filtered),
            "n_params": (("layer",), np.array([plan.n_params(u) for u in units], dtype=np.int64)),
            "threshold": (("layer", "filter", "alpha"), thr),
            names["base_accuracy"]: (("input",), metric.mean(base)),
            "epsilon": ((), plan.epsilon),
            "chance": ((), plan.chance),
            names["correct"]: (("layer", "filter", "alpha", "input", "image"), correct),
            names["base_correct"]: (("input", "image"), base),
        },
        coords=coords,
        attrs={"A": A, "attack": plan.crafted, "ratio": plan.ratio, "n_test": n, "precision": plan.precision,
               "masks_per_pass": plan.masks_per_pass, "batchnorm": plan.batchnorm, "classes": plan.classes,
               "engine": engine, "crafted": plan.crafted, "attack_name": plan.attack.name,
               "attack_parameters": json.dumps(plan.attack.parameters, sort_keys=True),
               "stress_parameters": json.dumps({s.name: s.parameters for s in plan.stresses}, sort_keys=True),
               **metric.attrs, **provenance()},
    )
    if names["accuracy"] == "accuracy":
        ds["accuracy"].attrs["long_name"] = "accuracy β of the filtered network"
        ds["chance"].attrs["long_name"] = "chance accuracy max(1/K, share of the most frequent test label)"
        ds["correct"].attrs["long_name"] = "example classified correctly by the filtered network"
        ds["base_correct"].attrs["long_name"] = "example classified correctly by the unperturbed network"
    else:
        better = "higher" if metric.higher_is_better else "lower"
        ds[names["accuracy"]].attrs["long_name"] = (f"metric {metric.name} (β, {better} is better) of the filtered "
                                                    "network")
        ds["chance"].attrs["long_name"] = f"chance level of metric {metric.name} (NaN: none)"
        ds[names["correct"]].attrs["long_name"] = f"metric {metric.name} of each example, filtered network"
        ds[names["base_correct"]].attrs["long_name"] = f"metric {metric.name} of each example, unperturbed network"
    ds["epsilon"].attrs["long_name"] = f"{plan.attack.label} magnitude ε (normalized input units)"
    ds["image"].attrs["long_name"] = "index of the example in its test set"
    return ds


class Cells:
    """The per-example metric (top-1: which examples the network classifies correctly) in each cell (a stress at an
    index) of one unit, each distinct stressed network evaluated once: cells a stress leaves unchanged are the base,
    and removal stresses' cells with equal masks share one evaluation (a hash of the masks)."""

    def __init__(self, plan: Plan, unit: str, cells: list[tuple[Stress, int]], base: np.ndarray):
        self.plan, self.unit = plan, unit
        self.groups: list[tuple[Stress, int, list[int]]] = []  # (stress, i) evaluated → the cells it stands for
        self.result = np.zeros((len(cells),) + base.shape, dtype=base.dtype)
        self.n_filtered = np.zeros(len(cells), dtype=np.int64)
        seen: dict[bytes, int] = {}
        weights = plan.unit(unit)
        for c, (stress, i) in enumerate(cells):
            self.n_filtered[c], key = stress.effect(weights, i, plan.A)
            if key is None:
                self.result[c] = base
                continue
            if key not in seen:
                seen[key] = len(self.groups)
                self.groups.append((stress, i, []))
            self.groups[seen[key]][2].append(c)

    def weight_sets(self) -> list:
        """One callable per distinct stressed network, giving its weights by layer when called."""
        return [functools.partial(self.weights, k) for k in range(len(self.groups))]

    def weights(self, k: int) -> dict[str, torch.Tensor]:
        """The stressed weights (θ̃ = B ⊙ θ for a removal, Eq. 1) of every layer of the unit for group k."""
        stress, i, _ = self.groups[k]
        return self.plan.expand(stress.weights(self.plan.unit(self.unit), i, self.plan.A))

    def add(self, k: int, hits: np.ndarray) -> None:
        """Group k's per-example metric (input, example) for every cell it stands for."""
        for c in self.groups[k][2]:
            self.result[c] = hits


def sweep(model: nn.Module, x, y=None, *, A: int = 25, filters=FILTERS, layers=None, include_global: bool = True,
          epsilon="auto", attack="fixed", crafted=None, ratio: float = 0.5, batch_size: int = 500, device=None,
          precision: str = "float32", progress: bool = True, masks_per_pass="auto", batchnorm: str = "running",
          image=None, metric="accuracy", partial=None, memory_format: str = "channels_last") -> xr.Dataset:
    """Accuracy (or another metric) of the network under every internal stress, threshold and layer, clean and
    adversarial (Eq. 7–12).

    Args:
        model: the trained network (evaluated in eval() mode; given back exactly as it was).
        x, y: test inputs and integer labels, or a DataLoader of (x, y) batches.
        A: threshold intervals (A + 1 thresholds α = i / A; the paper: 25).
        filters: the stresses, by name or as `fragility.stresses.Stress` objects: "h1" (high-pass), "h2"
            (low-pass), "h3" (pulse wave) by default; also "random" (random removal) and "gaussian" (weight noise).
        layers: None for every Conv2d/Linear layer, each on its own (local analysis), or some of their names (the
            `global` unit still stresses every Conv2d/Linear layer); or a selection by type and name pattern such
            as `{"types": ["Conv1d", "Linear"], "include": "encoder.*", "exclude": "*.downsample.*"}`
            (`fragility.layers`): any module with a weight parameter, its selected layers alone making `global`.
        include_global: also stress every layer at once with one threshold grid (`global`, the global analysis).
        epsilon: the attack's magnitude, or "auto": the attack's own ε if it has one, else searched (constraint 3,
            ratio ρ).
        attack: the external stress: an attack such as `fr.FGSM()` or `fr.PGD(0.1, steps=10)`, or a registered
            attack's name; "fixed" and "adaptive" (the earlier spelling) are FGSM crafted so.
        crafted: when the adversarial inputs are crafted: "fixed" (the default) once against the unfiltered network
            (the paper); "adaptive" against each filtered network (the authors' code).
        ratio: ρ of the ε search.
        batch_size: examples per pass.
        device: where to compute (None: the model's device); the model is copied there, never moved.
        precision: "float32" (TF32 off on CUDA), "tf32" (TF32 allowed on CUDA) or "bfloat16" (autocast): the last
            two are faster and not bit-exact.
        progress: show progress bars.
        masks_per_pass: K masks of a unit evaluated in one batched pass (`fragility.passes`), or "auto": on CUDA as
            many as half the free GPU memory holds, on CPU 1 (batching measured no faster there).
        batchnorm: "running" (eval mode: BatchNorm uses its running statistics, the default) or "batch" (each
            evaluated batch — clean and adversarial apart — normalized by its own statistics, as a network left in
            training mode does; the running statistics stay as they were). One mask per pass under "batch".
        image: the examples' indices in their test set (default 0 … n − 1), the `image` coordinate.
        metric: the response β, the mean over the test examples of a per-example metric (`fragility.metrics`):
            "accuracy" (top-1, the paper, the default), `fr.TopK(k)` or "top<k>", a function of one's own made by
            `fr.metric(fn, name=..., higher_is_better=...)`, a registered kind's name or an import path naming a
            metric. The ε search (constraint 3: adversarial accuracy ≈ ρ × clean accuracy) stays defined by top-1
            accuracy whatever the metric: the attack is about misclassification.
        partial: a file (`.npz`) in which each finished unit is kept as the sweep goes: run again with the same
            arguments, the sweep evaluates only the units the file does not hold, with identical results. A file of
            another sweep is replaced (a warning); a file fragility did not write is an error. It is left in place:
            delete it (`fragility.partial.discard`) once the result is stored. The pipeline keeps one per sweep task.
        memory_format: the layout of the convolutions under a fixed attack: "channels_last" (the default) or
            "contiguous" — faster for some networks (ResNet-50 ≈ 1.5× on this project's CPU; see `channels_last`).
            The two round differently; "contiguous" is recorded in the attribute `memory_format`.

    Returns:
        accuracy(layer, filter, alpha, input), n_filtered, n_params, threshold, base_accuracy(input), epsilon,
        chance (max(1/K, the share of the most frequent label)), and per example correct(layer, filter, alpha,
        input, image) and base_correct(input, image) (for intervals over test images); attributes record A, `attack`
        (when the inputs are crafted, as `crafted`), the attack's name and parameters, the stresses' parameters, ρ,
        the test-set size, the precision, K, the BatchNorm reading and the provenance. Under another metric the
        response is <name>, base_<name>, <name>_per_image and base_<name>_per_image (`top5`, `base_top5`, …), chance
        is the metric's chance level (NaN: none), and the attributes `metric`, `metric_higher_is_better` and
        `metric_definition` record it.

    Raises:
        FragilityError: any bad argument, non-finite inputs, labels out of range, NaN/Inf or all-zero weights, an
            unusable device — before anything is computed.

    Example:
        >>> ds = fr.sweep(model, x_test, y_test, A=25, epsilon="auto")
        >>> ds.accuracy.sel(layer="conv1", filter="h1", input="clean")
        >>> fr.sweep(model, x_test, y_test, attack=fr.PGD(0.1, steps=10), crafted="adaptive")
        >>> fr.sweep(model, x_test, y_test, metric=fr.TopK(5)).top5.sel(layer="conv1", filter="h1")
    """
    kept = partials.check(partial)
    checks.require(memory_format, checks.one_of(MEMORY_FORMATS), "memory_format")
    layout = channels_last if memory_format == "channels_last" else (lambda plan: plan)
    with preserved(model), batchnorm_statistics(model, batchnorm), tf32(precision == "tf32"):
        plan = layout(prepare(model, x, y, A=A, filters=filters, layers=layers, include_global=include_global,
                              epsilon=epsilon, attack=attack, crafted=crafted, ratio=ratio, batch_size=batch_size,
                              device=device, precision=precision, progress=progress, masks_per_pass=masks_per_pass,
                              batchnorm=batchnorm, image=image, metric=metric))
        base = base_correct(plan)
        graph = _trace(plan.model)
        cells = [(s, i) for s in plan.stresses for i in range(plan.A + 1)]
        counts = {unit: Cells(plan, unit, cells, base) for unit in plan.units}
        probe = plan.units[-1] if plan.include_global else plan.units[0]  # recomputes the most per mask
        plan.masks_per_pass = resolve(plan, graph, probe, counts[probe].weight_sets())
        n_batches = len(plan.y[::plan.batch_size])
        kept = None if kept is None else partials.Partial(kept, partials.key(plan, memory_format))
        used = []
        for unit in tqdm(plan.units, desc="sweep", unit="layer", disable=not plan.progress):
            if kept is not None and (stored := kept.get(unit)) is not None:
                counts[unit].result[...] = stored
                continue
            with tqdm(total=len(counts[unit].groups) * n_batches, desc=unit, unit="mask·batch", leave=False,
                      disable=not plan.progress) as bar:
                found, k = evaluate(plan, graph, unit, counts[unit].weight_sets(), bar)
            used.append(k)
            for j, hits in enumerate(found):
                counts[unit].add(j, hits)
            if kept is not None:
                kept.put(unit, counts[unit].result)
        plan.masks_per_pass = min(used, default=plan.masks_per_pass)
        shape = (len(plan.units), len(plan.stresses), plan.A + 1)
        ds = to_dataset(plan, np.stack([c.result for c in counts.values()]).reshape(shape + base.shape),
                        np.stack([c.n_filtered for c in counts.values()]).reshape(shape), base,
                        "graph" if graph is not None else "plain")
        if memory_format != "channels_last":  # recorded when not the layout of the results shipped before it
            ds.attrs["memory_format"] = memory_format
        return ds
