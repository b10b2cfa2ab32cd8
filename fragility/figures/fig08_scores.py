"""Fig. 8 — the three scores of one layer as areas: r_x and r_xε (Eq. 14, 15) between the scaled responses and φ̄,
r_ε (Eq. 16) between the adversarial and the clean response."""
from __future__ import annotations

from .. import chapters, metrics, verdicts
from ..plot import draw
from ..plot.draw import SCORES
from ..selection import check_parameters, curves, edge_layers, layer_scores
from ..verdicts import TAU, WORDS, label_of

# r_ε's sign (Eq. 16 as printed: r_ε = Σ(β̄_ε − β̄)Δα); the paper's prose reads it the other way round
GREATER = {"Fr": "the clean response is greater (r_ε < −τ as Eq. 16 prints it; the prose would call this sign "
                 "\"adversarial greater\")",
           "Ro": "clean and adversarial responses are equal within τ",
           "Af": "the adversarial response is greater (r_ε > τ as Eq. 16 prints it; the prose would call this sign "
                 "\"clean greater\")"}


@draw.styled
def figure(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1"):
    """Fig. 8: (a) r_x and r_xε (Eq. 14, 15) as areas between the scaled responses and φ̄ (`plot_input_scores`);
    (b) the clean and adversarial responses and r_ε (Eq. 16) as the area between them (`plot_targeting`)."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter)
    at = dict(layer=p["layer"], epoch=p["epoch"])
    c = curves(ds, p["model"], p["dataset"], seed).sel(filter=p["filter"], **at)
    r = layer_scores(ds, p["model"], p["dataset"], seed, p["filter"]).sel(at)
    fig = draw.figure(c, f"Fig. 8 · {p['model']} on {p['dataset']} · {p['layer']} · epoch {p['epoch']} · "
                         f"{p['filter']}", 6.6)
    axes = fig.subplots(2, 2, sharex=True)
    plot_input_scores(c, r, ax=axes[:, 0])
    plot_targeting(c, r, ax=axes[:, 1])
    return fig


def _checked(c, r):
    draw.panel(c, {"response": ("input", "alpha"), "baseline": ("alpha",)}, "c")
    draw.panel(r, {"r_x": (), "r_xe": (), "r_e": ()}, "r")
    return c["alpha"].values, c["response"].sel(input="clean"), c["response"].sel(input="adversarial")


BASE = (":", "green", r"baseline $\bar\phi$")
CLEAN, ADVERSARIAL = ("-", "tab:blue", r"clean $\bar\beta$"), ("-", "tab:orange", r"adversarial $\bar\beta_\epsilon$")


def plot_input_scores(c, r, *, ax) -> None:
    """Column (a) of Fig. 8 on two Axes: r_x (Eq. 14) as the area between the clean scaled response β̄ and the
    baseline φ̄, and r_xε (Eq. 15) as the area between the adversarial one β̄_ε and φ̄.

    Args:
        c: one layer's curves at one epoch under one filter (`fragility.selection.curves(...).sel(layer=…,
            epoch=…, filter=…)`): `response` over (input, alpha) and `baseline` over alpha.
        r: that layer's scores at that epoch (`fragility.selection.layer_scores(...).sel(layer=…, epoch=…)`):
            `r_x`, `r_xe`, `r_e`.
        ax: the two Axes to draw into (r_x, then r_xε).
    """
    alpha, clean, adversarial = _checked(c, r)
    top, bottom = draw.axes(ax, 2)
    draw.area(top, alpha, clean, c["baseline"], (CLEAN, BASE), SCORES["r_x"], float(r["r_x"]))
    draw.area(bottom, alpha, adversarial, c["baseline"], (ADVERSARIAL, BASE), SCORES["r_xe"], float(r["r_xe"]))
    top.set_title("(a) " + top.get_title())
    for axis in (top, bottom):
        axis.set_ylabel(metrics.shown(c)[1])


def plot_targeting(c, r, *, ax) -> None:
    """Column (b) of Fig. 8 on two Axes: r_ε (Eq. 16) as the area between the adversarial and the clean scaled
    responses, and the same area as their difference against zero.

    Args:
        c: one layer's curves at one epoch under one filter, as `plot_input_scores` takes them.
        r: that layer's scores at that epoch, as `plot_input_scores` takes them.
        ax: the two Axes to draw into (the two responses, then their difference).
    """
    alpha, clean, adversarial = _checked(c, r)
    top, bottom = draw.axes(ax, 2)
    draw.area(top, alpha, adversarial, clean, (ADVERSARIAL, CLEAN), SCORES["r_e"], float(r["r_e"]))
    draw.area(bottom, alpha, adversarial - clean, 0 * clean, (("-", "k", r"$\bar\beta_\epsilon - \bar\beta$"),
                                                              (":", "0.5", "zero")), SCORES["r_e"], float(r["r_e"]))
    top.set_title("(b) " + top.get_title())
    for axis in (top, bottom):
        axis.text(0.02, 0.03, "r_ε > 0: adversarial above clean (Eq. 16 as printed);\nthe paper's prose reads the "
                              "sign the other way", transform=axis.transAxes, fontsize=8, color="0.3", va="bottom")
    top.set_ylabel(metrics.shown(c)[1])
    bottom.set_ylabel("adversarial − clean")


def summary(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1"):
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter)
    r = layer_scores(ds, p["model"], p["dataset"], seed, p["filter"]).sel(layer=p["layer"], epoch=p["epoch"])
    x, xe, e = (float(r[k]) for k in ("r_x", "r_xe", "r_e"))
    # claim P5 is about the paper's four networks; another network's first and last layers get no verdict
    edge = p["model"] in verdicts.FIGURE_MODELS.values() and p["layer"] in edge_layers(ds, p["model"])
    return (f"`{p['layer']}` at epoch {p['epoch']} ({p['filter']}): r_x = {x:+.3f} ({WORDS.get(label_of(x), '—')}), "
            f"r_xε = {xe:+.3f} ({WORDS.get(label_of(xe), '—')}), r_ε = {e:+.3f}: {GREATER.get(label_of(e), '—')}."
            + (f" It is the model's {'first' if p['layer'] == edge_layers(ds, p['model'])[0] else 'last'} "
               f"layer, which claim P5 calls fragile in both scores: "
               f"**{'as claimed' if x < -TAU and xe < -TAU else 'not here'}**." if edge else ""))


chapters.register(chapters.Chapter(
    "fig08_scores", figure, summary,
    paper=dict(model="resnet18", dataset="cifar10", epoch=100, layer="conv1", filter="h1"),
    controls=("epoch", "filter")))
