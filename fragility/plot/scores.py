"""The paper's Fig. 9–10: parameter scores (Eq. 14–16) of every model in the results, over training.

Scores are display-normalized to [−0.5, 0.5] (Sec. 4.3) over the set one figure shows — r_x and r_xε together,
r_ε on its own — as the paper plots them; labels (Fr/Ro/Af) always come from the raw scores and the tolerance τ.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from ..scores import characterize, display_normalize, layer_scores
from ..selection import check_parameters, choices, select
from . import draw
from .draw import SCORES

# Fig. 10's r_ε panel says which response is greater (Eq. 16: r_ε = Σ(β̄_ε − β̄)Δα), as the paper labels it
GREATER = {"Af": "r_xε", "Ro": "Ro", "Fr": "r_x"}


def _models(ds) -> list[str]:
    return choices(ds)["model"]


def global_scores(ds, filter="h1", normalized=True) -> xr.Dataset:
    """Global (whole-network) scores of every model by model, dataset, seed and epoch; display-normalized over
    all of them when `normalized`."""
    r = xr.concat([layer_scores(ds, m, filter=filter, mean=False).sel(layer="global", drop=True)
                   .expand_dims(model=[m]) for m in _models(ds)], "model", join="outer")
    return display_normalize(r) if normalized else r


@draw.styled
def fig09_global(ds, filter="h1", normalized=True):
    """Fig. 9: global r_x, r_xε, r_ε against epoch, a row per model (the paper's a–d) and a line per dataset, mean ±
    std over seeds; display-normalized to [−0.5, 0.5] as in the paper (`normalized=False`: raw scores)."""
    p = check_parameters(ds, filter=filter)
    models = _models(ds)
    r = global_scores(ds, p["filter"], normalized)
    kind = "display-normalized" if normalized else "raw"
    fig = draw.figure(select(ds, models[0]), f"Fig. 9 · global parameter scores ({kind}), filter {p['filter']} "
                                             "(mean ± std over seeds)", 1.0 + 2.4 * len(models),
                      line=draw.provenance_line(ds))
    axes = fig.subplots(len(models), 3, squeeze=False, sharex=False, sharey=normalized)
    for row, name, panel in zip(axes, models, "abcdefgh"):
        for dataset, color in draw.colors([str(d) for d in r["dataset"].values]).items():
            for ax, key in zip(row, SCORES):
                v = r[key].sel(model=name, dataset=dataset).dropna("epoch", how="all").dropna("seed", how="all")
                if v.size:
                    draw.band(ax, v["epoch"].values, v, "seed", color, label=dataset, style="o-")
        for ax, key in zip(row, SCORES):
            ax.axhline(0, color="0.5", lw=0.8)
            ax.set(title=f"({panel}) {name}: {SCORES[key]}", xlabel="epoch", ylabel=SCORES[key])
        row[0].legend()
    return fig


def local_labels(r: xr.Dataset, tol: float = 0.02) -> xr.Dataset:
    """Fr/Ro/Af of r_x and r_xε, and for r_ε which response is greater (r_xε, Ro or r_x), from raw scores."""
    labels = characterize(r, tol)
    labels["r_e"] = xr.apply_ufunc(np.vectorize(lambda v: GREATER.get(v, v), otypes=[object]), labels["r_e"])
    return labels


@draw.styled
def fig10_local(ds, seed=None, filter="h1", tol=0.02, models=None):
    """Fig. 10: local scores as layer × epoch maps, a panel per model (the paper's a–d, or `models`) and a column
    per score and dataset, display-normalized over the figure; cells labelled Fr/Ro/Af (r_x, r_xε) and, for r_ε,
    with the response that is greater (r_xε: adversarial, r_x: clean, Ro: within ±τ)."""
    p = check_parameters(ds, seed=seed, filter=filter)
    names = _models(ds) if models is None else [check_parameters(ds, model=m)["model"] for m in models]
    raw = {m: layer_scores(ds, m, seed=seed, filter=p["filter"]).drop_sel(layer="global")
           .transpose("dataset", "layer", "epoch") for m in names}
    peak = {k: float(np.nanmax(np.abs(np.concatenate([raw[m][k].values.ravel() for m in names])))) for k in SCORES}
    peak["r_x"] = peak["r_xe"] = max(peak["r_x"], peak["r_xe"])  # r_x and r_xε together, r_ε alone (Sec. 4.3)
    heights = [1.2 + 0.15 * raw[m].sizes["layer"] for m in names]
    fig = draw.figure(select(ds, names[0]), f"Fig. 10 · local parameter scores, filter {p['filter']} "
                      f"(Fr < −{tol} ≤ Ro ≤ {tol} < Af; display-normalized)", 0.8 + sum(heights),
                      line=draw.provenance_line(ds))
    subs = fig.subfigures(len(names), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, name, panel in zip(subs, names, "abcdefgh"):
        r, labels = raw[name], local_labels(raw[name], tol)
        axes = sub.subplots(1, 3 * r.sizes["dataset"], squeeze=False)[0]
        layers, epochs = r["layer"].values, r["epoch"].values
        for k, (dataset, key) in enumerate((d, key) for d in r["dataset"].values for key in SCORES):
            ax, shown = axes[k], r[key].sel(dataset=dataset).values / (2 * peak[key] or 1)
            im = ax.imshow(shown, aspect="auto", cmap="RdYlGn", vmin=-0.5, vmax=0.5, interpolation="nearest")
            for (i, j), text in np.ndenumerate(labels[key].sel(dataset=dataset).values):
                if np.isfinite(shown[i, j]):
                    ax.text(j, i, text, ha="center", va="center", fontsize=6 if len(layers) > 30 else 7)
            ax.set_yticks(range(len(layers)), layers if k == 0 else [""] * len(layers),
                          fontsize=6 if len(layers) > 30 else 7.5)
            ax.set_xticks(range(len(epochs)), epochs)
            ax.set(title=f"{dataset}: {SCORES[key]}" + (" (greater)" if key == "r_e" else ""), xlabel="epoch")
        sub.suptitle(f"({panel}) {name}", x=0.02, ha="left", fontsize=10)
        sub.colorbar(im, ax=axes.tolist(), label="normalized score", shrink=0.8)
    return fig
