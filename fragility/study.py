"""What every related study shares: the Study record the registry holds, its settings, the context a unit runs in,
and the study store (one netCDF file per unit, written atomically, checked on reading).

A study unit is keyed (label, dataset, seed): `label` is the network it runs on (a model of the profile, or a
variant such as a depth). Its file, results/studies/<study>/<label>__<dataset>__seed<seed>.nc, records the study
that wrote it, its key, the profile, the study's settings and where and how long it was computed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch
import xarray as xr
from torch import nn

from . import checks, data, models, store, training
from .errors import FragilityError
from .models import layout
from .preserve import preserved
from .provenance import device_description, provenance

SCHEMA = "fragility-study/1"
KEY = ("model", "dataset", "seed")


@dataclass(frozen=True)
class Setting:
    """A study setting: its default and the rule its values obey (None is always the default's "choose for me")."""

    default: object
    rule: checks.Rule


@dataclass(frozen=True)
class Unit:
    """One study unit: its key, the network it runs on and the training runs (model, dataset, seed) whose
    checkpoints and stored responses it reads."""

    key: tuple
    model: str
    needs: tuple = ()


@dataclass(frozen=True)
class Study:
    """One related study, registered once in `fragility.studies.REGISTRY`."""

    name: str
    title: str
    settings: dict[str, Setting]
    units: Callable  # (profile, settings) -> list[Unit]
    run: Callable  # (Context) -> xr.Dataset
    variables: tuple[str, ...]  # the variables every unit file holds
    parameters: tuple[str, ...]  # the selections its figure and summary take
    figure: Callable
    summary: Callable
    claims: tuple = ()  # the `fragility.verdicts.Claim`s the study decides
    validate: Callable = lambda settings, profile: None  # checks against the profile
    extra_choices: Callable = lambda ds, model, dataset: {}  # selections beyond model, dataset, seed
    needs_responses: bool = False  # its figure and summary also read the sweep results
    steps: Callable = lambda ctx: ()  # (Context) -> the unit's `fragility.steps.Step`s, each a task of its own

    def check(self, raw, profile, source: str) -> dict:
        """The study's settings with defaults filled in, every value checked; else one FragilityError."""
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise FragilityError(f"{source}: studies.{self.name} must be a mapping of its settings "
                                 f"({', '.join(self.settings)}), or empty.")
        unknown = [k for k in raw if k not in self.settings]
        if unknown:
            raise FragilityError(f"{source}: study {self.name} has unknown setting(s) {', '.join(map(str, unknown))}:"
                                 f" its settings are {', '.join(self.settings)}.")
        out = {k: raw.get(k, s.default) for k, s in self.settings.items()}
        for key, value in out.items():
            if value is not None:
                checks.require(value, self.settings[key].rule, f"{source}: studies.{self.name}.{key}")
        try:
            self.validate(out, profile)
        except FragilityError as err:
            raise FragilityError(f"{source}: {err}") from None
        return out

    def choices(self, ds: xr.Dataset, model=None, dataset=None) -> dict[str, list]:
        """Models, datasets and seeds stored, and the study's own selections for them."""
        found = pairs(ds)
        if not found:
            raise FragilityError(f"the {self.name} study holds no results.")
        models = list(dict.fromkeys(m for m, _ in found))
        model = model if model in models else models[0]
        datasets = [d for m, d in found if m == model]
        dataset = dataset if dataset in datasets else datasets[0]
        return {"model": models, "dataset": datasets, "seed": seeds(ds, model, dataset),
                **self.extra_choices(ds, model, dataset)}


REGISTRY: dict[str, Study] = {}  # filled by each study module's `register`


def register(found: Study) -> Study:
    """Add a study to `REGISTRY`; a name registered twice is refused."""
    if found.name in REGISTRY:
        raise FragilityError(f"study {found.name!r} is registered twice.")
    REGISTRY[found.name] = found
    return found


def study(name) -> Study:
    """The registered study `name`, or one FragilityError listing them."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise FragilityError(f"unknown study {name!r}: choose from {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def open_study(results, name: str) -> xr.Dataset:
    """Every stored unit of study `name` under `results`, combined along model, dataset and seed.

    Args:
        results: a results folder written by `fragility run`.
        name: a registered study (see `fragility.studies.STUDIES`).

    Returns:
        The study's variables with dims model, dataset, seed (NaN where a unit is missing) and its own; the
        attribute `study` names it.

    Raises:
        FragilityError: an unknown study, none stored, a damaged or foreign unit file, or units computed with
            different settings (named).
    """
    found = study(name)
    files = sorted((checks.path(results, "results") / "studies" / name).glob("*.nc"))
    if not files:
        raise FragilityError(f"no stored {name} study under {results}: run `fragility run --profile …` with that "
                             f"profile (it runs the studies the profile lists; add `studies: {{{name}: {{}}}}` to "
                             "a profile that lacks it).")
    ds = combine(read_all(files, found))
    ds.attrs["study"] = name
    return ds


def find_study(results, name: str) -> xr.Dataset | None:
    """The stored units of study `name` under `results`, combined as `open_study` combines them — or None when the
    folder holds no unit of that study (the claims it decides are then untestable).

    Raises:
        FragilityError: an unknown study or a results path that is not one; a unit file that is damaged, foreign
            (another study's, or not a study unit), misnamed, or computed with other settings than the others —
            each named, with how to recompute it. Never for a study that is simply not stored.
    """
    folder = checks.path(results, "results") / "studies" / study(name).name
    return open_study(results, name) if folder.is_dir() and any(folder.glob("*.nc")) else None


def seeds(ds: xr.Dataset, model, dataset) -> list[int]:
    """The seeds with a stored unit of (model, dataset)."""
    have = ds["stored"].sel(model=model, dataset=dataset).fillna(False).astype(bool)
    return [int(s) for s, ok in zip(np.atleast_1d(have["seed"].values), np.atleast_1d(have.values)) if ok]


def pairs(ds: xr.Dataset) -> list[tuple[str, str]]:
    """The (model, dataset) pairs with a stored unit."""
    return [(str(m), str(d)) for m in np.atleast_1d(ds["model"].values) for d in np.atleast_1d(ds["dataset"].values)
            if seeds(ds, m, d)]


def models_rule() -> checks.Rule:
    return checks.items(checks.one_of(models.NAMES),
                       what=f"a list of distinct models from {', '.join(models.NAMES)}")


def check_layers(value, setting: str, profile, models) -> None:
    """Refuse a study's layer setting (a name or a list of names; None: the study's choice) naming anything but a
    Conv2d or Linear layer of each of `models`: known when the profile is read, not after training."""
    if value is None:
        return
    for model in models:
        found = [n for n, kind in layout(model, depth=profile.depth).items()
                 if issubclass(kind, (nn.Conv2d, nn.Linear))]
        unknown = [n for n in ([value] if isinstance(value, str) else value) if n not in found]
        if unknown:
            what = "is not a Conv2d or Linear layer" if len(unknown) == 1 else "are not Conv2d or Linear layers"
            raise FragilityError(f"studies.{setting}: {', '.join(map(repr, unknown))} {what} of {model}: choose from "
                                 f"{', '.join(found[:10])}{', …' if len(found) > 10 else ''}.")


def study_path(results, study: str, label: str, dataset: str, seed: int) -> Path:
    """results/studies/<study>/<label>__<dataset>__seed<seed>.nc (names that would leave `results` refused)"""
    return (checks.path(results, "results") / "studies" / checks.part(study, "study")
            / f"{checks.part(label, 'study label')}__{checks.part(dataset, 'dataset')}__seed{int(seed)}.nc")


def settings_hash(profile, settings: dict, unit: Unit) -> str:
    """Hash of what determines a study unit's results: its study settings, the profile's sweep settings and the
    training settings of the runs it reads."""
    state = {"settings": settings, "sweep": profile.sweep_settings,
             "runs": {"/".join(map(str, r)): profile.config_hash(*r) for r in unit.needs},
             "threads": profile.threads}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:12]


def write(ds: xr.Dataset, path: Path, study: str, unit: Unit, profile, settings: dict, seconds: float,
          device) -> None:
    """Store one unit: its key as coordinates, a `stored` flag, the study, profile, settings (and their hash) and
    provenance."""
    label, dataset, seed = unit.key
    ds = ds.assign_coords(model=label, dataset=dataset, seed=np.int64(seed))
    ds["stored"] = ((), True)
    ds.attrs.update({f"study_{k}": str(v) for k, v in settings.items()})
    ds.attrs.update(provenance(), schema=SCHEMA, study=study, profile=profile.name, network=unit.model,
                    classes=data.info(dataset).classes, seconds=round(seconds, 2), device=device_description(device),
                    settings_hash=settings_hash(profile, settings, unit))
    store.write_netcdf(ds, path)


def read(path: Path, study) -> xr.Dataset:
    """One stored unit, checked: the schema, the study that wrote it, its variables and that its key matches its
    file name; else one FragilityError naming the file."""
    try:
        ds = store.read_netcdf(path)
    except FragilityError:
        raise FragilityError(f"{path} is not a {study.name} study unit (it is not a readable netCDF file): "
                             f"{store.MOVE}.") from None
    found = re.fullmatch(r"(.+)__(.+)__seed(\d+)", path.stem)
    problem = (f"its schema is {ds.attrs.get('schema')!r}, not {SCHEMA!r}" if ds.attrs.get("schema") != SCHEMA else
               f"it was written by the {ds.attrs.get('study')!r} study" if ds.attrs.get("study") != study.name else
               f"it lacks {', '.join(v for v in study.variables if v not in ds)}"
               if any(v not in ds for v in study.variables) else
               "it lacks its key (model, dataset, seed)" if any(k not in ds.coords for k in KEY) else None)
    if problem is None and (found is None or (found[1], found[2], int(found[3])) != tuple(
            ds[k].item() for k in KEY)):
        problem = f"its key {tuple(ds[k].item() for k in KEY)} does not match its file name"
    if problem:
        raise FragilityError(f"{path} is not a {study.name} study unit ({problem}): {store.MOVE}.")
    return ds


def settings_of(unit: xr.Dataset) -> dict:
    """What a stored unit records of the settings it shares with the study's other units: the profile that wrote
    it and the study's settings (`settings_hash` also covers the unit's own training runs, so it differs by unit)."""
    return {k: str(v) for k, v in unit.attrs.items() if k.startswith("study_") or k == "profile"}


def read_all(paths: list[Path], study) -> list[xr.Dataset]:
    """The stored units at `paths`, each checked by `read`, and checked to share their profile and study settings
    (`settings_of`): units of different settings are never combined; else one FragilityError naming two files."""
    units = [read(path, study) for path in paths]
    for path, unit in zip(paths, units):
        if settings_of(unit) != settings_of(units[0]):
            differ = sorted(k for k in settings_of(unit).keys() | settings_of(units[0]).keys()
                            if settings_of(unit).get(k) != settings_of(units[0]).get(k))
            raise FragilityError(f"{paths[0]} and {path} hold {study.name} study units computed with different "
                                 f"settings ({', '.join(differ)}): they cannot be combined; move the stale ones out of "
                                 "the results folder and run `fragility run` again to recompute them.")
    return units


def combine(units: list[xr.Dataset]) -> xr.Dataset:
    """Study units combined along model, dataset and seed (NaN where a unit or a coordinate value is missing)."""
    if all("layer" in u.dims for u in units):  # keep every unit's forward order in the union of their layers
        order: list = []
        for names in ([str(n) for n in u["layer"].values] for u in units):
            for k, n in enumerate(names):
                if n not in order:
                    before = [m for m in names[:k] if m in order]
                    after = [m for m in names[k + 1:] if m in order]
                    order.insert(order.index(before[-1]) + 1 if before else order.index(after[0]) if after
                                 else len(order), n)
        units = [u.reindex(layer=order) for u in units]
    stacked = xr.concat(units, dim="unit", data_vars="all", coords="all", join="outer", fill_value=np.nan,
                        combine_attrs="drop_conflicts")
    stacked.attrs.update(store.commits(u.attrs for u in units))
    return stacked.set_index(unit=list(KEY)).unstack("unit")


@dataclass
class Context:
    """What one study unit runs with: the profile, results folder, the unit, its settings, data and device."""

    study: str
    profile: object
    results: Path
    unit: Unit
    settings: dict
    device: object
    progress: bool
    data_root: Path
    cache: dict = field(default_factory=dict)
    elsewhere: Path | None = None  # where `folder` lies instead of `results` (a verification's scratch folder)

    @property
    def dataset(self) -> str:
        return self.unit.key[1]

    @property
    def seed(self) -> int:
        return self.unit.key[2]

    def sets(self, dataset: str | None = None):
        """(train set, test set) of the unit's dataset, loaded once per run."""
        dataset = dataset or self.dataset
        if dataset not in self.cache:
            self.cache[dataset] = (data.load(dataset, "train", self.data_root), data.load(dataset, "test",
                                                                                        self.data_root))
        return self.cache[dataset]

    @functools.cached_property
    def test(self):
        """(x, y): the test subset every sweep of the profile uses."""
        return data.test_subset(self.sets()[1], self.profile.n_test, seed=0)

    @functools.cached_property
    def image(self):
        """The indices of the test subset's examples in the test set."""
        return data.subset_indices(len(self.sets()[1]), self.profile.n_test, seed=0).numpy()

    def epochs(self, model: str | None = None) -> tuple[int, ...]:
        return self.profile.grid(model or self.unit.model).epochs

    def network(self, epoch: int | None = None, model: str | None = None):
        """The profile's checkpoint of this unit's run (the last epoch by default), in eval mode."""
        model = model or self.unit.model
        path = training.checkpoint_path(self.results, model, self.dataset, self.seed, epoch or self.epochs(model)[-1])
        return training.load_checkpoint(path, self.device)[0]

    def responses(self, epoch: int | None = None, model: str | None = None) -> xr.Dataset:
        """The stored sweep of this unit's run at `epoch` (the last by default)."""
        model = model or self.unit.model
        return store.read_unit(store.unit_path(self.results, model, self.dataset, self.seed,
                                               epoch or self.epochs(model)[-1]))

    def folder(self, *parts) -> Path:
        """results/studies/<study>/runs/<label>__<dataset>__seed<seed>/…: where the unit keeps its own trainings and
        the outputs of its steps (fragility.steps); under `elsewhere` instead of `results` when it is set."""
        label, dataset, seed = self.unit.key
        return (self.elsewhere or self.results).joinpath("studies", self.study, "runs",
                                                         f"{label}__{dataset}__seed{seed}", *parts)


