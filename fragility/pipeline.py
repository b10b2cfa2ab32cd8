"""Experiments: a profile says what to train and sweep; `run` does whatever of it is missing, as tasks.

Layout of a results folder: `checkpoints/` (fragility.training), `responses/` (one unit file per model, dataset, seed
and checkpoint epoch, fragility.store), `epsilon/` (the ε chosen once per model and dataset by the `auto` policy) and
`studies/` (fragility.studies), with the owner record `profile.json` and, while a run writes it, its lock
(fragility.ownership). The work is a set of tasks (fragility.tasks) — a training run per (model, dataset, seed), an ε
search per (model, dataset), a sweep per unit, the steps of a study unit (fragility.steps: e.g. the depth study's
own trainings and sweeps), a study unit — each writing its own output atomically and skipped when that output exists,
so a run stopped at any moment resumes where it stopped and ends with an uninterrupted run's results. `plan` lists
the tasks still to do with their dependencies; `run` executes them in this process, or on a Dask cluster
(fragility.cluster).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from . import adoption, checks, data, engine, files, imports, mnist, ownership, steps, store, studies, training
from . import partial as partials
from .attacks import search_epsilon
from .errors import FragilityError
from .profiles import Profile, results_dir
from .provenance import device_description
from .tasks import Task, run_task


def _epsilon_path(results: Path, model: str, dataset: str) -> Path:
    return Path(results) / "epsilon" / f"{checks.part(model, 'model')}__{checks.part(dataset, 'dataset')}.json"


def read_epsilon(path) -> dict:
    """The ε record at `path` (a mapping with a finite ε ≥ 0); a FragilityError naming a damaged one."""
    try:
        stored = json.loads(Path(path).read_text())
        epsilon = float(stored["epsilon"])
        float(stored.get("seconds", 0.0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        epsilon = None
    if epsilon is None or not np.isfinite(epsilon) or epsilon < 0:
        raise FragilityError(f"{path} is not a readable ε record: {store.MOVE}.")
    return stored


def _epsilon_record(profile: Profile, model: str, dataset: str) -> dict:
    """What an ε record of the `auto` policy must record besides ε: the settings of its search."""
    seed, epoch = profile.grid(model).seeds[0], profile.grid(model).epochs[-1]
    record = {"model": model, "dataset": dataset, "seed": seed, "epoch": epoch, "ratio": profile.ratio,
              "n_test": profile.n_test, "config_hash": profile.config_hash(model, dataset, seed),
              "batchnorm": profile.batchnorm, "batch_size": profile.batch_size}
    if dict(profile.method) != {"name": "fgsm"}:  # records of FGSM, the first attack, stay as they were
        record["method"] = dict(profile.method)
    return record


def stored_epsilon(profile: Profile, results, model: str, dataset: str) -> float | None:
    """The ε stored for (model, dataset) under the `auto` policy, validated against the profile; None if absent."""
    path = _epsilon_path(results, model, dataset)
    if not path.is_file():
        return None
    stored, record = read_epsilon(path), _epsilon_record(profile, model, dataset)
    if {k: stored.get(k) for k in record} != record:
        raise FragilityError(f"{path} holds an ε searched with other settings ({stored}); use another results "
                             "folder, or move it away so that it is searched again.")
    return float(stored["epsilon"])


def _checkpoint(profile: Profile, results: Path, model: str, dataset: str, seed: int, epoch: int, device):
    """A checkpoint's network and metadata — from its weights file when the checkpoint is absent (a shipped results
    folder carries weights only) — refused if it was trained with other settings than the profile's."""
    path = training.checkpoint_path(results, model, dataset, seed, epoch)
    shipped = training.weights_path(results, model, dataset, seed, epoch)
    if not path.is_file() and shipped.is_file():
        path = shipped
    net, meta = training.load_checkpoint(path, device)
    if meta["config_hash"] != profile.config_hash(model, dataset, seed):
        raise FragilityError(f"{path} was trained with other settings than profile {profile.name} ({meta['config']}); "
                             "use another results folder, or delete its checkpoints so that they are trained again.")
    return net, meta


