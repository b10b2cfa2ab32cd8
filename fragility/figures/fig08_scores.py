"""Fig. 8 — the three scores of one layer as areas: r_x and r_xε (Eq. 14, 15) between the scaled responses and φ̄,
r_ε (Eq. 16) between the adversarial and the clean response."""
from __future__ import annotations


from .. import chapters
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
    """Fig. 8: (a) r_x and r_xε (Eq. 14, 15) as areas between the scaled responses and φ̄; (b) the clean and
    adversarial responses and r_ε (Eq. 16) as the area between them."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter)
    at = dict(layer=p["layer"], epoch=p["epoch"])
    c = curves(ds, p["model"], p["dataset"], seed).sel(filter=p["filter"], **at)
    r = layer_scores(ds, p["model"], p["dataset"], seed, p["filter"]).sel(at)
    clean, adversarial, phi = c["response"].sel(input="clean"), c["response"].sel(input="adversarial"), c["baseline"]
    fig = draw.figure(c, f"Fig. 8 · {p['model']} on {p['dataset']} · {p['layer']} · epoch {p['epoch']} · "
                         f"{p['filter']}", 6.6)
    axes = fig.subplots(2, 2, sharex=True)
    alpha, base = c["alpha"].values, (":", "green", r"baseline $\bar\phi$")
    blue, orange = ("-", "tab:blue", r"clean $\bar\beta$"), ("-", "tab:orange", r"adversarial $\bar\beta_\epsilon$")
    draw.area(axes[0, 0], alpha, clean, phi, (blue, base), SCORES["r_x"], float(r["r_x"]))
    draw.area(axes[1, 0], alpha, adversarial, phi, (orange, base), SCORES["r_xe"], float(r["r_xe"]))
    draw.area(axes[0, 1], alpha, adversarial, clean, (orange, blue), SCORES["r_e"], float(r["r_e"]))
    draw.area(axes[1, 1], alpha, adversarial - clean, 0 * clean, (("-", "k", r"$\bar\beta_\epsilon - \bar\beta$"),
                                                                  (":", "0.5", "zero")), SCORES["r_e"], float(r["r_e"]))
    for ax, panel in ((axes[0, 0], "(a) "), (axes[0, 1], "(b) ")):
        ax.set_title(panel + ax.get_title())
    for ax in axes[:, 1]:
        ax.text(0.02, 0.03, "r_ε > 0: adversarial above clean (Eq. 16 as printed);\nthe paper's prose reads the sign "
                            "the other way", transform=ax.transAxes, fontsize=8, color="0.3", va="bottom")
    for ax, text in zip(axes.flat, ["scaled accuracy"] * 3 + ["adversarial − clean"]):
        ax.set_ylabel(text)
    return fig


def summary(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1"):
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter)
    r = layer_scores(ds, p["model"], p["dataset"], seed, p["filter"]).sel(layer=p["layer"], epoch=p["epoch"])
    x, xe, e = (float(r[k]) for k in ("r_x", "r_xe", "r_e"))
    edge = p["layer"] in edge_layers(ds, p["model"])
    return (f"`{p['layer']}` at epoch {p['epoch']} ({p['filter']}): r_x = {x:+.3f} ({WORDS.get(label_of(x), '—')}), "
            f"r_xε = {xe:+.3f} ({WORDS.get(label_of(xe), '—')}), r_ε = {e:+.3f}: {GREATER.get(label_of(e), '—')}."
            + (f" It is the model's {'first' if p['layer'] == edge_layers(ds, p['model'])[0] else 'last'} "
               f"layer, which claim P5 calls fragile in both scores: "
               f"**{'as claimed' if x < -TAU and xe < -TAU else 'not here'}**." if edge else ""))


chapters.register(chapters.Chapter(
    "fig08_scores", figure, summary, paper=dict(model="resnet18", dataset="cifar10", epoch=100, layer="conv1"),
                                   controls=("epoch", "filter")))
