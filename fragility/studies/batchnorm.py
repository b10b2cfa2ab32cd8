"""Fully filtered layers and BatchNorm (the paper's Fig. 11 and Eq. 17), and a test of the paper's explanation.

With every weight of a layer removed, the BatchNorm that follows turns its zero output into the constant
γ·(0 − μ)/√(σ² + ε) + β of running statistics μ, σ² learnt on training data; the paper credits that constant for
the accuracy some fully filtered layers keep. For each such layer this study measures the accuracy with the
following BatchNorm as trained, with that BatchNorm's output forced to zero, with its running statistics
re-estimated on training images, and with every BatchNorm's re-estimated. If the accuracy survives with the
BatchNorm's output zeroed, the BatchNorm is not what carries it: another path does — the block's skip connection for
a convolution inside a residual branch, the residual branch for a downsample convolution (which is the skip path).
Each of these is called from its 95 % interval: a kept share whose interval straddles SURVIVES is undecided.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import xarray as xr
from torch import nn

from .. import chapters, checks, data, uncertainty
from ..engine import batchnorm_statistics
from ..errors import FragilityError
from ..preserve import preserved
from ..plot import draw
from ..scores import retention
from ..selection import check_parameters, curves
from ..verdicts import Claim, Outcome, Panel, Untestable, estimate
from .. import study as base

PAPER_LAYERS = ("layer2.0.conv1", "layer3.0.conv1", "layer4.0.downsample.0")  # Fig. 11: ResNet-18 on CIFAR-10
STATES = ("trained", "zeroed", "following re-estimated", "all re-estimated", "batch statistics")
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
    if state not in ("trained", "batch statistics") and not follower:
        raise FragilityError(f"state {state!r} needs the BatchNorm that follows {layer!r}, and none does.")
    if state.endswith("re-estimated") and x_train is None:
        raise FragilityError(f"state {state!r} needs training inputs x_train to re-estimate the statistics on.")
    modules, hooks = dict(model.named_modules()), []
    reading = "batch" if state == "batch statistics" else "running"
    with preserved(model, values=True), batchnorm_statistics(model, reading):
        model.eval()
        with torch.no_grad():
            modules[layer].weight.zero_()
            if state == "zeroed":
                hooks.append(modules[follower].register_forward_hook(lambda m, i, o: torch.zeros_like(o)))
            elif state not in ("trained", "batch statistics"):
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
    hits, followers = np.full((len(layers), len(STATES), len(y)), np.nan), []
    with preserved(model):
        for i, layer in enumerate(layers):
            followers.append(following_batchnorm(model, layer, x) or "")
            for j, state in enumerate(STATES):
                if state not in ("trained", "batch statistics") and not followers[-1]:
                    continue
                with removed(model, layer, followers[-1], state, x_train, batch_size):
                    hits[i, j] = base.classified(model, x, y, batch_size)
        intact = base.classified(model.eval(), x, y, batch_size)
        with batchnorm_statistics(model, "batch"):
            intact_batch = base.classified(model.eval(), x, y, batch_size)
    return xr.Dataset({"accuracy": (("layer", "state"), hits.mean(-1)), "correct": (("layer", "state", "image"), hits),
                       "intact_accuracy": ((), intact.mean()), "intact_correct": (("image",), intact),
                       "intact_batch_accuracy": ((), intact_batch.mean())},
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


def shares(ds: xr.Dataset, model, dataset, samples: int = uncertainty.SAMPLES) -> xr.Dataset:
    """Per layer and state, the share of the above-chance accuracy kept (`kept`, mean over seeds) with bootstrap
    replicates (dim `sample`, sample 0 as stored: images and seeds resampled), the accuracy, and the follower."""
    sub = ds.sel(model=model, dataset=dataset, seed=base.seeds(ds, model, dataset))
    sub = sub.dropna("layer", how="all", subset=["accuracy"])
    classes = data.info(dataset).classes
    cells = xr.concat([sub["correct"], sub["intact_correct"].expand_dims(state=["intact"])], "state")
    rs = uncertainty.bootstrap(cells, samples)
    kept = retention(rs["accuracy"].drop_sel(state="intact"), rs["accuracy"].sel(state="intact", drop=True), classes)
    # seeds may study different layers: a layer's follower is the name any seed that studied it recorded
    followers = [next((v for v in sub["batchnorm"].sel(layer=layer).values if isinstance(v, str) and v), "")
                 for layer in sub["layer"].values]
    return xr.Dataset({"kept": uncertainty.seed_mean(kept, rs), "accuracy": sub["accuracy"].mean("seed"),
                       "intact": sub["intact_accuracy"].mean("seed"),
                       "intact_batch": sub["intact_batch_accuracy"].mean("seed")},
                      coords={"batchnorm": ("layer", followers)})


def _carried(s: xr.Dataset, reading=None) -> xr.DataArray:
    """Per replicate, how many studied layers survive full removal (keep ≥ SURVIVES of the above-chance accuracy)
    and are carried by their BatchNorm (zeroing its output drops them below); under the batch-statistics reading,
    how many survive with every BatchNorm on the batch's own statistics (the authors' notebook)."""
    if reading is not None and (reading.name, reading.value) == ("batchnorm", "batch"):
        return (s["kept"].sel(state="batch statistics") >= SURVIVES).sum("layer").astype(float)
    survives = s["kept"].sel(state="trained") >= SURVIVES
    return (survives & (s["kept"].sel(state="zeroed") < SURVIVES)).sum("layer").astype(float)


def _path(layer: str) -> str:
    """What else carries a block's signal when `layer` is gone: the residual branch for a downsample (which is the
    skip path itself), else the block's skip connection."""
    return "the residual branch" if "downsample" in layer else "the block's skip connection (another path)"


