"""Selective backpropagation (SPEC §8, Fig. 12): continue training with the fragile layers frozen, against regular training.

At a chosen checkpoint the per-layer scores (r_ε of h1 by default) mark layers with score < −τ as fragile. Training
then continues from that checkpoint twice, for the same epochs and seed and with a fresh Adam optimizer each time:
`selective` with the fragile layers frozen, `regular` with nothing frozen. Each continued checkpoint is tested against
FGSM of magnitude 0 … ε_E. The paper freezes by "zeroing out the update gradients", which under Adam does not stop a
layer from moving (its momentum keeps updating it); here the layers are frozen for real: their parameters leave the
optimizer (`training.train(freeze=...)`). Their BatchNorm running statistics, being buffers, still follow the data.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader

from .attacks import accuracy, fgsm_direction
from .engine import as_tensors, prepare, sweep
from .errors import FragilityError
from .filters import FILTERS
from .provenance import provenance
from .scores import characterize, scores
from .training import TrainConfig, load_checkpoint, train

TRAININGS = ("selective", "regular")


def fragile_layers(scores_ds: xr.Dataset, score: str = "r_e", tol: float = 0.02) -> list[str]:
    """Layers whose `score` is below −tol (label `Fr` of `characterize`), in the Dataset's order; `global` is left out."""
    if score not in scores_ds:
        raise FragilityError(f"unknown score {score!r}: choose from {', '.join(map(str, scores_ds.data_vars))}.")
    values = scores_ds[score]
    if values.dims != ("layer",):
        raise FragilityError(f"the scores must have the single dimension 'layer', got {values.dims}: select one "
                             "model, dataset, seed and epoch first.")
    labels = characterize(values, tol)
    return [str(name) for name, label in zip(values["layer"].values, labels.values)
            if name != "global" and label == "Fr"]


