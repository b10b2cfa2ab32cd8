"""Baseline, scaled and combined responses, parameter scores and their characterization (Eq. 10–16).

Every function takes the sweep Dataset (the method page's "Where the numbers live") with any extra dimensions
(model, dataset, seed, epoch) and
keeps them: derived quantities are computed, never stored. What was never stored stays missing: a unit or a layer
that combined results pad with NaN gives NaN responses and scores (never 0), and no label.

The response is the sweep's metric (`fragility.metrics`): top-1 accuracy β by default, else the variable the
Dataset's `metric` attribute names (`top5`, a function of one's own…). Every scaling makes the unperturbed network 1
and orients the response so that a score below 0 — fragile — still means "the stress hurts":

- a higher-is-better metric m (an accuracy) is scaled as β is: m / m(f(x, θ)) (or the above-chance share);
- a lower-is-better metric m (a loss) is scaled by its reciprocal, the ratio of the performances 1/m:
  m(f(x, θ)) / m under "unperturbed" (and m_{h,0} / m under "first"), which is 1 for the unperturbed network, falls
  toward 0 as the loss grows without bound and exceeds 1 where the stress lowers the loss. The scores are those of
  that curve, so Eq. 14–16 and the labels read as for accuracy;
- the ratio scalings need a metric ≥ 0 whose 0 is the worst (higher-is-better) or the best (lower-is-better)
  value, as an accuracy and a loss are: results with a negative value of any other metric are refused (a negative
  log-likelihood is higher-is-better and negative: give it as the loss, lower-is-better);
- the above-chance scaling (m − c) / (m(f(x, θ)) − c) needs the metric's chance level c (the sweep's `chance`): it
  is 1 for the unperturbed network and 0 at chance whichever way the metric improves (a loss above its chance
  level makes both terms negative), and is refused for a metric without one (`chance` NaN).
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.integrate import simpson

from . import checks, metrics
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


def _response(ds) -> tuple[str, str, bool]:
    """(the response's variable, the unperturbed one's, whether higher is better) of a sweep Dataset, checked."""
    if not isinstance(ds, xr.Dataset):
        raise FragilityError(f"expected the Dataset of fragility.sweep (or open_results); got {type(ds).__name__}.")
    name, base, higher = metrics.stored(ds)
    _sweep(ds, name, base)
    return name, base, higher


def _ratios(ds: xr.Dataset, name: str, base: str, scaling: str) -> None:
    """Refuse the ratio scalings for a metric other than top-1 accuracy that takes negative values (see the module's
    docstring)."""
    if name != "accuracy" and bool((ds[name] < 0).any() or (ds[base] < 0).any()):
        raise FragilityError(f"the {scaling!r} scaling divides by the metric and needs values ≥ 0 (0 the worst for a "
                             f"higher-is-better metric, the best for a lower-is-better one); metric {name} takes "
                             "negative values: sweep it as a loss (lower-is-better, ≥ 0) or give it a chance level "
                             "and choose scaling='chance'.")


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
    """β̄ = β / acc(f(x, θ)) on clean inputs and β̄_ε = β_ε / acc(f(x_ε, θ)) on adversarial ones (Sec. 4.2, Eq. 11–12).

    Args:
        ds: a sweep Dataset (any extra dimensions are kept).
        scaling: "unperturbed" (the paper, as above); "first": each response divided by its own accuracy at the
            first threshold, β_{h,i} / β_{h,0}, as the authors' public code does; or "chance": the share of the
            above-chance accuracy kept, (β − c) / (acc(f(x, θ)) − c) and (β_ε − c) / (acc(f(x_ε, θ)) − c) with
            c = max(1/K, the share of the most frequent label) (the sweep's `chance`), which maps chance to 0 and
            the unperturbed network to 1 on both curves. Under the paper's scaling chance sits at c / acc(f(x)) on
            the clean curve but c / acc(f(x_ε)) ≈ c / (ρ · acc(f(x))) on the adversarial one (about 0.22 against
            0.11 for ρ = 0.5), which alone makes r_ε positive for a network that collapses under filtering.
            Under another metric than top-1 accuracy each scaling reads the Dataset's metric, a lower-is-better one
            by its reciprocal (m(f(x, θ)) / m), as the module's docstring says; "chance" needs its chance level.

    Returns:
        The scaled responses, dims of ``ds["accuracy"]`` (of the metric's variable).

    Raises:
        FragilityError: an unknown scaling; "chance" for a metric without a chance level; a ratio scaling of a
            metric other than top-1 accuracy that takes negative values.
    """
    if not isinstance(scaling, str) or scaling not in SCALINGS:
        raise FragilityError(f"unknown scaling {scaling!r}: choose 'unperturbed' (the paper), 'first' (the authors' "
                             "code) or 'chance' (above chance).")
    name, base, higher = _response(ds)
    if scaling == "chance":
        if "chance" not in ds:
            raise FragilityError("the 'chance' scaling needs the sweep's `chance` (stored by fragility ≥ 0.2 sweeps).")
        if name != "accuracy" and bool(ds["chance"].isnull().all()):
            raise FragilityError(f"the 'chance' scaling needs the metric's chance level, and metric {name} has none "
                                 "(give one: fr.metric(..., chance=c)); choose 'unperturbed' or 'first'.")
        return ((ds[name] - ds["chance"]) / (ds[base] - ds["chance"])).rename("scaled")
    _ratios(ds, name, base, scaling)
    by = ds[base] if scaling == "unperturbed" else ds[name].isel(alpha=0, drop=True)
    return (ds[name] / by if higher else by / ds[name]).rename("scaled")


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
    mean of the three filters' baselines. β is the sweep's metric (top-1 accuracy by default); a lower-is-better
    metric is scaled by its reciprocal (see `scaled`), so that a negative score still means the stress hurts.

    Args:
        ds: a sweep Dataset (any extra dimensions are kept).
        filter: "h1", "h2", "h3" or "combined" (Eq. 13).
        rule: "rectangle" (as written: A + 1 terms of width 1/A), "trapezoid" or "simpson" (the authors' code).
        scaling: "unperturbed" (the paper), "first" (the authors' code) or "chance" (above chance), see `scaled`.

    Returns:
        A Dataset with r_x, r_xe and r_e, the sweep's dims without filter, alpha and input; its attributes record the
        filter, rule, scaling and the metric (``metric``, ``higher_is_better``).

    Raises:
        FragilityError: an unknown filter, rule or scaling, or a scaling the metric does not allow (see `scaled`).

    Example:
        >>> fr.scores(ds, filter="h1")["r_x"].sel(layer="conv1")
    """
    if not isinstance(rule, str) or rule not in RULES:
        raise FragilityError(f"unknown integration rule {rule!r}: choose from {', '.join(RULES)}.")
    name, _, higher = _response(ds)
    ds = _sweep(ds, "n_filtered", "n_params")
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
    if name != "accuracy":
        out.attrs.update(metric=name, higher_is_better=int(higher))
    return out


def characterize(scores: xr.Dataset | xr.DataArray, tol: float = 0.02):
    """Labels per score: fragile "Fr" if r < −tol, robust "Ro" if ``|r| ≤ tol``, antifragile "Af" if r > tol.

    A NaN score (a unit or layer never stored, an unperturbed accuracy of 0) gets no label: the empty string "".
    Scores of any metric are already oriented by `scores` (a lower-is-better metric through its reciprocal), so
    "Fr" means the stress hurts whichever way the metric improves.

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
