"""Stored responses: one netCDF file per unit (model, dataset, seed, checkpoint epoch), combined lazily on reading.

A unit file holds one sweep Dataset with scalar coordinates model, dataset, seed and epoch, and a
`layer_index` variable (forward position of each layer, `global` last) so that the forward order survives combining
models whose layers differ. Files are written atomically (a `.tmp` file beside the target, then `os.replace`), so a
unit is either wholly there or not at all.

`open_results` reads only each file's header (keys, coordinates, attributes) and returns a Dataset whose variables
are read from the unit files when their values are first needed, the way `xarray.open_dataset` defers a single
file: a selection reads only the units it covers, `.load()` reads everything.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5netcdf
import h5py
import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from . import checks, files
from .errors import FragilityError

SCHEMA = "fragility-responses/2"
KEYS = ("model", "dataset", "seed", "epoch")
DIMS = KEYS + ("layer", "filter", "alpha", "input")
VARIABLES = {
    "accuracy": ("layer", "filter", "alpha", "input"),
    "n_filtered": ("layer", "filter", "alpha"),
    "n_params": ("layer",),
    "threshold": ("layer", "filter", "alpha"),
    "base_accuracy": ("input",),
    "epsilon": (),
    "chance": (),
    "layer_index": ("layer",),
    "correct": ("layer", "filter", "alpha", "input", "image"),
    "base_correct": ("input", "image"),
}
PER_IMAGE = ("correct", "base_correct")  # read per unit (fragility.uncertainty), left out of `open_results`
RESPONSE = ("accuracy", "base_accuracy", "correct", "base_correct")  # the variables a metric's own name renames
GZIP = {"compression": "gzip", "compression_opts": 4, "shuffle": True}  # per-example variables (an `image` dim)


def metric_variables(metric: str = "accuracy") -> dict[str, str]:
    """The names a sweep stores its response under, by the default metric's: itself for top-1 accuracy; for another
    metric (`fragility.metrics`) <name>, base_<name>, <name>_per_image and base_<name>_per_image."""
    if metric == "accuracy":
        return {n: n for n in RESPONSE}
    return dict(zip(RESPONSE, (metric, f"base_{metric}", f"{metric}_per_image", f"base_{metric}_per_image")))


def schema(attrs: dict) -> dict[str, tuple]:
    """The variables (name → dims) a unit with these attributes holds: VARIABLES, the response under the name of the
    metric its `metric` attribute records (top-1 accuracy when it records none)."""
    names = metric_variables(str(attrs.get("metric", "accuracy")))
    return {names.get(name, name): dims for name, dims in VARIABLES.items()}


def per_image(attrs: dict) -> tuple[str, str]:
    """The per-example variables of a unit with these attributes (`correct`, `base_correct` for top-1 accuracy)."""
    names = metric_variables(str(attrs.get("metric", "accuracy")))
    return names["correct"], names["base_correct"]


def unit_path(results, model: str, dataset: str, seed: int, epoch: int) -> Path:
    """results/responses/<model>/<dataset>/seed<seed>/epoch<EEE>.nc (names that would leave `results` refused)"""
    return (checks.path(results, "results") / "responses" / checks.part(model, "model")
            / checks.part(dataset, "dataset") / f"seed{int(seed)}" / f"epoch{int(epoch):03d}.nc")


def as_unit(sweep: xr.Dataset, model: str, dataset: str, seed: int, epoch: int, **attrs) -> xr.Dataset:
    """A sweep Dataset made into a unit: scalar coordinates, `layer_index`, the schema tag and extra attributes."""
    ds = sweep.assign_coords(model=model, dataset=dataset, seed=np.int64(seed), epoch=np.int64(epoch))
    ds["layer_index"] = ("layer", np.arange(ds.sizes["layer"], dtype=np.int64))
    ds["layer_index"].attrs["long_name"] = "forward position of the layer (global last)"
    ds.attrs.update(attrs, schema=SCHEMA)
    return ds


def _check(attrs: dict, dims: dict[str, tuple]) -> None:
    """Raise ValueError saying how a file with these attributes and variable dims breaks the unit schema, if it does."""
    if attrs.get("schema") != SCHEMA:
        raise ValueError(f"its schema attribute is {attrs.get('schema')!r}, not {SCHEMA!r}")
    for name, want in schema(attrs).items():
        if dims.get(name) != want:
            raise ValueError(f"it lacks the variable {name}{want}")
    missing = [k for k in KEYS if dims.get(k) != ()]
    if missing:
        raise ValueError(f"it lacks the scalar coordinate(s) {', '.join(missing)}")


MOVE = "move it out of the results folder (or delete it, if fragility wrote it) so that `fragility run` recomputes it"


def _not_a_unit(path, err: ValueError) -> FragilityError:
    return FragilityError(f"{path} is not a fragility response unit ({err}): {MOVE}.")


def _unreadable(path, err: Exception) -> FragilityError:
    return FragilityError(f"{path} is not a readable netCDF file ({type(err).__name__}): {MOVE}.")


def write_unit(ds: xr.Dataset, path) -> None:
    """Write a unit (see `as_unit`) to `path` as netCDF, atomically."""
    try:
        _check(ds.attrs, {name: var.dims for name, var in ds.variables.items()})
    except ValueError as err:
        raise FragilityError(f"not a response unit ({err}): build it with fragility.store.as_unit.") from None
    write_netcdf(ds, path)


def write_netcdf(ds: xr.Dataset, path) -> None:
    """Write `ds` to `path` as netCDF atomically (fragility.files.atomic); per-example variables compressed."""
    encoding = {name: GZIP for name, v in ds.data_vars.items() if "image" in v.dims}
    files.atomic(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding))


def read_netcdf(path) -> xr.Dataset:
    """The netCDF file at `path`, loaded into memory; a FragilityError naming the file if it cannot be read."""
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except Exception as err:  # any failure to open means the file is damaged or not netCDF
        raise _unreadable(path, err) from None


def read_unit(path) -> xr.Dataset:
    """The unit stored at `path`, loaded into memory and validated (a file of a results folder's responses/ must
    hold the unit its name says); a FragilityError naming the file otherwise."""
    ds = read_netcdf(path)
    try:
        _check(ds.attrs, {name: var.dims for name, var in ds.variables.items()})
    except ValueError as err:
        raise _not_a_unit(path, err) from None
    _placed(Path(path), tuple(ds[k].item() for k in KEYS))
    return ds


def _placed(path: Path, key: tuple, results: Path | None = None) -> None:
    """Refuse a file under the responses/ of a results folder (`results`, else as the path's place says) that holds
    another unit than its name says."""
    if results is None and (len(path.parts) < 5 or path.parts[-5] != "responses"):
        return
    try:
        home = unit_path(path.parents[4] if results is None else results, *key)
    except (FragilityError, TypeError, ValueError):
        raise FragilityError(f"{path} holds a unit whose key {key} cannot name a unit file: {MOVE}.") from None
    if home != path:
        raise FragilityError(f"{path} holds the unit {'/'.join(map(str, key))}, which belongs at {home}: a unit's "
                             f"file was copied or renamed; {MOVE}.")


@dataclass(frozen=True)
class Header:
    """What a unit file says about itself, read without its arrays: key, attributes, coordinates, variables."""
    path: Path
    key: tuple
    attrs: dict
    coords: dict[str, tuple[np.ndarray, dict]]          # dimension name -> (values, attributes)
    variables: dict[str, tuple[tuple[str, ...], np.dtype, dict]]  # data variable -> (dims, dtype, attributes)


def _values(var) -> np.ndarray:
    """A netCDF variable's values as xarray decodes the files fragility writes (strings are stored as bytes)."""
    values = var[...]
    return values.astype(str) if values.dtype.kind in "OS" else values


def _attrs(var) -> dict:
    """A variable's own attributes, without the encoding ones xarray consumes on reading."""
    return {k: v for k, v in var.attrs.items() if k not in ("_FillValue", "coordinates")}


def read_attrs(path) -> dict:
    """The global attributes of the netCDF file at `path` (a unit or a study unit), read without its arrays; a
    FragilityError naming the file if it cannot be read."""
    try:
        with h5netcdf.File(path, "r") as f:
            return dict(f.attrs)
    except Exception as err:  # any failure to open means the file is damaged or not netCDF
        raise _unreadable(path, err) from None


def read_header(path) -> Header:
    """The header of the unit stored at `path`, validated; a FragilityError naming the file otherwise."""
    try:
        with h5netcdf.File(path, "r") as f:
            attrs, variables = dict(f.attrs), f.variables
            dims = {name: tuple(var.dimensions) for name, var in variables.items()}
            key = tuple(_values(variables[k]).item() for k in KEYS if k in variables)
            coords = {d: (_values(variables[d]), _attrs(variables[d])) for d in f.dimensions if d in variables}
            data_vars = {name: (dims[name], np.dtype(var.dtype), _attrs(var)) for name, var in variables.items()
                         if name not in coords and name not in KEYS}
    except Exception as err:  # any failure to open means the file is damaged or not netCDF
        raise _unreadable(path, err) from None
    try:
        _check(attrs, dims)
    except ValueError as err:
        raise _not_a_unit(path, err) from None
    return Header(Path(path), key, attrs, coords, data_vars)


def scan(path) -> dict[tuple, Header]:
    """The header of every unit stored under `path` (a folder or one file), by (model, dataset, seed, epoch).

    Temporary files of interrupted writes and the `studies/` folder (see fragility.studies) are passed over; any other
    ``*.nc`` file that is not a unit is an error.
    """
    path = checks.path(path, "path")
    if not path.exists():
        raise FragilityError(f"{path} does not exist: pass the results folder `fragility run` wrote (or one unit "
                             "file).")
    files = [path] if path.is_file() else sorted(f for f in path.rglob("*.nc")
                                                 if f.relative_to(path).parts[0] != "studies")
    units: dict[tuple, Header] = {}
    for f in files:
        header = read_header(f)
        _placed(f, header.key, path if path.is_dir() and f.relative_to(path).parts[0] == "responses" else None)
        if header.key in units:
            raise FragilityError(f"{f} and {units[header.key].path} both hold {dict(zip(KEYS, header.key))}: "
                                 "keep one of them.")
        units[header.key] = header
    return units


def _outer(array: np.ndarray, key: tuple) -> np.ndarray:
    """`array` indexed axis by axis (outer indexing): an integer drops its axis, a slice or an index array keeps it."""
    for axis in reversed(range(len(key))):
        array = array[(slice(None),) * axis + (key[axis],)]
    return array


def _read_variable(header: Header, name: str) -> np.ndarray:
    """One variable of a unit file, read now; a FragilityError naming the file if it changed since it was opened."""
    try:
        with h5py.File(header.path, "r") as f:  # the plain HDF5 reader: a unit's data variables need no decoding
            return _values(f[name])
    except Exception as err:
        raise _unreadable(header.path, err) from None


class _Stacked(BackendArray):
    """One variable of every unit as a single array (the unit keys, then the variable's own dims), read on indexing.

    Missing units, and the layers and filters a unit lacks (a model's own layers; a model swept with fewer filters),
    read as `fill`.
    """

    def __init__(self, units: np.ndarray, name: str, dims: tuple, coords: dict, fill, dtype):
        self.units, self.name, self.fill, self.dtype = units, name, fill, np.dtype(dtype)
        self.placed = [(dims.index(d), d, {str(v): i for i, v in enumerate(np.asarray(coords[d]))}) for d in UNIONS
                       if d in dims]
        self.inner = tuple(len(coords[d]) for d in dims)
        self.shape = units.shape + self.inner

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        grid = np.asarray(_outer(self.units, key[:len(KEYS)]), dtype=object)
        inner_key = key[len(KEYS):]
        out = self._blank(grid.shape + _outer(np.empty(self.inner, bool), inner_key).shape)
        for position, header in np.ndenumerate(grid):
            if header is not None and self.name in header.variables:
                out[position] = _outer(self._unit(header), inner_key)
        return out

    def _blank(self, shape: tuple) -> np.ndarray:
        """An array to fill: `fill` where no unit writes, uninitialised when every unit covers it all."""
        return np.empty(shape, self.dtype) if self.fill is None else np.full(shape, self.fill, self.dtype)

    def _unit(self, header: Header) -> np.ndarray:
        """The variable of one unit, with its layers and filters placed among the union of each."""
        values = _read_variable(header, self.name)
        for axis, dim, position in self.placed:
            found = [str(v) for v in header.coords[dim][0]]
            if found == list(position):  # the unit holds the union in its order: nothing to place
                continue
            shape = list(values.shape)
            shape[axis] = self.inner[axis]
            placed = self._blank(tuple(shape))
            where = [slice(None)] * values.ndim
            where[axis] = [position[v] for v in found]
            placed[tuple(where)] = values
            values = placed
        return values


UNIONS = ("layer", "filter")  # dims whose values may differ between units: a model's layers, its filters


def _union(found: list[np.ndarray]) -> np.ndarray:
    """The values every unit shares in their order, else their sorted union."""
    if all(np.array_equal(f, found[0]) for f in found):
        return found[0]
    return np.array(sorted({v for f in found for v in f.tolist()}))


def _common(dicts) -> dict:
    """Entries of `dicts` that no two of them give different values (xarray's "drop_conflicts")."""
    merged, conflicts = {}, set()
    for d in dicts:
        for k, v in d.items():
            if k in merged and not np.array_equal(merged[k], v):
                conflicts.add(k)
            merged.setdefault(k, v)
    return {k: v for k, v in merged.items() if k not in conflicts}


def commits(attrs) -> dict:
    """`{"git_commits": "<a>, <b>, …"}` where the units' attributes `attrs` name more than one git commit (their
    `git_commit` then differs and is dropped), in the order first met; else `{}`. Figures say how many commits the
    combined results come from (fragility.plot.draw.provenance_line), and each unit keeps its own `git_commit`."""
    found = list(dict.fromkeys(str(a["git_commit"]) for a in attrs if "git_commit" in a))
    return {"git_commits": ", ".join(found)} if len(found) > 1 else {}


def open_results(path) -> xr.Dataset:
    """Everything stored under `path`, combined: accuracy(model, dataset, seed, epoch, layer, filter, alpha, input).

    Lazy: only the files' headers are read here; values are read from the unit files when first used, and kept once
    read (`.load()` reads them all). Layers keep the units' order when they all share it, else they are the sorted
    union over models (NaN where a model lacks one; use `layer_order` for a model's forward order). Missing units are
    NaN, as are the filters a unit was not swept with (a profile may sweep a model with fewer), and attributes that
    differ between units are dropped (units from several commits list them in `git_commits`, `commits`): the result
    equals `read_whole`'s. The per-example
    results (`correct`, `base_correct`) stay in the unit files: `fragility.uncertainty` reads them unit by unit.
    Units swept with another metric than top-1 accuracy hold its response under its own name (`metric_variables`),
    and every unit of a folder must hold the same metric.

    Args:
        path: a results folder written by `fragility run` (or one unit file).

    Returns:
        The combined Dataset: accuracy, n_filtered, n_params, threshold, base_accuracy, epsilon, layer_index (and
        test_accuracy, train_accuracy for pipeline units).

    Raises:
        FragilityError: nothing stored, or a damaged, foreign or misplaced unit file (named).

    Example:
        >>> ds = fr.open_results("results/reference")
        >>> ds.accuracy.sel(model="resnet18", layer="fc", filter="h1").mean("seed")
    """
    units = scan(path)
    if not units:
        raise FragilityError(f"no stored responses under {path}: run `fragility run --profile quick` (or another "
                             "profile) first, or pass the folder it wrote to.")
    headers = list(units.values())
    first = headers[0]
    for h in headers:
        if h.attrs.get("metric", "accuracy") != first.attrs.get("metric", "accuracy"):
            raise FragilityError(f"units under {path} hold different metrics ({h.path} holds "
                                 f"{h.attrs.get('metric', 'accuracy')}, {first.path} "
                                 f"{first.attrs.get('metric', 'accuracy')}): keep one profile's results per folder.")
        for dim in ("alpha", "input"):
            if not np.array_equal(h.coords[dim][0], first.coords[dim][0]):
                raise FragilityError(f"units under {path} differ in {dim} ({dict(zip(KEYS, h.key))} has "
                                     f"{h.coords[dim][0].tolist()}): keep one profile's results per folder.")
    keys = [np.array(sorted({h.key[i] for h in headers})) for i in range(len(KEYS))]
    grid = np.full(tuple(map(len, keys)), None, dtype=object)
    for h in headers:
        grid[tuple(int(np.searchsorted(k, v)) for k, v in zip(keys, h.key))] = h
    # layers and filters: the order the units share, else their sorted union (as xarray joins)
    union = {d: _union([h.coords[d][0] for h in headers]) for d in UNIONS}
    coords = {**dict(zip(KEYS, keys)), "layer": union["layer"]}
    coords["filter"] = xr.Variable("filter", union["filter"], first.coords["filter"][1])
    coords.update({d: xr.Variable(d, *first.coords[d]) for d in ("alpha", "input")})
    data_vars = {}
    for name in dict.fromkeys(n for h in headers for n in h.variables if n not in per_image(h.attrs)):
        holders = [h for h in headers if name in h.variables]
        dims, dtype, _ = holders[0].variables[name]
        complete = len(holders) == grid.size and all(
            d not in dims or np.array_equal(h.coords[d][0], union[d]) for h in holders for d in UNIONS)
        if not complete and dtype.kind != "f":
            dtype = np.dtype(np.float64)  # room for NaN
        lazy = _Stacked(grid, name, dims, coords, None if complete else np.nan, dtype)
        data_vars[name] = xr.Variable(KEYS + dims, indexing.MemoryCachedArray(indexing.LazilyIndexedArray(lazy)),
                                      _common(h.variables[name][2] for h in holders))
    ds = xr.Dataset(data_vars, coords, attrs=_common(h.attrs for h in headers) | commits(h.attrs for h in headers))
    return ds.transpose(*DIMS)


def read_whole(path) -> xr.Dataset:
    """What `open_results` returns, the slow plain way: every unit read whole and combined by xarray itself.

    Kept as the reference `open_results` is tested and benchmarked against.
    """
    units = [read_unit(header.path).drop_vars([*per_image(header.attrs), "image"]) for header in scan(path).values()]
    stacked = xr.concat(units, dim="unit", data_vars="all", coords="all", compat="equals", join="outer",
                        fill_value=np.nan, combine_attrs="drop_conflicts")
    stacked.attrs.update(commits(u.attrs for u in units))
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
