"""Fully filtered layers and BatchNorm (the paper's Fig. 11 and Eq. 17), and a test of the paper's explanation.

With every weight of a layer removed, the BatchNorm that follows turns its zero output into the constant
γ·(0 − μ)/√(σ² + ε) + β of running statistics μ, σ² learnt on training data; the paper credits that constant for
the accuracy some fully filtered layers keep. For each such layer this study measures the accuracy with the
following BatchNorm as trained, with that BatchNorm's output forced to zero, with its running statistics
re-estimated on training images, and with every BatchNorm's re-estimated. If the accuracy survives with the
BatchNorm's output zeroed, the BatchNorm is not what carries it: another path — a skip connection — does.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import xarray as xr
from torch import nn

from .. import checks, data
from ..attacks import accuracy
from ..errors import FragilityError
from ..preserve import preserved
from ..scores import curves, retention
from . import base

PAPER_LAYERS = ("layer2.0.conv1", "layer3.0.conv1", "layer4.0.downsample.0")  # Fig. 11: ResNet-18 on CIFAR-10
STATES = ("trained", "zeroed", "following re-estimated", "all re-estimated")
SURVIVES = 0.5  # share of the above-chance accuracy a fully filtered layer keeps to count as surviving
_BN = nn.modules.batchnorm._BatchNorm


def following_batchnorm(model: nn.Module, layer: str, sample: torch.Tensor) -> str | None:
    """The name of the BatchNorm module that takes `layer`'s output as its input, or None."""
    return base.consumer(model, layer, sample, _BN)


@contextlib.contextmanager
def removed(model: nn.Module, layer: str, follower: str | None = None, state: str = "trained",
            x_train: torch.Tensor | None = None, batch_size: int = 256):
    """The model in eval() mode with every weight of `layer` set to 0 and its following BatchNorm `follower` in
    `state`: "trained"; "zeroed" (its output forced to 0); "following re-estimated" / "all re-estimated" (running
    statistics of that BatchNorm / of every BatchNorm re-estimated on `x_train`). Everything is restored on exit."""
    checks.require(state, checks.one_of(STATES), "state")
    if state != "trained" and not follower:
        raise FragilityError(f"state {state!r} needs the BatchNorm that follows {layer!r}, and none does.")
    if state.endswith("re-estimated") and x_train is None:
        raise FragilityError(f"state {state!r} needs training inputs x_train to re-estimate the statistics on.")
    modules, hooks = dict(model.named_modules()), []
    with preserved(model, values=True):
        model.eval()
        with torch.no_grad():
            modules[layer].weight.zero_()
            if state == "zeroed":
                hooks.append(modules[follower].register_forward_hook(lambda m, i, o: torch.zeros_like(o)))
            elif state != "trained":
                names = [follower] if state.startswith("following") else [n for n, m in modules.items()
                                                                          if isinstance(m, _BN)]
                for n in names:
                    modules[n].reset_running_stats()
                    modules[n].momentum = None  # a cumulative average over every batch
                    modules[n].train()
                for xb in x_train.split(batch_size):
                    model(xb)
                model.eval()
        try:
            yield model
        finally:
            for h in hooks:
                h.remove()


def remove_layers(model: nn.Module, layers, x, y, x_train: torch.Tensor, batch_size: int = 256) -> xr.Dataset:
    """Clean accuracy with each layer's weights all removed, in every BatchNorm state of `STATES`, and of the intact
    network; `batchnorm(layer)` names the follower (accuracy is NaN for the states that need one when none
    follows)."""
    layers = checks.require([layers] if isinstance(layers, str) else layers, checks.items(
        checks.Rule(lambda v: isinstance(v, str), "a layer name"), what="a layer name or a list of layer names"),
        "layers")
    batch_size = checks.count(batch_size, "batch_size")
    x, y = checks.examples(x, y)
    x_train = checks.inputs(x_train, "x_train")
    values, followers = np.full((len(layers), len(STATES)), np.nan), []
    with preserved(model):
        for i, layer in enumerate(layers):
            followers.append(following_batchnorm(model, layer, x) or "")
            for j, state in enumerate(STATES):
                if state != "trained" and not followers[-1]:
                    continue
                with removed(model, layer, followers[-1], state, x_train, batch_size):
                    values[i, j] = accuracy(model, x, y, batch_size)
        intact = accuracy(model.eval(), x, y, batch_size)
    return xr.Dataset({"accuracy": (("layer", "state"), values), "intact_accuracy": ((), intact)},
                      coords={"layer": layers, "state": list(STATES), "batchnorm": ("layer", followers)},
                      attrs={"n_train": len(x_train), "n_test": len(y)})


