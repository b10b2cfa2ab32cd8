"""Experiment profiles: what to train and sweep, read from a shipped name or a YAML file and checked in full.

A profile names models, datasets, training seeds and checkpoint epochs, the sweep's settings (A, filters, attack,
ε policy, test-set size) and optional related studies. `seeds`, `epochs` and `every` apply to every model; `models`
may instead be a mapping that gives a model its own, e.g. fewer seeds for a slow network::

    models:
      resnet18: {}
      resnet50: {seeds: [0], epochs: [4, 8, 12], every: 4}

A model or a data set of one's own is named by the import path of its factory (`fragility.imports`), a network
trained elsewhere by its files (`checkpoints`, `fragility.adoption`), and the layers to stress by type and name
pattern (`layers`, `fragility.layers`)::

    models:
      mynet: {factory: "mypackage.models:build", kwargs: {width: 2}, checkpoints: {10: mynet-10.pt}}
    datasets:
      mydata: {factory: "mypackage.data:load", classes: 10}
    layers: {types: [Conv1d, Linear], exclude: "*.downsample.*"}

The response is top-1 accuracy unless `metric` names another (`fragility.metrics`): ``metric: {name: topk, k: 5}``,
or a function of one's own, ``metric: {function: "mypackage.metrics:nll", name: nll, higher_is_better: false}``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path

import yaml

from .. import adoption, checks, data, imports, metrics, models, studies, training
from ..attacks import ATTACKS
from ..errors import FragilityError
from ..layers import Layers, as_layers, check_models
from ..plan import CRAFTED
from .keys import (CHECKS, EPSILON_POLICIES, GRID, LATER, MIN_SEARCHED, OPTIONAL, OWN, SEARCH_TOL,  # noqa: F401
                   THREADS)



@dataclass(frozen=True)
class Grid:
    """The training seeds and checkpoint epochs of one model, its checkpoint interval and, where it has its own,
    the filters its sweeps apply."""

    seeds: tuple[int, ...]
    epochs: tuple[int, ...]
    every: int
    filters: tuple[str, ...] | None = None  # the stresses its sweeps apply (None: the profile's)
    memory_format: str | None = None  # the layout of its sweeps' convolutions (None: the profile's)


@dataclass(frozen=True)
class Profile:
    """What an experiment trains and sweeps (see the shipped profiles in fragility/profiles/)."""

    name: str
    description: str
    models: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: tuple[int, ...]
    every: int
    n_test: int | None
    A: int
    filters: tuple[str, ...]
    attack: str  # when the perturbation is crafted: "fixed" or "adaptive" (the sweep's `attack` argument)
    epsilon: str | float
    ratio: float
    batch_size: int
    train_batch_size: int
    lr: float
    depth: int = 2
    studies: dict | None = None
    grids: tuple[tuple[str, Grid], ...] = ()
    batchnorm: str = "running"
    threads: int = THREADS
    method: tuple = (("name", "fgsm"),)  # the attack's name and the parameters that differ from its defaults
    weights: tuple[str, ...] = ()  # models whose checkpoints' weights are kept under weights/ (in no hash)
    layers: Layers | None = None  # the layers to stress (None: every Conv2d and Linear; in the sweep hash if given)
    sources: tuple = ()  # the models and data sets built by factories of one's own (fragility.imports.Source)
    adopted: tuple = ()  # (model, its networks trained elsewhere: fragility.adoption.Adopted …) per such model
    metric: tuple = (("name", metrics.DEFAULT),)  # the metric's settings (fragility.metrics; in the hash if not it)
    memory_format: str = "channels_last"  # the layout of the sweeps' convolutions (in the hash if not it)

    def grid(self, model: str) -> Grid:
        """The seeds, epochs and checkpoint interval of `model` (the profile's own unless the model has its own)."""
        return dict(self.grids).get(model, Grid(self.seeds, self.epochs, self.every))

    def filters_of(self, model: str) -> tuple[str, ...]:
        """The filters (internal stresses) the sweeps of `model` apply: its own where the profile gives them, else
        the profile's."""
        return self.grid(model).filters or self.filters

    def memory_format_of(self, model: str) -> str:
        """The layout of the convolutions of `model`'s sweeps: its own where the profile gives it, else the
        profile's."""
        return self.grid(model).memory_format or self.memory_format

    def units(self):
        """Every (model, dataset, seed, epoch) of the profile."""
        for model in self.models:
            g = self.grid(model)
            yield from itertools.product([model], self.datasets, g.seeds, g.epochs)

    def runs(self):
        """Every (model, dataset, seed) training run of the profile."""
        return sorted({u[:3] for u in self.units()}, key=lambda r: (self.datasets.index(r[1]),
                                                                   self.models.index(r[0]), r[2]))

    def train_config(self, model: str, dataset: str, seed: int) -> training.TrainConfig:
        meta, g = data.info(dataset), self.grid(model)
        return training.TrainConfig(model, dataset, seed, epochs=g.epochs[-1], every=g.every,
                                    batch_size=self.train_batch_size, lr=self.lr, channels=meta.channels,
                                    classes=meta.classes, depth=self.depth, threads=self.threads,
                                    origin=self.origin(model, dataset))

    def origin(self, model: str, dataset: str) -> dict | None:
        """Where a run's model, data and weights come from when they are not built in — the factories and kwargs of
        one's own, the sha256 of networks trained elsewhere — as its training hash holds them (None: built in)."""
        found = {s.kind: s.hashed for s in self.sources if (s.kind, s.name) in (("model", model), ("dataset", dataset))}
        if model in dict(self.adopted):
            found["checkpoints"] = {str(a.epoch): a.sha256 for a in dict(self.adopted)[model]}
        return found or None

    def adversary(self):
        """The profile's attack (its ε is the sweep's, chosen by the profile's `epsilon`)."""
        params = dict(self.method)
        return ATTACKS[params.pop("name")](**params)

    def measure(self) -> metrics.Metric:
        """The profile's metric, the sweep's response (top-1 accuracy by default; the ε search's stays top-1)."""
        return metrics.from_settings(dict(self.metric))

    def config_hash(self, model: str, dataset: str, seed: int) -> str:
        return training.config_hash(self.train_config(model, dataset, seed))

    @property
    def sweep_settings(self) -> dict:
        """The settings that determine a unit's responses besides its checkpoint (those added later only when they
        differ from their defaults, so that results stored before them stay valid)."""
        settings = {k: getattr(self, k) for k in ("A", "filters", "attack", "epsilon", "ratio", "n_test")}
        if dict(self.method) != {"name": "fgsm"}:
            settings["method"] = dict(self.method)
        settings.update({k: getattr(self, k) for k, default in LATER.items() if getattr(self, k) != default})
        if self.layers is not None:  # given: which layers a unit holds
            settings["layers"] = self.layers.settings
        if dict(self.metric) != {"name": metrics.DEFAULT}:  # what the units hold, when not top-1 accuracy
            settings["metric"] = dict(self.metric)
        return settings

    @property
    def sweep_hash(self) -> str:
        """Hash of `sweep_settings`."""
        return _hash(self.sweep_settings)

    def sweep_hash_of(self, model: str, filters=None) -> str:
        """The sweep hash a unit of `model` records: `sweep_hash`, with the model's own filters where it has them
        (or `filters`, for a unit that sweeps some of them only)."""
        settings = {**self.sweep_settings, "filters": tuple(filters or self.filters_of(model))}
        settings.pop("memory_format", None)
        if self.memory_format_of(model) != LATER["memory_format"]:  # the layout of the results shipped before it
            settings["memory_format"] = self.memory_format_of(model)
        return _hash(settings)


def _hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def shipped() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.name[:-5] for p in resources.files("fragility").joinpath("profiles").iterdir()
                  if p.name.endswith(".yaml"))


