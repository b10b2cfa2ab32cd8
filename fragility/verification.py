"""Verification: stored units recomputed into a scratch folder and compared with what is stored — the largest
difference of each variable, where each was computed, and whether they agree as they should (`fragility verify`).

Like is compared with like. A unit is re-swept from its checkpoint (or its shipped weights, weights/), or retrained
from nothing first (`retrain`). On the CPU kind and thread count its provenance records, either gives identical
numbers. Elsewhere other kernels sum in another order: a re-sweep then agrees within `TOLERANCE`, and a retrained
unit — training amplifies rounding — is judged against the spread of the stored seeds at that epoch.

`TOLERANCE` was measured with benchmarks/verify_tolerance.py on a SqueezeNet 1.1 unit of the reference (1,000 MNIST
test images): re-swept at 2 threads instead of 1, identical; re-swept with the kernels of a CPU without AVX-512, the
accuracies moved by at most 0.003 (1,842 of 4,212,000 per-image answers differ). ±0.01 is ten test images.

`verify_steps` does the same for the sweeps a study computes as steps of its own (fragility.steps): e.g. a network the
depth study trained itself, re-swept from its stored checkpoint with its stored ε."""
from __future__ import annotations

import dataclasses
import functools
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import checks, data, files, imports, mnist, ownership, steps, store, studies, training
from .errors import FragilityError
from .pipeline import stored_units, sweep_unit
from .profiles import Profile, results_dir
from .provenance import threads


COMPARED = ("accuracy", "n_filtered", "n_params", "threshold", "base_accuracy", "epsilon", "test_accuracy",
            "train_accuracy")


TOLERANCE = {"accuracy": 0.01, "base_accuracy": 0.01}  # a re-sweep on another CPU kind (measured: ≤ 0.003)


@dataclass(frozen=True)
class Verified:
    """One recomputed unit against its stored one: the largest absolute difference of each variable, where each was
    computed, how (`re-swept` or `retrained`) and, for a retrained unit, the spread of the stored seeds."""

    unit: tuple
    differences: dict
    stored_on: str = ""  # the device records of the stored unit and of its recomputation
    recomputed_on: str = ""
    method: str = "retrained"
    spread: dict = field(default_factory=dict)  # per variable, the largest difference between stored seeds

    @property
    def identical(self) -> bool:
        return all(v == 0 for v in self.differences.values())

    @property
    def same_machine(self) -> bool:
        """Whether it was recomputed on the CPU kind (or GPU) and thread count that computed the stored unit. A CPU
        record must name the instruction set of its kernels ("[AVX512]"): one model name (a virtual machine's
        "Intel(R) Xeon(R) Processor") can hide several, and an older record that lacks it is never taken as the same."""
        known = not self.stored_on.startswith("cpu") or "[" in self.stored_on
        return bool(self.stored_on) and known and self.stored_on == self.recomputed_on

    @property
    def allowed(self) -> dict:
        """The largest difference each variable may show: 0 on the same machine kind; else the measured re-sweep
        tolerance, or the stored seeds' spread for a retrained unit (0 for the counts, which never depend on sums)."""
        if self.same_machine:
            return dict.fromkeys(self.differences, 0.0)
        found = TOLERANCE if self.method == "re-swept" else self.spread
        return {k: float(found.get(k, 0.0)) for k in self.differences}

    @property
    def agrees(self) -> bool:
        """Whether every difference is within what `allowed` allows."""
        return all(d <= self.allowed[k] for k, d in self.differences.items())

    @property
    def expected(self) -> str:
        """What the comparison expects, in words."""
        if self.same_machine:
            return "identical (same CPU kind and thread count)"
        if self.method == "re-swept":
            return f"within the measured re-sweep tolerance (accuracy ±{TOLERANCE['accuracy']})"
        return "within the spread of the stored seeds (another machine kind: training amplifies rounding)"


