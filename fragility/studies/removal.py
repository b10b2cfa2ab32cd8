"""Random removal of a fraction p of one layer's weights (seed 003), beside systematic synaptic filtering.

Seed 003 reports that CNNs lose less than 30 % of their accuracy when over 70 % of a top layer's weights are removed
at random, while the same removal in the first layer brings them to chance. The removal is the `random` stress
(`fragility.stresses.random`): for each layer, draw d fixes a random order of the layer's n weights (seeded by seed,
layer name and d); fraction p sets the first round(p·n) of that order to 0 (halves round up), so within a draw the
removed sets grow with p. It runs through the sweep engine: only the layer's weight is touched, adversarial inputs
are crafted once against the unperturbed network, what does not depend on the layer runs once per batch (the graph
cut), and equal masks are evaluated once.
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from .. import chapters, checks, data, uncertainty
from ..engine import INPUTS, Cells, _trace, base_correct, evaluate, prepare
from ..errors import FragilityError
from ..preserve import preserved
from ..selection import choices as response_choices
from ..store import layer_order
from ..plot import draw
from ..selection import check_parameters
from ..stresses.random import RandomRemoval, fractions, random_mask, removal_count  # noqa: F401 (their home before)
from ..verdicts import Claim, Outcome, Untestable, estimate, panels
from .. import study as base

AT, KEEP = 0.7, 0.3  # seed 003: > 70 % removed, < 30 % accuracy decrease
TOP_LAYERS = 2  # seed 003's "top convolutional or dense layers": the last two layers in forward order
CHANCE = 0.1  # the first layer "at chance": it keeps < 10 % of its above-chance accuracy


def random_removal(model, x, y=None, *, layers=None, p=np.linspace(0, 1, 11), draws: int = 5, seed: int = 0,
                   epsilon=None, batch_size: int = 500, device=None, progress: bool = True,
                   attack=None) -> xr.Dataset:
    """Accuracy with a random fraction p of one layer's weights set to zero, per layer, fraction and draw.

    Args:
        model, x, y: the network and its test inputs and labels (or a DataLoader).
        layers: Conv2d/Linear layers (None: all). p: the fractions. draws: random orders per layer.
        seed: seeds the orders. epsilon: None (clean inputs only), a number or "auto" (adds the attack's inputs,
            crafted once against the unperturbed network). attack: the attack (default FGSM).

    Returns:
        accuracy(layer, p, draw, input), base_accuracy(input), n_removed(layer, p), n_params(layer), epsilon.
    """
    ps = fractions(p)
    draws = int(checks.require(draws, checks.whole(1, 1000), "draws"))
    seed = checks.count(seed, "seed", 0)
    adversarial = epsilon is not None
    inputs = INPUTS if adversarial else INPUTS[:1]
    with preserved(model):
        plan = prepare(model, x, y, layers=layers, include_global=False, epsilon=0.0 if epsilon is None else epsilon,
                       attack="fixed" if attack is None else attack, batch_size=batch_size, device=device,
                       progress=progress)
        base_correct_ = base_correct(plan)[:len(inputs)]
        graph = _trace(plan.model)
        cells = [(RandomRemoval(seed, d, tuple(ps)), j) for d in range(draws) for j in range(len(ps))]
        acc = np.zeros((len(plan.layers), len(ps), draws, len(inputs)))
        n_removed = np.zeros((len(plan.layers), len(ps)), dtype=np.int64)
        for li, layer in enumerate(tqdm(plan.layers, desc="random removal", unit="layer", disable=not plan.progress)):
            found = Cells(plan, layer, cells, base_correct_)
            for k, hits in enumerate(evaluate(plan, graph, layer, found.weight_sets(), clean_only=not adversarial)[0]):
                found.add(k, hits)
            acc[li] = (found.result.sum(-1) / len(plan.y)).reshape(draws, len(ps), len(inputs)).transpose(1, 0, 2)
            n_removed[li] = found.n_filtered[:len(ps)]
    ds = xr.Dataset(
        {"accuracy": (("layer", "p", "draw", "input"), acc),
         "base_accuracy": (("input",), base_correct_.sum(-1) / len(plan.y)),
         "n_removed": (("layer", "p"), n_removed),
         "n_params": (("layer",), np.array([plan.n_params(n) for n in plan.layers], dtype=np.int64))},
        coords={"layer": plan.layers, "p": ps, "draw": np.arange(draws), "input": list(inputs)},
        attrs={"draws": draws, "n_test": len(plan.y)})
    if adversarial:
        ds["epsilon"] = ((), plan.epsilon)
    ds["accuracy"].attrs["long_name"] = "accuracy with a random fraction p of the layer's weights set to zero"
    return ds


def _interpolate(q: np.ndarray, fraction: np.ndarray, acc: np.ndarray, base_acc: float) -> np.ndarray:
    """The filtered accuracy at removed fractions q, linear between the sweep's fractions (0 removed: base)."""
    xs, first = np.unique(np.concatenate([[0.0], fraction]), return_index=True)  # equal fractions: the same mask
    return np.interp(q, xs, np.concatenate([[base_acc], acc])[first])