def _layers(ctx) -> list[str]:
    """The paper's layers the model has, else the three whose full removal keeps the most accuracy (h1, α = 1)."""
    if ctx.settings["layers"]:
        return list(ctx.settings["layers"])
    sweep = ctx.responses(ctx.settings["epoch"])
    paper = [n for n in PAPER_LAYERS if n in sweep["layer"].values]
    if paper:
        return paper
    kept = sweep["accuracy"].sel(filter="h1", input="clean").isel(alpha=-1).drop_sel(layer="global")
    return [str(n) for n in kept.sortby(kept, ascending=False)["layer"].values[:3]]


def _run(ctx: base.Context) -> xr.Dataset:
    x, y = ctx.test
    train = ctx.sets()[0]
    x_train = data.test_subset(train, min(ctx.settings["n_train"], len(train)), seed=ctx.seed)[0]
    net = ctx.network(ctx.settings["epoch"])
    ds = remove_layers(net.to(ctx.device), _layers(ctx), x.to(ctx.device), y.to(ctx.device), x_train.to(ctx.device),
                       ctx.profile.batch_size)
    ds.attrs.update(epoch=ctx.settings["epoch"] or ctx.epochs()[-1])
    return ds


def _units(profile, settings):
    return [base.Unit((m, d, s), m, ((m, d, s),)) for m, d, s in profile.runs()
            if m in (settings["models"] or profile.models[:1])]


def _validate(settings, profile):
    for model in settings["models"] or profile.models[:1]:
        if model not in profile.models:
            raise FragilityError(f"studies.batchnorm.models: {model} is not a model of the profile.")
        if settings["epoch"] is not None and settings["epoch"] not in profile.grid(model).epochs:
            raise FragilityError(f"studies.batchnorm.epoch {settings['epoch']} is not a checkpoint of {model}: "
                                 f"choose from {list(profile.grid(model).epochs)}.")
    base.check_layers(settings["layers"], "batchnorm.layers", profile, settings["models"] or profile.models[:1])


def shares(ds: xr.Dataset, model, dataset) -> xr.Dataset:
    """Per layer and state, the share of the above-chance accuracy kept (mean over seeds), and the follower."""
    sub = ds.sel(model=model, dataset=dataset, seed=base.seeds(ds, model, dataset))
    sub = sub.dropna("layer", how="all", subset=["accuracy"])
    classes = data.info(dataset).classes
    kept = retention(sub["accuracy"], sub["intact_accuracy"], classes)
    # seeds may study different layers: a layer's follower is the name any seed that studied it recorded
    followers = [next((v for v in sub["batchnorm"].sel(layer=layer).values if isinstance(v, str) and v), "")
                 for layer in sub["layer"].values]
    return xr.Dataset({"kept": kept.mean("seed"), "accuracy": sub["accuracy"].mean("seed"),
                       "intact": sub["intact_accuracy"].mean("seed")}, coords={"batchnorm": ("layer", followers)})


def verdict(ds, model, dataset) -> tuple[str, str]:
    """(verdict, evidence) of P7: a layer survives full removal when it keeps ≥ half of the above-chance accuracy;
    the BatchNorm carries it when zeroing the BatchNorm's output then drops it below half."""
    s = shares(ds, model, dataset)
    parts, carried, survivors = [], 0, 0
    for layer in s["layer"].values:
        k = s["kept"].sel(layer=layer)
        trained, zeroed = float(k.sel(state="trained")), float(k.sel(state="zeroed"))
        follower = str(s["batchnorm"].sel(layer=layer).values) if "batchnorm" in s else ""
        if trained >= SURVIVES and not np.isfinite(zeroed):
            survivors += 1
            how = "no BatchNorm follows it, so none can carry it"
        elif trained >= SURVIVES:
            survivors += 1
            by_bn = np.isfinite(zeroed) and zeroed < SURVIVES
            carried += by_bn
            how = "the BatchNorm carries it" if by_bn else "it survives with the BatchNorm's output zeroed: the " \
                                                          "skip connection carries it, not the BatchNorm"
        else:
            how = "it does not survive"
        states = (f", {zeroed:.0%} with `{follower}` zeroed, {float(k.sel(state='following re-estimated')):.0%} "
                  "with its statistics re-estimated") if np.isfinite(zeroed) else " (no BatchNorm follows it)"
        parts.append(f"`{layer}` keeps {trained:.0%} of the above-chance accuracy as trained{states} — {how}")
    result = "holds" if carried else "differs"
    return result, f"{model} on {dataset}: " + "; ".join(parts) + f" ({survivors} survive, {carried} by BatchNorm)"