def verify(profile: Profile, units=None, results=None, scratch=None, data_dir=None, device=None,
           progress: bool = True, retrain: bool = False, filters=None) -> list[Verified]:
    """Recompute stored units into `scratch` and compare them with the stored ones.

    `units`: (model, dataset, seed, epoch) keys; default one unit: the first stored one whose checkpoint or weights
    are at hand (re-sweep), or the earliest checkpoint of the first model's first seed (`retrain`). A re-sweep reads
    the unit's checkpoint, or its weights file (weights/), and sweeps it with the stored ε; `retrain` trains the run
    from nothing up to the unit's epoch first. On a CPU both use the number of threads the profile records: another
    count sums in another order. `scratch` (default `<results>-verify`) must lie apart from `results` — neither
    inside the other — and is locked while it is written; `results` is only read. `filters`: re-sweep and compare
    only these of each unit's filters (e.g. ["h1"]: a third of the time of h1, h2, h3); default all of them.
    """
    results = results_dir(profile, results)
    retrain = checks.flag(retrain, "retrain")
    stored = stored_units(profile, results)
    if units:
        units = [tuple(u) for u in units]
    elif retrain:
        first = profile.models[0]
        units = [(first, profile.datasets[0], profile.grid(first).seeds[0], profile.grid(first).epochs[0])]
    else:
        units = [next((u for u in profile.units() if u in stored and _weights(results, u) is not None), None)]
        if units[0] is None:
            raise FragilityError(f"no stored unit under {results} has its checkpoint or weights at hand to be "
                                 "re-swept: retrain one with --retrain (`fragility status` lists the stored units).")
    for unit in units:  # keys checked, and names that would leave the results folder refused
        checks.require(unit, checks.Rule(lambda u: len(u) == 4 and checks.is_whole(u[2]) and checks.is_whole(u[3]),
                                         "a (model, dataset, seed, epoch) key"), "each of units")
        store.unit_path(results, *unit)
    elsewhere = [u for u in units if retrain and u[0] in dict(profile.adopted)]
    if elsewhere:
        raise FragilityError(f"{', '.join('/'.join(map(str, u)) for u in elsewhere)}: its network was trained "
                             "elsewhere (the profile's checkpoints) and cannot be retrained: re-sweep it (leave out "
                             "--retrain).")
    if filters is not None:
        checks.require(filters, checks.Rule(lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(
            isinstance(f, str) for f in v), "a list of filter names such as ['h1']"), "filters")
        for unit in units:
            own = profile.filters_of(unit[0])
            checks.require(list(filters), checks.Rule(lambda v, own=own: set(v) <= set(own),
                                                      f"some of {unit[0]}'s swept filters {list(own)}"), "filters")
        filters = tuple(dict.fromkeys(filters))
    imports.ensure(profile)
    missing = [u for u in units if u not in stored]
    if missing:
        raise FragilityError(f"no stored unit {', '.join('/'.join(map(str, u)) for u in missing)} under {results}: "
                             "`fragility status` lists the stored ones.")
    unweighted = [u for u in units if not retrain and _weights(results, u) is None]
    if unweighted:
        named = ", ".join("/".join(map(str, u)) for u in unweighted)
        raise FragilityError(f"neither the checkpoint nor the weights of {named} are under {results}: retrain it with "
                             "--retrain, or name a unit whose weights are shipped (weights/).")
    scratch = _scratch(results, scratch)
    if "mnist" in profile.datasets:
        mnist.ensure(data_dir, progress=progress)
    out = []
    with ownership.lock(scratch):
        files.clean(scratch)
        for unit in units:
            shipped = store.read_unit(store.unit_path(results, *unit))
            with threads(profile.threads):
                if retrain:
                    again = _recompute(profile, unit, scratch, float(shipped["epsilon"]), data_dir, device, progress,
                                       filters)
                else:
                    again = sweep_unit(profile, results, unit, float(shipped["epsilon"]), data_dir, device, progress,
                                       filters)
                    store.write_unit(again, store.unit_path(scratch, *unit))
            if filters is not None:
                shipped = shipped.sel(filter=list(filters))
            out.append(Verified(unit, {k: _difference(again[k], shipped[k]) for k in _compared(shipped)},
                                shipped.attrs.get("device", ""), again.attrs["device"],
                                "retrained" if retrain else "re-swept",
                                _spread(profile, results, unit, stored, filters) if retrain else {}))
    return out


def verify_steps(profile: Profile, keys, results=None, scratch=None, data_dir=None, device=None,
                 progress: bool = True) -> list[Verified]:
    """Recompute stored study steps (fragility.steps) into `scratch` and compare their outputs with the stored ones,
    as `verify` compares units: e.g. `study/depth/resnet34/mnist/0/sweep`, the sweep of a network the depth study
    trained itself, re-swept from its stored checkpoint with its stored ε.

    `keys`: the steps' task keys (`fragility status` counts them; `fragility.pipeline.plan` lists the missing ones).
    Each step runs again in `scratch` from copies of the outputs of the unit's steps it comes after (reading the
    profile's own checkpoints and responses from `results`, which is only read), with the profile's thread count;
    its output must be a netCDF file holding some of `COMPARED`. `scratch` as for `verify`.
    """
    results, device, progress = results_dir(profile, results), str(checks.device(device)), checks.flag(progress,
                                                                                                   "progress")
    checks.require(keys, checks.Rule(lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(
        isinstance(k, str) for k in v), "a list of study step keys such as study/depth/resnet34/mnist/0/sweep"),
                   "steps")
    owners = {steps.key(name, unit): (name, unit) for name, unit in studies.units(profile)}
    studies.stored(profile, results)  # every stored study unit validated
    found = []
    for key in keys:
        owner = next((k for k in owners if key.startswith(k + "/")), None)
        if owner is None:
            raise FragilityError(f"{key} is not a step of profile {profile.name}'s study units (study/<study>/<label>/"
                                 f"<dataset>/<seed>/<step>, e.g. {next(iter(owners), 'study/depth/…')}/sweep).")
        step = steps.named(steps.context(profile, results, *owners[owner]), key[len(owner) + 1:])
        if Path(step.output).suffix != ".nc":
            raise FragilityError(f"step {key} writes {Path(step.output).name}, not a sweep: verify compares the netCDF "
                                 "outputs of steps (e.g. …/sweep).")
        if not Path(step.output).is_file():
            raise FragilityError(f"step {key} is not stored under {results} (no {step.output}): `fragility status` "
                                 "counts the stored steps.")
        found.append((key, *owners[owner], step))
    imports.ensure(profile)
    scratch = _scratch(results, scratch)
    out = []
    with ownership.lock(scratch):
        files.clean(scratch)
        for key, name, unit, step in found:
            ctx = steps.context(profile, results, name, unit, data_dir, device, progress)
            again = dataclasses.replace(ctx, elsewhere=scratch)
            known = {s.name: s for s in steps.of(ctx)}
            for earlier in _before(known, step):
                source = Path(known[earlier].output)
                files.atomic(scratch / source.relative_to(results), functools.partial(shutil.copyfile, source))
            with threads(profile.threads):
                steps.named(again, step.name).run()
            stored, computed = (store.read_netcdf(p) for p in (step.output, steps.named(again, step.name).output))
            compared = [k for k in COMPARED if k in stored and k in computed]
            out.append(Verified(tuple(key.split("/")), {k: _difference(computed[k], stored[k]) for k in compared},
                                str(stored.attrs.get(steps.DEVICE, "")), str(computed.attrs.get(steps.DEVICE, "")),
                                "re-swept"))
    return out


