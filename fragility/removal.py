"""Random removal of a fraction p of one layer's weights (seed 003, SPEC §10), beside systematic synaptic filtering.

Seed 003 reports that CNNs keep most of their accuracy when > 70 % of a top layer's weights are removed at random,
while the same removal in the first layer brings them to chance. Here, for each layer, draw d fixes a random order of
the layer's n weights (seeded by seed, layer name and d); removing fraction p sets the first round(p·n) weights of
that order to 0 (halves round up), so within one draw the removed sets grow with p. As in the sweep (SPEC §1), only
the layer's weight tensor is touched, and the adversarial inputs, when asked for, are crafted once against the
unperturbed network (fixed mode). Evaluation reuses the engine's cut graph: what does not depend on the layer runs once
per batch.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .attacks import accuracy
from .engine import INPUTS, _trace, count_correct, prepare
from .errors import FragilityError
from .provenance import provenance


def removal_count(n: int, p: float) -> int:
    """Weights removed from n at fraction p: round(p·n), halves rounded up."""
    return math.floor(p * n + 0.5)


def _check_fractions(p) -> np.ndarray:
    ps = np.atleast_1d(np.asarray(p, dtype=float))
    if ps.ndim != 1 or ps.size == 0 or not np.all((ps >= 0) & (ps <= 1)) or len(np.unique(ps)) != ps.size:
        raise FragilityError(f"p must be distinct fractions in [0, 1], got {p!r}.")
    return ps


def _order(n: int, seed: int, layer: str, draw: int) -> torch.Tensor:
    """The random removal order of draw `draw` of a layer of n weights, from (seed, layer, draw) alone."""
    key = hashlib.blake2b(f"{seed}/{layer}/{draw}".encode(), digest_size=8).digest()
    return torch.randperm(n, generator=torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1))


def random_mask(shape, p: float, *, seed: int = 0, layer: str = "", draw: int = 0) -> torch.Tensor:
    """Keep-mask (True = kept) of `random_removal`'s draw `draw` at fraction p for a weight of this shape and layer."""
    (p,) = _check_fractions(p)
    n = math.prod(shape)
    keep = torch.ones(n, dtype=torch.bool)
    keep[_order(n, seed, layer, draw)[:removal_count(n, p)]] = False
    return keep.view(tuple(shape))


def random_removal(model, x, y=None, *, layers=None, p=np.linspace(0, 1, 11), draws: int = 5, seed: int = 0,
                   epsilon=None, batch_size: int = 500, device=None, progress: bool = True) -> xr.Dataset:
    """Accuracy with a random fraction p of one layer's weights set to zero, per layer, fraction and draw.

    `layers=None` takes every Conv2d and Linear layer. `epsilon` (a number or "auto") adds adversarial inputs (FGSM
    fixed against the unperturbed network); None tests clean inputs only. Returns accuracy(layer, p, draw, input),
    base_accuracy(input), n_removed(layer, p), n_params(layer) and, with adversarial inputs, epsilon.
    """
    ps = _check_fractions(p)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise FragilityError(f"draws must be a whole number ≥ 1, got {draws!r}.")
    adversarial = epsilon is not None
    inputs = INPUTS if adversarial else INPUTS[:1]
    was_training = model.training
    try:
        stress = prepare(model, x, y, layers=layers, include_global=False, epsilon=0.0 if epsilon is None else epsilon,
                         batch_size=batch_size, device=device, progress=progress)
        base = np.array([accuracy(stress.model, inp, stress.y, batch_size)
                         for inp in (stress.x, stress.x_adv)[:len(inputs)]])
        graph = _trace(stress.model)
        acc = np.zeros((len(stress.layers), len(ps), draws, len(inputs)))
        n_removed = np.zeros((len(stress.layers), len(ps)), dtype=np.int64)
        for li, layer in enumerate(tqdm(stress.layers, desc="random removal", unit="layer", disable=not progress)):
            w = stress.weights[layer]
            n_removed[li] = [removal_count(w.numel(), q) for q in ps]
            orders = [_order(w.numel(), seed, layer, d).to(w.device) for d in range(draws)]
            cells = [(j, d) for j in range(len(ps)) for d in range(draws) if n_removed[li, j] > 0]
            acc[li] = base  # nothing removed: the unperturbed network
            weights = [lambda j=j, d=d: {layer: w.flatten().index_fill(0, orders[d][:n_removed[li, j]], 0).view_as(w)}
                       for j, d in cells]
            for (j, d), correct in zip(cells, count_correct(stress, graph, layer, weights, clean_only=not adversarial)):
                acc[li, j, d] = correct / len(stress.y)
    finally:
        model.train(was_training)
    ds = xr.Dataset(
        {
            "accuracy": (("layer", "p", "draw", "input"), acc),
            "base_accuracy": (("input",), base),
            "n_removed": (("layer", "p"), n_removed),
            "n_params": (("layer",), np.array([stress.weights[n].numel() for n in stress.layers], dtype=np.int64)),
        },
        coords={"layer": stress.layers, "p": ps, "draw": np.arange(draws), "input": list(inputs)},
        attrs={"seed": seed, "draws": draws, "n_test": len(stress.y), **provenance()},
    )
    if adversarial:
        ds["epsilon"] = ((), stress.epsilon)
    ds["accuracy"].attrs["long_name"] = "accuracy with a random fraction p of the layer's weights set to zero"
    return ds