def compare_with_filtering(removal: xr.Dataset, sweep: xr.Dataset, filter: str = "h1", tol: float = 0.02):
    """Random removal beside `filter` (h1 or h2) synaptic filtering of the same fraction of the same layer: the
    sweep's accuracy interpolated at each random removal's removed share. Returns fraction, random_mean,
    random_std (over draws), filtered, difference = filtered − random_mean and agree = ``|difference| ≤ tol``."""
    checks.require(filter, checks.one_of(("h1", "h2")), "filter (its removed share grows with α)")
    if filter not in sweep["filter"].values:
        raise FragilityError(f"filter {filter!r} is not in this sweep: it has {', '.join(sweep['filter'].values)}.")
    layers = [n for n in removal["layer"].values if n in sweep["layer"].values]
    inputs = [i for i in removal["input"].values if i in sweep["input"].values]
    if not layers:
        raise FragilityError("the removal and the sweep share no layer: run them on the same model.")
    removal, swept = removal.sel(layer=layers, input=inputs), sweep.sel(layer=layers, input=inputs, filter=filter,
                                                                        drop=True)
    if not (removal["n_params"] == swept["n_params"]).all():
        raise FragilityError("the removal and the sweep count different weights in the same layer: run them on the "
                             "same model.")
    if "adversarial" in inputs and not np.allclose(removal["epsilon"], swept["epsilon"]):
        raise FragilityError("the removal and the sweep used different ε: pass the sweep's epsilon to random_removal.")
    fraction = (removal["n_removed"] / removal["n_params"]).rename("fraction")
    filtered = xr.apply_ufunc(_interpolate, fraction, swept["n_filtered"] / swept["n_params"], swept["accuracy"],
                              swept["base_accuracy"], input_core_dims=[["p"], ["alpha"], ["alpha"], []],
                              output_core_dims=[["p"]], vectorize=True)
    mean = removal["accuracy"].mean("draw")
    out = xr.Dataset({"fraction": fraction, "random_mean": mean, "random_std": removal["accuracy"].std("draw"),
                      "filtered": filtered.transpose(*mean.dims),
                      "difference": (filtered - mean).transpose(*mean.dims)})
    out["agree"] = abs(out["difference"]) <= tol
    return out


def _run(ctx: base.Context) -> xr.Dataset:
    s, (x, y) = ctx.settings, ctx.test
    sweep = ctx.responses(s["epoch"])
    ds = random_removal(ctx.network(s["epoch"]), x, y, layers=s["layers"], p=s["p"], draws=s["draws"], seed=ctx.seed,
                        epsilon=float(sweep["epsilon"]), batch_size=ctx.profile.batch_size, device=ctx.device,
                        progress=ctx.progress, attack=ctx.profile.adversary())
    ds.attrs.update(epoch=s["epoch"] or ctx.epochs()[-1])
    return ds


def _validate(settings, profile):
    for model in settings["models"] or profile.models[:1]:
        if model not in profile.models:
            raise FragilityError(f"studies.removal.models: {model} is not a model of the profile.")
        if settings["epoch"] is not None and settings["epoch"] not in profile.grid(model).epochs:
            raise FragilityError(f"studies.removal.epoch {settings['epoch']} is not a checkpoint of {model}.")
    base.check_layers(settings["layers"], "removal.layers", profile, settings["models"] or profile.models[:1])