VERDICTS = ("holds", "differs", "untestable")


def claim_row(id: str, claim: str, rule: str, evidence: str, verdict: str, chapter: str, needs: str = "",
              code: str = "") -> dict:
    """One row of `fragility.claims`: a verdict of `VERDICTS`; `needs` says what would test an untestable one and
    `code` gives the verdict under the authors' code conventions where it could differ."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
    if verdict == "untestable" and needs:
        evidence = f"{evidence}; needs {needs}" if evidence else f"needs {needs}"
    return {"id": id, "claim": claim, "rule": rule, "evidence": evidence, "verdict": verdict, "code_reading": code,
            "chapter": chapter}


def pair_claims(ds, verdicts, texts: dict, rules: dict, chapter: str) -> list[dict]:
    """The rows of claims that `verdicts(ds, model, dataset) -> {id: (verdict, evidence)}` decides per (model,
    dataset) of the study: a claim holds when it holds for every pair."""
    found = [verdicts(ds, m, d) for m, d in pairs(ds)]
    return [claim_row(k, texts[k], rules[k], "; ".join(f[k][1] for f in found),
                      "holds" if found and all(f[k][0] == "holds" for f in found) else "differs", chapter)
            for k in texts]


def classified(model, x, y, batch_size: int = 500) -> np.ndarray:
    """Which examples the model (in its current mode) classifies correctly, booleans (n,)."""
    with torch.no_grad():
        return torch.cat([model(xb).argmax(1) == yb for xb, yb in zip(x.split(batch_size), y.split(batch_size))]
                         ).cpu().numpy()


def timed(fn, *args, **kwargs):
    """(fn(*args, **kwargs), seconds it took)."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def consumer(model, name: str, sample, types) -> str | None:
    """The name of the first module of `types` that takes module `name`'s output as its input, or None."""
    modules = dict(model.named_modules())
    if name not in modules:
        raise FragilityError(f"the model has no module {name!r}.")
    names = {m: n for n, m in modules.items() if isinstance(m, types)}
    out, found = [], []
    hooks = [modules[name].register_forward_hook(lambda m, i, o: out.append((o, o._version)))]
    hooks += [m.register_forward_pre_hook(lambda m, i: found.extend(
        [names[m]] if out and i[0] is out[-1][0] and i[0]._version == out[-1][1] else [])) for m in names]
    try:
        with preserved(model), torch.no_grad():
            model.eval()(sample[:2])
    finally:
        for h in hooks:
            h.remove()
    return found[0] if found else None