def continue_training(checkpoint, train_set, test_set, root, epochs: int, freeze: Sequence[str] = (),
                      progress: bool = True, device: str | None = None) -> list[Path]:
    """Train the checkpoint's run for `epochs` more epochs into `root`, with the modules in `freeze` frozen.

    The run keeps the checkpoint's config (seed, batch size, checkpoint interval…) and starts from its weights with a
    fresh optimizer and shuffling generator (`training.train(start=...)`). `root` must differ from the checkpoint's
    own results folder and hold only continuations of this checkpoint with this freeze list (train refuses others).
    Returns the continued run's checkpoint paths.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise FragilityError(f"epochs must be a whole number ≥ 1 of epochs to continue for, got {epochs!r}.")
    model, meta = load_checkpoint(checkpoint)
    config = TrainConfig(**{**meta["config"], "epochs": meta["epoch"] + epochs})
    start = {"state_dict": model.state_dict(), "epoch": meta["epoch"]}
    return train(config, train_set, test_set, root, progress=progress, freeze=freeze, start=start, device=device)


def epsilon_curve(model, x, y=None, *, epsilons, batch_size: int = 500, device=None) -> xr.DataArray:
    """Accuracy against FGSM magnitude: accuracy(epsilon) on x + ε · sign(∇ₓ CE) (Definition 7).

    The FGSM direction does not depend on ε: it is computed once, and each ε costs one forward pass.
    """
    eps = np.asarray(epsilons, dtype=float)
    if eps.ndim != 1 or eps.size == 0 or not np.all(np.isfinite(eps)) or np.any(eps < 0):
        raise FragilityError(f"epsilons must be a non-empty list of finite numbers ≥ 0, got {epsilons!r}.")
    was_training = model.training
    try:
        stress = prepare(model, x, y, include_global=False, epsilon=0.0, attack="adaptive", batch_size=batch_size,
                         device=device, progress=False)  # validated tensors on the model's device; no attack yet
        direction = torch.cat([fgsm_direction(stress.model, xb, yb)
                               for xb, yb in zip(stress.x.split(batch_size), stress.y.split(batch_size))])
        values = [accuracy(stress.model, stress.x + e * direction, stress.y, batch_size) for e in eps]
    finally:
        model.train(was_training)
    out = xr.DataArray(values, coords={"epsilon": eps}, dims="epsilon", name="accuracy")
    out.attrs["long_name"] = "accuracy under FGSM of magnitude ε"
    return out


def selective_backprop(checkpoint, train_set, test_set, root, epochs: int, *, x=None, y=None,
                       sweep_ds: xr.Dataset | None = None, A: int = 25, filter: str = "h1", score: str = "r_e",
                       tol: float = 0.02, epsilon="auto", attack: str = "fixed", epsilons=11,
                       batch_size: int = 500, device: str | None = None, progress: bool = True) -> xr.Dataset:
    """Fig. 12 for one (model, dataset, seed) from one checkpoint: selective against regular continued training.

    1. Scores per layer from a local sweep of the checkpoint on (x, y) (A, `filter`, `epsilon`, `attack`), or from
       `sweep_ds` when given (one checkpoint's sweep); layers with `score` < −tol are fragile.
    2. `continue_training` for `epochs` more epochs into root/"selective" (fragile layers frozen) and root/"regular".
    3. Every continued checkpoint's `epsilon_curve` on (x, y); `epsilons` is a count of points from 0 to ε_E (the
       sweep's ε) or an explicit list.

    x, y default to the whole test_set. Returns accuracy(training, epoch, epsilon), start_accuracy(epsilon) of the
    starting checkpoint, and score(layer) and frozen(layer); attrs include the frozen layers (comma-separated).
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    x, y = as_tensors(DataLoader(test_set, batch_size=batch_size)) if x is None else as_tensors(x, y)
    model, meta = load_checkpoint(checkpoint, map_location=device)
    if sweep_ds is None:
        sweep_ds = sweep(model, x, y, A=A, filters=FILTERS if filter == "combined" else (filter,),
                         include_global=False, epsilon=epsilon, attack=attack, batch_size=batch_size, device=device,
                         progress=progress)
    table = scores(sweep_ds, filter=filter).reset_coords(drop=True)
    frozen = fragile_layers(table, score, tol)
    epsilon_max = float(sweep_ds["epsilon"])
    eps = np.linspace(0.0, epsilon_max, epsilons) if isinstance(epsilons, int) else np.asarray(epsilons, float)
    accuracies = []
    for training in TRAININGS:
        paths = continue_training(checkpoint, train_set, test_set, Path(root) / training, epochs,
                                  freeze=frozen if training == "selective" else (), progress=progress, device=device)
        curves = {}
        for path in paths:
            continued, info = load_checkpoint(path, map_location=device)
            curves[info["epoch"]] = epsilon_curve(continued, x, y, epsilons=eps, batch_size=batch_size)
        accuracies.append(xr.concat(list(curves.values()), dim=xr.DataArray(list(curves), dims="epoch")))
    layer_scores = table[score].sel(layer=[n for n in table["layer"].values if n != "global"])
    ds = xr.Dataset({
        "accuracy": xr.concat(accuracies, dim=xr.DataArray(list(TRAININGS), dims="training")),
        "start_accuracy": epsilon_curve(model, x, y, epsilons=eps, batch_size=batch_size),
        "score": layer_scores,
        "frozen": ("layer", np.isin(layer_scores["layer"].values, frozen)),
    })
    config = meta["config"]
    ds.attrs.update({
        "model": config["model"], "dataset": config["dataset"], "seed": meta["seed"], "start_epoch": meta["epoch"],
        "epochs": epochs, "checkpoint": str(checkpoint), "frozen_layers": ",".join(frozen), "filter": filter,
        "score": score, "tol": tol, "A": int(sweep_ds.attrs.get("A", A)), "attack": sweep_ds.attrs.get("attack", attack),
        "epsilon_max": epsilon_max, "n_test": len(y), **provenance(),
    })
    ds["accuracy"].attrs["long_name"] = "accuracy of the continued network under FGSM of magnitude ε"
    ds["start_accuracy"].attrs["long_name"] = "accuracy of the starting checkpoint under FGSM of magnitude ε"
    ds["frozen"].attrs["long_name"] = "layer frozen in the selective run (score < −tol)"
    return ds