def stored_units(profile: Profile, results: Path) -> set[tuple]:
    """Keys of the profile's units already stored; every stored file is validated, and must match the profile and
    belong to it (fragility.ownership)."""
    units = store.scan(results) if results.is_dir() else {}
    ownership.check(profile, results, {header.path: header.attrs for header in units.values()})
    for key, header in units.items():
        model, dataset, seed, _ = key
        if model in profile.models and dataset in profile.datasets and seed in profile.grid(model).seeds:
            expected = {"sweep_hash": profile.sweep_hash_of(model),
                        "config_hash": profile.config_hash(model, dataset, seed)}
            found = {k: header.attrs.get(k) for k in expected}
            if found != expected:
                raise FragilityError(f"{header.path} was computed with other settings than profile "
                                     f"{profile.name} ({found} ≠ {expected}); use another results folder, or move "
                                     "it away so that it is recomputed.")
    return set(units)


def _test_set(profile: Profile, dataset: str, data_dir):
    """(x, y, indices of those examples in the test set): the profile's seeded test subset."""
    test = data.load(dataset, "test", data.data_root(data_dir))
    return (*data.test_subset(test, profile.n_test, seed=0),
            data.subset_indices(len(test), profile.n_test, seed=0).numpy())


# The tasks: each computes one output and writes it atomically.

def train_task(profile: Profile, results, run: tuple, data_dir=None, device=None, progress=False) -> Path:
    """Train (or resume) one (model, dataset, seed) run to its last checkpoint, or adopt its networks trained
    elsewhere (fragility.adoption); the last checkpoint's path."""
    model, dataset, seed = run
    if model in dict(profile.adopted):
        return adoption.adopt(profile, results, run, data_dir, device)
    root = data.data_root(data_dir)
    sets = data.load(dataset, "train", root), data.load(dataset, "test", root)
    return training.train(profile.train_config(model, dataset, seed), *sets, results, progress=progress,
                          device=str(checks.device(device)))[-1]


def epsilon_task(profile: Profile, results, model: str, dataset: str, data_dir=None, device=None):
    """The ε of (model, dataset)'s sweeps under the profile's policy: "auto" (searched once on the last checkpoint of
    the model's first seed and recorded in epsilon/), "per-checkpoint" (searched by each sweep) or a number."""
    if profile.epsilon == "per-checkpoint":
        return "auto"
    if profile.epsilon != "auto":
        return float(profile.epsilon)
    results, device = Path(results), checks.device(device)
    seed, epoch = profile.grid(model).seeds[0], profile.grid(model).epochs[-1]
    path, record = _epsilon_path(results, model, dataset), _epsilon_record(profile, model, dataset)
    epsilon = stored_epsilon(profile, results, model, dataset)
    if epsilon is not None:
        return epsilon
    x, y, _ = _test_set(profile, dataset, data_dir)
    net = _checkpoint(profile, results, model, dataset, seed, epoch, device)[0]
    start = time.perf_counter()
    with engine.batchnorm_statistics(net, profile.batchnorm):
        epsilon = search_epsilon(net, x.to(device), y.to(device), ratio=profile.ratio, batch_size=profile.batch_size,
                                 attack=profile.adversary())
    files.write_json({**record, "epsilon": epsilon, "seconds": round(time.perf_counter() - start, 2),
                      "device": device_description(device)}, path)
    return epsilon


def sweep_unit(profile: Profile, checkpoints, unit: tuple, epsilon, data_dir=None, device=None,
               progress=False, filters=None, partial=None) -> xr.Dataset:
    """The responses of one unit (model, dataset, seed, epoch) from its checkpoint under `checkpoints`, as stored.
    `filters`: some of the model's filters only (default all of them; `fragility verify --filter`); `partial`: the
    file keeping its finished layers (`fr.sweep`'s `partial`)."""
    model, dataset, seed, epoch = unit
    device = checks.device(device)
    x, y, image = _test_set(profile, dataset, data_dir)
    net, meta = _checkpoint(profile, Path(checkpoints), model, dataset, seed, epoch, device)
    start = time.perf_counter()
    responses = engine.sweep(net, x, y, A=profile.A, filters=filters or profile.filters_of(model), epsilon=epsilon,
                             attack=profile.adversary(), crafted=profile.attack, ratio=profile.ratio,
                             batch_size=profile.batch_size, device=device, progress=progress,
                             batchnorm=profile.batchnorm, image=image, layers=profile.layers,
                             metric=profile.measure(), partial=partial,
                             memory_format=profile.memory_format_of(model))
    adopted = {k: v for k, v in meta.get("provenance", {}).items() if k.startswith("checkpoint_")}
    ds = store.as_unit(responses, model, dataset, seed, epoch, profile=profile.name, config_hash=meta["config_hash"],
                       sweep_hash=profile.sweep_hash_of(model, filters), epsilon_policy=str(profile.epsilon),
                       seconds=round(time.perf_counter() - start, 2), device=device_description(device),
                       train_seconds=meta.get("seconds", -1.0), **imports.provenance(profile, model, dataset),
                       **adopted)
    ds["test_accuracy"] = ((), meta["test_accuracy"], {"long_name": "checkpoint accuracy, whole test set"})
    ds["train_accuracy"] = ((), meta["train_accuracy"], {"long_name": "training accuracy, last epoch"})
    return ds


