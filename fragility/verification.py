"""Verification: stored units retrained and re-swept from nothing into a scratch folder, and compared with what is
stored — the largest difference of each variable, and where each was computed (`fragility verify`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checks, data, files, ownership, store, training
from .errors import FragilityError
from .pipeline import stored_units, sweep_unit
from .profiles import Profile, results_dir
from .provenance import threads


COMPARED = ("accuracy", "n_filtered", "n_params", "threshold", "base_accuracy", "epsilon", "test_accuracy",
            "train_accuracy")


@dataclass(frozen=True)
class Verified:
    """One recomputed unit against its stored one: the largest absolute difference of each variable."""

    unit: tuple
    differences: dict
    stored_on: str = ""  # the device records of the stored unit and of its recomputation
    recomputed_on: str = ""

    @property
    def identical(self) -> bool:
        return all(v == 0 for v in self.differences.values())


def verify(profile: Profile, units=None, results=None, scratch=None, data_dir=None, device=None,
           progress: bool = True) -> list[Verified]:
    """Retrain and re-sweep stored units into `scratch` and compare them with the stored ones.

    `units`: (model, dataset, seed, epoch) keys, default the earliest checkpoint of the first model's first seed.
    Each run is trained from scratch up to the unit's epoch and swept with the stored ε. On a CPU it uses the
    number of threads the stored unit records: another count sums in another order, and training amplifies that.
    `scratch` (default `<results>-verify`) must lie apart from `results` — neither inside the other — and is locked
    while it is written; `results` is only read.
    """
    results = results_dir(profile, results)
    stored = stored_units(profile, results)
    first = profile.models[0]
    units = [tuple(u) for u in units] if units else [(first, profile.datasets[0], profile.grid(first).seeds[0],
                                                      profile.grid(first).epochs[0])]
    for unit in units:  # keys checked, and names that would leave the results folder refused
        checks.require(unit, checks.Rule(lambda u: len(u) == 4 and checks.is_whole(u[2]) and checks.is_whole(u[3]),
                                         "a (model, dataset, seed, epoch) key"), "each of units")
        store.unit_path(results, *unit)
    missing = [u for u in units if u not in stored]
    if missing:
        raise FragilityError(f"no stored unit {', '.join('/'.join(map(str, u)) for u in missing)} under {results}: "
                             "`fragility status` lists the stored ones.")
    scratch = checks.folder(results.parent / f"{results.name}-verify" if scratch is None else scratch, "scratch",
                            create=True)
    here, there = results.resolve(), scratch.resolve()
    if here == there or here in there.parents or there in here.parents:
        where = "is" if here == there else "lies inside" if here in there.parents else "holds"
        raise FragilityError(f"scratch {scratch} {where} the results folder {results}: the recomputed units "
                             "would overwrite the stored ones they are compared with; choose a scratch folder apart "
                             "from it (default: <results>-verify).")
    out = []
    with ownership.lock(scratch):
        files.clean(scratch)
        for unit in units:
            shipped = store.read_unit(store.unit_path(results, *unit))
            with threads(profile.threads):
                again = _recompute(profile, unit, scratch, float(shipped["epsilon"]), data_dir, device, progress)
            out.append(Verified(unit, {k: _difference(again[k], shipped[k]) for k in COMPARED},
                                shipped.attrs.get("device", ""), again.attrs["device"]))
    return out


def _difference(a, b) -> float:
    """The largest absolute difference of two arrays; NaN in both is equal, NaN in one only is an infinite one."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    both = np.isnan(a) & np.isnan(b)
    gap = np.where(both, 0.0, np.abs(a - b))
    return float(np.max(np.where(np.isnan(gap), np.inf, gap), initial=0.0))


def _recompute(profile: Profile, unit: tuple, scratch: Path, epsilon: float, data_dir, device, progress):
    """Train `unit`'s run from scratch up to its epoch in `scratch`, sweep it with `epsilon`, store and return it."""
    model, dataset, seed, epoch = unit
    config = profile.train_config(model, dataset, seed)
    config.epochs = epoch
    root = data.data_root(data_dir)
    training.train(config, data.load(dataset, "train", root), data.load(dataset, "test", root), scratch,
                   progress=progress, device=str(checks.device(device)))
    again = sweep_unit(profile, scratch, unit, epsilon, data_dir, device, progress)
    store.write_unit(again, store.unit_path(scratch, *unit))
    return again
