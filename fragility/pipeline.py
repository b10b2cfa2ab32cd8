"""Experiments: a profile says what to train and sweep; `run` does whatever of it is missing (SPEC §3, §7).

Layout of a results folder: `checkpoints/` (fragility.training), `responses/` (one unit file per model, dataset,
seed and checkpoint epoch, fragility.store) and `epsilon/` (the ε chosen once per model and dataset by the `auto`
policy). Every step is skipped when its output exists, and every output is written atomically, so a run that is
stopped at any moment resumes where it stopped and ends with the results of an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tempfile
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from . import data, engine, models, store, studies, training
from .attacks import search_epsilon
from .errors import FragilityError
from .filters import FILTERS

EPSILON_POLICIES = ("auto", "per-checkpoint")


def _count(low):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(ok):
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and ok(v)


def _items(ok, increasing=False):
    """A non-empty list of distinct values each passing `ok` (in increasing order if asked)."""
    return lambda v: (isinstance(v, list) and len(v) > 0 and all(ok(x) for x in v) and len(set(v)) == len(v)
                      and (not increasing or v == sorted(v)))


# key: (check, what the value must be)
CHECKS = {
    "name": (lambda v: isinstance(v, str) and re.fullmatch(r"[\w.-]+", v) is not None,
             "a short name of letters, digits, '.', '-' or '_' (it names the default results folder)"),
    "description": (lambda v: isinstance(v, str), "a line of text"),
    "models": (_items(lambda v: v in models.NAMES), f"a list of distinct models from {', '.join(models.NAMES)}"),
    "datasets": (_items(lambda v: v in data.NAMES), f"a list of distinct datasets from {', '.join(data.NAMES)}"),
    "seeds": (_items(_count(0)), "a list of distinct whole numbers ≥ 0"),
    "epochs": (_items(_count(1), increasing=True), "an increasing list of checkpoint epochs ≥ 1, e.g. [10, 20, 30]"),
    "every": (_count(1), "the checkpoint interval in epochs, a whole number ≥ 1"),
    "n_test": (lambda v: v is None or _count(1)(v), "the number of test images, a whole number ≥ 1, or null for all"),
    "A": (_count(1), "the number of threshold intervals, a whole number ≥ 1 (the paper: 25)"),
    "filters": (_items(lambda v: v in FILTERS), f"a list of distinct filters from {', '.join(FILTERS)}"),
    "attack": (lambda v: v in engine.ATTACKS, f"one of {', '.join(engine.ATTACKS)}"),
    "epsilon": (lambda v: v in EPSILON_POLICIES or _number(lambda x: x >= 0)(v),
                "auto (searched once per model and dataset), per-checkpoint, or a number ≥ 0"),
    "ratio": (_number(lambda x: 0 < x < 1), "the target accuracy ratio ρ of the ε search, between 0 and 1 (0.5)"),
    "batch_size": (_count(1), "the sweep's batch size, a whole number ≥ 1"),
    "train_batch_size": (_count(1), "the training batch size, a whole number ≥ 1 (the paper: 100)"),
    "lr": (_number(lambda x: x > 0), "Adam's learning rate, a number > 0 such as 0.001"),
    "depth": (_count(1), "the number of conv blocks of smallcnn, a whole number ≥ 1"),
    "studies": (lambda v: v is None or isinstance(v, dict),
                f"a mapping of related studies ({', '.join(studies.STUDIES)}) to their settings"),
}
OPTIONAL = {"depth": 2, "studies": None}


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
    attack: str
    epsilon: str | float
    ratio: float
    batch_size: int
    train_batch_size: int
    lr: float
    depth: int = 2
    studies: dict | None = None

    def units(self):
        """Every (model, dataset, seed, epoch) of the profile."""
        return itertools.product(self.models, self.datasets, self.seeds, self.epochs)

    def train_config(self, model: str, dataset: str, seed: int) -> training.TrainConfig:
        meta = data.info(dataset)
        return training.TrainConfig(model, dataset, seed, epochs=self.epochs[-1], every=self.every,
                                    batch_size=self.train_batch_size, lr=self.lr, channels=meta.channels,
                                    classes=meta.classes, depth=self.depth)

    def config_hash(self, model: str, dataset: str, seed: int) -> str:
        return training.config_hash(self.train_config(model, dataset, seed))

    @property
    def sweep_hash(self) -> str:
        """Hash of the settings that determine a unit's responses besides its checkpoint."""
        settings = {k: getattr(self, k) for k in ("A", "filters", "attack", "epsilon", "ratio", "n_test")}
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def shipped() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.name[:-5] for p in resources.files("fragility").joinpath("profiles").iterdir()
                  if p.name.endswith(".yaml"))


