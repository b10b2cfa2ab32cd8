"""Baseline, scaled and combined responses, parameter scores and their characterization (SPEC §4, Eq. 10–16).

Every function takes the sweep Dataset of SPEC §5 with any extra dimensions (model, dataset, seed, epoch) and
keeps them: derived quantities are computed, never stored.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .errors import FragilityError

RULES = ("rectangle", "trapezoid", "simpson")
LABELS = ("Fr", "Ro", "Af")


def baseline(ds: xr.Dataset) -> xr.DataArray:
    """φ̄_{h,i} = 1 − n_filtered_{h,i} / n_params (Eq. 10)."""
    return (1 - ds["n_filtered"] / ds["n_params"]).rename("baseline")


def scaled(ds: xr.Dataset) -> xr.DataArray:
    """β̄ = β / acc(f(x, θ)) on clean inputs and β̄_ε = β_ε / acc(f(x_ε, θ)) on adversarial ones (Sec. 4.2)."""
    return (ds["accuracy"] / ds["base_accuracy"]).rename("scaled")


def combined(ds: xr.Dataset) -> xr.DataArray:
    """β̃_i = mean over h ∈ {h1, h2, h3} of β̄_{h,i} (Eq. 13), for clean and adversarial inputs."""
    missing = {"h1", "h2", "h3"} - set(ds["filter"].values.tolist())
    if missing:
        raise FragilityError(f"the combined response needs h1, h2 and h3; this sweep lacks {', '.join(sorted(missing))}.")
    return scaled(ds).sel(filter=["h1", "h2", "h3"]).mean("filter").rename("combined")


def _area(curve: xr.DataArray, rule: str) -> xr.DataArray:
    """Σ_i curve_i Δα over i = 0..A (Eq. 14–16 as written), or the trapezoid or Simpson rule over α ∈ [0, 1]."""
    if rule == "rectangle":
        return curve.sum("alpha") / (curve.sizes["alpha"] - 1)
    if rule == "trapezoid":
        return curve.integrate("alpha")
    from scipy.integrate import simpson
    return xr.apply_ufunc(lambda v: simpson(v, x=curve["alpha"].values, axis=-1), curve,
                          input_core_dims=[["alpha"]])


def scores(ds: xr.Dataset, filter: str = "h1", rule: str = "rectangle") -> xr.Dataset:
    """Parameter scores r_x (Eq. 14), r_xe (Eq. 15) and r_e (Eq. 16) of filter h (default h1) or "combined".

    r_x = Σ(β̄ − φ̄)Δα, r_xe = Σ(β̄_ε − φ̄)Δα, r_e = Σ(β̄_ε − β̄)Δα. The combined response is compared with the
    mean of the three filters' baselines. `rule` is "rectangle" (as written: A + 1 terms of width 1/A),
    "trapezoid" or "simpson".
    """
    if rule not in RULES:
        raise FragilityError(f"unknown integration rule {rule!r}: choose from {', '.join(RULES)}.")
    if filter == "combined":
        response = combined(ds)
        base = baseline(ds).sel(filter=["h1", "h2", "h3"]).mean("filter")
    elif filter in ds["filter"].values:
        response = scaled(ds).sel(filter=filter, drop=True)
        base = baseline(ds).sel(filter=filter, drop=True)
    else:
        raise FragilityError(f"filter {filter!r} is not in this sweep: choose from "
                             f"{', '.join(ds['filter'].values.tolist())} or 'combined'.")
    clean, adversarial = response.sel(input="clean", drop=True), response.sel(input="adversarial", drop=True)
    out = xr.Dataset({
        "r_x": _area(clean - base, rule),
        "r_xe": _area(adversarial - base, rule),
        "r_e": _area(adversarial - clean, rule),
    })
    out.attrs.update(filter=filter, rule=rule)
    return out


def characterize(scores: xr.Dataset | xr.DataArray, tol: float = 0.02):
    """Labels per score: fragile "Fr" if r < −tol, robust "Ro" if ``|r| ≤ tol``, antifragile "Af" if r > tol."""
    if not tol >= 0:
        raise FragilityError(f"tol must be a number ≥ 0, got {tol!r}.")

    def label(r):
        return xr.where(r < -tol, "Fr", xr.where(r > tol, "Af", "Ro"))

    return scores.map(label) if isinstance(scores, xr.Dataset) else label(scores)


def display_normalize(scores: xr.Dataset) -> xr.Dataset:
    """Scores scaled to [−0.5, 0.5] for display (Sec. 4.3): r / (2 max|r|), r_x and r_xe together, r_e alone."""
    def scale(names):
        peak = max(float(np.nanmax(np.abs(scores[n].values))) if scores[n].size else 0.0 for n in names)
        return {n: scores[n] / (2 * peak) if peak > 0 else scores[n] * 0.0 for n in names}

    present = [n for n in ("r_x", "r_xe") if n in scores]
    out = scores.copy()
    for group in (present, [n for n in ("r_e",) if n in scores]):
        if group:
            out.update(scale(group))
    return out
