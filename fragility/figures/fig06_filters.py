"""Fig. 6 — the three synaptic filters h1, h2, h3 on one layer: what each removes, each one's accuracy, and their
combination β̃ (Eq. 13)."""
from __future__ import annotations

import numpy as np

from .. import chapters, checks, metrics
from ..plot import draw
from ..plot.draw import ALPHA
from ..selection import check_parameters, curves, select

KEPT = 0.98  # accuracy "kept": the scaled response β̄ ≥ 0.98
FILTERS = (("h1", "high-pass"), ("h2", "low-pass"), ("h3", "pulse wave"))


@draw.styled
def figure(ds, model=None, dataset=None, layer=None, seed=None, input="clean"):
    """Fig. 6 in the paper's three rows: (1) the filters h1, h2, h3 — the share of the layer's weights each removes
    and its threshold against α (`plot_filter`); (2) each filter's accuracy β against α, a line per epoch
    (`plot_accuracy`); (3) their combination β̃ (Eq. 13), a line per epoch (`plot_combined`)."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, input=input)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], input=p["input"])
    sub = select(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"]).isel(seed=0, epoch=-1)
    fig = draw.figure(c, f"Fig. 6 · {p['model']} on {p['dataset']} · {p['layer']} · {p['input']} inputs", 8.6)
    swept = [(h, name) for h, name in FILTERS if h in c["filter"].values]  # a profile may sweep fewer than three
    rows = [[f"f{h}" for h, _ in swept], [h for h, _ in swept]]
    combined = "combined" in c["filter"].values
    axes = fig.subplot_mosaic(rows + ([["combined"] * len(swept)] if combined else []))
    last = c["epoch"].values[-1]
    for h, name in swept:
        plot_filter(c.sel(filter=h, epoch=last), sub["threshold"].sel(filter=h), f"{h} ({name})", ax=axes[f"f{h}"])
        plot_accuracy(c.sel(filter=h), ax=axes[h])
    if combined:
        plot_combined(c.sel(filter="combined"), ax=axes["combined"])
    return fig


def plot_filter(c, threshold, title: str, *, ax) -> None:
    """What one filter removes, on `ax`: the share of the layer's weights removed against α and, on a twin axis,
    the filter's threshold t_i.

    Args:
        c: one layer's curves at one epoch under one filter: `n_filtered` over alpha, `n_params`.
        threshold: the filter's threshold over alpha (the stored `threshold` of one unit, layer and filter).
        title: the panel's title, e.g. "h1 (high-pass)".
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(c, {"n_filtered": ("alpha",), "n_params": ()}, "c")
    draw.panel(threshold, {None: ("alpha",)}, "threshold")
    checks.require(title, draw.TEXT, "title")
    draw.axes(ax)
    ax.plot(c["alpha"], c["n_filtered"] / c["n_params"], "-", color="teal", lw=2, label="share removed")
    ax.set(title=title, xlabel=ALPHA, ylabel="share of weights removed", ylim=(-0.03, 1.03))
    twin = ax.twinx()
    twin.plot(c["alpha"], threshold, ":", color="0.3", label="threshold $t_i$")
    twin.set_ylabel("threshold (weight units)", fontsize=9)


def plot_accuracy(c, *, ax) -> None:
    """One filter's accuracy β against α, a line per epoch, on `ax`.

    Args:
        c: one layer's curves on one input under one filter (`fragility.selection.curves(...).sel(layer=…,
            input=…, filter=…)`): `accuracy` over (epoch, alpha).
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(c, {"accuracy": ("epoch", "alpha")}, "c")
    draw.axes(ax)
    draw.lines(ax, c["accuracy"], "epoch")
    word = metrics.shown(c)[0]
    ax.set(title=f"{c['filter'].item()}: {word}", xlabel=ALPHA, ylabel=word + r" $\beta$",
           ylim=(0, max(1.02, draw.top(c["accuracy"]))))


def plot_combined(c, *, ax) -> None:
    """The combined response β̃ (Eq. 13: the mean of the scaled h1, h2, h3) against α, a line per epoch, on `ax`.

    Args:
        c: one layer's curves on one input under the "combined" filter: `response` over (epoch, alpha).
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(c, {"response": ("epoch", "alpha")}, "c")
    draw.axes(ax)
    draw.lines(ax, c["response"], "epoch")
    ax.set(title=r"combined $\tilde\beta$ (Eq. 13): mean of the scaled h1, h2, h3", xlabel=ALPHA,
           ylabel=metrics.shown(c)[1] + r" $\tilde\beta$")
    ax.legend(ncol=min(5, len(c["epoch"])))


def summary(ds, model=None, dataset=None, layer=None, seed=None, input="clean"):
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, input=input)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], input=p["input"])
    c = c.sel(epoch=c["epoch"].values[-1])
    parts = []
    for h in [h for h, _ in FILTERS if h in c["filter"].values]:
        ok = c["response"].sel(filter=h) >= KEPT
        share = float((c["n_filtered"].sel(filter=h) / c["n_params"]).where(ok).max())
        parts.append(f"{h} {share:.0%}" if np.isfinite(share) else f"{h} none")
    return (f"`{p['layer']}` of {p['model']} on {p['dataset']}, last epoch: the largest share of its weights each "
            f"filter removes with the scaled response still ≥ {KEPT} (the rule of P10): " + ", ".join(parts)
            + (". The combined response averages the three filters' scaled responses (Eq. 13)." if "combined" in
               c["filter"].values else "."))


chapters.register(chapters.Chapter(
    "fig06_filters", figure, summary, paper=dict(model="resnet18", dataset="cifar10", layer="conv1"),
                                   controls=("model", "input")))
