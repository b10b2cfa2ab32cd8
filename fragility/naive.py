"""The oracle: the plain per-threshold loop (copy the model, load the stressed weights, evaluate everything).

Slow on purpose and obviously right; `fragility.sweep` must give the same accuracies (or the same values of any other
metric, `fragility.metrics`).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .engine import base_correct, batchnorm_statistics, prepare, tf32, to_dataset
from .preserve import preserved


def sweep_naive(model, x, y=None, **options) -> xr.Dataset:
    """`fragility.sweep` the plain way: same arguments, same Dataset, no reuse of any kind (one network per pass)."""
    with preserved(model), batchnorm_statistics(model, options.get("batchnorm", "running")), \
            tf32(options.get("precision") == "tf32"):
        plan = prepare(model, x, y, **options)
        plan.masks_per_pass = 1
        base = base_correct(plan)
        shape = (len(plan.units), len(plan.stresses), plan.A + 1)
        correct, n_filtered = np.zeros(shape + base.shape, dtype=base.dtype), np.zeros(shape, dtype=np.int64)
        cells = [(u, f, i) for u in range(shape[0]) for f in range(shape[1]) for i in range(shape[2])]
        for u, f, i in tqdm(cells, desc="oracle", disable=not plan.progress):
            unit, stress = plan.unit(plan.units[u]), plan.stresses[f]
            n_filtered[u, f, i] = stress.effect(unit, i, plan.A)[0]
            filtered = copy.deepcopy(plan.model)  # tied layers stay one tensor in the copy
            modules = dict(filtered.named_modules())
            with torch.no_grad():
                for name, w in stress.weights(unit, i, plan.A).items():
                    modules[name].weight.copy_(w)
            start = 0
            for xb, yb, ab in plan.batches():
                if ab is None:
                    ab = plan.attack(filtered, xb, yb, batch_size=len(xb), start=start)
                with torch.no_grad(), plan.autocast():
                    for j, inp in enumerate((xb, ab)):
                        correct[u, f, i, j, start:start + len(yb)] = plan.metric.per_example(filtered(inp), yb)
                start += len(yb)
        return to_dataset(plan, correct, n_filtered, base, "oracle")
