"""Fragility against depth (seed 004, SPEC §10): one family at several depths under input and internal stress.

External stress: FGSM of magnitude ε and Gaussian noise of standard deviation σ, on one magnitude grid in the
model's normalized input units (a sign step of size m and N(0, m²) noise add the same expected energy m² per input
value). The noise is one seeded draw z, scaled by each magnitude. Internal stress: a sweep's scores, for the whole
network (`global`) and summarized over its layers, plus each layer's scores against its relative position in the
forward order. `depth_profile` is one model's unit; `assemble` stacks several along a `model` dimension with an
optional `depth` coordinate (e.g. smallcnn depth 1…N, or resnet18 against resnet50).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import xarray as xr

from .attacks import accuracy
from .engine import as_tensors, prepare, sweep
from .errors import FragilityError
from .filters import FILTERS
from .provenance import provenance
from .scores import characterize, scores
from .selective import epsilon_curve

PERTURBATIONS = ("fgsm", "gaussian")


def perturbation_curves(model, x, y=None, *, magnitudes, seed: int = 0, batch_size: int = 500,
                        device=None) -> xr.DataArray:
    """accuracy(perturbation ∈ {fgsm, gaussian}, magnitude): FGSM of ε = magnitude; x + magnitude · z, z ~ N(0, 1) seeded."""
    fgsm_curve = epsilon_curve(model, x, y, epsilons=magnitudes, batch_size=batch_size, device=device)
    was_training = model.training
    try:
        stress = prepare(model, x, y, include_global=False, epsilon=0.0, attack="adaptive", batch_size=batch_size,
                         device=device, progress=False)  # validated tensors on the model's device; no attack
        z = torch.randn(stress.x.shape, generator=torch.Generator().manual_seed(seed)).to(stress.x.device)
        noise = [accuracy(stress.model, stress.x + m * z, stress.y, batch_size) for m in fgsm_curve["epsilon"].values]
    finally:
        model.train(was_training)
    out = xr.DataArray(np.stack([fgsm_curve.values, noise]), name="accuracy",
                       coords={"perturbation": list(PERTURBATIONS), "magnitude": fgsm_curve["epsilon"].values},
                       dims=("perturbation", "magnitude"))
    out.attrs["long_name"] = "accuracy under FGSM (ε = magnitude) or Gaussian noise (σ = magnitude)"
    return out


def internal_stress(sweep_ds: xr.Dataset, filter: str = "h1", tol: float = 0.02) -> xr.Dataset:
    """Scores of one sweep (with `global`) summarized for depth comparisons, over score ∈ {r_x, r_xe, r_e}.

    global_score: the whole network's; local_mean, local_min: over its layers; fragile_fraction: the share of layers
    labelled Fr at tolerance tol; layer_score(score, layer) with position(layer) = i / (L − 1) in forward order.
    A sweep of the whole network alone (no local layers) gives NaN local summaries.
    """
    if "global" not in sweep_ds["layer"].values:
        raise FragilityError("the sweep has no 'global' unit: run it with include_global=True.")
    table = scores(sweep_ds, filter=filter).reset_coords(drop=True).to_array("score")
    local = table.drop_sel(layer="global")
    n = local.sizes["layer"]
    nothing = xr.full_like(table.sel(layer="global", drop=True), np.nan)
    out = xr.Dataset({
        "global_score": table.sel(layer="global", drop=True),
        "local_mean": local.mean("layer") if n else nothing,
        "local_min": local.min("layer") if n else nothing,
        "fragile_fraction": (characterize(local, tol) == "Fr").mean("layer") if n else nothing,
        "layer_score": local,
        "position": ("layer", np.arange(n) / max(n - 1, 1)),
    })
    out.attrs.update(filter=filter, tol=tol)
    return out


def depth_profile(model, x, y=None, *, magnitudes, seed: int = 0, internal: bool = True,
                  sweep_ds: xr.Dataset | None = None, A: int = 25, filter: str = "h1", epsilon="auto",
                  attack: str = "fixed", tol: float = 0.02, batch_size: int = 500, device=None,
                  progress: bool = True) -> xr.Dataset:
    """One model's unit of the depth study: external stress curves and, with `internal`, the sweep's scores.

    The sweep (every layer and `global`) is run with A, `filter`, `epsilon` and `attack` unless `sweep_ds` is given.
    Returns accuracy(perturbation, magnitude), base_accuracy, n_layers and n_params (filterable weights), and with
    `internal` the variables of `internal_stress` and the sweep's epsilon.
    """
    x, y = as_tensors(x, y)
    curves = perturbation_curves(model, x, y, magnitudes=magnitudes, seed=seed, batch_size=batch_size, device=device)
    was_training = model.training
    try:
        stress = prepare(model, x, y, include_global=False, epsilon=0.0, attack="adaptive", batch_size=batch_size,
                         device=device, progress=False)
        base = accuracy(stress.model, stress.x, stress.y, batch_size)
    finally:
        model.train(was_training)
    ds = xr.Dataset({
        "accuracy": curves,
        "base_accuracy": ((), base),
        "n_layers": ((), len(stress.layers)),
        "n_params": ((), sum(w.numel() for w in stress.weights.values())),
    })
    if internal:
        if sweep_ds is None:
            sweep_ds = sweep(model, x, y, A=A, filters=FILTERS if filter == "combined" else (filter,), epsilon=epsilon,
                             attack=attack, batch_size=batch_size, device=device, progress=progress)
        ds = ds.merge(internal_stress(sweep_ds, filter, tol))
        ds["epsilon"] = ((), float(sweep_ds["epsilon"]))
    ds.attrs.update({"seed": seed, "n_test": len(y), "internal": int(internal), **provenance()})
    if internal:
        ds.attrs.update(filter=filter, tol=tol, A=int(sweep_ds.attrs.get("A", A)))
    return ds


def assemble(profiles: Mapping[str, xr.Dataset], depths: Mapping[str, int] | None = None,
             dim: str = "model") -> xr.Dataset:
    """Stack `depth_profile` Datasets along `dim` (labels: the mapping's keys), with a `depth` coordinate if given.

    Layers differ between models: layer_score and position are joined over the union of layer names (NaN where a
    model has no such layer).
    """
    if not profiles:
        raise FragilityError("no profiles to assemble: pass a mapping of labels to depth_profile Datasets.")
    labels = list(profiles)
    if depths is not None and set(depths) != set(labels):
        raise FragilityError(f"depths must give one depth for each profile ({', '.join(labels)}).")
    out = xr.concat([profiles[k] for k in labels], dim=xr.DataArray(labels, dims=dim), join="outer",
                    combine_attrs="drop_conflicts")
    if depths is not None:
        out = out.assign_coords(depth=(dim, [depths[k] for k in labels]))
    return out
