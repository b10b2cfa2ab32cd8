"""Study steps: the named pieces of a study unit's work that are tasks of their own.

A study may declare, per unit, its steps (`Study.steps(ctx) -> [Step, …]`): e.g. the depth study trains a variant
of its own (`train`), searches its ε (`epsilon`) and sweeps it (`sweep`); the conventions study sweeps each chosen
checkpoint under each reading (`sweep/<reading>/<epoch>`). Each step writes one output file atomically under the
unit's own folder (`Context.folder`: results/studies/<study>/runs/<label>__<dataset>__seed<seed>/…), and is done
when that file exists. `fragility.pipeline.plan` makes every missing step a task, keyed
study/<study>/<label>/<dataset>/<seed>/<step>, after the profile's tasks the unit needs and after the unit's earlier
steps it names; the unit's own task comes after all of them, and its `run` only reads the steps' outputs. Run
directly (`fragility.studies.run_unit`), a unit first computes whatever step is missing, in its order.

A step's output records the hash of what determines its unit (`fragility.study.settings_hash`) and the seconds it
took (`write_json`, `write_netcdf`); reading it back (`read_json`, `read_netcdf`, `checked`) refuses one computed
with other settings, so a stale step is never taken as done.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import xarray as xr

from . import checks, data, files, store
from . import partial as partials
from . import study as base
from .errors import FragilityError
from .provenance import device_description
from .tasks import Task

STAMP, SECONDS, DEVICE = "step_settings_hash", "step_seconds", "step_device"  # a netCDF step output's own record


@dataclass(frozen=True)
class Step:
    """One named piece of a study unit's work, as its study's `steps(ctx)` declares it.

    Attributes:
        name: unique within its unit: letters, digits, '.', '-', '_', parts joined by '/' (e.g. "train",
            "sweep/adaptive/2").
        output: the file it writes atomically, under the unit's folder (`Context.folder`); present means done.
        run: `() -> None`, computing and writing `output`.
        after: the names of the unit's earlier steps whose outputs it reads.
        recorded: `() -> float`: validate the stored output (one FragilityError naming it when it is damaged or was
            computed with other settings) and give the compute seconds it records; None: nothing to check.
    """

    name: str
    output: Path
    run: Callable
    after: tuple = ()
    recorded: Callable | None = None


def context(profile, results, name: str, unit: base.Unit, data_dir=None, device="cpu", progress=False,
            cache: dict | None = None) -> base.Context:
    """The context one unit of study `name` runs in (and declares its steps in)."""
    if name not in profile.studies:
        raise FragilityError(f"profile {profile.name} runs no study {name!r}: its studies are "
                             f"{', '.join(profile.studies) or 'none'}.")
    return base.Context(name, profile, Path(results), unit, profile.studies[name], checks.device(device), progress,
                        data.data_root(data_dir), {} if cache is None else cache)


def of(ctx: base.Context) -> list[Step]:
    """The unit's steps as its study declares them, in order; a declaration that is not a list of distinct, well
    named Steps writing under the unit's folder, each after earlier ones only, is one FragilityError."""
    found, seen = list(base.study(ctx.study).steps(ctx)), []
    for step in found:
        what = f"study {ctx.study} declares a step {_shown(step.name if isinstance(step, Step) else step)}"
        if not isinstance(step, Step) or not isinstance(step.name, str) or not all(
                re.fullmatch(r"[\w.-]+", part) and part.strip(".") for part in step.name.split("/")):
            raise FragilityError(f"{what}: each must be a fragility.steps.Step named with letters, digits, '.', "
                                 "'-', '_' and '/' (no part only dots).")
        if step.name in seen or any(a not in seen for a in step.after):
            raise FragilityError(f"{what}: its name must be new and its `after` must name earlier steps of the unit "
                                 f"(those before it: {', '.join(seen) or 'none'}).")
        if ctx.folder().resolve() not in Path(step.output).resolve().parents:
            raise FragilityError(f"{what}: its output must lie in the unit's folder {ctx.folder()}.")
        seen.append(step.name)
    return found


def _shown(value) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "…"


def pending(ctx: base.Context) -> list[Step]:
    """The unit's steps whose output is missing; every stored one is validated (`Step.recorded`) on the way."""
    todo = []
    for step in of(ctx):
        if not Path(step.output).is_file():
            todo.append(step)
        elif step.recorded is not None:
            step.recorded()
    return todo


def complete(ctx: base.Context) -> float:
    """Compute the unit's missing steps in their order, then give the seconds its steps' outputs record."""
    for step in pending(ctx):
        step.run()
    return sum(step.recorded() for step in of(ctx) if step.recorded is not None)


def named(ctx: base.Context, step: str) -> Step:
    """The unit's step `step`; else one FragilityError listing its steps."""
    found = {s.name: s for s in of(ctx)}
    if step not in found:
        raise FragilityError(f"study {ctx.study} has no step {step!r} in unit {'/'.join(map(str, ctx.unit.key))}: "
                             f"its steps are {', '.join(found) or 'none'}.")
    return found[step]


