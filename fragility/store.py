"""Stored responses: one netCDF file per unit (model, dataset, seed, checkpoint epoch), combined on reading.

A unit file holds one sweep Dataset (SPEC §5) with scalar coordinates model, dataset, seed and epoch, and a
`layer_index` variable (forward position of each layer, `global` last) so that the forward order survives combining
models whose layers differ. Files are written atomically (a `.tmp` file beside the target, then `os.replace`), so a
unit is either wholly there or not at all.

`open_results` reads every unit into memory (the full paper protocol, 360 units, is ≈ 140 MB) and combines them with
NumPy: opening each file as a dask array and combining lazily measured twice as slow to open and ~100 times slower
to select from, since every unit is small.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import FragilityError

SCHEMA = "fragility-responses/1"
KEYS = ("model", "dataset", "seed", "epoch")
DIMS = KEYS + ("layer", "filter", "alpha", "input")
VARIABLES = {
    "accuracy": ("layer", "filter", "alpha", "input"),
    "n_filtered": ("layer", "filter", "alpha"),
    "n_params": ("layer",),
    "threshold": ("layer", "filter", "alpha"),
    "base_accuracy": ("input",),
    "epsilon": (),
    "layer_index": ("layer",),
}
TMP = ".tmp"


def unit_path(results, model: str, dataset: str, seed: int, epoch: int) -> Path:
    """results/responses/<model>/<dataset>/seed<seed>/epoch<EEE>.nc"""
    return Path(results) / "responses" / model / dataset / f"seed{seed}" / f"epoch{epoch:03d}.nc"


def as_unit(sweep: xr.Dataset, model: str, dataset: str, seed: int, epoch: int, **attrs) -> xr.Dataset:
    """A sweep Dataset made into a unit: scalar coordinates, `layer_index`, the schema tag and extra attributes."""
    ds = sweep.assign_coords(model=model, dataset=dataset, seed=np.int64(seed), epoch=np.int64(epoch))
    ds["layer_index"] = ("layer", np.arange(ds.sizes["layer"], dtype=np.int64))
    ds["layer_index"].attrs["long_name"] = "forward position of the layer (global last)"
    ds.attrs.update(attrs, schema=SCHEMA)
    return ds


def _check(ds: xr.Dataset) -> None:
    """Raise ValueError saying how `ds` breaks the unit schema, if it does."""
    if ds.attrs.get("schema") != SCHEMA:
        raise ValueError(f"its schema attribute is {ds.attrs.get('schema')!r}, not {SCHEMA!r}")
    for name, dims in VARIABLES.items():
        if name not in ds.data_vars or ds[name].dims != dims:
            raise ValueError(f"it lacks the variable {name}{dims}")
    missing = [k for k in KEYS if k not in ds.coords or ds[k].ndim != 0]
    if missing:
        raise ValueError(f"it lacks the scalar coordinate(s) {', '.join(missing)}")


def write_unit(ds: xr.Dataset, path) -> None:
    """Write a unit (see `as_unit`) to `path` as netCDF, atomically."""
    try:
        _check(ds)
    except ValueError as err:
        raise FragilityError(f"not a response unit ({err}): build it with fragility.store.as_unit.") from None
    write_netcdf(ds, path)


def write_netcdf(ds: xr.Dataset, path) -> None:
    """Write `ds` to `path` as netCDF atomically: a `.tmp` file beside it, synced, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP)
    os.close(handle)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_netcdf(path) -> xr.Dataset:
    """The netCDF file at `path`, loaded into memory; a FragilityError naming the file if it cannot be read."""
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except Exception as err:  # any failure to open means the file is damaged or not netCDF
        raise FragilityError(f"{path} is not a readable netCDF file ({type(err).__name__}): delete it so that "
                             "`fragility run` recomputes it.") from None


def read_unit(path) -> xr.Dataset:
    """The unit stored at `path`, loaded into memory and validated; a FragilityError naming the file otherwise."""
    ds = read_netcdf(path)
    try:
        _check(ds)
    except ValueError as err:
        raise FragilityError(f"{path} is not a fragility response unit ({err}): delete it so that "
                             "`fragility run` recomputes it.") from None
    return ds


def scan(path) -> dict[tuple, xr.Dataset]:
    """Every unit stored under `path` (a folder or one file), read and validated, by (model, dataset, seed, epoch).

    Temporary files of interrupted writes and the `studies/` folder (see fragility.studies) are passed over; any other
    ``*.nc`` file that is not a unit is an error.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*.nc")
                                                 if f.relative_to(path).parts[0] != "studies")
    units: dict[tuple, xr.Dataset] = {}
    for f in files:
        ds = read_unit(f)
        key = tuple(ds[k].item() for k in KEYS)
        if key in units:
            raise FragilityError(f"{f} and {units[key].encoding['source']} both hold {dict(zip(KEYS, key))}: "
                                 "delete one of them.")
        units[key] = ds
    return units


def clean(results) -> None:
    """Delete the temporary files that interrupted writes left under `results`."""
    for f in Path(results).rglob(f".*{TMP}"):
        f.unlink(missing_ok=True)


def open_results(path) -> xr.Dataset:
    """Everything stored under `path`, combined: accuracy(model, dataset, seed, epoch, layer, filter, alpha, input).

    Layers are the union over models (NaN where a model lacks one); use `layer_order` for a model's forward order.
    Attributes that differ between units are dropped.
    """
    units = scan(path)
    if not units:
        raise FragilityError(f"no stored responses under {path}: run `fragility run --profile quick` (or another "
                             "profile) first, or pass the folder it wrote to.")
    first = next(iter(units.values()))
    for key, ds in units.items():
        for dim in ("filter", "alpha", "input"):
            if not np.array_equal(ds[dim].values, first[dim].values):
                raise FragilityError(f"units under {path} differ in {dim} ({dict(zip(KEYS, key))} has "
                                     f"{ds[dim].values.tolist()}): keep one profile's results per folder.")
    stacked = xr.concat(list(units.values()), dim="unit", data_vars="all", coords="all", compat="equals",
                        join="outer", fill_value=np.nan, combine_attrs="drop_conflicts")
    return stacked.set_index(unit=list(KEYS)).unstack("unit").transpose(*DIMS)


def layer_order(ds: xr.Dataset, model: str) -> list[str]:
    """The layers of `model` in forward order, then "global"."""
    index = ds["layer_index"]
    models = np.atleast_1d(ds["model"].values).tolist()
    if model not in models:
        raise FragilityError(f"model {model!r} is not in these results: they hold {', '.join(map(str, models))}.")
    if "model" in index.dims:
        index = index.sel(model=model)
    others = [d for d in index.dims if d != "layer"]
    position = (index.max(others) if others else index).to_series().dropna().sort_values()
    return [str(name) for name in position.index]