def partial_path(results, unit: tuple) -> Path:
    """Where a sweep task keeps its unit's finished layers until the unit is stored: `.<epoch…>.partial.npz` beside
    the unit file, so that a sweep stopped part-way resumes after its last finished layer (`fragility.partial`)."""
    return partials.beside(store.unit_path(results, *unit))


def sweep_task(profile: Profile, results, unit: tuple, data_dir=None, device=None, progress=False) -> Path:
    """Sweep one unit and store it; a sweep stopped part-way resumes after its last finished layer."""
    epsilon = epsilon_task(profile, results, *unit[:2], data_dir=data_dir, device=device)
    path, partial = store.unit_path(results, *unit), partial_path(results, unit)
    store.write_unit(sweep_unit(profile, results, unit, epsilon, data_dir, device, progress, partial=partial), path)
    partials.discard(partial)
    return path


def _train_output(profile: Profile, results, run: tuple) -> Path:
    model, dataset, seed = run
    return training.checkpoint_path(results, model, dataset, seed, profile.grid(model).epochs[-1])


def _sweep_output(profile: Profile, results, unit: tuple) -> Path:
    return store.unit_path(results, *unit)


def _study_output(profile: Profile, results, name: str, unit) -> Path:
    return studies.study_path(results, name, *unit.key)


def train_of(run: tuple, after: tuple = ()) -> Task:
    """The task that trains `run` (model, dataset, seed): done when its last checkpoint exists."""
    return Task(f"train/{'/'.join(map(str, run))}", train_task, (run,), after, _train_output)


def sweep_of(unit: tuple, after: tuple = ()) -> Task:
    """The task that sweeps `unit` (model, dataset, seed, epoch): done when its unit file exists."""
    return Task("sweep/" + "/".join(map(str, unit)), sweep_task, (unit,), after, _sweep_output)


def plan(profile: Profile, results=None) -> list[Task]:
    """The tasks still to do for the profile, in an order that respects their dependencies: model by model (the
    first model's results come first) the training runs that missing results need, the ε search and the missing
    sweeps; then, per missing study unit, its missing steps (fragility.steps) and the unit. Every stored file the
    profile's results comprise is validated first (a damaged, foreign or stale one is one FragilityError naming
    it)."""
    results = results_dir(profile, results)
    done = stored_units(profile, results)
    _check_epsilon(profile, results)
    studied = studies.stored(profile, results)
    runs = needed_runs(profile, results)
    tasks = [train_of(r) for r in runs if not _train_output(profile, results, r).is_file()]
    trained = {t.args[0] for t in tasks}
    first = {(m, d): (m, d, profile.grid(m).seeds[0]) for m in profile.models for d in profile.datasets}
    searches = {(m, d) for m, d, _, _ in (u for u in profile.units() if u not in done)}
    if profile.epsilon == "auto":
        searches = {k for k in searches if not _epsilon_path(results, *k).is_file()}
        tasks += [Task(f"epsilon/{m}/{d}", epsilon_task, (m, d), _after(trained, first[m, d]), takes=()) for m, d in
                  sorted(searches, key=lambda k: profile.models.index(k[0]))]
    swept = [u for u in profile.units() if u not in done]
    for unit in swept:
        after = _after(trained, unit[:3])
        if profile.epsilon == "auto" and unit[:2] in searches:
            after += (f"epsilon/{unit[0]}/{unit[1]}",)
        tasks.append(sweep_of(unit, after))
    tasks.sort(key=lambda t: profile.models.index(t.key.split("/")[1]))  # stable: train, ε, sweeps per model
    for name, unit in studies.units(profile):
        if (name, unit.key) not in studied:
            after = [a for run in unit.needs for a in _after(trained, run)]
            after = tuple(after + [f"sweep/{'/'.join(map(str, u))}" for u in swept if u[:3] in unit.needs])
            todo = steps.tasks(profile, results, name, unit, after)
            tasks += todo + [Task(steps.key(name, unit), studies.run_unit, (name, unit),
                                  after + tuple(t.key for t in todo), _study_output, ("progress", "cache"))]
    return tasks