def load_profile(spec) -> Profile:
    """A shipped profile by name (`quick`) or a profile YAML file by path, validated."""
    if not isinstance(spec, (str, Path)):
        raise FragilityError(f"profile must be a shipped profile name or a YAML file path; got {spec!r}.")
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise FragilityError(f"no profile file {path}: check the path, or name a shipped profile "
                                 f"({', '.join(shipped())}).")
        try:
            text, source, folder = path.read_text(encoding="utf-8"), str(path), path.resolve().parent
        except UnicodeDecodeError:
            raise FragilityError(f"{path} is not a UTF-8 text file: save the profile as UTF-8 YAML.") from None
        except OSError as err:
            raise FragilityError(f"{path} cannot be read ({err.strerror}): check its permissions.") from None
    elif spec in shipped():
        text, source = resources.files("fragility").joinpath("profiles", f"{spec}.yaml").read_text(), f"profile {spec}"
        folder = None
    else:
        raise FragilityError(f"unknown profile {spec!r}: the shipped profiles are {', '.join(shipped())}; "
                             "or pass the path of a profile YAML file (copy a shipped one to start).")
    try:
        raw = yaml.load(text, Loader=_UniqueKeys)
    except yaml.YAMLError as err:
        raise FragilityError(f"{source} is not valid YAML: {' '.join(str(err).split())}") from None
    return parse_profile(raw, source, folder)


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # a mapping or list as a key: the base constructor refuses it as unhashable
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (line {key_node.start_mark.line + 1}): keep one",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_grid(values: dict, where: str) -> None:
    """Refuse checkpoint epochs that training does not save: multiples of `every` and the last one only."""
    off = [e for e in values["epochs"] if e % values["every"] and e != values["epochs"][-1]]
    if off:
        raise FragilityError(f"{where}epochs {off} are not checkpoints: training saves every {values['every']} "
                             "epochs and at the last one; use multiples of `every` or change `every`.")


