"""Selections of stored results (model, dataset, seed, epoch, layer, filter, input): their valid choices, the
paper's defaults, and one clear error for a bad one — before anything is drawn or computed.

Works on the Dataset of `fragility.open_results` and on a study's Dataset from `fragility.open_study` (its
`study` attribute names the study, whose own selections come from the study registry).
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from . import metrics
from .errors import FragilityError
from .filters import FILTERS
from .scores import baseline, combined, scaled, scores
from .store import layer_order
from .study import REGISTRY

INPUTS = ("clean", "adversarial")
PARAMETERS = ("model", "dataset", "seed", "epoch", "layer", "layers", "filter", "input")
STAND_INS = {"mnist": "digits"}  # the offline data set that stands in for a paper's data set


def values(ds: xr.Dataset, name: str) -> list:
    """The values of coordinate `name`, whether a dimension or a scalar left by a selection."""
    return np.atleast_1d(ds[name].values).tolist() if name in ds.coords else []


def stored(ds: xr.Dataset) -> xr.DataArray:
    """True where a unit (model, dataset, seed, epoch) holds results: combined results pad missing ones with NaN."""
    return ds[metrics.stored(ds)[1]].notnull().any("input")


def where(mask: xr.DataArray, dim: str) -> list:
    """Values of `dim` where `mask` is True for some value of its other dimensions."""
    hit = mask.any([d for d in mask.dims if d != dim]) if mask.ndim > 1 else mask
    return [v for v, ok in zip(values(mask, dim), np.atleast_1d(hit.values)) if ok]


def choose(kind: str, value, valid: list, place: str, default=None):
    """`value`, or `default` (the first valid choice) when None; else a FragilityError listing the valid choices."""
    if value is None:
        return valid[0] if default is None else default
    if isinstance(value, (list, tuple, set, dict)) or value not in valid:
        shown = ", ".join(map(str, valid[:60])) + (", …" if len(valid) > 60 else "")
        raise FragilityError(f"unknown {kind} {value!r}{place}: choose from {shown}.")
    return value


def study_name(ds: xr.Dataset) -> str | None:
    """The study whose results `ds` holds (its `study` attribute), or None for the responses of `open_results`."""
    return ds.attrs.get("study")


def choices(ds: xr.Dataset, model=None, dataset=None) -> dict[str, list]:
    """The valid values of every selection for `model` and `dataset` (each default: the first)."""
    if study_name(ds):
        return REGISTRY[study_name(ds)].choices(ds, model, dataset)
    models = values(ds, "model")
    model = model if model in models else models[0]
    unit = stored(ds).sel(model=model)
    datasets = where(unit, "dataset")
    unit = unit.sel(dataset=dataset if dataset in datasets else datasets[0])
    return {"model": models, "dataset": datasets, "seed": where(unit, "seed"), "epoch": where(unit, "epoch"),
            "layer": layer_order(ds, model), "filter": filters(ds, model), "input": list(INPUTS)}


def filters(ds: xr.Dataset, model=None) -> list[str]:
    """The filters (internal stresses) the results of `model` (every model when None) were swept with — a profile
    may sweep fewer, or fewer for one model — and "combined" (Eq. 13) when they are all of h1, h2 and h3."""
    swept = swept_filters(ds, model)
    return swept + (["combined"] if _combines(swept) else [])


def swept_filters(ds: xr.Dataset, model=None) -> list[str]:
    """The filters with results for `model` (any model when None): combined results are NaN for a filter a model
    was not swept with."""
    if "n_filtered" not in ds or "filter" not in ds["n_filtered"].dims:
        return values(ds, "filter")
    n = ds["n_filtered"]
    if model is not None and "model" in n.dims:
        n = n.sel(model=model)
    return where(n.notnull(), "filter")


def any_filter(ds: xr.Dataset, filter=None) -> str:
    """`filter` ("h1" when None) checked against the filters of every model: a figure of all models draws those
    swept with it."""
    return choose("filter", filter, filters(ds), "", "h1")


def models_with(ds: xr.Dataset, filter: str) -> list[str]:
    """The models whose results hold `filter` (a profile may sweep some models with fewer filters)."""
    return [m for m in choices(ds)["model"] if filter in choices(ds, m)["filter"]]


def _combines(data) -> bool:
    """Whether `data` (results, or a list of filters) holds the three synaptic filters that the combined response
    (Eq. 13) averages."""
    return set(FILTERS) <= set(data if isinstance(data, list) else values(data, "filter"))


def check_parameters(ds: xr.Dataset, **params) -> dict:
    """Selections checked against the results, defaults filled in; else one FragilityError naming the valid choices.

    Keys (only those given are checked): model (default the first), dataset (the first one the model was run on),
    seed (None: average over seeds), epoch (the last stored), layer (the model's first), layers (a list of layers),
    filter ("h1"; also "h2", "h3", "combined"), input ("clean" or "adversarial"). A study's results take the
    selections of that study.
    """
    kind = study_name(ds)
    if kind:
        allowed = REGISTRY[kind].parameters
    else:
        allowed = PARAMETERS
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        whose = f"the {kind} study's figures" if kind else "the figures"
        raise FragilityError(f"unknown parameter(s) {', '.join(unknown)}: {whose} take {', '.join(allowed)}.")
    out = dict(params)
    model = out["model"] = choose("model", params.get("model"), choices(ds)["model"], " in these results")
    valid = choices(ds, model)
    dataset = out["dataset"] = choose("dataset", params.get("dataset"), valid["dataset"], f" for {model}")
    valid = choices(ds, model, dataset)
    place = {"seed": f" stored for {model} on {dataset}", "epoch": f" stored for {model} on {dataset}",
             "layer": f" of {model}", "filter": "", "input": ""}
    for key in place:
        if key in params and key in valid and not (key == "seed" and params[key] is None):
            out[key] = choose(key, params[key], valid[key], place[key], valid[key][-1] if key == "epoch" else None)
    if params.get("layers") is not None:
        layers = params["layers"]
        if isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers:
            raise FragilityError(f"layers must be a non-empty list of layer names of {model}, got {layers!r}.")
        for name in layers:
            choose("layer", name, valid["layer"], place["layer"])
    return out


def paper_defaults(ds: xr.Dataset, paper: dict) -> tuple[dict, list[str]]:
    """The paper's selections where the results hold them, else the nearest that exists, and a note for each
    replaced one: the paper's model if stored (else the first), its dataset (its offline stand-in, e.g. digits for
    MNIST; else the model's first), its epoch (else the last stored), its layer (else the model's first) and its
    filter (else the first swept)."""
    out, notes = {}, []
    pick = choices(ds)
    if "model" in paper:
        out["model"] = paper["model"] if paper["model"] in pick["model"] else pick["model"][0]
    pick = choices(ds, out.get("model"))
    if "dataset" in paper:
        wanted = paper["dataset"]
        found = [d for d in (wanted, STAND_INS.get(wanted)) if d in pick["dataset"]]
        out["dataset"] = found[0] if found else pick["dataset"][0]
    pick = choices(ds, out.get("model"), out.get("dataset"))
    if "epoch" in paper:
        out["epoch"] = paper["epoch"] if paper["epoch"] in pick["epoch"] else pick["epoch"][-1]
    if "layer" in paper:
        out["layer"] = paper["layer"] if paper["layer"] in pick["layer"] else pick["layer"][0]
    if "layers" in paper:
        out["layers"] = [name for name in paper["layers"] if name in pick["layer"]] or None
    if "filter" in paper:
        out["filter"] = paper["filter"] if paper["filter"] in pick["filter"] else pick["filter"][0]
    for key, value in out.items():
        if value != paper[key]:
            notes.append(f"{key} {_text(value)} (the paper: {_text(paper[key])})")
    return out, notes


def _text(value) -> str:
    return "chosen from the results" if value is None else ", ".join(map(str, value)) if isinstance(value, list) \
        else str(value)


def select(ds: xr.Dataset, model=None, dataset=None, seed=None) -> xr.Dataset:
    """The loaded results of one model (and dataset — all when None — and seed), without the units, layers and
    filters it lacks; the selections checked first."""
    model = check_parameters(ds, model=model, dataset=dataset, seed=seed)["model"]
    sub = ds.sel(model=model, layer=layer_order(ds, model))
    if dataset is not None:
        sub = sub.sel(dataset=dataset)
    if seed is not None:
        sub = sub.sel(seed=[seed])
    have = stored(sub)
    sub = sub.sel({d: where(have, d) for d in ("dataset", "seed", "epoch") if d in have.dims})
    if "filter" in sub.dims:  # a model swept with fewer filters than the results hold
        sub = sub.sel(filter=swept_filters(sub))
    return sub.load()


def edge_layers(ds: xr.Dataset, model) -> tuple[str, str]:
    """The first and the last filterable layer of `model` (the first conv and the last linear layer)."""
    order = [n for n in layer_order(ds, model) if n != "global"]
    return order[0], order[-1]


def _with_combined(da: xr.DataArray, combined_da: xr.DataArray | None = None) -> xr.DataArray:
    """`da` with filter "combined" appended: `combined_da`, or the mean over h1, h2, h3."""
    if not _combines(da):  # a profile that swept fewer has no combined response
        return da
    extra = da.sel(filter=list(FILTERS)).mean("filter") if combined_da is None else combined_da
    return xr.concat([da, extra.expand_dims(filter=["combined"])], "filter", coords="minimal")


def curves(ds: xr.Dataset, model=None, dataset=None, seed=None) -> xr.Dataset:
    """One model's responses from combined results, averaged over seeds (or of one seed).

    Returns response (β̄; β̃ of Eq. 13 for filter "combined"), baseline (φ̄ of Eq. 10; the mean of the three for
    "combined"), accuracy (β), n_filtered, n_params, base_accuracy and epsilon, dims (dataset, epoch, layer, filter,
    alpha, input) — no dataset dimension when one is selected. Under a metric other than top-1 accuracy
    (`fragility.metrics`) `accuracy` and `base_accuracy` hold that metric's β and unperturbed value, as the
    attributes `metric` and `metric_higher_is_better` (kept from the results) say; `response` is scaled as
    `fragility.scores.scaled` orients it.
    """
    sub = select(ds, model, dataset, seed)
    name, base, _ = metrics.stored(sub)
    out = xr.Dataset({
        "response": _with_combined(scaled(sub), combined(sub) if _combines(sub) else None),
        "baseline": _with_combined(baseline(sub)),
        "accuracy": _with_combined(sub[name]),
        "n_filtered": _with_combined(sub["n_filtered"]),
        "n_params": sub["n_params"],
        "base_accuracy": sub[base],
    }).mean("seed")
    out["epsilon"] = sub["epsilon"]
    out.attrs = sub.attrs
    return out


def layer_scores(ds: xr.Dataset, model=None, dataset=None, seed=None, filter="h1", mean=True, rule="rectangle",
                 scaling="unperturbed") -> xr.Dataset:
    """Scores r_x, r_xe, r_e (Eq. 14–16) of every layer of one model, `global` included, by (dataset,) epoch and
    layer from combined results; averaged over seeds unless `mean` is False. Non-finite scores (an unperturbed
    accuracy of 0) become NaN."""
    r = scores(select(ds, model, dataset, seed), filter, rule, scaling)
    r = r.where(np.isfinite(r))
    return r.mean("seed") if mean else r
