"""The related studies run from a profile: selective backpropagation (Fig. 12), fragile neurons, random removal, depth.

A profile's optional `studies` mapping names the studies to run and their settings (SPEC §8, §10). Each study stores
one netCDF file per unit, `<results>/studies/<study>/<model>__<dataset>__seed<seed>.nc`, written atomically and
skipped when present, so an interrupted run resumes; `open_study` combines a study's units along model, dataset, seed.
The studies reuse the main sweep's checkpoints, test subset and ε.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from . import data, depth, engine, neurons, removal, selective, store, training
from .errors import FragilityError

STUDIES = ("selective", "neurons", "removal", "depth")
SCHEMA = "fragility-study/1"
# settings of each study and their defaults (None: chosen from the profile, see `settings`)
DEFAULTS = {
    "selective": {"epoch": None, "epochs": None, "filter": "h1", "score": "r_e", "tol": 0.02, "epsilons": 11},
    "neurons": {"layer": None, "by": "clean", "compress": 0.5, "amplify": 1.5},
    "removal": {"p": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], "draws": 3, "layers": None},
    "depth": {"depths": [1, 2, 4], "models": [], "epochs": None, "epsilon": "auto", "A": None, "local": True,
              "magnitudes": [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8], "seeds": None},
}


def check(raw, source: str = "profile") -> dict[str, dict]:
    """The `studies` mapping of a profile with defaults filled in, or one FragilityError naming the key at fault."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FragilityError(f"{source}: studies must be a mapping of study names ({', '.join(STUDIES)}) to settings.")
    out = {}
    for name, settings in raw.items():
        if name not in STUDIES:
            raise FragilityError(f"{source}: unknown study {name!r}: choose from {', '.join(STUDIES)}.")
        settings = settings or {}
        unknown = [k for k in settings if k not in DEFAULTS[name]]
        if unknown:
            raise FragilityError(f"{source}: study {name} has unknown setting(s) {', '.join(unknown)}: its settings "
                                 f"are {', '.join(DEFAULTS[name])}.")
        out[name] = {**DEFAULTS[name], **settings}
    return out


def study_path(results, study: str, model: str, dataset: str, seed: int) -> Path:
    """results/studies/<study>/<model>__<dataset>__seed<seed>.nc"""
    return Path(results) / "studies" / study / f"{model}__{dataset}__seed{seed}.nc"


def _write(ds: xr.Dataset, path: Path, model: str, dataset: str, seed: int, profile) -> None:
    ds = ds.assign_coords(model=model, dataset=dataset, seed=np.int64(seed))
    ds.attrs.update(schema=SCHEMA, profile=profile.name)
    store.write_netcdf(ds, path)


def _read(path: Path) -> xr.Dataset:
    ds = store.read_netcdf(path)
    if ds.attrs.get("schema") != SCHEMA or any(k not in ds.coords for k in ("model", "dataset", "seed")):
        raise FragilityError(f"{path} is not a fragility study unit: delete it so that `fragility run` recomputes it.")
    return ds


def open_study(results, study: str) -> xr.Dataset:
    """Every stored unit of `study` under `results`, combined along model, dataset and seed."""
    if study not in STUDIES:
        raise FragilityError(f"unknown study {study!r}: choose from {', '.join(STUDIES)}.")
    files = sorted((Path(results) / "studies" / study).glob("*.nc"))
    if not files:
        raise FragilityError(f"no stored {study} study under {results}: add `studies: {{{study}: {{}}}}` to the "
                             "profile and run `fragility run --profile …`.")
    stacked = xr.concat([_read(f) for f in files], dim="unit", data_vars="all", coords="all", join="outer",
                        fill_value=np.nan, combine_attrs="drop_conflicts")
    return stacked.set_index(unit=["model", "dataset", "seed"]).unstack("unit")