def _grids(values: dict, source: str, checkpoints: dict, folder) -> tuple[tuple, tuple]:
    """The per-model grids of a `models` mapping, each key checked like the profile's own, and the networks trained
    elsewhere of the models with `checkpoints` (whose epochs they give)."""
    if not isinstance(values["models"], dict):
        return (), ()
    out, adopted = [], []
    for model, own in values["models"].items():
        own = own or {}
        unknown = [k for k in own if k not in OWN]
        if unknown:
            raise FragilityError(f"{source}: models.{model} has unknown key(s) {', '.join(map(str, unknown))}: a "
                                 f"model may set its own {', '.join(OWN)}, factory, kwargs and checkpoints.")
        merged = {k: own.get(k, values[k]) for k in OWN}
        for key in OWN:
            ok, what = CHECKS[key]
            if not ok(merged[key]):
                raise FragilityError(f"{source}: models.{model}.{key} must be {what}; got {merged[key]!r}.")
        if model in checkpoints:
            found = adoption.parse(model, checkpoints[model], tuple(merged["seeds"]), tuple(merged["epochs"]),
                                   tuple(values["datasets"]), values["depth"], f"{source}: ", folder)
            merged["epochs"] = [a.epoch for a in found]
            adopted.append((model, found))
        else:
            _check_grid(merged, f"{source}: models.{model}: ")
        filters = tuple(merged["filters"]) if tuple(merged["filters"]) != tuple(values["filters"]) else None
        layout = merged["memory_format"] if merged["memory_format"] != values["memory_format"] else None
        out.append((model, Grid(tuple(merged["seeds"]), tuple(merged["epochs"]), merged["every"], filters, layout)))
    return tuple(out), tuple(adopted)


def parse_profile(raw, source: str = "profile", folder=None) -> Profile:
    """A Profile from a mapping of its keys, or one FragilityError naming the key at fault and the fix. Factories of
    one's own are imported, called and registered on the way (`fragility.imports`), networks trained elsewhere read
    and hashed (`fragility.adoption`, their relative paths relative to `folder`, default the current folder)."""
    if not isinstance(raw, dict):
        raise FragilityError(f"{source} must be a mapping of keys ({', '.join(CHECKS)}).")
    unknown = [k for k in raw if k not in CHECKS]
    if unknown:
        raise FragilityError(f"{source}: unknown key(s) {', '.join(map(str, unknown))}: the keys are "
                             f"{', '.join(CHECKS)}.")
    missing = [k for k in CHECKS if k not in raw and k not in OPTIONAL]
    if missing:
        raise FragilityError(f"{source}: missing key(s) {', '.join(missing)}: add them (copy a shipped profile, "
                             f"e.g. `quick`, for an example).")
    values, sources, checkpoints = imports.parse({**OPTIONAL, **raw}, f"{source}: ")
    for key, (ok, what) in CHECKS.items():
        if not ok(values[key]):
            raise FragilityError(f"{source}: {key} must be {what}; got {values[key]!r}{_as_text(values[key])}.")
    values["attack"], values["method"] = _attack(values["attack"], values.pop("crafted"), source)
    values["metric"] = metrics.profile_setting(values["metric"], f"{source}: metric")
    _check_grid(values, f"{source}: ")
    small = [d for d in values["datasets"] if values["n_test"] is not None and values["n_test"] > data.info(d).n_test]
    if small:
        raise FragilityError(f"{source}: n_test {values['n_test']} is larger than the test set of "
                             + ", ".join(f"{d} ({data.info(d).n_test} images)" for d in small)
                             + ": lower it, or use null for the whole test set.")
    searched = values["epsilon"] in EPSILON_POLICIES or bool({"depth", "selective"} & set(values["studies"] or {}))
    if searched and values["n_test"] is not None and values["n_test"] < MIN_SEARCHED:
        raise FragilityError(f"{source}: n_test {values['n_test']} is too small to search ε: the search matches the "
                             f"target ratio ± {SEARCH_TOL} of the clean accuracy, which takes at least {MIN_SEARCHED} "
                             "correctly classified test images; raise n_test (or null for the whole test set), or "
                             "give epsilon a number (the depth and selective studies search ε whatever it is).")
    normalized = any("BatchNorm" in kind.__name__ for m in values["models"]
                     for kind in models.layout(m, depth=values["depth"]).values())
    if (values["batchnorm"] == "batch" and normalized and values["n_test"] is not None
            and values["n_test"] % values["batch_size"] == 1):
        raise FragilityError(f"{source}: batchnorm: batch normalizes each batch by its own statistics, and n_test "
                             f"{values['n_test']} in batches of batch_size {values['batch_size']} leaves a last batch "
                             "of one image: change n_test or batch_size.")
    foreign = [m for m in values["weights"] if m not in values["models"]]
    if foreign:
        raise FragilityError(f"{source}: weights names {', '.join(foreign)}, not a model of the profile: choose from "
                             f"{', '.join(values['models'])}.")
    values["grids"], values["adopted"] = _grids(values, source, checkpoints, None if folder is None else Path(folder))
    values["sources"], values["layers"] = sources, _layers(values, source)
    for model in values["models"]:
        for dataset in values["datasets"]:
            if any(s.name in (model, dataset) for s in sources):
                imports.check_fit(model, dataset, values["depth"], f"{source}: ")
    lists = {f.name: tuple(values[f.name]) for f in fields(Profile) if isinstance(values[f.name], (list, dict))
             and f.name != "studies"}
    profile = Profile(**{**values, **lists, "studies": {}})
    profile = replace(profile, studies=studies.check(values["studies"], profile, source))
    continued = (profile.studies["selective"]["models"] or profile.models) if "selective" in profile.studies else ()
    elsewhere = set(dict(profile.adopted)) & set(continued)
    if elsewhere:
        raise FragilityError(f"{source}: studies.selective continues training {', '.join(sorted(elsewhere))}, whose "
                             "networks were trained elsewhere (checkpoints, without an optimizer state): leave them "
                             "out of studies.selective.models.")
    return profile


