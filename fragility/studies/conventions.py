"""The same scores under the authors' public code conventions and the other readings a verdict could hang on.

The paper's text and the authors' public code differ: the code crafts FGSM against each filtered network (our
`attack="adaptive"`), never switches the network to eval mode while filtering (BatchNorm normalizes each batch by its
own statistics: `batchnorm="batch"`), integrates scores with Simpson's rule and scales each response by its own
accuracy at the first threshold; and the paper searches ε once per network, so the adversarial/clean ratio drifts
from ρ at the other checkpoints. This study sweeps chosen checkpoints again under each reading, one change at a time
(filter h1 by default, the scores' default):

- ``adaptive``: FGSM crafted against each filtered network, the stored ε;
- ``batch``: BatchNorm on each batch's own statistics, fixed FGSM, the stored ε;
- ``epsilon``: fixed FGSM with ε searched on that checkpoint (constraint 3 met at every checkpoint).

One unit per (model, dataset, seed) holds accuracy(reading, epoch, layer, filter, alpha, input) like response units;
`scores(..., rule="simpson", scaling="first")` on the adaptive sweeps gives the code's reading beside the paper's.
Each sweep is a step of its unit (fragility.steps), `sweep/<reading>/<epoch>`: a task of its own, kept as
<reading>-epoch<EEE>.nc under the unit's folder.
"""
from __future__ import annotations

import time
from functools import partial

import numpy as np
import xarray as xr

from .. import chapters, checks, steps, store
from .. import partial as partials
from ..engine import sweep
from ..errors import FragilityError
from ..filters import FILTERS
from ..scores import characterize, scores
from ..plot import draw
from ..selection import check_parameters, select
from .. import study as base

CODE = {"rule": "simpson", "scaling": "first"}  # with the adaptive attack: the authors' code
PAPER = {"rule": "rectangle", "scaling": "unperturbed"}  # with the fixed attack: the paper's text
READINGS = {"adaptive": {"crafted": "adaptive"}, "batch": {"batchnorm": "batch"}, "epsilon": {"epsilon": "auto"}}
VARIABLES = ("accuracy", "n_filtered", "n_params", "base_accuracy", "epsilon", "chance", "correct", "base_correct")


def _checkpoints(ctx, reading: str) -> list[int]:
    """The checkpoints a reading sweeps: every one (null), n spread evenly with the last included, or a list."""
    return chosen(ctx.settings["readings"][reading], ctx.epochs())


def chosen(value, epochs) -> list[int]:
    epochs = list(epochs)
    if value is None:
        return epochs
    if isinstance(value, int):
        picks = np.linspace(len(epochs) - 1, 0, min(value, len(epochs))).round().astype(int)
        return sorted({epochs[i] for i in picks})
    return list(value)


def _part(ctx, reading: str, epoch: int):
    return ctx.folder(f"{reading}-epoch{epoch:03d}.nc")


def _steps(ctx) -> list[steps.Step]:
    """One step per reading and checkpoint it sweeps, `sweep/<reading>/<epoch>`, writing <reading>-epoch<EEE>.nc
    under the unit's folder (a part written before the steps records no settings: it is taken as it is)."""
    return [steps.Step(f"sweep/{reading}/{epoch}", _part(ctx, reading, epoch), partial(_sweep, ctx, reading, epoch),
                       recorded=partial(steps.checked, ctx, _part(ctx, reading, epoch), False))
            for reading in ctx.settings["readings"] for epoch in _checkpoints(ctx, reading)]


def _sweep(ctx, reading: str, epoch: int) -> None:
    """Sweep the profile's checkpoint at `epoch` under `reading` and store it; where no ε meets constraint 3 at that
    checkpoint (the `epsilon` reading), store that instead: an empty part whose `skipped` attribute says why."""
    s, (x, y), profile = ctx.settings, ctx.test, ctx.profile
    options = {"attack": profile.adversary(), "crafted": "fixed", "epsilon": float(ctx.responses(epoch)["epsilon"]),
               **READINGS[reading]}
    start = time.perf_counter()
    try:
        ds = sweep(ctx.network(epoch), x, y, A=s["A"] or profile.A, filters=tuple(s["filters"]), ratio=profile.ratio,
                   batch_size=profile.batch_size, device=ctx.device, progress=ctx.progress, image=ctx.image,
                   partial=partials.beside(_part(ctx, reading, epoch)), **options)
    except FragilityError as err:
        if reading != "epsilon":
            raise
        ds = xr.Dataset(attrs={"skipped": f"epoch {epoch}: {err}"})  # no ε meets constraint 3 at this checkpoint
    else:
        ds = ds[list(VARIABLES)].expand_dims(reading=[reading], epoch=[epoch])
    steps.write_netcdf(ctx, ds, _part(ctx, reading, epoch), time.perf_counter() - start)


