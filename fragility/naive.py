"""The oracle: the plain per-threshold loop (copy the model, load filtered weights, evaluate everything).

Slow on purpose and obviously right; `fragility.sweep` must give the same accuracies.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .attacks import fgsm
from .engine import base_correct, batchnorm_statistics, prepare, tf32, to_dataset
from .preserve import preserved


def sweep_naive(model, x, y=None, **options) -> xr.Dataset:
    """`fragility.sweep` the plain way: same arguments, same Dataset, no reuse of any kind (one mask per pass)."""
    with preserved(model), batchnorm_statistics(model, options.get("batchnorm", "running")), \
            tf32(options.get("precision") == "tf32"):
        stress = prepare(model, x, y, **options)
        stress.masks_per_pass = 1
        base = base_correct(stress)
        shape = (len(stress.units), len(stress.filters), stress.A + 1)
        correct, n_filtered = np.zeros(shape + base.shape, dtype=bool), np.zeros(shape, dtype=np.int64)
        cells = [(u, f, i) for u in range(shape[0]) for f in range(shape[1]) for i in range(shape[2])]
        for u, f, i in tqdm(cells, desc="oracle", disable=not stress.progress):
            masks = stress.masks(stress.units[u], stress.filters[f], i)
            n_filtered[u, f, i] = sum(int((~m).sum()) for m in masks.values())
            filtered = copy.deepcopy(stress.model)
            modules = dict(filtered.named_modules())
            with torch.no_grad():
                for name, m in masks.items():
                    modules[name].weight.copy_(stress.weights[name] * m.to(stress.weights[name].device))
            start = 0
            for xb, yb, ab in stress.batches():
                if ab is None:
                    ab = fgsm(filtered, xb, yb, stress.epsilon, batch_size=len(xb))
                with torch.no_grad(), stress.autocast():
                    for j, inp in enumerate((xb, ab)):
                        correct[u, f, i, j, start:start + len(yb)] = (filtered(inp).argmax(1) == yb).cpu().numpy()
                start += len(yb)
        return to_dataset(stress, correct, n_filtered, base, "oracle")