def load_profile(spec) -> Profile:
    """A shipped profile by name (`quick`) or a profile YAML file by path, validated."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise FragilityError(f"no profile file {path}: check the path, or name a shipped profile "
                                 f"({', '.join(shipped())}).")
        text, source = path.read_text(), str(path)
    elif spec in shipped():
        text, source = resources.files("fragility").joinpath("profiles", f"{spec}.yaml").read_text(), f"profile {spec}"
    else:
        raise FragilityError(f"unknown profile {spec!r}: the shipped profiles are {', '.join(shipped())}; "
                             "or pass the path of a profile YAML file (copy a shipped one to start).")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise FragilityError(f"{source} is not valid YAML: {err}") from None
    return parse_profile(raw, source)


def parse_profile(raw, source: str = "profile") -> Profile:
    """A Profile from a mapping of its keys, or one FragilityError naming the key at fault and the fix."""
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
    values = {**OPTIONAL, **raw}
    for key, (ok, what) in CHECKS.items():
        if not ok(values[key]):
            raise FragilityError(f"{source}: {key} must be {what}; got {values[key]!r}.")
    off = [e for e in values["epochs"] if e % values["every"] and e != values["epochs"][-1]]
    if off:
        raise FragilityError(f"{source}: epochs {off} are not checkpoints: training saves every {values['every']} "
                             "epochs and at the last one; use multiples of `every` or change `every`.")
    values["studies"] = studies.check(values["studies"], source)
    lists = {f.name: tuple(values[f.name]) for f in fields(Profile) if isinstance(values[f.name], list)}
    return Profile(**{**values, **lists})


def results_dir(profile: Profile, results=None) -> Path:
    """`results`, or results/<profile name>."""
    return Path(results) if results is not None else Path("results") / profile.name


def _device(device) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def train(profile: Profile, results=None, data_dir=None, device=None, progress: bool = True) -> None:
    """Train (or resume) every (model, dataset, seed) of the profile whose last checkpoint is missing."""
    results, root, sets = results_dir(profile, results), data.data_root(data_dir), {}
    for dataset, model, seed in itertools.product(profile.datasets, profile.models, profile.seeds):
        if not training.checkpoint_path(results, model, dataset, seed, profile.epochs[-1]).is_file():
            if dataset not in sets:
                sets[dataset] = data.load(dataset, "train", root), data.load(dataset, "test", root)
            training.train(profile.train_config(model, dataset, seed), *sets[dataset], results,
                           progress=progress, device=_device(device))


def _atomic_json(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=store.TMP)
    with os.fdopen(handle, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


def _epsilon(profile: Profile, results: Path, model: str, dataset: str, x, y, device: str):
    """The ε for the sweeps of (model, dataset) under the profile's policy ("auto" lets the sweep search it)."""
    if profile.epsilon == "per-checkpoint":
        return "auto"
    if profile.epsilon != "auto":
        return float(profile.epsilon)
    seed, epoch = profile.seeds[0], profile.epochs[-1]
    path = results / "epsilon" / f"{model}__{dataset}.json"
    record = {"model": model, "dataset": dataset, "seed": seed, "epoch": epoch, "ratio": profile.ratio,
              "n_test": profile.n_test, "config_hash": profile.config_hash(model, dataset, seed)}
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            epsilon = float(stored["epsilon"])
        except (ValueError, KeyError, TypeError):
            raise FragilityError(f"{path} is not a readable ε record: delete it to search ε again.") from None
        if {k: stored.get(k) for k in record} != record:
            raise FragilityError(f"{path} holds an ε searched with other settings ({stored}); use another results "
                                 "folder, or delete it so that it is searched again.")
        return epsilon
    net = _checkpoint(profile, results, model, dataset, seed, epoch, device)[0]
    epsilon = search_epsilon(net, x.to(device), y.to(device), ratio=profile.ratio, batch_size=profile.batch_size)
    _atomic_json({**record, "epsilon": epsilon}, path)
    return epsilon