def _run(ctx: base.Context) -> xr.Dataset:
    """The unit: its steps' sweeps combined (those of the `epsilon` reading that no ε allowed named in the attribute
    `epsilon_skipped`)."""
    parts, skipped = [], []
    for step in _steps(ctx):
        part = steps.read_netcdf(ctx, step.output, required=False)
        if part.data_vars:
            parts.append(part)
        elif "skipped" in part.attrs:
            skipped.append(str(part.attrs["skipped"]))
        else:
            raise FragilityError(f"{step.output} holds no sweep and no reason why: {store.MOVE}.")
    out = xr.combine_by_coords(parts, combine_attrs="drop_conflicts", join="outer")
    out.attrs["epsilon_skipped"] = "; ".join(skipped)
    return out


def _units(profile, settings):
    out = []
    for model in settings["models"] or profile.models[:1]:
        seeds = settings["seeds"] or profile.grid(model).seeds[:1]
        out += [base.Unit((model, d, s), model, ((model, d, s),)) for d in profile.datasets for s in seeds]
    return out


def _validate(settings, profile):
    unknown = [k for k in settings["readings"] if k not in READINGS]
    if unknown:
        raise FragilityError(f"studies.conventions.readings: unknown reading(s) {', '.join(map(str, unknown))}: "
                             f"choose from {', '.join(READINGS)}.")
    for model in settings["models"] or profile.models[:1]:
        if model not in profile.models:
            raise FragilityError(f"studies.conventions.models: {model} is not a model of the profile.")
        grid = profile.grid(model)
        off = [v for v in settings["seeds"] or [] if v not in grid.seeds]
        if off:
            raise FragilityError(f"studies.conventions.seeds {off} are not seeds of {model}: choose from "
                                 f"{list(grid.seeds)}.")
        for reading, value in settings["readings"].items():
            ok = value is None or (checks.is_whole(value) and value >= 1) or (
                isinstance(value, list) and value and all(v in grid.epochs for v in value))
            if not ok:
                raise FragilityError(f"studies.conventions.readings.{reading} must be null (every checkpoint), a "
                                     f"number of checkpoints ≥ 1, or checkpoints of {model} ({list(grid.epochs)}); "
                                     f"got {value!r}.")


def as_responses(ds: xr.Dataset, reading: str) -> xr.Dataset:
    """One reading's sweeps as responses (model, dataset, seed, epoch, layer, …), the epochs it swept."""
    out = ds.sel(reading=reading, drop=True).drop_vars("stored").drop_attrs()
    return out.dropna("epoch", how="all", subset=["accuracy"])


def readings(ds: xr.Dataset, responses: xr.Dataset, model, dataset, filter="h1") -> xr.Dataset:
    """Local and global scores of one model and dataset under both readings, reading ∈ {paper, code}, over the
    seeds and epochs the study swept (mean over seeds): the paper's from the fixed-attack responses, the code's
    from the adaptive sweeps with Simpson's rule and first-threshold scaling."""
    seeds = base.seeds(ds, model, dataset)
    code = as_responses(ds, "adaptive").sel(model=model, dataset=dataset, seed=seeds).dropna(
        "epoch", how="all", subset=["accuracy"])
    code = code.dropna("layer", how="all", subset=["n_params"])
    paper = responses.sel(model=model, dataset=dataset, seed=seeds, epoch=code["epoch"].values,
                          layer=code["layer"].values).load()
    out = [scores(paper, filter, **PAPER), scores(code, filter, **CODE)]
    return xr.concat([r.reset_coords(drop=True).mean("seed") for r in out], xr.DataArray(["paper", "code"],
                                                                                         dims="reading"))


