"""The paper's Fig. 4–8: one model's responses to synaptic filtering, drawn from the results of `open_results`.

Every function takes the combined results and selections (checked by `fragility.selection.check_parameters`; None
takes the default), and returns a matplotlib Figure whose foot carries the results' provenance. Responses are
computed per seed and averaged over seeds unless a seed is selected.
"""
from __future__ import annotations

import numpy as np

from ..scores import curves, layer_scores
from ..selection import check_parameters, select
from . import draw
from .draw import ALPHA, SCORES


@draw.styled
def fig04_baseline(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1", input="clean"):
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


@draw.styled
def fig05_targeted(ds, model=None, dataset=None, layer=None, seed=None, filter="combined"):
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
    draw.image(fig, axes[2], beta[0] - beta[1], alpha, epochs, r"targeted $\beta - \beta_\epsilon$",
               "clean − adversarial", cmap="RdBu_r", norm=draw.signed(beta[0] - beta[1]))
    return fig


@draw.styled
def fig06_filters(ds, model=None, dataset=None, layer=None, seed=None, input="clean"):
    """Fig. 6 in the paper's three rows: (1) the filters h1, h2, h3 — the share of the layer's weights each removes
    and its threshold against α; (2) each filter's accuracy β against α, a line per epoch; (3) their combination
    β̃ (Eq. 13), a line per epoch."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, input=input)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], input=p["input"])
    sub = select(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"]).isel(seed=0, epoch=-1)
    fig = draw.figure(c, f"Fig. 6 · {p['model']} on {p['dataset']} · {p['layer']} · {p['input']} inputs", 8.6)
    axes = fig.subplot_mosaic([["f1", "f2", "f3"], ["h1", "h2", "h3"], ["combined"] * 3])
    removed = c["n_filtered"] / c["n_params"]
    last = c["epoch"].values[-1]
    for k, (h, name) in enumerate((("h1", "high-pass"), ("h2", "low-pass"), ("h3", "pulse wave")), 1):
        ax = axes[f"f{k}"]
        ax.plot(c["alpha"], removed.sel(filter=h, epoch=last), "-", color="teal", lw=2, label="share removed")
        ax.set(title=f"{h} ({name})", xlabel=ALPHA, ylabel="share of weights removed", ylim=(-0.03, 1.03))
        twin = ax.twinx()
        twin.plot(c["alpha"], sub["threshold"].sel(filter=h), ":", color="0.3", label="threshold $t_i$")
        twin.set_ylabel("threshold (weight units)", fontsize=9)
        draw.lines(axes[h], c["accuracy"].sel(filter=h), "epoch")
        axes[h].set(title=f"{h}: accuracy", xlabel=ALPHA, ylabel=r"accuracy $\beta$", ylim=(0, 1.02))
    draw.lines(axes["combined"], c["response"].sel(filter="combined"), "epoch")
    axes["combined"].set(title=r"combined $\tilde\beta$ (Eq. 13): mean of the scaled h1, h2, h3", xlabel=ALPHA,
                         ylabel=r"scaled accuracy $\tilde\beta$")
    axes["combined"].legend(ncol=min(5, len(c["epoch"])))
    return fig


@draw.styled
def fig07_landscape(ds, model=None, seed=None, input="clean", filter="combined"):
    """Fig. 7: the learning landscape — (1) every layer's response × α at every stored epoch, (2) the whole
    network's (global) response, epoch × α; a row per dataset, as the paper's columns."""
    p = check_parameters(ds, model=model, seed=seed, input=input, filter=filter)
    c = curves(ds, p["model"], seed=seed).sel(filter=p["filter"], input=p["input"])
    datasets = [str(d) for d in c["dataset"].values]
    epochs = [int(e) for e in c["epoch"].values]
    fig = draw.figure(c, f"Fig. 7 · {p['model']} · {p['filter']} {p['input']} responses at every epoch", 1.0 + 4.2 *
                      len(datasets))
    axes = fig.subplots(len(datasets), len(epochs) + 1, squeeze=False, width_ratios=[1] * len(epochs) + [1.6])
    alpha = c["alpha"].values
    for row, name in zip(axes, datasets):
        beta = c["response"].sel(dataset=name)
        top = max(1.0, float(np.nanmax(beta)))
        for ax, e in zip(row, epochs):
            local = beta.sel(epoch=e).drop_sel(layer="global").transpose("layer", "alpha")
            im = draw.image(fig, ax, local.values, alpha, local["layer"].values, f"{name} · epoch {e}", "",
                            ylabel="layer" if ax is row[0] else "", vmax=top, colorbar=False)
            if ax is not row[0]:
                ax.set_yticklabels([])
            ax.set_xlabel(r"$\alpha$")
        glob = beta.sel(layer="global").transpose("epoch", "alpha")
        draw.image(fig, row[-1], glob.values, alpha, glob["epoch"].values, f"{name} · global (whole network)",
                   r"scaled accuracy $\tilde\beta$", vmax=top)
        fig.colorbar(im, ax=row[:-1].tolist(), label=r"scaled accuracy (local)", shrink=0.9, location="bottom")
    return fig


@draw.styled
def fig08_scores(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1"):
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
    for ax, text in zip(axes.flat, ["scaled accuracy"] * 3 + ["adversarial − clean"]):
        ax.set_ylabel(text)
    return fig