def _selective(ctx, settings):
    profile, results = ctx["profile"], ctx["results"]
    grid = profile.grid(ctx["key"][0])
    start = settings["epoch"] or grid.epochs[len(grid.epochs) // 2 - 1 if len(grid.epochs) > 1 else 0]
    if start not in grid.epochs:
        raise FragilityError(f"studies.selective.epoch must be one of the checkpoints {list(grid.epochs)}.")
    extra = settings["epochs"] or max(grid.epochs[-1] - start, grid.every)
    sweep_ds = store.read_unit(store.unit_path(results, *ctx["key"], start))
    runs = results / "studies" / "selective" / "runs" / "{}__{}__seed{}".format(*ctx["key"])
    return selective.selective_backprop(
        training.checkpoint_path(results, *ctx["key"], start), *ctx["sets"], runs, extra, x=ctx["x"], y=ctx["y"],
        sweep_ds=sweep_ds, filter=settings["filter"], score=settings["score"], tol=settings["tol"],
        epsilon=float(sweep_ds["epsilon"]), epsilons=settings["epsilons"], batch_size=profile.batch_size,
        device=ctx["device"], progress=ctx["progress"])


def _neurons(ctx, settings):
    net, epsilon = ctx["net"](), ctx["epsilon"]()
    options = dict(batch_size=ctx["profile"].batch_size, device=ctx["device"])
    dropout = neurons.nodal_dropout(net, ctx["x"], ctx["y"], epsilon=epsilon, layer=settings["layer"],
                                   progress=ctx["progress"], **options)
    defense = neurons.defend(net, ctx["x"], ctx["y"], dropout, by=settings["by"], compress=settings["compress"],
                             amplify=settings["amplify"], **options)
    defense = defense.drop_vars([v for v in ("epsilon", "fragility") if v in defense])
    defense = defense.rename({v: f"defense_{v}" for v in defense.data_vars})
    return xr.merge([dropout, defense], join="outer", combine_attrs="override")


def _removal(ctx, settings):
    return removal.random_removal(ctx["net"](), ctx["x"], ctx["y"], layers=settings["layers"], p=settings["p"],
                                  draws=settings["draws"], seed=ctx["key"][2], epsilon=ctx["epsilon"](),
                                  batch_size=ctx["profile"].batch_size, device=ctx["device"], progress=ctx["progress"])


def _depth_variants(settings) -> list[tuple[str, str, int]]:
    """(label, model, smallcnn depth) of every network the depth study compares."""
    return [(f"smallcnn-d{d}", "smallcnn", d) for d in settings["depths"]] + [(m, m, 2) for m in settings["models"]]


def _depth(ctx, settings, label, model, blocks):
    profile, (_, dataset, seed) = ctx["profile"], ctx["key"]
    meta = data.info(dataset)
    epochs = settings["epochs"] or profile.grid(profile.models[0]).epochs[-1]
    config = training.TrainConfig(model, dataset, seed, epochs=epochs, every=epochs, batch_size=profile.train_batch_size,
                                  lr=profile.lr, channels=meta.channels, classes=meta.classes, depth=blocks)
    root = ctx["results"] / "studies" / "depth" / "runs" / label
    path = training.train(config, *ctx["sets"], root, progress=ctx["progress"], device=ctx["device"])[-1]
    net = training.load_checkpoint(path, ctx["device"])[0]
    sweep_ds = engine.sweep(net, ctx["x"], ctx["y"], A=settings["A"] or profile.A, filters=("h1",),
                            layers=None if settings["local"] else [], epsilon=settings["epsilon"],
                            ratio=profile.ratio, batch_size=profile.batch_size, device=ctx["device"],
                            progress=ctx["progress"])
    ds = depth.depth_profile(net, ctx["x"], ctx["y"], magnitudes=settings["magnitudes"], seed=seed, sweep_ds=sweep_ds,
                             batch_size=profile.batch_size, device=ctx["device"], progress=ctx["progress"])
    return ds.assign_coords(depth=np.int64(blocks if model == "smallcnn" else 0))


RUNNERS = {"selective": _selective, "neurons": _neurons, "removal": _removal, "depth": _depth}


def units(profile) -> list[tuple[str, dict, tuple, tuple]]:
    """Every study unit of the profile: (study, settings, (model or depth label, dataset, seed), runner arguments)."""
    jobs = []
    for name, settings in profile.studies.items():
        for model, dataset, seed in profile.runs():
            if name == "depth":
                if model != profile.models[0] or seed not in (settings["seeds"] or profile.grid(model).seeds[:1]):
                    continue
                jobs += [(name, settings, (label, dataset, seed), (label, m, d))
                         for label, m, d in _depth_variants(settings)]
            else:
                jobs.append((name, settings, (model, dataset, seed), ()))
    return jobs


def needed_runs(profile, results: Path) -> set[tuple]:
    """The training runs (model, dataset, seed) whose checkpoints a missing study unit starts from."""
    return {key for name, _, key, _ in units(profile) if name != "depth"
            and not study_path(results, name, *key).is_file()}


def run(profile, results: Path, data_dir=None, device: str = "cpu", progress: bool = True) -> None:
    """Run every study unit of the profile whose file is missing (after training and sweeping)."""
    root, sets, tests = data.data_root(data_dir), {}, {}
    todo = [j for j in units(profile) if not study_path(results, j[0], *j[2]).is_file()]
    for name, settings, key, extra in tqdm(todo, desc="studies", unit="unit", disable=not progress):
        model, dataset, seed = key
        if dataset not in sets:
            sets[dataset] = data.load(dataset, "train", root), data.load(dataset, "test", root)
            tests[dataset] = data.test_subset(sets[dataset][1], profile.n_test, seed=0)
        last = profile.grid(model).epochs[-1]
        ctx = {"profile": profile, "results": results, "key": key, "sets": sets[dataset], "device": device,
               "x": tests[dataset][0], "y": tests[dataset][1], "progress": progress,
               "net": lambda: training.load_checkpoint(training.checkpoint_path(results, *key, last), device)[0],
               "epsilon": lambda: float(store.read_unit(store.unit_path(results, *key, last))["epsilon"])}
        ds = RUNNERS[name](ctx, settings, *extra)
        ds.attrs.update({f"study_{k}": str(v) for k, v in settings.items()})
        _write(ds, study_path(results, name, *key), model, dataset, seed, profile)