def _interpolate(q: np.ndarray, fraction: np.ndarray, acc: np.ndarray, base: float) -> np.ndarray:
    """The filtered accuracy at removed fractions q, linear between the sweep's fractions (0 removed: base)."""
    xs, first = np.unique(np.concatenate([[0.0], fraction]), return_index=True)  # equal fractions: the same mask
    return np.interp(q, xs, np.concatenate([[base], acc])[first])


def compare_with_filtering(removal_ds: xr.Dataset, sweep_ds: xr.Dataset, filter: str = "h1",
                           tol: float = 0.02) -> xr.Dataset:
    """Random removal beside synaptic filtering that removed the same fraction of the same layer's weights.

    The sweep's accuracy under `filter` (h1 or h2, whose removed sets grow with the threshold) is interpolated
    linearly in the removed fraction n_filtered / n_params at each random removal's actual fraction
    n_removed / n_params. Returns, over (layer, p, input) and any dimension the two share (seed…): fraction,
    random_mean and random_std (over draws, ddof 0), filtered, difference = filtered − random_mean, and
    agree = ``|difference| ≤ tol`` (accuracy units).
    """
    if filter not in ("h1", "h2"):
        raise FragilityError(f"compare with filter h1 or h2 (their removed fraction grows with α), got {filter!r}.")
    if filter not in sweep_ds["filter"].values:
        raise FragilityError(f"filter {filter!r} is not in this sweep: it has {', '.join(sweep_ds['filter'].values)}.")
    layers = [n for n in removal_ds["layer"].values if n in sweep_ds["layer"].values]
    if not layers:
        raise FragilityError("the removal and the sweep share no layer: run them on the same model.")
    inputs = [i for i in removal_ds["input"].values if i in sweep_ds["input"].values]
    removal = removal_ds.sel(layer=layers, input=inputs)
    swept = sweep_ds.sel(layer=layers, input=inputs, filter=filter, drop=True)
    if not (removal["n_params"] == swept["n_params"]).all():
        raise FragilityError("the removal and the sweep count different weights in the same layer: "
                             "run them on the same model.")
    if "adversarial" in inputs and not np.allclose(removal["epsilon"], swept["epsilon"]):
        raise FragilityError("the removal and the sweep used different ε: pass the sweep's epsilon to random_removal.")
    fraction = (removal["n_removed"] / removal["n_params"]).rename("fraction")
    filtered = xr.apply_ufunc(_interpolate, fraction, swept["n_filtered"] / swept["n_params"], swept["accuracy"],
                              swept["base_accuracy"], input_core_dims=[["p"], ["alpha"], ["alpha"], []],
                              output_core_dims=[["p"]], vectorize=True)
    mean = removal["accuracy"].mean("draw")
    out = xr.Dataset({
        "fraction": fraction,
        "random_mean": mean,
        "random_std": removal["accuracy"].std("draw"),
        "filtered": filtered.transpose(*mean.dims),
        "difference": (filtered - mean).transpose(*mean.dims),
    })
    out["agree"] = abs(out["difference"]) <= tol
    out.attrs.update(filter=filter, tol=tol)
    return out