def _checkpoint(profile: Profile, results: Path, model: str, dataset: str, seed: int, epoch: int, device: str):
    """A checkpoint's network and metadata, refused if it was trained with other settings than the profile's."""
    path = training.checkpoint_path(results, model, dataset, seed, epoch)
    net, meta = training.load_checkpoint(path, device)
    if meta["config_hash"] != profile.config_hash(model, dataset, seed):
        raise FragilityError(f"{path} was trained with other settings than profile {profile.name} ({meta['config']}); "
                             "use another results folder, or delete its checkpoints so that they are trained again.")
    return net, meta


def _stored(profile: Profile, results: Path) -> set[tuple]:
    """Keys of the profile's units already stored; every stored file is validated, and must match the profile."""
    units = store.scan(results) if results.is_dir() else {}
    for key, header in units.items():
        model, dataset, seed, _ = key
        if model in profile.models and dataset in profile.datasets and seed in profile.seeds:
            expected = {"sweep_hash": profile.sweep_hash, "config_hash": profile.config_hash(model, dataset, seed)}
            found = {k: header.attrs.get(k) for k in expected}
            if found != expected:
                raise FragilityError(f"{header.path} was computed with other settings than profile "
                                     f"{profile.name} ({found} ≠ {expected}); use another results folder, or delete "
                                     "it so that it is recomputed.")
    return set(units)


def sweep(profile: Profile, results=None, data_dir=None, device=None, progress: bool = True) -> None:
    """Sweep every trained checkpoint of the profile that has no unit file yet, storing one file per unit."""
    results, root, device = results_dir(profile, results), data.data_root(data_dir), _device(device)
    store.clean(results)
    done = _stored(profile, results)
    todo = [u for u in profile.units() if u not in done]
    tests = {}
    with tqdm(todo, desc="units", unit="unit", disable=not progress) as bar:
        for model, dataset, seed, epoch in bar:
            bar.set_postfix_str(f"{model}/{dataset}/seed{seed}/epoch{epoch}")
            if dataset not in tests:
                tests[dataset] = data.test_subset(data.load(dataset, "test", root), profile.n_test, seed=0)
            x, y = tests[dataset]
            epsilon = _epsilon(profile, results, model, dataset, x, y, device)
            net, meta = _checkpoint(profile, results, model, dataset, seed, epoch, device)
            responses = engine.sweep(net, x, y, A=profile.A, filters=profile.filters, epsilon=epsilon,
                                     attack=profile.attack, ratio=profile.ratio, batch_size=profile.batch_size,
                                     device=device, progress=progress)
            unit = store.as_unit(responses, model, dataset, seed, epoch, profile=profile.name,
                                 config_hash=meta["config_hash"], sweep_hash=profile.sweep_hash,
                                 epsilon_policy=str(profile.epsilon))
            unit["test_accuracy"] = ((), meta["test_accuracy"], {"long_name": "checkpoint accuracy, whole test set"})
            unit["train_accuracy"] = ((), meta["train_accuracy"], {"long_name": "training accuracy, last epoch"})
            store.write_unit(unit, store.unit_path(results, model, dataset, seed, epoch))


def run(profile: Profile, results=None, data_dir=None, device=None, progress: bool = True) -> None:
    """Train what is missing, sweep what is missing, then run the missing units of the profile's studies."""
    train(profile, results, data_dir, device, progress)
    sweep(profile, results, data_dir, device, progress)
    studies.run(profile, results_dir(profile, results), data_dir, _device(device), progress)


@dataclass(frozen=True)
class Status:
    """Whether one unit's checkpoint and responses exist."""

    model: str
    dataset: str
    seed: int
    epoch: int
    trained: bool
    swept: bool


def status(profile: Profile, results=None) -> list[Status]:
    """One Status per unit of the profile; every stored response file is validated on the way."""
    results = results_dir(profile, results)
    done = _stored(profile, results)
    return [Status(*u, training.checkpoint_path(results, *u).is_file(), u in done) for u in profile.units()]


@dataclass(frozen=True)
class StudyStatus:
    """Whether one study unit's file exists."""

    study: str
    model: str
    dataset: str
    seed: int
    done: bool


def study_status(profile: Profile, results=None) -> list[StudyStatus]:
    """One StudyStatus per unit of the profile's studies (`model` is the depth variant's label for `depth`)."""
    results = results_dir(profile, results)
    return [StudyStatus(name, *key, studies.study_path(results, name, *key).is_file())
            for name, _, key, _ in studies.units(profile)]