def figure(ds, results=None, model=None, dataset=None):
    """Each layer's r_x and r_xε under the paper's reading (fixed attack, rectangle rule, scaled by the unperturbed
    accuracy) and the authors' code (adaptive attack, Simpson's rule, scaled at the first threshold), last epoch
    (`plot_readings`, a panel per score)."""
    p = check_parameters(ds, model=model, dataset=dataset)
    if results is None:
        raise FragilityError("the conventions figure compares with the stored responses: pass results=.")
    r = readings(ds, results, p["model"], p["dataset"]).isel(epoch=-1)
    fig = draw.figure(ds.sel(model=[p["model"]], dataset=[p["dataset"]]), f"Two readings · {p['model']} on "
                      f"{p['dataset']} · epoch {int(r['epoch'])} · h1", 1.5 + 0.2 * r.sizes["layer"],
                      line=draw.provenance_line(ds, attack="adaptive (code) and fixed (paper)"))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key in zip(axes, ("r_x", "r_xe")):
        plot_readings(r, key, ax=ax)
    axes[0].legend()
    return fig


def plot_readings(r: xr.Dataset, score: str = "r_x", *, ax) -> None:
    """Each layer's `score` under the paper's reading and under the authors' code conventions as paired bars, the
    robustness band ±0.02 dotted, on `ax`.

    Args:
        r: the scores of both readings at one epoch (`readings(...).isel(epoch=…)`): `score` over (reading, layer),
            with the readings "paper" and "code".
        score: "r_x", "r_xe" or "r_e".
        ax: the matplotlib Axes to draw into.
    """
    checks.require(score, checks.one_of(tuple(draw.SCORES)), "score")
    draw.panel(r, {score: ("reading", "layer")}, "r")
    draw.axes(ax)
    layers = [str(n) for n in r["layer"].values]
    y = np.arange(len(layers))
    for k, (reading, color) in enumerate((("paper", "tab:blue"), ("code", "tab:orange"))):
        ax.barh(y + (k - 0.5) * 0.4, r[score].sel(reading=reading), 0.4, color=color,
                label={"paper": "paper: fixed, rectangle, unperturbed", "code": "code: adaptive, Simpson, first"}
                [reading])
    for edge in (-0.02, 0.02):
        ax.axvline(edge, color="0.5", ls=":", lw=0.8)
    ax.set(title=draw.SCORES[score], xlabel="score")
    ax.set_yticks(y, layers, fontsize=7)
    ax.invert_yaxis()


def agreement(ds, responses, model, dataset) -> str:
    """How many (layer, epoch) labels of r_x and r_xε the two readings share."""
    r = readings(ds, responses, model, dataset).drop_sel(layer="global")
    labels = characterize(r[["r_x", "r_xe"]])
    same, size = _shared(labels.sel(reading="paper"), labels.sel(reading="code"))
    return (f"{model} on {dataset}: **the two readings agree on {sum(same.values())} of {2 * size} Fr/Ro/Af "
            "labels** — "
            + ", ".join(f"{n}/{size} ({k})" for k, n in same.items()) + " of the (layer, epoch) cells")


def _shared(a: xr.Dataset, b: xr.Dataset) -> tuple[dict, int]:
    """How many cells of r_x and of r_xe carry the same label in `a` and `b`, and the cells each score has."""
    return {k: int((a[k] == b[k]).sum()) for k in ("r_x", "r_xe")}, a["r_x"].size


def drift(results: xr.Dataset, ratio: float = 0.5) -> str:
    """How far the adversarial/clean accuracy ratio of the unperturbed networks drifts from ρ across checkpoints when
    ε is searched once per network (on the last checkpoint of the first seed), per model (mean over seeds)."""
    lines = []
    for model in np.atleast_1d(results["model"].values):
        sub = select(results, str(model))
        r = (sub["base_accuracy"].sel(input="adversarial") / sub["base_accuracy"].sel(input="clean")).mean("seed")
        for dataset in np.atleast_1d(r["dataset"].values) if "dataset" in r.dims else [None]:
            v = r.sel(dataset=dataset) if dataset is not None else r
            v = v.dropna("epoch")
            lines.append(f"- {model}: acc(f(x_ε)) / acc(f(x)) by epoch " + ", ".join(
                f"{int(e)}: {float(x):.2f}" for e, x in zip(v["epoch"].values, v.values))
                + f" (ρ = {ratio}; range {float(v.min()):.2f}–{float(v.max()):.2f})")
    return "\n".join(lines)


