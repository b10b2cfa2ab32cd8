"""Networks and data sets of your own, named in a profile by the import path of the function that builds them.

    models:
      mynet: {factory: "mypackage.models:build", kwargs: {width: 2}}
    datasets:
      mydata: {factory: "mypackage.data:load", kwargs: {n: 1000}, classes: 10}

A model's factory is called as `factory(**kwargs)` and returns an `nn.Module` (trained from the initialisation it
gives, drawn from the profile's seed: fragility does not re-initialise it); a data set's factory returns a pair
`(train, test)` of torch Datasets whose items are `(x, label)`: x a float tensor as the network takes it (already
normalised), label an integer in 0..classes − 1. When the profile is read each factory is imported and called once,
checked, and registered in `fragility.models` / `fragility.data` under the profile's name, so the rest of the
pipeline sees ordinary names. The factory and its kwargs enter the training hash of the runs that use them (built-in
models and data sets keep theirs), and every stored unit records the factory and the sha256 of its module's file.

The module must be importable wherever the profile runs: installed, or its folder on PYTHONPATH — on every Dask
worker too (`--workers` starts local workers with this process's import path; the workers of `--scheduler` need it
set where they are started). A task re-registers the profile's factories in the process that runs it (`ensure`).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from . import data, models
from .errors import FragilityError

IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
MODEL_KEYS = ("factory", "kwargs")  # a model entry's own keys besides its grid and checkpoints
DATA_KEYS = ("factory", "kwargs", "classes")
IMPORTABLE = ("make it importable: install its package, or add its folder to PYTHONPATH (on every Dask worker "
              "too)")


@dataclass(frozen=True)
class Source:
    """A model or data set of the profile built by a factory named by import path."""

    kind: str  # "model" or "dataset"
    name: str
    factory: str  # "module:attribute"
    kwargs: dict = field(default_factory=dict)
    info: data.DataInfo | None = None  # a data set's shape, classes and sizes, found when the profile was read

    @property
    def hashed(self) -> dict:
        """What enters the training hash of the runs that use it: the factory, its kwargs (and a data set's classes)."""
        out = {"factory": self.factory, "kwargs": self.kwargs}
        return out if self.info is None else {**out, "classes": self.info.classes}


def resolve(spec, key: str):
    """The callable named by `spec` ("package.module:attribute"), imported; one FragilityError naming `key`."""
    if not isinstance(spec, str) or not IMPORT_PATH.fullmatch(spec):
        raise FragilityError(f"{key} must be an import path 'package.module:function', e.g. "
                             f"'mypackage.models:build'; got {spec!r}.")
    module_name, attr = spec.split(":")
    try:
        found = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise FragilityError(f"{key}: cannot import {module_name!r} ({err}): {IMPORTABLE}.") from None
    except Exception as err:  # the user's module failed while it was imported: reported in one line
        raise FragilityError(f"{key}: importing {module_name!r} failed ({said(err)}).") from None
    for part in attr.split("."):
        if not hasattr(found, part):
            raise FragilityError(f"{key}: {module_name!r} has no attribute {attr!r}: check the name after the colon.")
        found = getattr(found, part)
    if not callable(found):
        raise FragilityError(f"{key}: {spec} is a {type(found).__name__}, not a function or class to call.")
    return found


def said(err: Exception) -> str:
    """An exception in one short line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def module_sha256(spec: str) -> str:
    """The sha256 of the file of the module `spec` names (as imported in this process), or "unknown"."""
    module = sys.modules.get(spec.split(":")[0])
    path = getattr(module, "__file__", None)
    return file_sha256(path) if path and Path(path).is_file() else "unknown"


def _kwargs(value, key: str) -> dict:
    if value is None:
        return {}
    try:
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value) and json.dumps(value) is not None
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise FragilityError(f"{key} must be a mapping of keyword arguments with plain values (numbers, text, "
                             f"lists, mappings); got {value!r}.")
    return json.loads(json.dumps(value))  # plain data, as hashed


def _call(factory, kwargs: dict, key: str, spec: str):
    """factory(**kwargs) under a forked random state (the caller's is left as it was); one FragilityError if it
    fails."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            return factory(**kwargs)
    except Exception as err:  # the user's factory failed: reported in one line, naming the key
        raise FragilityError(f"{key}: {spec}(**{kwargs}) failed ({said(err)}).") from None


# Models.

def _network(factory, source: Source, where: str = "") -> nn.Module:
    """factory(**kwargs), checked to be an nn.Module."""
    model = _call(factory, source.kwargs, f"{where}models.{source.name}", source.factory)
    if not isinstance(model, nn.Module):
        raise FragilityError(f"{where}models.{source.name}: {source.factory} returned {type(model).__name__}, not a "
                             "torch.nn.Module: return the network itself.")
    return model


def _model_builder(source: Source):
    """The builder registered for an imported model: `(channels, classes, **_) -> factory(**kwargs)` on the CPU
    (whatever device is current: the factory may do anything), checked to give an nn.Module."""
    factory = resolve(source.factory, f"models.{source.name}.factory")

    def build(channels, classes, **_):
        return _network(factory, source)

    build.__module__, build.__qualname__ = __name__, "imported_model"
    return build


def model_source(name: str, entry: dict, where: str) -> Source:
    """The Source of a model entry with a `factory`, imported, called once, checked and registered."""
    key = f"{where}models.{name}"
    if name in models.MODELS and ("model", name) not in _registered:
        raise FragilityError(f"{key}: {name!r} is already a model ({models.MODELS[name].__module__}); give yours "
                             "another name.")
    found = Source("model", name, entry["factory"], _kwargs(entry.get("kwargs"), f"{key}.kwargs"))
    _network(resolve(found.factory, f"{key}.factory"), found, where)  # one that fails or gives no network: refused
    register(found)
    return found


# Data sets.

class OwnData(Dataset):
    """A torch Dataset of one's own as fragility reads data sets: items (float tensor, int label), `tensors`."""

    def __init__(self, dataset: Dataset, info: data.DataInfo):
        self.dataset, self.info = dataset, info

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i][:2]
        return torch.as_tensor(x, dtype=torch.float32), int(y)

    def tensors(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (n, …) and int64 labels (n,), all or at `indices`."""
        chosen = range(len(self)) if indices is None else [int(i) for i in indices]
        items = [self[i] for i in chosen]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)


_sets: dict[tuple, tuple[Dataset, Dataset]] = {}  # (factory, kwargs): its (train, test), built once per process


def _pair(source: Source, key: str) -> tuple[Dataset, Dataset]:
    """The (train, test) the data set's factory returns, built once per process and checked."""
    cache = (source.factory, json.dumps(source.kwargs, sort_keys=True))
    if cache not in _sets:
        found = _call(resolve(source.factory, f"{key}.factory"), source.kwargs, key, source.factory)
        if not (isinstance(found, (tuple, list)) and len(found) == 2 and all(isinstance(d, Dataset) for d in found)):
            raise FragilityError(f"{key}: {source.factory} must return a pair (train, test) of torch Datasets; it "
                                 f"returned {type(found).__name__}"
                                 + (f" of {len(found)}" if isinstance(found, (tuple, list)) else "") + ".")
        _sets[cache] = tuple(found)
    return _sets[cache]


def _first(dataset: Dataset, split: str, key: str, classes: int) -> torch.Tensor:
    """The first input of a split, checked: an (x, label) item, x a float tensor, label in 0..classes − 1."""
    try:
        size, item = len(dataset), dataset[0]
        x, y = item[0], item[1]
        label = int(y)
    except Exception as err:  # the user's Dataset does not give (x, label) items: reported in one line
        raise FragilityError(f"{key}: its {split} set must be a non-empty Dataset of (x, label) items; reading its "
                             f"first item failed ({said(err)}).") from None
    if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() >= 1) or size < 1:
        raise FragilityError(f"{key}: the inputs of its {split} set must be float tensors (one example each, e.g. "
                             f"C×L or C×H×W); got {type(x).__name__} {getattr(x, 'dtype', '')}.")
    if not 0 <= label < classes:
        raise FragilityError(f"{key}: its {split} set's first label is {label}, outside 0..{classes - 1} (classes "
                             f"{classes}): set classes to the number of classes.")
    return x


def dataset_source(name: str, entry, where: str) -> Source:
    """The Source of a data set entry with a `factory`, imported, called once, checked and registered."""
    key = f"{where}datasets.{name}"
    if not isinstance(entry, dict) or "factory" not in entry:
        raise FragilityError(f"{key} must be null (a built-in data set) or a mapping with factory (an import path "
                             "'package.module:function' returning (train, test) torch Datasets), classes and "
                             f"optionally kwargs; got {entry!r}.")
    unknown = [str(k) for k in entry if k not in DATA_KEYS]
    if unknown:
        raise FragilityError(f"{key} has unknown key(s) {', '.join(unknown)}: the keys are {', '.join(DATA_KEYS)}.")
    classes = entry.get("classes")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise FragilityError(f"{key}.classes must be the number of classes, a whole number ≥ 2; got {classes!r}.")
    if name in data.DATASETS and ("dataset", name) not in _registered:
        raise FragilityError(f"{key}: {name!r} is already a data set; give yours another name.")
    found = Source("dataset", name, entry["factory"], _kwargs(entry.get("kwargs"), f"{key}.kwargs"))
    train, test = _pair(found, key)
    x, shape = _first(train, "train", key, classes), None
    shape = _first(test, "test", key, classes).shape
    if x.shape != shape:
        raise FragilityError(f"{key}: its train inputs are {tuple(x.shape)} and its test inputs {tuple(shape)}: "
                             "both sets must hold inputs of one shape.")
    info = data.DataInfo(name, x.shape[0], x.shape[-1], classes, (), (), len(train), len(test))
    found = Source("dataset", name, found.factory, found.kwargs, info)
    register(found)
    return found


def check_fit(model: str, dataset: str, depth: int, where: str) -> None:
    """Refuse a model that cannot take a data set's inputs, or does not give one score per class: two test inputs
    of a data set of one's own (zeros shaped like a built-in one's images) through the network in eval mode."""
    info = data.info(dataset)
    own = _registered.get(("dataset", dataset))
    x = (OwnData(_pair(own, f"{where}datasets.{dataset}")[1], info).tensors([0, 1 % info.n_test])[0] if own else
         torch.zeros(2, info.channels, info.size, info.size))
    with torch.random.fork_rng(devices=[]):
        net = models.build(model, info.channels, info.classes, depth=depth).eval()
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as err:  # the network's own complaint about the inputs, in one line
        raise FragilityError(f"{where}models.{model} cannot take the inputs of {dataset} (shape "
                             f"{tuple(x.shape[1:])}): {said(err)}.") from None
    if not (isinstance(out, torch.Tensor) and tuple(out.shape) == (len(x), info.classes)):
        found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FragilityError(f"{where}models.{model} gives {found} for {len(x)} inputs of {dataset}: it must give "
                             f"class scores of shape (batch, {info.classes}), one per class of {dataset}.")


# Registration.

_registered: dict[tuple[str, str], Source] = {}  # (kind, name) this process registered from profiles: the Source


def register(source: Source) -> None:
    """Register `source` under its name in fragility.models or fragility.data (again if the name stood for another
    factory or other kwargs: the latest profile read, or the task's own profile, wins)."""
    if _registered.get((source.kind, source.name)) == source:
        return
    if source.kind == "model":
        models.register_model(source.name, init=False)(_model_builder(source))
    else:
        def loader(split, root, download, seed, source=source):
            train, test = _pair(source, f"datasets.{source.name}")
            return OwnData(train if split == "train" else test, source.info)

        loader.__module__, loader.__qualname__ = __name__, "imported_dataset"
        data.register_dataset(source.name, source.info)(loader)
    _registered[source.kind, source.name] = source


def ensure(profile) -> None:
    """Register the profile's imported models and data sets in this process (a Dask worker's, say), importing
    their modules if it has not: what a task runs first."""
    for source in getattr(profile, "sources", ()):
        register(source)


def provenance(profile, model: str, dataset: str) -> dict[str, str]:
    """The unit attributes that say where an imported model or data set came from: its factory and the sha256 of
    its module's file, as imported in this process (nothing for built-in ones)."""
    out = {}
    for source in getattr(profile, "sources", ()):
        if (source.kind, source.name) in (("model", model), ("dataset", dataset)):
            out[f"{source.kind}_factory"] = source.factory
            out[f"{source.kind}_factory_sha256"] = module_sha256(source.factory)
    return out


def parse(values: dict, where: str) -> tuple[dict, tuple[Source, ...], dict]:
    """A profile's values with its imported models and data sets registered and reduced to names: (values, the
    Sources, each model's raw `checkpoints`). `where` prefixes messages (e.g. "mine.yaml: ")."""
    values, sources, checkpoints = dict(values), [], {}
    if isinstance(values.get("models"), dict):
        reduced = {}
        for name, entry in values["models"].items():
            if not isinstance(entry, dict):
                reduced[name] = entry
                continue
            if "kwargs" in entry and "factory" not in entry:
                raise FragilityError(f"{where}models.{name}.kwargs is given without a factory: kwargs are the keyword "
                                     "arguments of a model's factory.")
            if "factory" in entry:
                if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
                    raise FragilityError(f"{where}models: a model's name must be letters, digits, '.', '-' or '_'; "
                                         f"got {name!r}.")
                sources.append(model_source(name, entry, where))
            if "checkpoints" in entry:
                checkpoints[name] = entry["checkpoints"]
            reduced[name] = {k: v for k, v in entry.items() if k not in (*MODEL_KEYS, "checkpoints")} or None
        values["models"] = reduced
    if isinstance(values.get("datasets"), dict):
        if not values["datasets"]:
            raise FragilityError(f"{where}datasets must name at least one data set.")
        for name, entry in values["datasets"].items():
            if entry is not None:
                if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
                    raise FragilityError(f"{where}datasets: a data set's name must be letters, digits, '.', '-' or "
                                         f"'_'; got {name!r}.")
                sources.append(dataset_source(name, entry, where))
        values["datasets"] = list(values["datasets"])
    for kind, key in (("model", "models"), ("dataset", "datasets")):
        named = values.get(key) if isinstance(values.get(key), (list, dict)) else ()
        own = {s.name for s in sources if s.kind == kind}
        borrowed = [n for n in named if isinstance(n, str) and (kind, n) in _registered and n not in own]
        if borrowed:  # registered by another profile read in this process: its factory is not this profile's
            raise FragilityError(f"{where}{key}.{borrowed[0]} is a {kind} of one's own that another profile "
                                 f"registered: give its factory in this profile ({key}: {{{borrowed[0]}: {{factory: "
                                 "…}}}).")
    return values, tuple(sources), checkpoints
