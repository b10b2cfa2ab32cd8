"""Fig. 5 — the parameters an adversary targets: one layer's test accuracy on clean and FGSM inputs over epochs and
thresholds, and their difference."""
from __future__ import annotations

import xarray as xr

from .. import chapters, checks, metrics
from ..plot import draw
from ..selection import check_parameters, curves, select
from ..studies.batchnorm import SURVIVES


@draw.styled
def figure(ds, model=None, dataset=None, layer=None, seed=None, filter="combined"):
    """Fig. 5: epoch × α images of one layer's network test accuracy β (not scaled) on clean inputs, on FGSM
    inputs (`plot_accuracy`, one colour bar for both), and their difference (`plot_difference`), the parameters the
    adversary targets; "combined" averages h1, h2 and h3."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, filter=filter)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], filter=p["filter"])
    word = metrics.shown(c)[0]
    fig = draw.figure(c, f"Fig. 5 · {p['model']} on {p['dataset']} · {p['layer']} · {p['filter']} · test {word}",
                      3.6)
    axes = fig.subplots(1, 3)
    plot_accuracy(c, "clean", ax=axes[0], colorbar=False)
    im = plot_accuracy(c, "adversarial", ax=axes[1], colorbar=False)
    fig.colorbar(im, ax=axes[:2].tolist(), label=f"test {word}", shrink=0.9)
    plot_difference(c, ax=axes[2])
    return fig


def _accuracy(c) -> xr.DataArray:
    return draw.panel(c, {"accuracy": ("epoch", "alpha", "input")}, "c")["accuracy"].transpose("input", "epoch",
                                                                                              "alpha")


def plot_accuracy(c, input: str = "clean", *, ax, colorbar: bool = True):
    """One epoch × α image of the network's test accuracy β (not scaled) on `input` inputs, on `ax`; the image.

    Args:
        c: one layer's curves under one filter (`fragility.selection.curves(...).sel(layer=…, filter=…)`):
            `accuracy` over (epoch, alpha, input).
        input: "clean" or "adversarial".
        ax: the matplotlib Axes to draw into.
        colorbar: give the image its own colour bar (Fig. 5 shares one between clean and adversarial).
    """
    beta = _accuracy(c)
    checks.require(input, checks.one_of(("clean", "adversarial")), "input")
    checks.flag(colorbar, "colorbar")
    draw.axes(ax)
    title = r"clean $\beta$" if input == "clean" else r"adversarial $\beta_\epsilon$"
    return draw.image(ax.figure, ax, beta.sel(input=input).values, c["alpha"].values, c["epoch"].values, title,
                      metrics.shown(c)[0], colorbar=colorbar, vmax=draw.top(beta))


def plot_difference(c, *, ax):
    """The epoch × α image of clean minus adversarial accuracy, β − β_ε (the sign opposite to r_ε), on `ax`, on a
    colour scale centred on 0; the image.

    Args:
        c: one layer's curves under one filter, as `plot_accuracy` takes them.
        ax: the matplotlib Axes to draw into.
    """
    beta = _accuracy(c).values
    draw.axes(ax)
    return draw.image(ax.figure, ax, beta[0] - beta[1], c["alpha"].values, c["epoch"].values,
                      "targeted $\\beta - \\beta_\\epsilon$\n(clean − adversarial: the sign opposite to $r_\\epsilon$)",
                      "clean − adversarial", cmap="RdBu_r", norm=draw.signed(beta[0] - beta[1]))


def summary(ds, model=None, dataset=None, layer=None, seed=None, filter="combined"):
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, filter=filter)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], filter=p["filter"])
    gap = c["accuracy"].sel(input="clean") - c["accuracy"].sel(input="adversarial")
    word, _, higher = metrics.stored(c)
    if word != "accuracy":  # P7's rule below reads top-1 accuracy above chance; another metric gets the gap only
        better = gap > 0 if higher else gap < 0
        return (f"`{p['layer']}` of {p['model']} on {p['dataset']} ({p['filter']}): the clean {word} is better than "
                f"the adversarial one at {float(better.mean()):.0%} of the (epoch, α) cells (clean − adversarial "
                f"{float(gap.mean()):+.3f} on average; {'higher' if higher else 'lower'} is better).")
    chance = float(select(ds, p["model"], p["dataset"], seed)["chance"].mean())
    full = c["accuracy"].sel(input="clean").isel(alpha=-1)
    kept = (full - chance) / (c["base_accuracy"].sel(input="clean") - chance)
    return (f"`{p['layer']}` of {p['model']} on {p['dataset']} ({p['filter']}): the clean accuracy exceeds the "
            f"adversarial one at {float((gap > 0).mean()):.0%} of the (epoch, α) cells, by {float(gap.mean()):+.3f} on "
            f"average. With every weight removed (the α = 1 column) the layer keeps "
            + ", ".join(f"{float(k):.0%}" for k in kept.values) + f" of the above-chance accuracy over epochs "
            f"{', '.join(map(str, c['epoch'].values))}: it **"
            + ("survives" if float(kept.mean()) >= SURVIVES else "does not survive")
            + f"** full filtering by the rule of P7 (≥ {SURVIVES:.0%}); Fig. 11 tests why.")


chapters.register(chapters.Chapter(
    "fig05_targeted", figure, summary,
    paper=dict(model="resnet18", dataset="mnist", layer="layer3.0.conv2", filter="combined"),
    controls=("layer", "filter")))