def _side(kept: xr.DataArray) -> str:
    """"above", "below" or "straddles": where a kept share's 95 % interval lies against SURVIVES."""
    low, high = (float(v) for v in uncertainty.interval(kept))
    return "above" if low >= SURVIVES else "below" if high < SURVIVES else "straddles"


def explain(s: xr.Dataset) -> str:
    """Each studied layer's kept share in every BatchNorm state, with intervals, and what carries it — each call made
    from the interval against SURVIVES, undecided where the interval straddles it."""
    parts = []
    for layer in s["layer"].values:
        k = s["kept"].sel(layer=layer)
        trained, zeroed = k.sel(state="trained"), k.sel(state="zeroed")
        follower = str(s["batchnorm"].sel(layer=layer).values)
        has_zeroed = np.isfinite(float(zeroed.sel(sample=0)))
        survival = _side(trained)
        if survival == "below":
            how = "it does not survive"
        elif survival == "straddles":
            how = f"whether it survives is undecided (its interval straddles the {SURVIVES:.0%} the study calls " \
                  "surviving)"
        elif not has_zeroed:
            how = "no BatchNorm follows it, so none can carry it"
        elif _side(zeroed) == "below":
            how = "the BatchNorm carries it"
        elif _side(zeroed) == "straddles":
            how = "whether the BatchNorm carries it is undecided (the zeroed share's interval straddles " \
                  f"{SURVIVES:.0%})"
        else:
            how = f"it survives with the BatchNorm's output zeroed: {_path(str(layer))} carries it, not the BatchNorm"
        if has_zeroed:
            (z_low, _), (_, t_high) = uncertainty.interval(zeroed), uncertainty.interval(trained)
            if float(z_low) > float(t_high):
                how += "; zeroing the BatchNorm's output keeps more than the trained network does, so the constant " \
                       "it adds harms the filtered network rather than carrying it"
        states = "; ".join(f"{state} {estimate(k.sel(state=state), '.0%')}" for state in STATES
                           if state != "trained" and np.isfinite(float(k.sel(state=state, sample=0))))
        parts.append(f"`{layer}` (followed by `{follower or 'no BatchNorm'}`) keeps {estimate(trained, '.0%')} of the "
                     f"above-chance accuracy as trained; {states} — {how}")
    return "; ".join(parts)


def _p7(ev, panel, reading) -> Outcome:
    study = ev.study("batchnorm")
    if study is None or (panel.model, panel.dataset) not in base.pairs(study):
        raise Untestable(f"the batchnorm study on {panel.model} and {panel.dataset}")
    s = shares(study, panel.model, panel.dataset, ev.samples)
    stat = _carried(s, reading)
    return Outcome(stat, explain(s) + f". Layers carried by their BatchNorm: {estimate(stat, '.0f')} of "
                                      f"{s.sizes['layer']}.")


