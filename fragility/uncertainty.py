"""Intervals: a bootstrap over the test images (resampled within each unit) and over the seeds, for any statistic of
stored responses.

A sweep stores which test images each filtered network classifies correctly (`correct`, in each unit file), so the
accuracy under a resample of the images is a weighted mean of those booleans: B resamples of every cell of a unit
cost one matrix product. The units of one data set share their test images, and every unit is resampled with the
same draws, so that differences between units (clean against adversarial, one epoch against another) keep their
pairing. Where a model has several seeds, each replicate also draws the seeds with replacement.

`resample` returns one model's responses on one data set with a leading `sample` dimension — sample 0 the data as
stored, samples 1 … B the bootstrap replicates — and `seed_weight(sample, seed)`, how often each replicate draws each
seed (once each in sample 0). Compute a statistic on it as on `fr.open_results`, with `seed_mean` in place of a mean
over seeds: sample 0 is its value, the others its bootstrap distribution, and `interval` gives the percentile
interval.

Example:
    >>> rs = resample("results/reference", "resnet18", "mnist")
    >>> r = seed_mean(fr.scores(rs.sel(layer="global"))["r_e"], rs)      # (sample, epoch)
    >>> value, (low, high) = r.isel(sample=0), interval(r)
"""
from __future__ import annotations

import functools
from pathlib import Path

import h5py
import numpy as np
import xarray as xr

from . import checks, store
from .errors import FragilityError

SAMPLES = 200  # bootstrap replicates
LEVEL = 0.95  # the intervals' coverage