def _units(profile, settings):
    return [base.Unit((m, d, s), m, ((m, d, s),)) for m, d, s in profile.runs()
            if m in (settings["models"] or profile.models[:1])]


def curves(ds, model, dataset, seed=None, input="clean", results=None) -> xr.Dataset:
    """mean and std (over draws and seeds) of accuracy(layer, p), base, fraction removed and n_params; layers in
    forward order when the sweep `results` are given."""
    seeds = base.seeds(ds, model, dataset) if seed is None else [seed]
    sub = ds.sel(model=model, dataset=dataset, seed=seeds).dropna("layer", how="all", subset=["n_params"])
    if results is not None and model in np.atleast_1d(results["model"].values):
        order = [n for n in layer_order(results, model) if n in sub["layer"].values]
        sub = sub.sel(layer=order + [n for n in sub["layer"].values if n not in order])
    acc = sub["accuracy"].sel(input=input).dropna("p", how="all")
    return xr.Dataset({"mean": acc.mean(["seed", "draw"]), "std": acc.std(["seed", "draw"]),
                       "base": sub["base_accuracy"].sel(input=input).mean("seed"),
                       "fraction": (sub["n_removed"] / sub["n_params"]).sel(p=acc["p"]).mean("seed"),
                       "n_params": sub["n_params"].max("seed")}).reset_coords(drop=True)


def vs_filtering(ds, results, model, dataset, seed=None, input="clean", filter="h1") -> xr.Dataset:
    """`compare_with_filtering` per seed, at the checkpoint the removal ran on."""
    seeds = base.seeds(ds, model, dataset) if seed is None else [seed]
    epoch = int(ds.attrs.get("epoch", response_choices(results, model, dataset)["epoch"][-1]))
    out = []
    for s in seeds:
        removal = ds.sel(model=model, dataset=dataset, seed=s).reset_coords(drop=True)
        removal = removal[["accuracy", "n_removed", "n_params", "epsilon"]].dropna("layer", how="all",
                                                                                 subset=["n_params"])
        removal = removal.dropna("p", how="all", subset=["accuracy"]).dropna("draw", how="all", subset=["accuracy"])
        sweep = results.sel(model=model, dataset=dataset, seed=s, epoch=epoch).reset_coords(drop=True).load()
        out.append(compare_with_filtering(removal.sel(input=[input]), sweep, filter).sel(input=input, drop=True))
    return xr.concat(out, xr.DataArray(seeds, dims="seed"))


def at_fraction(ds, model, dataset, samples: int = uncertainty.SAMPLES, seed: int = 0) -> xr.Dataset:
    """Per layer, the clean accuracy with the fraction AT of its weights removed at random and the unperturbed
    accuracy, with bootstrap replicates over the (seed, draw) runs (dim `sample`, sample 0 the mean of every run).
    A layer is averaged over the runs that studied it, its unperturbed accuracy over the same runs."""
    sub = ds.sel(model=model, dataset=dataset, seed=base.seeds(ds, model, dataset), input="clean")
    sub = sub.dropna("layer", how="all", subset=["n_params"])
    accuracy = sub["accuracy"].interp(p=AT).stack(run=("seed", "draw")).dropna("run", how="all")
    weights = uncertainty.draws(accuracy.sizes["run"], samples, np.random.default_rng(seed))
    weights = xr.DataArray(weights / weights.sum(1, keepdims=True), dims=("sample", "run"))
    base_acc = sub["base_accuracy"].broadcast_like(sub["accuracy"].isel(layer=0, p=0, drop=True))
    base_acc = base_acc.stack(run=("seed", "draw")).sel(run=accuracy["run"])
    # a layer is averaged over the runs that studied it only (weights renormalised per layer)
    studied = weights * accuracy.notnull()
    studied = studied / studied.sum("run")
    mean = (accuracy.fillna(0) * studied).sum("run")
    return xr.Dataset({"accuracy": mean, "base": (base_acc * studied).sum("run")}).assign_coords(
        sample=np.arange(samples + 1), chance=1 / data.info(dataset).classes)


def _found(ev, panel):
    study = ev.study("removal")
    if study is None or (panel.model, panel.dataset) not in base.pairs(study):
        raise Untestable(f"the removal study on {panel.model} and {panel.dataset}")
    return at_fraction(study, panel.model, panel.dataset, ev.samples)