def run_step(profile, results, name: str, unit: base.Unit, step: str, data_dir=None, device="cpu",
             progress=False, cache: dict | None = None) -> Path:
    """Compute one step of a study unit and write its output (atomically); its path."""
    found = named(context(profile, results, name, unit, data_dir, device, progress, cache), step)
    found.run()
    return Path(found.output)


def output(profile, results, name: str, unit: base.Unit, step: str) -> Path:
    """The file step `step` of the unit writes."""
    return Path(named(context(profile, results, name, unit), step).output)


def key(name: str, unit: base.Unit) -> str:
    """The task key of a study unit: study/<study>/<label>/<dataset>/<seed> (its steps' keys go on from it)."""
    return f"study/{name}/{'/'.join(map(str, unit.key))}"


def tasks(profile, results, name: str, unit: base.Unit, after: tuple = ()) -> list[Task]:
    """A task per missing step of the unit, in its order, each after `after` (the profile's tasks the unit needs)
    and the unit's missing steps it names."""
    todo = pending(context(profile, results, name, unit))
    names = {step.name for step in todo}
    return [Task(f"{key(name, unit)}/{step.name}", run_step, (name, unit, step.name),
                 tuple(after) + tuple(f"{key(name, unit)}/{a}" for a in step.after if a in names), place=output,
                 takes=("progress", "cache")) for step in todo]


def counts(profile, results, name: str, unit: base.Unit) -> tuple[int, int, int]:
    """(steps done, steps, layers kept) of the unit: a step is done when its output is stored (validated); a sweep
    step stopped part-way keeps its finished layers (`fragility.partial.beside` its output), counted last."""
    ctx = context(profile, results, name, unit)
    todo = pending(ctx)
    return (len(of(ctx)) - len(todo), len(of(ctx)),
            sum(partials.kept(partials.beside(step.output)) for step in todo))


# A step's own output: stamped with its unit's settings hash and its seconds, checked when read back.

def stamp(ctx: base.Context) -> str:
    """The hash of what determines the unit (`fragility.study.settings_hash`), which its steps' outputs record."""
    return base.settings_hash(ctx.profile, ctx.settings, ctx.unit)


def write_json(ctx: base.Context, record: dict, path, seconds: float) -> Path:
    """`record` with the unit's stamp, `seconds` and the device, as JSON at `path` (atomically)."""
    return files.write_json({**record, "seconds": round(seconds, 2), "settings_hash": stamp(ctx),
                             "device": device_description(ctx.device)}, path)


def write_netcdf(ctx: base.Context, ds: xr.Dataset, path, seconds: float) -> None:
    """`ds` with the unit's stamp, `seconds` and the device as attributes, as netCDF at `path` (atomically); then the
    finished layers a sweep kept for it (`fragility.partial.beside`) are deleted."""
    store.write_netcdf(ds.assign_attrs({STAMP: stamp(ctx), SECONDS: round(seconds, 2),
                                        DEVICE: device_description(ctx.device)}), path)
    partials.discard(partials.beside(path))


def checked(ctx: base.Context, path, required: bool = True) -> float:
    """Validate the step output at `path` (a JSON record or a netCDF file written above): readable, and stamped
    with the unit's settings hash (an unstamped one only where not `required`: one written before the steps, which
    recorded nothing); the seconds it records (0 if none). Else one FragilityError naming it."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            found = json.loads(path.read_text())
            stored, seconds = found.get("settings_hash"), float(found.get("seconds", 0.0))
        except (OSError, ValueError, TypeError, AttributeError):
            raise FragilityError(f"{path} is not a readable step record: {store.MOVE}.") from None
    else:
        found = store.read_attrs(path)
        stored, seconds = found.get(STAMP), float(found.get(SECONDS, 0.0))
    if stored is None and not required:
        return seconds
    if stored != stamp(ctx):
        raise FragilityError(f"{path} was computed with other settings than profile {ctx.profile.name} "
                             + (f"(settings_hash {stored} ≠ {stamp(ctx)})" if stored is not None else
                                "(it records no settings_hash)") + f": {store.MOVE}.")
    return seconds


def read_json(ctx: base.Context, path) -> dict:
    """The step record at `path`, validated (`checked`)."""
    checked(ctx, path)
    return json.loads(Path(path).read_text())


def read_netcdf(ctx: base.Context, path, required: bool = True) -> xr.Dataset:
    """The step's netCDF output at `path`, validated (`checked`), as it was computed: without the attributes it
    records of itself, nor the encoding it was stored with (an integer encoding would turn the missing cells of a
    combination with other parts into garbage when written again)."""
    checked(ctx, path, required)
    ds = store.read_netcdf(path).drop_encoding()
    own = (STAMP, SECONDS, DEVICE)
    return ds.drop_attrs(deep=False).assign_attrs({k: v for k, v in ds.attrs.items() if k not in own})