def _check_epsilon(profile: Profile, results: Path) -> None:
    """Validate the profile's stored ε records (the `auto` policy's)."""
    if profile.epsilon == "auto":
        for model in profile.models:
            for dataset in profile.datasets:
                stored_epsilon(profile, results, model, dataset)


def _after(trained: set, run: tuple) -> tuple:
    return (f"train/{'/'.join(map(str, run))}",) if run in trained else ()


def needed_runs(profile: Profile, results=None) -> list[tuple]:
    """The training runs whose checkpoints something missing needs: a unit not swept, the ε search of the `auto`
    policy (the last checkpoint of a model's first seed), a study unit that starts from the run's checkpoints."""
    results = results_dir(profile, results)
    done = stored_units(profile, results)
    need = {u[:3] for u in profile.units() if u not in done}
    if profile.epsilon == "auto":
        need |= {(m, d, profile.grid(m).seeds[0]) for m in profile.models for d in profile.datasets
                 if not _epsilon_path(results, m, d).is_file()}
    need |= studies.needed_runs(profile, results)
    return [r for r in profile.runs() if r in need]


def execute(profile: Profile, tasks: list[Task], results, data_dir=None, device=None, progress=True) -> None:
    """Run `tasks` one after the other in this process, holding the results folder's lock."""
    results, device, cache = checks.path(results, "results"), str(checks.device(device)), {}
    with ownership.lock(results):
        files.clean(results)
        for task in tqdm(tasks, desc="tasks", unit="task", disable=not progress):
            run_task(profile, task, results, data_dir, device, progress, cache)


def _writing(profile: Profile, results) -> Path:
    """The results folder of a command that writes it: checked to be a folder it can write to."""
    return checks.folder(results_dir(profile, results), "results", create=True)


def train(profile: Profile, results=None, data_dir=None, device=None, progress: bool = True) -> None:
    """Train (or resume) every (model, dataset, seed) of the profile whose last checkpoint is missing."""
    results = _writing(profile, results)
    checks.device(device)
    with ownership.lock(results):
        stored_units(profile, results)
        todo = [run for run in profile.runs()
                if not training.checkpoint_path(results, *run, profile.grid(run[0]).epochs[-1]).is_file()]
        if todo:
            ownership.record(profile, results)
            files.clean(results)
        for run in todo:
            run_task(profile, train_of(run), results, data_dir, device, progress)


def sweep(profile: Profile, results=None, data_dir=None, device=None, progress: bool = True) -> None:
    """Sweep every trained checkpoint of the profile that has no unit file yet, storing one file per unit."""
    results = _writing(profile, results)
    checks.device(device)
    with ownership.lock(results):
        missing = [u for u in profile.units() if u not in stored_units(profile, results)]
        todo = [u for u in missing if training.checkpoint_path(results, *u).is_file()
                or training.weights_path(results, *u).is_file()]  # the units not trained yet are left to `train`
        if missing and not todo:
            raise FragilityError(f"no checkpoint to sweep under {results}: the {len(missing)} unit(s) without stored "
                                 "responses are not trained; run `fragility train` first to create them.")
        _check_epsilon(profile, results)
        if todo:
            ownership.record(profile, results)
            files.clean(results)
        for unit in tqdm(todo, desc="units", unit="unit", disable=not progress):
            run_task(profile, sweep_of(unit), results, data_dir, device, progress)