def _layers(values: dict, source: str) -> Layers | None:
    """The profile's `layers` selection, checked against every model's layout; None when not given."""
    if values["layers"] is None:
        return None
    found = as_layers(values["layers"], f"{source}: layers")
    check_models(found, {m: models.layout(m, depth=values["depth"]) for m in values["models"]}, f"{source}: layers")
    return found


def _as_text(value) -> str:
    """A hint when YAML read a number as text: PyYAML takes 1e-3 for a string, 1.0e-3 for a number."""
    try:
        number = float(value) if isinstance(value, str) else None
    except ValueError:
        number = None
    if number is None:
        return ""
    shown = f"{number:.1e}".replace("e-0", "e-").replace("e+0", "e+")
    return f" (text: YAML reads a number written like {value} as text; write {shown})"


def _attack(attack, crafted, source: str) -> tuple[str, tuple]:
    """(when the perturbation is crafted, the attack's name and the parameters that differ from its defaults) from
    the profile's `attack` and `crafted`; `attack: fixed` or `adaptive` is the earlier spelling of an FGSM crafted
    so. A parameter given at its default value is left out, so that spelling it out changes no hash."""
    if attack in CRAFTED:
        if crafted is not None and crafted != attack:
            raise FragilityError(f"{source}: attack {attack!r} (the earlier spelling of `attack: fgsm` with `crafted: "
                                 f"{attack}`) contradicts crafted {crafted!r}: write `attack: fgsm` and `crafted`.")
        return attack, (("name", "fgsm"),)
    given = {"name": attack} if isinstance(attack, str) else dict(attack)
    name = given.pop("name")
    cls = ATTACKS[name]
    known = [f.name for f in dataclasses.fields(cls) if f.name != "epsilon"]
    unknown = sorted(map(str, set(given) - set(known)))
    if unknown:
        raise FragilityError(f"{source}: attack {name} has unknown parameter(s) {', '.join(unknown)}: its parameters "
                             f"are {', '.join(known) or 'none'} (its ε is the profile's `epsilon`).")
    try:
        chosen = cls(**given)
    except FragilityError as err:
        raise FragilityError(f"{source}: attack.{err}") from None
    defaults = cls()
    method = {k: v for k, v in chosen.parameters.items() if k in given and v != defaults.parameters[k]}
    return crafted or "fixed", tuple(sorted({"name": name, **method}.items()))


def results_dir(profile: Profile, results=None) -> Path:
    """`results` (a path), or results/<profile name>."""
    if results is not None:
        return checks.path(results, "results")
    return Path("results") / checks.part(profile.name, "profile name")
