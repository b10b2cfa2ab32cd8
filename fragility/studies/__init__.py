"""The related studies, registered once: a profile's `studies` mapping names the studies to run and their settings.

Each study is one module of this package holding everything it knows — its computation, settings and their checks,
units, stored variables, derived quantities, figure, summary and claims — and one `Study` record, registered below.
Adding a study is one new module plus one entry in `REGISTRY`.

Results go to results/<profile>/studies/<study>/<label>__<dataset>__seed<seed>.nc, one file per unit, written
atomically and skipped when present, so an interrupted run resumes; `open_study` combines a study's units.
"""
from __future__ import annotations

from pathlib import Path

import xarray as xr
from tqdm.auto import tqdm

from .. import checks, data
from ..errors import FragilityError
from . import base, batchnorm, conventions, depth, neurons, removal, selective
from .base import Study, study_path

REGISTRY: dict[str, Study] = {s.name: s for s in (selective.STUDY, batchnorm.STUDY, neurons.STUDY, removal.STUDY,
                                                  depth.STUDY, conventions.STUDY)}
STUDIES = tuple(REGISTRY)


def study(name) -> Study:
    """The registered study `name`, or one FragilityError listing them."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise FragilityError(f"unknown study {name!r}: choose from {', '.join(STUDIES)}.")
    return REGISTRY[name]


def check(raw, profile, source: str = "profile") -> dict[str, dict]:
    """The `studies` mapping of a profile with every study's settings checked and defaults filled in."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FragilityError(f"{source}: studies must be a mapping of study names ({', '.join(STUDIES)}) to "
                             "settings.")
    out = {}
    for name, settings in raw.items():
        if name not in REGISTRY:
            raise FragilityError(f"{source}: unknown study {name!r}: choose from {', '.join(STUDIES)}.")
        out[name] = REGISTRY[name].check(settings, profile, source)
    return out


def units(profile) -> list[tuple[str, base.Unit]]:
    """Every study unit of the profile, as (study name, unit)."""
    return [(name, unit) for name, settings in profile.studies.items()
            for unit in REGISTRY[name].units(profile, settings)]


def needed_runs(profile, results: Path) -> set[tuple]:
    """The training runs (model, dataset, seed) whose checkpoints a missing study unit reads."""
    return {run for name, unit in units(profile) if not study_path(results, name, *unit.key).is_file()
            for run in unit.needs}


def run_unit(profile, results: Path, name: str, unit: base.Unit, data_dir=None, device="cpu", progress=True,
             cache: dict | None = None) -> Path:
    """Compute one study unit and store it atomically (nothing is written if it fails)."""
    settings = profile.studies[name]
    ctx = base.Context(name, profile, Path(results), unit, settings, checks.device(device), progress,
                       data.data_root(data_dir), {} if cache is None else cache)
    ds, seconds = base.timed(REGISTRY[name].run, ctx)
    path = study_path(results, name, *unit.key)
    base.write(ds, path, name, unit, profile, settings, seconds, ctx.device)
    return path


def run(profile, results: Path, data_dir=None, device="cpu", progress: bool = True) -> None:
    """Run every study unit of the profile whose file is missing (after training and sweeping)."""
    todo = [(name, unit) for name, unit in units(profile) if not study_path(results, name, *unit.key).is_file()]
    cache: dict = {}
    for name, unit in tqdm(todo, desc="studies", unit="unit", disable=not progress):
        run_unit(profile, results, name, unit, data_dir, device, progress, cache)


def open_study(results, name: str) -> xr.Dataset:
    """Every stored unit of study `name` under `results`, combined along model, dataset and seed.

    Args:
        results: a results folder written by `fragility run`.
        name: a registered study (see `STUDIES`).

    Returns:
        The study's variables with dims model, dataset, seed (NaN where a unit is missing) and its own; the
        attribute `study` names it.

    Raises:
        FragilityError: an unknown study, none stored, or a damaged or foreign unit file (named).
    """
    found = study(name)
    files = sorted((Path(results) / "studies" / name).glob("*.nc"))
    if not files:
        raise FragilityError(f"no stored {name} study under {results}: run `fragility run --profile …` with that "
                             f"profile (it runs the studies the profile lists; add `studies: {{{name}: {{}}}}` to "
                             "a profile that lacks it).")
    ds = base.combine([base.read(f, found) for f in files])
    ds.attrs["study"] = name
    return ds
