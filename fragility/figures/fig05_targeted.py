"""Fig. 5 — the parameters an adversary targets: one layer's test accuracy on clean and FGSM inputs over epochs and
thresholds, and their difference."""
from __future__ import annotations


from .. import chapters
from ..plot import draw
from ..selection import check_parameters, curves, select
from ..studies.batchnorm import SURVIVES



@draw.styled
def figure(ds, model=None, dataset=None, layer=None, seed=None, filter="combined"):
    """Fig. 5: epoch × α images of one layer's network test accuracy β (not scaled) on clean inputs, on FGSM
    inputs, and their difference, the parameters the adversary targets; "combined" averages h1, h2 and h3."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, filter=filter)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], filter=p["filter"])
    beta = c["accuracy"].transpose("input", "epoch", "alpha").values
    alpha, epochs = c["alpha"].values, c["epoch"].values
    fig = draw.figure(c, f"Fig. 5 · {p['model']} on {p['dataset']} · {p['layer']} · {p['filter']} · test accuracy",
                      3.6)
    axes = fig.subplots(1, 3)
    draw.image(fig, axes[0], beta[0], alpha, epochs, r"clean $\beta$", "accuracy", colorbar=False)
    im = draw.image(fig, axes[1], beta[1], alpha, epochs, r"adversarial $\beta_\epsilon$", "accuracy",
                    colorbar=False)
    fig.colorbar(im, ax=axes[:2].tolist(), label="test accuracy", shrink=0.9)
    draw.image(fig, axes[2], beta[0] - beta[1], alpha, epochs,
               "targeted $\\beta - \\beta_\\epsilon$\n(clean − adversarial: the sign opposite to $r_\\epsilon$)",
               "clean − adversarial", cmap="RdBu_r", norm=draw.signed(beta[0] - beta[1]))
    return fig


def summary(ds, model=None, dataset=None, layer=None, seed=None, filter="combined"):
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, filter=filter)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], filter=p["filter"])
    gap = c["accuracy"].sel(input="clean") - c["accuracy"].sel(input="adversarial")
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
    "fig05_targeted", figure, summary, paper=dict(model="resnet18", dataset="mnist", layer="layer3.0.conv2"),
                                   controls=("layer", "filter")))
