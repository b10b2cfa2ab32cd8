"""Experiments: a profile says what to train and sweep; `run` does whatever of it is missing (SPEC §3, §7).

Layout of a results folder: `checkpoints/` (fragility.training), `responses/` (one unit file per model, dataset,
seed and checkpoint epoch, fragility.store) and `epsilon/` (the ε chosen once per model and dataset by the `auto`
policy). Every step is skipped when its output exists, and every output is written atomically, so a run that is
stopped at any moment resumes where it stopped and ends with the results of an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data, engine, store, studies, training
from .attacks import search_epsilon
from .errors import FragilityError
from .profiles import Profile, results_dir
from .provenance import device_description


def _device(device) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def train(profile: Profile, results=None, data_dir=None, device=None, progress: bool = True, runs=None) -> None:
    """Train (or resume) every (model, dataset, seed) of the profile whose last checkpoint is missing, or only
    those of `runs`."""
    results, root, sets = results_dir(profile, results), data.data_root(data_dir), {}
    for model, dataset, seed in profile.runs() if runs is None else runs:
        last = profile.grid(model).epochs[-1]
        if not training.checkpoint_path(results, model, dataset, seed, last).is_file():
            if dataset not in sets:
                sets[dataset] = data.load(dataset, "train", root), data.load(dataset, "test", root)
            training.train(profile.train_config(model, dataset, seed), *sets[dataset], results,
                           progress=progress, device=_device(device))


def _epsilon_path(results: Path, model: str, dataset: str) -> Path:
    return results / "epsilon" / f"{model}__{dataset}.json"


def needed_runs(profile: Profile, results=None) -> list[tuple]:
    """The training runs whose checkpoints something missing needs: a unit not swept, the ε search of the `auto`
    policy (the last checkpoint of a model's first seed), a study unit that starts from the run's checkpoints."""
    results = results_dir(profile, results)
    done = _stored(profile, results)
    need = {u[:3] for u in profile.units() if u not in done}
    if profile.epsilon == "auto":
        need |= {(m, d, profile.grid(m).seeds[0]) for m in profile.models for d in profile.datasets
                 if not _epsilon_path(results, m, d).is_file()}
    need |= studies.needed_runs(profile, results)
    return [r for r in profile.runs() if r in need]


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
    seed, epoch = profile.grid(model).seeds[0], profile.grid(model).epochs[-1]
    path = _epsilon_path(results, model, dataset)
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
    start = time.perf_counter()
    epsilon = search_epsilon(net, x.to(device), y.to(device), ratio=profile.ratio, batch_size=profile.batch_size)
    _atomic_json({**record, "epsilon": epsilon, "seconds": round(time.perf_counter() - start, 2),
                  "device": device_description(device)}, path)
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
        if model in profile.models and dataset in profile.datasets and seed in profile.grid(model).seeds:
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
            start = time.perf_counter()
            responses = engine.sweep(net, x, y, A=profile.A, filters=profile.filters, epsilon=epsilon,
                                     attack=profile.attack, ratio=profile.ratio, batch_size=profile.batch_size,
                                     device=device, progress=progress)
            unit = store.as_unit(responses, model, dataset, seed, epoch, profile=profile.name,
                                 config_hash=meta["config_hash"], sweep_hash=profile.sweep_hash,
                                 epsilon_policy=str(profile.epsilon), seconds=round(time.perf_counter() - start, 2),
                                 device=device_description(device), train_seconds=meta.get("seconds", -1.0))
            unit["test_accuracy"] = ((), meta["test_accuracy"], {"long_name": "checkpoint accuracy, whole test set"})
            unit["train_accuracy"] = ((), meta["train_accuracy"], {"long_name": "training accuracy, last epoch"})
            store.write_unit(unit, store.unit_path(results, model, dataset, seed, epoch))


def run(profile: Profile, results=None, data_dir=None, device=None, progress: bool = True) -> None:
    """Train what the missing results need, sweep what is missing, then run the missing units of the profile's
    studies."""
    train(profile, results, data_dir, device, progress, runs=needed_runs(profile, results))
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

