"""Fig. 4 — one layer's baseline φ̄ (Eq. 10), its accuracy β and scaled response β̄, and the area between β̄ and φ̄
that is the score r_x (Eq. 14; r_xε on adversarial inputs)."""
from __future__ import annotations

from .. import chapters, checks, metrics
from ..plot import draw
from ..plot.draw import ALPHA, SCORES
from ..selection import check_parameters, curves, layer_scores
from ..verdicts import TAU, WORDS, label_of


@draw.styled
def figure(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1", input="clean"):
    """Fig. 4: (a) the baseline φ̄ (Eq. 10) and the number of weights filtered against α (`plot_baseline`); (b) the
    accuracy β, the scaled response β̄ and the area between β̄ and φ̄ that is the score r_x (Eq. 14; r_xε on
    adversarial inputs) (`plot_response`)."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter,
                         input=input)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], epoch=p["epoch"], filter=p["filter"])
    key = "r_xe" if p["input"] == "adversarial" else "r_x"
    score = float(layer_scores(ds, p["model"], p["dataset"], seed, p["filter"])[key].sel(layer=p["layer"],
                                                                                        epoch=p["epoch"]))
    fig = draw.figure(c, f"Fig. 4 · {p['model']} on {p['dataset']} · {p['layer']} · epoch {p['epoch']} · "
                         f"{p['filter']} · {p['input']}", 4.0)
    ax, bx = fig.subplots(1, 2)
    plot_baseline(c, ax=ax)
    plot_response(c, score, p["input"], ax=bx)
    return fig


def plot_baseline(c, *, ax) -> None:
    """Panel (a) of Fig. 4 on `ax`: the baseline φ̄ (Eq. 10) against α and, on a twin axis, the weights filtered
    φ_α and the weights of the layer φ.

    Args:
        c: one layer's curves at one epoch under one filter (`fragility.selection.curves(...).sel(layer=…,
            epoch=…, filter=…)`): `baseline` and `n_filtered` over alpha, `n_params`.
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(c, {"baseline": ("alpha",), "n_filtered": ("alpha",), "n_params": ()}, "c")
    draw.axes(ax)
    alpha = c["alpha"].values
    ax.plot(alpha, c["baseline"], ":", color="green", lw=2, label=r"baseline $\bar\phi$ (Eq. 10)")
    ax.set(xlabel=ALPHA, ylabel=r"baseline $\bar\phi$", title="(a) baseline", ylim=(-0.05, 1.05))
    twin = ax.twinx()
    twin.plot(alpha, c["n_filtered"], "-", color="teal", label=r"weights filtered $\phi_\alpha$")
    twin.plot([alpha[-1]], [float(c["n_params"])], "o", color="gold", mec="k", ms=9,
              label=r"weights in the layer $\phi$")
    twin.set_ylabel("weights filtered")
    ax.legend(handles=ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0], loc="center left")


def plot_response(c, score: float, input: str = "clean", *, ax) -> None:
    """Panel (b) of Fig. 4 on `ax`: the accuracy β and the unperturbed accuracy, the scaled response β̄ and the
    area between β̄ and the baseline φ̄, titled with its score.

    Args:
        c: one layer's curves at one epoch under one filter, as `plot_baseline` takes them, with `accuracy` and
            `response` over (input, alpha) and `base_accuracy` over input.
        score: the area's score: r_x on clean inputs, r_xε on adversarial ones (Eq. 14–15).
        input: "clean" or "adversarial".
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(c, {"accuracy": ("input", "alpha"), "response": ("input", "alpha"), "base_accuracy": ("input",),
                   "baseline": ("alpha",)}, "c")
    checks.require(input, checks.one_of(("clean", "adversarial")), "input")
    score = draw.number(score, "score")
    draw.axes(ax)
    alpha, base = c["alpha"].values, float(c["base_accuracy"].sel(input=input))
    word, scaled_word = metrics.shown(c)
    ax.plot(alpha, c["accuracy"].sel(input=input), ":", color="tab:blue", label=word + r" $\beta$")
    ax.plot([0], [base], "o", color="red", ms=8, label=f"unperturbed {word} {base:.3f}")
    key = "r_xe" if input == "adversarial" else "r_x"
    draw.area(ax, alpha, c["response"].sel(input=input), c["baseline"],
              (("-", "tab:blue", r"scaled $\bar\beta$"), (":", "green", r"baseline $\bar\phi$")), SCORES[key], score)
    ax.set(ylabel=f"{word}, {scaled_word}", title="(b) " + ax.get_title())


def summary(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1", input="clean"):
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter,
                         input=input)
    r = layer_scores(ds, p["model"], p["dataset"], seed, p["filter"]).sel(layer=p["layer"], epoch=p["epoch"])
    key = "r_xe" if p["input"] == "adversarial" else "r_x"
    value = float(r[key])
    return (f"`{p['layer']}` of {p['model']} on {p['dataset']} at epoch {p['epoch']}, {p['filter']}, {p['input']} "
            f"inputs: {key} = {value:+.3f}, **{WORDS.get(label_of(value), '—')}** by the rule of Eq. 14–15 "
            f"(Fr < −τ ≤ Ro ≤ τ < Af, τ = {TAU}): the scaled response lies "
            f"{'above' if value > 0 else 'below'} the baseline φ̄ on average.")


chapters.register(chapters.Chapter(
    "fig04_baseline", figure, summary,
    paper=dict(model="resnet18", dataset="cifar10", epoch=100, layer="conv1", filter="h1"),
    controls=("layer", "input")))
