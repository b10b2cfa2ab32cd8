"""The same scores under the authors' public code conventions, to see whether a verdict depends on the reading.

The paper's text and the authors' public code differ: the code crafts FGSM against each filtered network (our
`attack="adaptive"`), integrates scores with Simpson's rule, and scales each response by its own accuracy at the
first threshold. This study sweeps chosen checkpoints again with the adaptive attack (filter h1 by default, the
scores' default) and stores them like response units, one unit per (model, dataset, seed) with an epoch dimension;
`scores(..., rule="simpson", scaling="first")` then gives the code's reading beside the paper's.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .. import checks, store
from ..engine import sweep
from ..errors import FragilityError
from ..filters import FILTERS
from ..scores import characterize, scores
from . import base

CODE = {"rule": "simpson", "scaling": "first"}  # with the adaptive attack: the authors' code
PAPER = {"rule": "rectangle", "scaling": "unperturbed"}  # with the fixed attack: the paper's text


def _epochs(ctx) -> list[int]:
    return list(ctx.settings["epochs"] or ctx.epochs())


def _run(ctx: base.Context) -> xr.Dataset:
    s, (x, y), profile = ctx.settings, ctx.test, ctx.profile
    units = []
    for epoch in _epochs(ctx):
        part = ctx.folder(f"epoch{epoch:03d}.nc")  # each epoch's sweep is kept, so an interrupted unit resumes
        if part.is_file():
            units.append(store.read_netcdf(part))
            continue
        epsilon = float(ctx.responses(epoch)["epsilon"])
        ds = sweep(ctx.network(epoch), x, y, A=s["A"] or profile.A, filters=tuple(s["filters"]), epsilon=epsilon,
                   attack="adaptive", batch_size=profile.batch_size, device=ctx.device, progress=ctx.progress)
        ds["layer_index"] = ("layer", np.arange(ds.sizes["layer"], dtype=np.int64))
        store.write_netcdf(ds, part)
        units.append(ds)
    return xr.concat(units, "epoch", combine_attrs="drop_conflicts").assign_coords(epoch=_epochs(ctx))


def _units(profile, settings):
    out = []
    for model in settings["models"] or profile.models[:1]:
        seeds = settings["seeds"] or profile.grid(model).seeds[:1]
        out += [base.Unit((model, d, s), model, ((model, d, s),)) for d in profile.datasets for s in seeds]
    return out


def _validate(settings, profile):
    for model in settings["models"] or profile.models[:1]:
        if model not in profile.models:
            raise FragilityError(f"studies.conventions.models: {model} is not a model of the profile.")
        grid = profile.grid(model)
        for key, have in (("seeds", grid.seeds), ("epochs", grid.epochs)):
            off = [v for v in settings[key] or [] if v not in have]
            if off:
                raise FragilityError(f"studies.conventions.{key} {off} are not {key} of {model}: choose from "
                                     f"{list(have)}.")


def readings(ds: xr.Dataset, responses: xr.Dataset, model, dataset, filter="h1") -> xr.Dataset:
    """Local and global scores of one model and dataset under both readings, reading ∈ {paper, code}, over the
    seeds and epochs the study swept (mean over seeds): the paper's from the fixed-attack responses, the code's
    from the adaptive sweeps with Simpson's rule and first-threshold scaling."""
    seeds = base.seeds(ds, model, dataset)
    code = ds.sel(model=model, dataset=dataset, seed=seeds).dropna("epoch", how="all", subset=["accuracy"])
    code = code.dropna("layer", how="all", subset=["n_params"])
    paper = responses.sel(model=model, dataset=dataset, seed=seeds, epoch=code["epoch"].values,
                          layer=code["layer"].values).load()
    out = [scores(paper, filter, **PAPER), scores(code, filter, **CODE)]
    return xr.concat([r.reset_coords(drop=True).mean("seed") for r in out], xr.DataArray(["paper", "code"],
                                                                                         dims="reading"))


def figure(ds, results=None, model=None, dataset=None):
    """Each layer's r_x and r_xε under the paper's reading (fixed attack, rectangle rule, scaled by the unperturbed
    accuracy) and the authors' code (adaptive attack, Simpson's rule, scaled at the first threshold), last epoch."""
    from ..plot import draw
    from ..selection import check_parameters

    p = check_parameters(ds, model=model, dataset=dataset)
    if results is None:
        raise FragilityError("the conventions figure compares with the stored responses: pass results=.")
    r = readings(ds, results, p["model"], p["dataset"]).isel(epoch=-1)
    layers = [str(n) for n in r["layer"].values]
    fig = draw.figure(ds.sel(model=[p["model"]], dataset=[p["dataset"]]), f"Two readings · {p['model']} on "
                      f"{p['dataset']} · epoch {int(r['epoch'])} · h1", 1.5 + 0.2 * len(layers),
                      line=draw.provenance_line(ds, attack="adaptive (code) and fixed (paper)"))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(layers))
    for ax, key in zip(axes, ("r_x", "r_xe")):
        for k, (reading, color) in enumerate((("paper", "tab:blue"), ("code", "tab:orange"))):
            ax.barh(y + (k - 0.5) * 0.4, r[key].sel(reading=reading), 0.4, color=color,
                    label={"paper": "paper: fixed, rectangle, unperturbed", "code": "code: adaptive, Simpson, first"}
                    [reading])
        for edge in (-0.02, 0.02):
            ax.axvline(edge, color="0.5", ls=":", lw=0.8)
        ax.set(title=draw.SCORES[key], xlabel="score")
        ax.set_yticks(y, layers, fontsize=7)
        ax.invert_yaxis()
    axes[0].legend()
    return fig


def agreement(ds, responses, model, dataset) -> str:
    """How many (layer, epoch) labels of r_x and r_xε the two readings share."""
    r = readings(ds, responses, model, dataset).drop_sel(layer="global")
    labels = characterize(r[["r_x", "r_xe"]])
    same = (labels.sel(reading="paper") == labels.sel(reading="code"))
    agree, total = sum(int(same[k].sum()) for k in ("r_x", "r_xe")), sum(same[k].size for k in ("r_x", "r_xe"))
    return (f"{model} on {dataset}: **the two readings agree on {agree} of {total} Fr/Ro/Af labels** — "
            + ", ".join(f"{int(same[k].sum())}/{same[k].size} ({k})" for k in ("r_x", "r_xe")) + " of the "
            "(layer, epoch) cells")


def summary(ds, results=None, model=None, dataset=None) -> str:
    from ..selection import check_parameters

    p = check_parameters(ds, model=model, dataset=dataset)
    return agreement(ds, results, p["model"], p["dataset"]) + "."


STUDY = base.Study(
    name="conventions", title="The authors' code conventions",
    settings={"models": base.Setting(None, base.models_rule()),
              "seeds": base.Setting(None, checks.items(checks.whole(0))),
              "epochs": base.Setting(None, checks.items(checks.whole(1), increasing=True)),
              "filters": base.Setting(["h1"], checks.items(checks.one_of(FILTERS))),
              "A": base.Setting(None, checks.whole(1))},
    units=_units, run=_run, variables=("accuracy", "n_filtered", "n_params", "base_accuracy", "epsilon"),
    parameters=("model", "dataset"), figure=figure, summary=summary, claims=lambda ds, responses=None: [],
    validate=_validate, needs_responses=True)