def _before(known: dict, step) -> list[str]:
    """The names of the steps `step` comes after, directly or through others, in their order."""
    found, todo = set(), list(step.after)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += list(known[name].after)
    return [name for name in known if name in found]


def _scratch(results: Path, scratch) -> Path:
    """The scratch folder (default `<results>-verify`), created, and refused where it is `results`, lies inside it or
    holds it."""
    scratch = checks.folder(results.parent / f"{results.name}-verify" if scratch is None else scratch, "scratch",
                            create=True)
    here, there = results.resolve(), scratch.resolve()
    if here == there or here in there.parents or there in here.parents:
        where = "is" if here == there else "lies inside" if here in there.parents else "holds"
        raise FragilityError(f"scratch {scratch} {where} the results folder {results}: the recomputed units "
                             "would overwrite the stored ones they are compared with; choose a scratch folder apart "
                             "from it (default: <results>-verify).")
    return scratch


def _weights(results: Path, unit: tuple) -> Path | None:
    """The checkpoint, else the weights file, of `unit` under `results`; None when neither is there."""
    return next((p for p in (training.checkpoint_path(results, *unit), training.weights_path(results, *unit))
                 if p.is_file()), None)


def _spread(profile: Profile, results: Path, unit: tuple, stored: set, filters=None) -> dict:
    """Per compared variable, the largest difference between two stored seeds of `unit`'s model, dataset and epoch
    (empty with fewer than two: a retrained unit then has nothing to be judged against but itself), over `filters`
    (default all)."""
    model, dataset, _, epoch = unit
    units = [store.read_unit(store.unit_path(results, model, dataset, s, epoch))
             for s in profile.grid(model).seeds if (model, dataset, s, epoch) in stored]
    units = [u.sel(filter=list(filters)) for u in units] if filters is not None else units
    if len(units) < 2:
        return {}
    return {k: max(_difference(a[k], b[k]) for i, a in enumerate(units) for b in units[i + 1:])
            for k in _compared(units[0]) if k not in ("n_params",)}


def _compared(unit) -> list[str]:
    """COMPARED as a unit stores them: the response under its metric's names (`fragility.store.metric_variables`;
    a metric other than top-1 accuracy has no measured re-sweep tolerance, so it must agree exactly)."""
    names = store.metric_variables(str(unit.attrs.get("metric", "accuracy")))
    return [names.get(k, k) for k in COMPARED]


def _difference(a, b) -> float:
    """The largest absolute difference of two arrays; NaN in both is equal, NaN in one only is an infinite one."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    both = np.isnan(a) & np.isnan(b)
    gap = np.where(both, 0.0, np.abs(a - b))
    return float(np.max(np.where(np.isnan(gap), np.inf, gap), initial=0.0))


def _recompute(profile: Profile, unit: tuple, scratch: Path, epsilon: float, data_dir, device, progress,
               filters=None):
    """Train `unit`'s run from scratch up to its epoch in `scratch`, sweep it with `epsilon` (its `filters`, default
    all), store and return it."""
    model, dataset, seed, epoch = unit
    config = profile.train_config(model, dataset, seed)
    config.epochs = epoch
    root = data.data_root(data_dir)
    training.train(config, data.load(dataset, "train", root), data.load(dataset, "test", root), scratch,
                   progress=progress, device=str(checks.device(device)))
    again = sweep_unit(profile, scratch, unit, epsilon, data_dir, device, progress, filters)
    store.write_unit(again, store.unit_path(scratch, *unit))
    return again