def figure(ds, results=None, model=None, dataset=None, seed=None):
    """Fig. 11: clean accuracy against α (h1 and h2) of each studied layer, every weight removed at the dotted
    line, with the accuracy of the fully filtered layer in every BatchNorm state as markers at α = 1."""
    from ..plot import draw
    from ..selection import check_parameters

    p = check_parameters(ds, model=model, dataset=dataset, seed=seed)
    s = shares(ds, p["model"], p["dataset"])
    layers, epoch = [str(n) for n in s["layer"].values], int(ds.attrs.get("epoch", 0)) or None
    c = None
    if results is not None:
        c = curves(results, p["model"], p["dataset"], seed)
        c = c.sel(epoch=epoch if epoch in c["epoch"].values else c["epoch"].values[-1], input="clean")
    chance = 1 / int(ds.attrs.get("classes", 10))
    shown = ds.sel(model=[p["model"]], dataset=[p["dataset"]])
    fig = draw.figure(shown, f"Fig. 11 · {p['model']} on {p['dataset']} · epoch {epoch} · fully filtered layers and "
                             "their BatchNorm", 4.2, line=draw.provenance_line(c if c is not None else shown))
    axes = fig.subplots(1, len(layers), squeeze=False, sharey=True)[0]
    markers = dict(zip(STATES, ("s", "X", "^", "D")))
    for ax, layer in zip(axes, layers):
        if c is not None and layer in c["layer"].values:
            unit = c.sel(layer=layer)
            for h, color in (("h1", "tab:blue"), ("h2", "tab:orange")):
                ax.plot(unit["alpha"], unit["accuracy"].sel(filter=h), color=color, label=f"{h}, BatchNorm as trained")
            ax.axvline(1.0, color="purple", ls=":", label="every weight removed")
        ax.axhline(chance, color="0.4", ls="--", lw=0.8, label=f"chance 1/{round(1 / chance)}")
        for state in STATES:
            value = float(s["accuracy"].sel(layer=layer, state=state))
            if np.isfinite(value):
                ax.plot([1.0], [value], markers[state], ms=8, mec="k", label=f"removed, BatchNorm {state}")
        ax.set(title=layer, xlabel=draw.ALPHA, ylabel="clean accuracy", ylim=(0, 1.02))
    handles = {t: h for ax in axes for h, t in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=3, fontsize=8)
    return fig


def summary(ds, results=None, model=None, dataset=None, seed=None) -> str:
    """Markdown: each studied layer's accuracy in every BatchNorm state and what carries it (the rule of P7)."""
    from ..selection import check_parameters

    p = check_parameters(ds, model=model, dataset=dataset, seed=seed)
    result, evidence = verdict(ds, p["model"], p["dataset"])
    return (f"{evidence}.\n\nRule of claim P7: a fully filtered layer *survives* when it keeps at least "
            f"{SURVIVES:.0%} of the above-chance accuracy; the BatchNorm *carries* it when forcing the BatchNorm's "
            f"output to zero drops it below that. The paper's explanation **{result}** here.")


def claims(ds, responses=None) -> list[dict]:
    pairs = base.pairs(ds)
    results = [verdict(ds, m, d) for m, d in pairs]
    return [base.claim_row(
        "P7", "*Even after filtering all parameters in a layer, the network performs relatively well [...] due to "
              "the following batch normalization layer features propagating through the network* (Fig. 11, Sec. 5)",
        f"a layer survives full removal when it keeps ≥ {SURVIVES:.0%} of the above-chance accuracy; the BatchNorm "
        "carries it when forcing that BatchNorm's output to zero drops it below; holds when some surviving layer is "
        "carried by its BatchNorm",
        "; ".join(e for _, e in results), "holds" if any(v == "holds" for v, _ in results) else "differs",
        "fig11_batchnorm")]


STUDY = base.Study(
    name="batchnorm", title="Fully filtered layers and BatchNorm (Fig. 11)",
    settings={"models": base.Setting(None, base.models_rule()), "epoch": base.Setting(None, checks.whole(1)),
              "layers": base.Setting(None, checks.items(checks.Rule(lambda v: isinstance(v, str), "a layer name"))),
              "n_train": base.Setting(2000, checks.whole(1))},
    units=_units, run=_run, variables=("accuracy", "intact_accuracy"), parameters=("model", "dataset", "seed"),
    figure=figure, summary=summary, claims=claims, validate=_validate, needs_responses=True)