def draws(n: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of n items is drawn in each replicate, (samples + 1, n): row 0 once each (the data as they
    are), rows 1 … samples n draws with replacement."""
    counts = np.ones((samples + 1, n), dtype=np.float32)
    for b in range(1, samples + 1):
        counts[b] = np.bincount(rng.integers(0, n, n), minlength=n)
    return counts


def _read(path: Path, name: str) -> np.ndarray:
    """A per-image variable of a unit file as float32 (stored as 0/1 bytes, or float32 for a metric of one's own)."""
    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f[name][...], dtype=np.float32)
    except (OSError, KeyError) as err:
        raise FragilityError(f"{path} holds no per-image results ({type(err).__name__}): it was stored by an older "
                             f"version; {store.MOVE}.") from None


@functools.lru_cache(maxsize=8)
def _resample(folder: str, model: str, dataset: str, samples: int, seed: int, stamp: tuple) -> xr.Dataset:
    headers = {k: h for k, h in store.scan(folder).items() if k[0] == model and k[1] == dataset}
    if not headers:
        raise FragilityError(f"no stored unit of {model} on {dataset} under {folder}.")
    seeds = sorted({k[2] for k in headers})
    epochs = sorted({k[3] for k in headers})
    first = next(iter(headers.values()))
    images = first.coords["image"][0]
    layers = first.coords["layer"][0]
    for h in headers.values():
        if not np.array_equal(h.coords["image"][0], images) or not np.array_equal(h.coords["layer"][0], layers):
            raise FragilityError(f"{h.path} was swept on other test images or layers than {first.path}: keep one "
                                 "profile's results per folder.")
    rng = np.random.default_rng(seed)
    weights = draws(len(images), samples, rng)  # (S, n): the same draws for every unit of the data set
    weights /= weights.sum(1, keepdims=True)
    seed_weight = draws(len(seeds), samples, rng)
    shape = (len(seeds), len(epochs))
    accuracy = np.full((samples + 1, *shape, len(layers), len(first.coords["filter"][0]),
                        len(first.coords["alpha"][0]), 2), np.nan, dtype=np.float32)
    base = np.full((samples + 1, *shape, 2), np.nan, dtype=np.float32)
    names = store.metric_variables(str(first.attrs.get("metric", "accuracy")))  # one metric per folder (open_results)
    for (_, _, s, e), h in headers.items():
        i, j = seeds.index(s), epochs.index(e)
        correct = _read(h.path, names["correct"])  # (layer, filter, alpha, input, image)
        accuracy[:, i, j] = np.moveaxis(correct @ weights.T, -1, 0)
        base[:, i, j] = (_read(h.path, names["base_correct"]) @ weights.T).T
    stored = store.open_results(folder).sel(model=model, dataset=dataset, seed=seeds, epoch=epochs)
    stored = stored.sel(layer=list(layers))[["n_filtered", "n_params", "threshold", "chance", "epsilon"]].load()
    coords = {"sample": np.arange(samples + 1), "seed": seeds, "epoch": epochs, "layer": list(layers),
              "filter": first.coords["filter"][0], "alpha": first.coords["alpha"][0],
              "input": first.coords["input"][0]}
    ds = xr.Dataset({
        names["accuracy"]: (("sample", "seed", "epoch", "layer", "filter", "alpha", "input"), accuracy),
        names["base_accuracy"]: (("sample", "seed", "epoch", "input"), base),
        "seed_weight": (("sample", "seed"), seed_weight),
    }, coords=coords).merge(stored.drop_vars(["model", "dataset"]), compat="override", join="left")
    ds.attrs.update(model=model, dataset=dataset, samples=samples, bootstrap_seed=seed, n_test=len(images),
                    **{k: v for k, v in first.attrs.items() if k.startswith("metric")})
    return ds


def resample(results, model: str, dataset: str, *, samples: int = SAMPLES, seed: int = 0) -> xr.Dataset:
    """One model's stored responses on one data set with bootstrap replicates (see the module's docstring).

    Args:
        results: a results folder written by `fragility run`.
        model, dataset: which responses.
        samples: bootstrap replicates B (the interval's resolution; 200 by default).
        seed: seeds the draws, so that intervals repeat.

    Returns:
        accuracy(sample, seed, epoch, layer, filter, alpha, input), base_accuracy(sample, seed, epoch, input),
        seed_weight(sample, seed), and as stored n_filtered, n_params, threshold, chance and epsilon; sample 0 is the
        data as stored. Missing units are NaN. Results of another metric than top-1 accuracy give its response under
        its own names (`top5`, `base_top5`, …: the mean of its per-example values) and its `metric` attributes.

    Raises:
        FragilityError: no stored unit, units swept on other images or layers, or units without per-image results.
    """
    folder = checks.folder(results, "results")
    samples = checks.count(samples, "samples")
    seed = int(checks.require(seed, checks.whole(0), "seed"))
    files = sorted(folder.rglob("*.nc"))
    stamp = tuple((str(f), f.stat().st_mtime_ns) for f in files)  # recomputed when a unit changes
    return _resample(str(folder.resolve()), str(model), str(dataset), samples, seed, stamp)


def bootstrap(correct: xr.DataArray, samples: int = SAMPLES, seed: int = 0) -> xr.Dataset:
    """Bootstrap replicates of accuracies from per-image results `correct` (dims …, image, and `seed` when there
    are several; NaN where nothing was computed): accuracy(sample, …) with the images resampled (the same draws for
    every cell) and seed_weight(sample, seed) (once each in sample 0)."""
    rng = np.random.default_rng(seed)
    weights = draws(correct.sizes["image"], samples, rng)
    weights = xr.DataArray(weights / weights.sum(1, keepdims=True), dims=("sample", "image"))
    accuracy = xr.dot(correct.fillna(0.0).astype(float), weights, dim="image")
    accuracy = accuracy.where(correct.notnull().any("image"))
    out = xr.Dataset({"accuracy": accuracy})
    n_seeds = correct.sizes.get("seed", 1)
    out["seed_weight"] = xr.DataArray(draws(n_seeds, samples, rng), dims=("sample", "seed"))
    if "seed" in correct.dims:
        out = out.assign_coords(seed=correct["seed"])
    return out.assign_coords(sample=np.arange(samples + 1))


def seed_mean(values: xr.DataArray | xr.Dataset, replicates: xr.Dataset):
    """The mean over seeds of each replicate, each seed counted as often as the replicate drew it (NaN skipped)."""
    if "seed" not in values.dims:
        return values
    return values.weighted(replicates["seed_weight"]).mean("seed")


def interval(values: xr.DataArray, level: float = LEVEL) -> tuple[xr.DataArray, xr.DataArray]:
    """The percentile bootstrap interval (low, high) of a statistic over the replicates 1 … B of `sample`."""
    level = checks.number(level, "level", 0, 1, open_low=True, open_high=True)
    boot = values.sel(sample=values["sample"] > 0)
    low, high = boot.quantile([(1 - level) / 2, (1 + level) / 2], "sample", skipna=True)
    return low.drop_vars("quantile"), high.drop_vars("quantile")
