"""Fig. 7 — the learning landscape: every layer's response to synaptic filtering at every epoch, and the whole
network's; and the claim of Sec. 4.1.2 that a share of the parameters can be filtered out while the clean and the
adversarial performance are kept (P10), decided on the local sweeps."""
from __future__ import annotations

import xarray as xr

from .. import chapters, metrics, verdicts
from ..errors import FragilityError
from ..plot import draw
from ..scores import scaled
from ..selection import check_parameters, curves
from ..uncertainty import seed_mean
from ..verdicts import Claim, Outcome, Panel, estimate

KEPT = 0.98  # performance "retained": the scaled response β̄ (and β̄_ε) ≥ 0.98
REMOVED = 0.10  # "a proportion of the network parameters": at least 10 % of them


@draw.styled
def figure(ds, model=None, seed=None, input="clean", filter="combined"):
    """Fig. 7: the learning landscape — (1) every layer's response × α at every stored epoch, (2) the whole
    network's (global) response, epoch × α; a row per dataset, as the paper's columns (`plot_landscape`)."""
    p = check_parameters(ds, model=model, seed=seed, input=input, filter=filter)
    c = curves(ds, p["model"], seed=seed).sel(filter=p["filter"], input=p["input"])
    datasets = [str(d) for d in c["dataset"].values]
    epochs = [int(e) for e in c["epoch"].values]
    fig = draw.figure(c, f"Fig. 7 · {p['model']} · {p['filter']} {p['input']} responses at every epoch", 1.0 + 4.2 *
                      len(datasets))
    axes = fig.subplots(len(datasets), len(epochs) + 1, squeeze=False, width_ratios=[1] * len(epochs) + [1.6])
    for row, name in zip(axes, datasets):
        plot_landscape(c.sel(dataset=name), ax=row)
    return fig


def plot_landscape(c, *, ax) -> None:
    """One data set's row of Fig. 7 on `ax`, a list of one Axes per epoch and one more: at each epoch, every
    layer's scaled response against α (an image, layer × α, one colour bar below them all), then the whole
    network's (global) response, epoch × α.

    Args:
        c: one model's curves on one data set, input and filter (`fragility.selection.curves(...).sel(dataset=…,
            filter=…, input=…)`): `response` over (epoch, layer, alpha), the layers including "global".
        ax: the Axes to draw into, one per epoch and one for the global response.
    """
    draw.panel(c, {"response": ("epoch", "layer", "alpha")}, "c")
    if "global" not in c["layer"].values:
        raise FragilityError("c must hold the layer 'global' (the whole network's response) beside the local ones.")
    row = draw.axes(ax, c.sizes["epoch"] + 1)
    name, alpha, beta = c["dataset"].item(), c["alpha"].values, c["response"]
    fig = row[0].figure
    top = draw.top(beta)
    for axis, e in zip(row, c["epoch"].values):
        local = beta.sel(epoch=e).drop_sel(layer="global").transpose("layer", "alpha")
        im = draw.image(fig, axis, local.values, alpha, local["layer"].values, f"{name} · epoch {int(e)}", "",
                        ylabel="layer" if axis is row[0] else "", vmax=top, colorbar=False)
        if axis is not row[0]:
            axis.set_yticklabels([])
        axis.set_xlabel(r"$\alpha$")
    glob = beta.sel(layer="global").transpose("epoch", "alpha")
    draw.image(fig, row[-1], glob.values, alpha, glob["epoch"].values, f"{name} · global (whole network)",
               metrics.shown(c)[1] + r" $\tilde\beta$", vmax=top)
    fig.colorbar(im, ax=row[:-1], label=metrics.shown(c)[1] + " (local)", shrink=0.9, location="bottom")


def summary(results, model=None, seed=None, input="clean", filter="combined") -> str:
    """P10 decided on `results`, per model and data set."""
    return verdicts.chapter_claims(results, "fig07_landscape")


def removable(rs: xr.Dataset, reading=None) -> xr.Dataset:
    """Per layer (and replicate), the largest share of its weights any filter removes with the scaled responses on
    clean and adversarial inputs both ≥ KEPT (last epoch, mean over the replicate's seeds): `share(sample, layer)`,
    and `n_params(layer)`. A layer no threshold keeps has share 0; a replicate that drew only seeds not swept at the
    last epoch (results still being computed) has share NaN, not 0, so it leaves the interval rather than widen it."""
    rs = rs.sel(epoch=rs["epoch"].values[-1]).drop_sel(layer="global")
    scaling = "chance" if reading is not None and (reading.name, reading.value) == ("scaling", "chance") \
        else "unperturbed"
    beta = seed_mean(scaled(rs, scaling), rs)
    ok = (beta >= KEPT).all("input")
    removed = (rs["n_filtered"] / rs["n_params"]).mean("seed")
    swept = beta.notnull().any([d for d in beta.dims if d not in ("sample", "layer")])
    share = removed.where(ok).max(["filter", "alpha"]).fillna(0.0).where(swept)
    return xr.Dataset({"share": share, "n_params": rs["n_params"].mean("seed")})


def _p10(ev, panel: Panel, reading) -> Outcome:
    rs = ev.replicates(panel.model, panel.dataset, reading)  # a swept reading: the conventions study's sweeps
    found = removable(rs, reading)
    weights = found["n_params"] / found["n_params"].sum("layer")
    stat = (found["share"] * weights).sum("layer", skipna=False)
    top = found["share"].sel(sample=0).sortby(found["share"].sel(sample=0), ascending=False)
    shown = ", ".join(f"`{n}` {estimate(found['share'].sel(layer=n), '.0%')}" for n in top["layer"].values[:4])
    return Outcome(stat, f"the largest share of each layer removable with β̄ and β̄_ε ≥ {KEPT} (last epoch): "
                         f"{shown}, …; weighted by the layers' sizes, {estimate(stat, '.1%')} of the network's "
                         f"weights; {int((found['share'].sel(sample=0) > 0).sum())} of {found.sizes['layer']} layers "
                         "lose some weights without losing accuracy (filters swept: "
                         f"{', '.join(map(str, rs['filter'].values))}).")


CLAIMS = (
    Claim("P10", "*We show that a proportion of the network parameters can be filtered out from a DNN, whilst "
                 "retaining (and occasionally improving) the network performance on both clean and adversarially "
                 "perturbed test sets* (Sec. 4.1.2, \"Network compactness\")",
          tuple(Panel("", m, d) for m in verdicts.FIGURE_MODELS.values() for d in ("mnist", "cifar10",
                                                                                   "tiny-imagenet")),
          f"in the local sweeps (one layer filtered at a time, any of h1, h2, h3), the largest share of each layer's "
          f"weights removable with β̄ ≥ {KEPT} and β̄_ε ≥ {KEPT} (last epoch, mean over seeds), weighted by the "
          f"layers' sizes, is more than {REMOVED:.0%} of the network's weights", _p10, REMOVED, True,
          "fig07_landscape", readings=("scaling", "attack", "batchnorm", "epsilon")),
)

chapters.register(chapters.Chapter("fig07_landscape", figure, summary, paper=dict(model="resnet18", filter="combined"),
                                   controls=("model", "input", "filter"), reads_folder=True, claims=CLAIMS))