def figure(ds, results=None, model=None, dataset=None, seed=None):
    """Fig. 11: clean accuracy against α (h1 and h2) of each studied layer, every weight removed at the dotted
    line, with the accuracy of the fully filtered layer in every BatchNorm state as markers at α = 1 (`plot_layer`,
    a panel per layer)."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed)
    s = shares(ds, p["model"], p["dataset"], samples=1)
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
    for ax, layer in zip(axes, layers):
        curve = c.sel(layer=layer) if c is not None and layer in c["layer"].values else None
        plot_layer(s["accuracy"].sel(layer=layer), curve, chance, ax=ax)
    handles = {t: h for ax in axes for h, t in zip(*ax.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=3, fontsize=8)
    return fig


def plot_layer(accuracy: xr.DataArray, curve: xr.Dataset | None = None, chance: float = 0.1, *, ax) -> None:
    """One studied layer's panel of Fig. 11 on `ax`: its clean accuracy against α under h1 and h2 (when `curve` is
    given), every weight removed at α = 1 (dotted), chance (dashed), and the accuracy of the fully filtered layer
    in every BatchNorm state as markers at α = 1.

    Args:
        accuracy: the layer's accuracy with every weight removed, over state (`shares(...)["accuracy"].sel(layer=…)`;
            a missing state is NaN and not drawn).
        curve: the layer's sweep at the study's epoch on clean inputs (`fragility.selection.curves(...).sel(
            epoch=…, input="clean", layer=…)`): `accuracy` over (filter, alpha) with h1 and h2; None: markers only.
        chance: the chance accuracy, 1 / classes.
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(accuracy, {None: ("state",)}, "accuracy")
    if curve is not None:
        draw.panel(curve, {"accuracy": ("filter", "alpha")}, "curve")
    checks.require(chance, checks.real(0, 1, open_low=True), "chance")
    draw.axes(ax)
    layer = str(accuracy["layer"].item()) if "layer" in accuracy.coords else ""
    if curve is not None:
        for h, color in (("h1", "tab:blue"), ("h2", "tab:orange")):
            ax.plot(curve["alpha"], curve["accuracy"].sel(filter=h), color=color, label=f"{h}, BatchNorm as trained")
        ax.axvline(1.0, color="purple", ls=":", label="every weight removed")
    ax.axhline(chance, color="0.4", ls="--", lw=0.8, label=f"chance 1/{round(1 / chance)}")
    markers = dict(zip(STATES, ("s", "X", "^", "D", "P")))
    for state in STATES:
        value = float(accuracy.sel(state=state))  # (mean over seeds)
        if np.isfinite(value):
            ax.plot([1.0], [value], markers[state], ms=8, mec="k", label=f"removed, BatchNorm {state}")
    ax.set(title=layer, xlabel=draw.ALPHA, ylabel="clean accuracy", ylim=(0, 1.02))


def summary(ds, results=None, model=None, dataset=None, seed=None) -> str:
    """Markdown: each studied layer's kept share in every BatchNorm state, with intervals, what carries it, and what
    re-estimating every BatchNorm's statistics restores (the rule of P7)."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed)
    s = shares(ds, p["model"], p["dataset"])
    carried = _carried(s)
    restored = s["kept"].sel(state="all re-estimated").sel(sample=0)
    return (f"{explain(s)}.\n\nRe-estimating every BatchNorm's statistics on training images restores "
            + ", ".join(f"`{n}` to {float(v):.0%}" for n, v in zip(s["layer"].values, restored.values))
            + f" of the above-chance accuracy. The intact network's accuracy is {float(s['intact']):.3f} with running "
              f"statistics and {float(s['intact_batch']):.3f} with batch statistics (the authors' notebook).\n\n"
              f"Rule of claim P7: a fully filtered layer *survives* when it keeps at least {SURVIVES:.0%} of the "
              "above-chance accuracy; the BatchNorm *carries* it when forcing the BatchNorm's output to zero drops it "
              f"below that. Layers carried by their BatchNorm: {estimate(carried, '.0f')} (95 % interval over test "
              "images and seeds).")


CLAIMS = (
    Claim("P7", "*The results show that, even after filtering all parameters in a layer, the network performs "
                "relatively well (shown by the purple dotted lines at Φ^(l), the maximum number of parameters "
                "filtered). This is due to the following batch normalization layer features propagating through the "
                "network during the forward pass, thus highlighting the effects of batch normalisation layers on "
                "network performance.* (Fig. 11's caption: ResNet-18 on CIFAR10, layers layer2.0.conv1, "
                "layer3.0.conv1, layer4.0.downsample.0; Sec. 5)",
          (Panel("11", "resnet18", "mnist"), Panel("11", "resnet18", "cifar10")),
          f"a fully filtered layer survives when it keeps ≥ {SURVIVES:.0%} of the above-chance accuracy, and is "
          "carried by its BatchNorm when forcing that BatchNorm's output to zero drops it below; the claim holds "
          "when at least one of the paper's layers is carried (count above 0.5)", _p7, 0.5, True, "fig11_batchnorm",
          readings=("batchnorm",), own_readings=("batchnorm",)),
)


STUDY = base.register(base.Study(
    name="batchnorm", title="Fully filtered layers and BatchNorm (Fig. 11)",
    settings={"models": base.Setting(None, base.models_rule()), "epoch": base.Setting(None, checks.whole(1)),
              "layers": base.Setting(None, checks.items(checks.Rule(lambda v: isinstance(v, str), "a layer name"))),
              "n_train": base.Setting(2000, checks.whole(1))},
    units=_units, run=_run, variables=("accuracy", "correct", "intact_accuracy"),
    parameters=("model", "dataset", "seed"), figure=figure, summary=summary, claims=CLAIMS, validate=_validate,
    needs_responses=True))
chapters.register(chapters.Chapter("fig11_batchnorm", figure, summary, study="batchnorm",
                                   paper=dict(model="resnet18", dataset="cifar10"), controls=("seed",), claims=CLAIMS))