NAMES = {"adaptive": "FGSM crafted against each filtered network", "batch": "BatchNorm on each batch's statistics",
         "epsilon": "ε searched per checkpoint"}


def one_at_a_time(ds: xr.Dataset, responses: xr.Dataset, model, dataset, filter="h1") -> str:
    """Each reading of the study against the paper's, one change at a time, at the checkpoints it swept (mean over
    seeds): the unperturbed network's clean and adversarial accuracy under it, its ε, and how many Fr/Ro/Af labels
    of r_x and r_xε (layers, not `global`) it shares with the paper's reading — both scored as the paper scores
    (rectangle rule, scaled by the unperturbed accuracy), so only the reading's own change differs."""
    seeds = base.seeds(ds, model, dataset)
    lines = []
    for reading in (str(r) for r in ds["reading"].values):
        alt = as_responses(ds, reading).sel(model=model, dataset=dataset, seed=seeds)
        alt = alt.dropna("epoch", how="all", subset=["accuracy"]).dropna("layer", how="all", subset=["n_params"])
        if alt.sizes["epoch"] == 0:
            continue
        paper = responses.sel(model=model, dataset=dataset, seed=seeds, epoch=alt["epoch"].values,
                              layer=alt["layer"].values).load()
        labels = [characterize(scores(x, filter, **PAPER).reset_coords(drop=True).mean("seed")[["r_x", "r_xe"]]
                               .drop_sel(layer="global")) for x in (paper, alt)]
        same, size = _shared(*labels)
        before, after = (x["base_accuracy"].mean("seed") for x in (paper, alt))
        epochs = [int(e) for e in alt["epoch"].values]
        accs = "; ".join(f"epoch {e}: " + ", ".join(f"{i} {float(before.sel(epoch=e, input=i)):.3f} → "
                                                   f"{float(after.sel(epoch=e, input=i)):.3f}"
                                                   for i in ("clean", "adversarial"))
                         + (f" (ε {float(alt['epsilon'].sel(epoch=e).mean()):.3g})" if reading == "epsilon" else "")
                         for e in epochs)
        lines.append(f"- **{NAMES.get(reading, reading)}** (epoch{'s' if len(epochs) > 1 else ''} "
                     f"{', '.join(map(str, epochs))}): shares {sum(same.values())} of {2 * size} labels with "
                     f"the paper's reading ({same['r_x']}/{size} r_x, {same['r_xe']}/{size} r_xe); "
                     f"the unperturbed network, paper → "
                     f"this reading: {accs}")
    return "\n".join(lines)


def summary(ds, results=None, model=None, dataset=None) -> str:
    p = check_parameters(ds, model=model, dataset=dataset)
    text = agreement(ds, results, p["model"], p["dataset"]) + "."
    if results is not None:
        each = one_at_a_time(ds, results, p["model"], p["dataset"])
        if each:
            text += ("\n\n**Each reading, one change at a time** (scored as the paper scores; the claims chapter "
                     "gives each verdict under each):\n\n" + each)
        text += ("\n\n**ε's drift.** With ε searched once per network, the adversarial/clean ratio of each unperturbed "
                 "checkpoint:\n\n" + drift(results, float(results.attrs.get("ratio", 0.5))))
    return text


STUDY = base.register(base.Study(
    name="conventions", title="The authors' code conventions",
    settings={"models": base.Setting(None, base.models_rule()),
              "seeds": base.Setting(None, checks.items(checks.whole(0))),
              "filters": base.Setting(["h1"], checks.items(checks.one_of(FILTERS))),
              "A": base.Setting(None, checks.whole(1)),
              "readings": base.Setting(dict.fromkeys(READINGS), checks.Rule(
                  lambda v: isinstance(v, dict) and len(v) > 0, f"a mapping of readings ({', '.join(READINGS)}) to "
                                                               "the checkpoints each sweeps"))},
    units=_units, run=_run, steps=_steps, variables=VARIABLES,
    parameters=("model", "dataset"), figure=figure, summary=summary, validate=_validate, needs_responses=True))
chapters.register(chapters.Chapter("study_conventions", figure, summary, study="conventions",
                                   paper=dict(model="resnet18")))