def run(profile: Profile, results=None, data_dir=None, device=None, progress: bool = True, workers=None,
        scheduler=None) -> None:
    """Train what the missing results need, sweep what is missing, then run the missing study units — in this
    process, or as tasks of a Dask cluster: a local one of `workers` processes, or the one at `scheduler` — holding
    the results folder's lock (fragility.ownership) throughout."""
    results = _writing(profile, results)
    if workers is not None:
        checks.workers(workers)
    with ownership.lock(results):
        tasks = plan(profile, results)
        if tasks:
            ownership.record(profile, results)
            if "mnist" in profile.datasets:
                mnist.ensure(data_dir, progress=progress)  # once here, not in every worker
            if workers is None and scheduler is None:
                execute(profile, tasks, results, data_dir, device, progress)
            else:
                from . import cluster  # deferred: Dask and distributed (0.7 s to import) serve cluster runs alone

                cluster.execute(profile, tasks, results, data_dir, device, progress, workers=workers,
                                scheduler=scheduler)
        keep_weights(profile, results)


def keep_weights(profile: Profile, results) -> list[Path]:
    """For the profile's `weights` models, the network weights of every checkpoint that has none yet, written under
    weights/ (training.export_weights); the files written."""
    written = []
    for unit in profile.units():
        source, out = training.checkpoint_path(results, *unit), training.weights_path(results, *unit)
        if unit[0] in profile.weights and source.is_file() and not out.is_file():
            written.append(training.export_weights(source, out))
    return written


@dataclass(frozen=True)
class Status:
    """Whether one unit's checkpoint and responses exist, and how many of its layers a sweep stopped part-way kept."""

    model: str
    dataset: str
    seed: int
    epoch: int
    trained: bool
    swept: bool
    kept: int = 0  # units (layers, `global`) a sweep stopped part-way finished (`partial_path`)


def status(profile: Profile, results=None) -> list[Status]:
    """One Status per unit of the profile; every stored response file and ε record is validated on the way (the
    folder is only read)."""
    results = results_dir(profile, results)
    done = stored_units(profile, results)
    _check_epsilon(profile, results)
    return [Status(*u, training.checkpoint_path(results, *u).is_file(), u in done,
                   0 if u in done else partials.kept(partial_path(results, u))) for u in profile.units()]


def recorded_seconds(profile: Profile, results=None) -> dict[str, float]:
    """The compute time the stored results of the profile record, by kind: `training` (each run's checkpoints, as
    its last swept unit records them), `epsilon` (the ε searches), `sweeps` and `studies` (each unit its own)."""
    results = results_dir(profile, results)
    headers = store.scan(results) if results.is_dir() else {}
    runs: dict[tuple, float] = {}
    for (model, dataset, seed, _), header in headers.items():
        runs[model, dataset, seed] = max(runs.get((model, dataset, seed), 0.0), header.attrs.get("train_seconds", 0.0))
    searched = [float(read_epsilon(p).get("seconds", 0.0)) for p in sorted((results / "epsilon").glob("*.json"))]
    studied = [store.read_attrs(path).get("seconds", 0.0) for path in
               (studies.study_path(results, name, *unit.key) for name, unit in studies.units(profile))
               if path.is_file()]
    return {"training": sum(runs.values()), "epsilon": sum(searched),
            "sweeps": sum(h.attrs.get("seconds", 0.0) for h in headers.values()), "studies": sum(studied)}


@dataclass(frozen=True)
class StudyStatus:
    """Whether one study unit's file exists, how many of its steps (fragility.steps) are done — a step whose
    output is stored, or any step of a stored unit (which needs none of them any more) — and how many layers its
    sweep steps stopped part-way kept."""

    study: str
    model: str
    dataset: str
    seed: int
    done: bool
    steps: int = 0
    steps_done: int = 0
    kept: int = 0  # layers its sweep steps stopped part-way finished (fragility.partial.beside their outputs)


def study_status(profile: Profile, results=None) -> list[StudyStatus]:
    """One StudyStatus per unit of the profile's studies (`model` is the variant's label for `depth`); every stored
    study unit, and every stored step of a unit that is not, is validated on the way (fragility.studies.stored,
    fragility.steps)."""
    results = results_dir(profile, results)
    done, out = studies.stored(profile, results), []
    for name, unit in studies.units(profile):
        if (name, unit.key) in done:
            count = total = len(steps.of(steps.context(profile, results, name, unit)))
            kept = 0
        else:
            count, total, kept = steps.counts(profile, results, name, unit)
        out.append(StudyStatus(name, *unit.key, (name, unit.key) in done, total, count, kept))
    return out