def _s3a(ev, panel, reading) -> Outcome:
    f = _found(ev, panel)
    top = [str(n) for n in f["layer"].values[-TOP_LAYERS:]]
    loss = 1 - f["accuracy"].sel(layer=top) / f["base"]
    stat = loss.max("layer")
    return Outcome(stat, f"clean accuracy lost with {AT:.0%} of the weights removed at random (over draws and seeds) "
                         "— " + ", ".join(f"`{n}` {estimate(loss.sel(layer=n), '.1%')}" for n in top)
                         + f"; the larger: {estimate(stat, '.1%')}.")


def _s3b(ev, panel, reading) -> Outcome:
    f = _found(ev, panel)
    first = str(f["layer"].values[0])
    kept = (f["accuracy"].sel(layer=first) - f["chance"]) / (f["base"].sel(layer=first) - f["chance"])
    return Outcome(kept, f"`{first}` with {AT:.0%} of its weights removed at random keeps {estimate(kept, '.1%')} of "
                         f"its above-chance accuracy (accuracy {estimate(f['accuracy'].sel(layer=first))}, chance "
                         f"{float(f['chance']):.2f}).")


def figure(ds, results=None, model=None, dataset=None, seed=None, layer=None, input="clean", filter="h1"):
    """Seed 003: (a) mean accuracy, layer × removed fraction p (`plot_grid`); (b) one layer's random removal (mean ±
    std over draws and seeds) beside `filter` filtering of the same share (with the sweep `results`;
    `plot_layer`)."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, layer=layer, input=input, filter=filter)
    c = curves(ds, p["model"], p["dataset"], seed, p["input"], results)
    layers = [str(n) for n in c["layer"].values]
    name = p["layer"] if layer is not None else layers[0]
    cmp = None
    if results is not None:
        cmp = vs_filtering(ds, results, p["model"], p["dataset"], seed, p["input"], p["filter"]).sel(layer=name)
    shown = ds.sel(model=[p["model"]], dataset=[p["dataset"]])
    fig = draw.figure(shown, f"Random weight removal (seed 003) · {p['model']} on {p['dataset']} · {p['input']}",
                      1.2 + max(4.0, 0.16 * len(layers)), line=draw.provenance_line(shown, attack="fixed"))
    ax, bx = fig.subplots(1, 2, width_ratios=(1.3, 1))
    plot_grid(c, ax=ax)
    plot_layer(c.sel(layer=name), cmp, p["filter"], 1 / int(ds.attrs.get("classes", 10)), ax=bx)
    return fig


def plot_grid(c: xr.Dataset, *, ax) -> None:
    """Panel (a) on `ax`: the mean accuracy with a share p of each layer's weights removed at random, layer × p, with
    its colour bar.

    Args:
        c: one model's removal `curves` on one data set and input: `mean` over (layer, p).
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(c, {"mean": ("layer", "p")}, "c")
    draw.axes(ax)
    layers = [str(n) for n in c["layer"].values]
    draw.grid(ax.figure, ax, c["mean"].transpose("layer", "p").values, layers, c["p"].values,
              "(a) mean accuracy, random removal", "accuracy", xlabel="share p of the layer's weights removed",
              marks=np.full((len(layers), c.sizes["p"]), ""))


