"""The related studies, registered once: a profile's `studies` mapping names the studies to run and their settings.

Each study is one module of this package holding everything it knows — its computation, settings and their checks,
units, stored variables, derived quantities, figure, summary and claims — and registers its `Study` record
(`base.register`) and its book chapter (`fragility.chapters.register`). Adding a study is one new module plus one
import line below (its chapter's notebook aside); a module of your own registers the same way once imported.

Results go to results/<profile>/studies/<study>/<label>__<dataset>__seed<seed>.nc, one file per unit, written
atomically and skipped when present, so an interrupted run resumes; `open_study` combines a study's units. Each unit
records the hash of what determines it (`base.settings_hash`): `stored` validates a profile's stored units against
it, so that a unit computed with other settings is never taken as done, and `open_study` never combines units of
different settings.

A study may split a unit's work into steps (`Study.steps`, fragility.steps): named pieces, each writing one file
under results/<profile>/studies/<study>/runs/<label>__<dataset>__seed<seed>/, that `fragility run` plans as tasks of
their own (seen by `fragility status`, run in parallel with `--workers`); the unit then only reads their outputs.
"""
from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from .. import metrics, steps
from ..errors import FragilityError
from .. import study as base
from . import batchnorm, conventions, depth, neurons, removal, selective  # noqa: F401 (each registers itself)
from ..study import REGISTRY, find_study, open_study, study, study_path  # noqa: F401 (the package's public names)

STUDIES = tuple(REGISTRY)  # the shipped studies; `REGISTRY` also holds those registered from outside the package


def check(raw, profile, source: str = "profile") -> dict[str, dict]:
    """The `studies` mapping of a profile with every study's settings checked and defaults filled in."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FragilityError(f"{source}: studies must be a mapping of study names ({', '.join(REGISTRY)}) to "
                             "settings.")
    out = {}
    for name, settings in raw.items():
        if name not in REGISTRY:
            raise FragilityError(f"{source}: unknown study {name!r}: choose from {', '.join(REGISTRY)}.")
        measured = dict(profile.metric).get("name", metrics.DEFAULT)
        if measured != metrics.DEFAULT:  # each study computes and reads top-1 accuracy, as the paper's studies do
            raise FragilityError(f"{source}: studies measure top-1 accuracy, as the paper's related studies do, and "
                                 f"this profile sweeps the metric {measured!r}: run studies.{name} in a profile "
                                 "with the default metric (remove `metric`), on another results folder.")
        out[name] = REGISTRY[name].check(settings, profile, source)
    return out


def units(profile) -> list[tuple[str, base.Unit]]:
    """Every study unit of the profile, as (study name, unit)."""
    return [(name, unit) for name, settings in profile.studies.items()
            for unit in REGISTRY[name].units(profile, settings)]


def stored(profile, results) -> set[tuple[str, tuple]]:
    """The profile's study units stored under `results`, as (study name, unit key), each validated: readable, of the
    study schema, written by its study, keyed as its file is named, and computed with the profile's settings (its
    `settings_hash`); else one FragilityError naming the file and saying how to recompute it."""
    done = set()
    for name, unit in units(profile):
        path = study_path(results, name, *unit.key)
        if not path.is_file():
            continue
        found = base.read(path, REGISTRY[name]).attrs.get("settings_hash")
        expected = base.settings_hash(profile, profile.studies[name], unit)
        if found != expected:
            raise FragilityError(f"{path} was computed with other settings than profile {profile.name} "
                                 + (f"(settings_hash {found} ≠ {expected})" if found is not None else
                                    "(it records no settings_hash: an earlier version wrote it)")
                                 + f"; use another results folder, or move it out of {results} so that `fragility "
                                   "run` recomputes it.")
        done.add((name, unit.key))
    return done


def needed_runs(profile, results: Path) -> set[tuple]:
    """The training runs (model, dataset, seed) whose checkpoints a missing study unit reads."""
    return {run for name, unit in units(profile) if not study_path(results, name, *unit.key).is_file()
            for run in unit.needs}


def run_unit(profile, results: Path, name: str, unit: base.Unit, data_dir=None, device="cpu", progress=True,
             cache: dict | None = None) -> Path:
    """Compute one study unit — first whatever of its steps (fragility.steps) is missing, in order — and store it
    atomically (nothing is written if it fails); it records the seconds of its steps and its own."""
    ctx = steps.context(profile, results, name, unit, data_dir, device, progress, cache)
    before = steps.complete(ctx)
    ds, seconds = base.timed(REGISTRY[name].run, ctx)
    path = study_path(results, name, *unit.key)
    base.write(ds, path, name, unit, profile, ctx.settings, before + seconds, ctx.device)
    return path


def run(profile, results: Path, data_dir=None, device="cpu", progress: bool = True) -> None:
    """Run every study unit of the profile that is not stored (after training and sweeping)."""
    done = stored(profile, results)
    todo = [(name, unit) for name, unit in units(profile) if (name, unit.key) not in done]
    cache: dict = {}
    for name, unit in tqdm(todo, desc="studies", unit="unit", disable=not progress):
        run_unit(profile, results, name, unit, data_dir, device, progress, cache)
