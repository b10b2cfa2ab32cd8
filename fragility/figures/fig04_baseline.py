"""Fig. 4 — one layer's baseline φ̄ (Eq. 10), its accuracy β and scaled response β̄, and the area between β̄ and φ̄
that is the score r_x (Eq. 14; r_xε on adversarial inputs)."""
from __future__ import annotations


from .. import chapters
from ..plot import draw
from ..plot.draw import ALPHA, SCORES
from ..selection import check_parameters, curves, layer_scores
from ..verdicts import TAU, WORDS, label_of



@draw.styled
def figure(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1", input="clean"):
    """Fig. 4: (a) the baseline φ̄ (Eq. 10) and the number of weights filtered against α; (b) the accuracy β, the
    scaled response β̄ and the area between β̄ and φ̄ that is the score r_x (Eq. 14; r_xε on adversarial inputs)."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter,
                         input=input)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], epoch=p["epoch"], filter=p["filter"])
    alpha, base = c["alpha"].values, float(c["base_accuracy"].sel(input=p["input"]))
    fig = draw.figure(c, f"Fig. 4 · {p['model']} on {p['dataset']} · {p['layer']} · epoch {p['epoch']} · "
                         f"{p['filter']} · {p['input']}", 4.0)
    ax, bx = fig.subplots(1, 2)
    ax.plot(alpha, c["baseline"], ":", color="green", lw=2, label=r"baseline $\bar\phi$ (Eq. 10)")
    ax.set(xlabel=ALPHA, ylabel=r"baseline $\bar\phi$", title="(a) baseline", ylim=(-0.05, 1.05))
    twin = ax.twinx()
    twin.plot(alpha, c["n_filtered"], "-", color="teal", label=r"weights filtered $\phi_\alpha$")
    twin.plot([alpha[-1]], [float(c["n_params"])], "o", color="gold", mec="k", ms=9,
              label=r"weights in the layer $\phi$")
    twin.set_ylabel("weights filtered")
    ax.legend(handles=ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0], loc="center left")
    bx.plot(alpha, c["accuracy"].sel(input=p["input"]), ":", color="tab:blue", label=r"accuracy $\beta$")
    bx.plot([0], [base], "o", color="red", ms=8, label=f"unperturbed accuracy {base:.3f}")
    key = "r_xe" if p["input"] == "adversarial" else "r_x"
    score = float(layer_scores(ds, p["model"], p["dataset"], seed, p["filter"])[key].sel(layer=p["layer"],
                                                                                        epoch=p["epoch"]))
    draw.area(bx, alpha, c["response"].sel(input=p["input"]), c["baseline"],
              (("-", "tab:blue", r"scaled $\bar\beta$"), (":", "green", r"baseline $\bar\phi$")), SCORES[key], score)
    bx.set(ylabel="accuracy, scaled accuracy", title="(b) " + bx.get_title())
    return fig


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
    "fig04_baseline", figure, summary, paper=dict(model="resnet18", dataset="cifar10", epoch=100, layer="conv1"),
                                   controls=("layer", "input")))