def plot_layer(c: xr.Dataset, comparison: xr.Dataset | None = None, filter: str = "h1", chance: float = 0.1, *,
               ax) -> None:
    """Panel (b) on `ax`: one layer's accuracy against the share of its weights removed at random (mean ± std),
    beside `filter` filtering of the same share (mean over seeds) when `comparison` is given, and chance.

    Args:
        c: one layer's removal curves (`curves(...).sel(layer=…)`): `mean`, `std` and `fraction` over p.
        comparison: that layer's `vs_filtering(...).sel(layer=…)`: `fraction` and `filtered` over (seed, p); None:
            random removal alone.
        filter: the filter `comparison` was computed with, for its label.
        chance: the chance accuracy, 1 / classes.
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(c, {"mean": ("p",), "std": ("p",), "fraction": ("p",)}, "c")
    if comparison is not None:
        draw.panel(comparison, {"fraction": ("seed", "p"), "filtered": ("seed", "p")}, "comparison")
    checks.require(filter, draw.TEXT, "filter")
    checks.require(chance, checks.real(0, 1, open_low=True), "chance")
    draw.axes(ax)
    name = str(c["layer"].item()) if "layer" in c.coords else ""
    ax.plot(c["fraction"], c["mean"], "o-", color="tab:purple", label="random removal (mean ± std)")
    ax.fill_between(c["fraction"], c["mean"] - c["std"], c["mean"] + c["std"], color="tab:purple", alpha=0.2, lw=0)
    if comparison is not None:
        ax.plot(comparison["fraction"].mean("seed"), comparison["filtered"].mean("seed"), "s--", color="tab:blue",
                ms=4, label=f"{filter} filtering of the same share")
    ax.axhline(chance, color="0.4", ls="--", lw=0.8, label="chance")
    ax.set(xlabel="share of the layer's weights removed", ylabel="accuracy", ylim=(0, 1.02), title=f"(b) {name}")
    ax.legend()


def summary(ds, results=None, model=None, dataset=None, seed=None, layer=None, input="clean", filter="h1") -> str:
    """Markdown: the accuracy each layer keeps at p = 0.7 and at p = 1 (the claims S3a and S3b are decided in the
    claims chapter, with their intervals over draws and seeds)."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, input=input, filter=filter)
    c = curves(ds, p["model"], p["dataset"], seed, "clean", results)
    rows = ["| layer | weights | accuracy at p = 0.7 | at p = 1 |", "|---|---|---|---|"]
    rows += [f"| `{n}` | {int(c['n_params'].sel(layer=n))} | {float(c['mean'].sel(layer=n).interp(p=AT)):.3f} | "
             f"{float(c['mean'].sel(layer=n).isel(p=-1)):.3f} |" for n in c["layer"].values]
    return "\n".join(rows + ["", f"Unperturbed accuracy {float(c['base']):.3f} (mean over seeds; each cell the mean "
                                  "over draws and seeds)."])


CLAIMS = (
    Claim("S3a", "*Alexnet shows less than a 30% decrease in classification performance when randomly removing over "
                 "70% of weight connections in the top convolutional or dense layers* (seed 003)",
          panels("a mnist cifar10"), f"each of the last {TOP_LAYERS} layers loses < {KEEP:.0%} of the clean accuracy "
                                     f"with a random {AT:.0%} of its weights removed (mean over draws and seeds; the "
                                     "larger loss below 0.3)", _s3a, KEEP, False, "study_removal", ()),
    Claim("S3b", "*but performance is almost at chance with the same perturbation in the first convolutional layer* "
                 "(seed 003)", panels("a mnist cifar10"),
          f"the first layer keeps < {CHANCE:.0%} of its above-chance accuracy with a random {AT:.0%} of its weights "
          "removed (mean over draws and seeds)", _s3b, CHANCE, False, "study_removal", ()),
)


def _choices(ds, model, dataset):
    have = ds["n_params"].sel(model=model, dataset=dataset).notnull()
    return {"layer": [str(n) for n, ok in zip(have["layer"].values, have.any("seed").values) if ok],
            "input": [str(i) for i in ds["input"].values], "filter": ["h1", "h2"]}


STUDY = base.register(base.Study(
    name="removal", title="Random weight removal (seed 003)",
    settings={"models": base.Setting(None, base.models_rule()), "epoch": base.Setting(None, checks.whole(1)),
              "p": base.Setting([round(0.1 * k, 1) for k in range(11)],
                                checks.items(checks.real(0, 1), what="a list of distinct fractions in [0, 1]")),
              "draws": base.Setting(3, checks.whole(1)),
              "layers": base.Setting(None, checks.items(checks.Rule(lambda v: isinstance(v, str), "a layer name")))},
    units=_units, run=_run, variables=("accuracy", "base_accuracy", "n_removed", "n_params"),
    parameters=("model", "dataset", "seed", "layer", "input", "filter"), figure=figure, summary=summary,
    claims=CLAIMS, extra_choices=_choices, needs_responses=True, validate=_validate))
chapters.register(chapters.Chapter("study_removal", figure, summary, study="removal", paper=dict(model="resnet18"),
                                   controls=("layer",), claims=CLAIMS))
