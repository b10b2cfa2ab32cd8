"""Baseline, scaled and combined responses, parameter scores and their characterization (Eq. 10–16).

Every function takes the sweep Dataset (the method page's "Where the numbers live") with any extra dimensions
(model, dataset, seed, epoch) and
keeps them: derived quantities are computed, never stored. What was never stored stays missing: a unit or a layer
that combined results pad with NaN gives NaN responses and scores (never 0), and no label.
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.integrate import simpson

from . import checks
from .errors import FragilityError

RULES = ("rectangle", "trapezoid", "simpson")
SCALINGS = ("unperturbed", "first", "chance")
LABELS = ("Fr", "Ro", "Af")


def _sweep(ds, *names) -> xr.Dataset:
    """`ds` if it is a sweep Dataset holding `names`, else one FragilityError."""
    if not isinstance(ds, xr.Dataset) or any(n not in ds for n in names) or "alpha" not in ds.dims:
        found = ", ".join(map(str, ds.data_vars)) if isinstance(ds, xr.Dataset) else type(ds).__name__
        raise FragilityError(f"expected the Dataset of fragility.sweep (or open_results) with {', '.join(names)} "
                             f"over alpha; got {found}.")
    return ds


def baseline(ds: xr.Dataset) -> xr.DataArray:
    """φ̄_{h,i} = 1 − n_filtered_{h,i} / n_params (Eq. 10): the accuracy left if every weight counted equally.

    Args:
        ds: a sweep Dataset (any extra dimensions are kept).

    Returns:
        The baseline, dims of ``ds["n_filtered"]``.
    """
    ds = _sweep(ds, "n_filtered", "n_params")
    return (1 - ds["n_filtered"] / ds["n_params"]).rename("baseline")


def scaled(ds: xr.Dataset, scaling: str = "unperturbed") -> xr.DataArray:
    """β̄ = β / acc(f(x, θ)) on clean inputs and β̄_ε = β_ε / acc(f(x_ε, θ)) on adversarial ones (Sec. 4.2).

    Args:
        ds: a sweep Dataset (any extra dimensions are kept).
        scaling: "unperturbed" (the paper, as above); "first": each response divided by its own accuracy at the
            first threshold, β_{h,i} / β_{h,0}, as the authors' public code does; or "chance": the share of the
            above-chance accuracy kept, (β − c) / (acc(f(x, θ)) − c) and (β_ε − c) / (acc(f(x_ε, θ)) − c) with
            c = max(1/K, the share of the most frequent label) (the sweep's `chance`), which maps chance to 0 and
            the unperturbed network to 1 on both curves. Under the paper's scaling chance sits at c / acc(f(x)) on
            the clean curve but c / acc(f(x_ε)) ≈ c / (ρ · acc(f(x))) on the adversarial one (about 0.22 against
            0.11 for ρ = 0.5), which alone makes r_ε positive for a network that collapses under filtering.

    Returns:
        The scaled responses, dims of ``ds["accuracy"]``.
    """
    if not isinstance(scaling, str) or scaling not in SCALINGS:
        raise FragilityError(f"unknown scaling {scaling!r}: choose 'unperturbed' (the paper), 'first' (the authors' "
                             "code) or 'chance' (above chance).")
    ds = _sweep(ds, "accuracy", "base_accuracy")
    if scaling == "chance":
        if "chance" not in ds:
            raise FragilityError("the 'chance' scaling needs the sweep's `chance` (stored by fragility ≥ 0.2 sweeps).")
        return ((ds["accuracy"] - ds["chance"]) / (ds["base_accuracy"] - ds["chance"])).rename("scaled")
    by = ds["base_accuracy"] if scaling == "unperturbed" else ds["accuracy"].isel(alpha=0, drop=True)
    return (ds["accuracy"] / by).rename("scaled")


def combined(ds: xr.Dataset, scaling: str = "unperturbed") -> xr.DataArray:
    """β̃_i = mean over h ∈ {h1, h2, h3} of β̄_{h,i} (Eq. 13), for clean and adversarial inputs.

    Args:
        ds: a sweep Dataset with the three filters.
        scaling: as in `scaled`.

    Returns:
        The combined response, dims of ``ds["accuracy"]`` without filter.

    Raises:
        FragilityError: the sweep lacks one of the three filters.
    """
    missing = {"h1", "h2", "h3"} - set(ds["filter"].values.tolist())
    if missing:
        raise FragilityError(f"the combined response needs h1, h2 and h3; this sweep lacks "
                             f"{', '.join(sorted(missing))}.")
    return scaled(ds, scaling).sel(filter=["h1", "h2", "h3"]).mean("filter", skipna=False).rename("combined")


def _area(curve: xr.DataArray, rule: str) -> xr.DataArray:
    """Σ_i curve_i Δα over i = 0..A (Eq. 14–16 as written), or the trapezoid or Simpson rule over α ∈ [0, 1]; NaN
    when any point of the curve is (a response never stored has no area)."""
    if rule == "rectangle":
        return curve.sum("alpha", skipna=False) / (curve.sizes["alpha"] - 1)
    if rule == "trapezoid":
        return curve.integrate("alpha")
    return xr.apply_ufunc(lambda v: simpson(v, x=curve["alpha"].values, axis=-1), curve,
                          input_core_dims=[["alpha"]])


def scores(ds: xr.Dataset, filter: str = "h1", rule: str = "rectangle", scaling: str = "unperturbed") -> xr.Dataset:
    """Parameter scores r_x (Eq. 14), r_xe (Eq. 15) and r_e (Eq. 16) of filter h (default h1) or "combined".

    r_x = Σ(β̄ − φ̄)Δα, r_xe = Σ(β̄_ε − φ̄)Δα, r_e = Σ(β̄_ε − β̄)Δα. The combined response is compared with the
    mean of the three filters' baselines.

    Args:
        ds: a sweep Dataset (any extra dimensions are kept).
        filter: "h1", "h2", "h3" or "combined" (Eq. 13).
        rule: "rectangle" (as written: A + 1 terms of width 1/A), "trapezoid" or "simpson" (the authors' code).
        scaling: "unperturbed" (the paper), "first" (the authors' code) or "chance" (above chance), see `scaled`.

    Returns:
        A Dataset with r_x, r_xe and r_e, the sweep's dims without filter, alpha and input.

    Raises:
        FragilityError: an unknown filter, rule or scaling.

    Example:
        >>> fr.scores(ds, filter="h1")["r_x"].sel(layer="conv1")
    """
    if not isinstance(rule, str) or rule not in RULES:
        raise FragilityError(f"unknown integration rule {rule!r}: choose from {', '.join(RULES)}.")
    ds = _sweep(ds, "accuracy", "base_accuracy", "n_filtered", "n_params")
    if filter == "combined":
        response = combined(ds, scaling)
        base = baseline(ds).sel(filter=["h1", "h2", "h3"]).mean("filter", skipna=False)
    elif isinstance(filter, str) and filter in ds["filter"].values:
        response = scaled(ds, scaling).sel(filter=filter, drop=True)
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
    out.attrs.update(filter=filter, rule=rule, scaling=scaling)
    return out


def characterize(scores: xr.Dataset | xr.DataArray, tol: float = 0.02):
    """Labels per score: fragile "Fr" if r < −tol, robust "Ro" if ``|r| ≤ tol``, antifragile "Af" if r > tol.

    A NaN score (a unit or layer never stored, an unperturbed accuracy of 0) gets no label: the empty string "".

    Args:
        scores: scores (a Dataset of `scores`, or one DataArray).
        tol: the tolerance τ (the paper's ±2 %: 0.02).

    Returns:
        Labels of the same shape: "Fr", "Ro", "Af", or "" where the score is NaN.

    Example:
        >>> fr.characterize(fr.scores(ds))["r_x"].sel(layer="fc")
    """
    tol = checks.number(tol, "tol", low=0)
    if not isinstance(scores, (xr.Dataset, xr.DataArray)):
        raise FragilityError(f"expected scores as an xarray Dataset or DataArray; got {type(scores).__name__}.")

    def label(r):
        return xr.where(r.isnull(), "", xr.where(r < -tol, "Fr", xr.where(r > tol, "Af", "Ro")))

    return scores.map(label) if isinstance(scores, xr.Dataset) else label(scores)


def display_normalize(scores: xr.Dataset) -> xr.Dataset:
    """Scores scaled to [−0.5, 0.5] for display (Sec. 4.3): ``r / (2 max|r|)``, r_x and r_xe together, r_e alone."""
    if not isinstance(scores, xr.Dataset) or not {"r_x", "r_xe", "r_e"} & set(scores.data_vars):
        raise FragilityError("expected the Dataset of fragility.scores (r_x, r_xe, r_e).")

    def scale(names):
        peak = max(float(np.nanmax(np.abs(scores[n].values))) if scores[n].size else 0.0 for n in names)
        return {n: scores[n] / (2 * peak) if peak > 0 else scores[n] * 0.0 for n in names}

    present = [n for n in ("r_x", "r_xe") if n in scores]
    out = scores.copy()
    for group in (present, [n for n in ("r_e",) if n in scores]):
        if group:
            out.update(scale(group))
    return out


def retention(accuracy: xr.DataArray, base: xr.DataArray, classes: int) -> xr.DataArray:
    """The share of the above-chance accuracy kept, (β − 1/K) / (acc(f(x, θ)) − 1/K): 0 is chance, 1 the
    unperturbed network."""
    chance = 1 / classes
    return ((accuracy - chance) / (base - chance)).rename("retention")
