"""Fig. 9 — global parameter scores (the whole network filtered at once) over training, and the claims of Sec. 5
about them: P1 (ResNet invariance across data sets), P2 (r_ε on MNIST: the clean response greater), P2b (r_ε
comparable on CIFAR10 and ImageNet Tiny), P2c (ShuffleNet's r_x and r_xε distinct on MNIST), P3 (ShuffleNet fragile
to antifragile on ImageNet Tiny), P4 (SqueezeNet's r_x and r_xε converge to 0 on ImageNet Tiny)."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .. import chapters, checks, verdicts
from ..plot import draw
from ..plot.draw import SCORES
from ..scores import characterize, display_normalize
from ..selection import any_filter, layer_scores, models_with, select
from ..verdicts import TAU, Claim, Outcome, Panel, Untestable, estimate, panels


def paper_order(models) -> list[tuple[str, str]]:
    """(letter, model): the paper's panels (a) ResNet-18, (b) ResNet-50, (c) SqueezeNet 1.1, (d) ShuffleNet V2 ×1.0
    for the models the results hold, then any other model under the following letters."""
    letters = {m: k for k, m in verdicts.FIGURE_MODELS.items()}
    known = sorted((letters[m], m) for m in models if m in letters)
    extra = [m for m in models if m not in letters]
    return known + list(zip("efghijkl", extra))


def global_scores(ds, filter="h1", normalized=True) -> xr.Dataset:
    """Global (whole-network) scores of every model swept with `filter`, by model, dataset, seed and epoch;
    display-normalized over all of them when `normalized`."""
    r = xr.concat([layer_scores(ds, m, filter=filter, mean=False).sel(layer="global", drop=True)
                   .expand_dims(model=[m]) for m in models_with(ds, filter)], "model", join="outer")
    return display_normalize(r) if normalized else r


def plot_scores(r: xr.Dataset, letter: str = "a", *, ax) -> None:
    """One panel row of Fig. 9 on three Axes: a model's global r_x, r_xε, r_ε against epoch, a line per data set,
    mean ± std over seeds.

    Args:
        r: one model's global scores (`global_scores(ds).sel(model=…)`): `r_x`, `r_xe`, `r_e` over (dataset,
            seed, epoch).
        letter: the row's panel letter, as the paper's (a) ResNet-18 … (d) ShuffleNet V2.
        ax: the three Axes to draw into (r_x, r_xε, r_ε).
    """
    draw.panel(r, dict.fromkeys(SCORES, ("dataset", "seed", "epoch")), "r")
    checks.require(letter, draw.TEXT, "letter")
    axes = draw.axes(ax, 3)
    model = r["model"].item() if "model" in r.coords else ""
    for dataset, color in draw.colors([str(d) for d in r["dataset"].values]).items():
        for axis, key in zip(axes, SCORES):
            v = r[key].sel(dataset=dataset).dropna("epoch", how="all").dropna("seed", how="all")
            if v.size:
                draw.band(axis, v["epoch"].values, v, "seed", color, label=dataset, style="o-")
    for axis, key in zip(axes, SCORES):
        axis.axhline(0, color="0.5", lw=0.8)
        axis.set(title=f"({letter}) {model}: {SCORES[key]}", xlabel="epoch", ylabel=SCORES[key])
    axes[0].legend()


@draw.styled
def figure(ds, filter="h1", normalized=True):
    """Fig. 9: global r_x, r_xε, r_ε against epoch, a row per model lettered as the paper's (a) ResNet-18,
    (b) ResNet-50, (c) SqueezeNet 1.1, (d) ShuffleNet V2 ×1.0, a line per data set, mean ± std over seeds
    (`plot_scores`); display-normalized to [−0.5, 0.5] as in the paper (`normalized=False`: raw scores)."""
    p = {"filter": any_filter(ds, filter)}
    order = paper_order(models_with(ds, p["filter"]))
    r = global_scores(ds, p["filter"], normalized)
    kind = "display-normalized" if normalized else "raw"
    fig = draw.figure(select(ds, order[0][1]), f"Fig. 9 · global parameter scores ({kind}), filter {p['filter']} "
                                               "(mean ± std over seeds)", 1.0 + 2.4 * len(order),
                      line=draw.provenance_line(ds))
    axes = fig.subplots(len(order), 3, squeeze=False, sharex=False, sharey=normalized)
    for row, (letter, name) in zip(axes, order):
        plot_scores(r.sel(model=name), letter, ax=row)
    return fig


def summary(results, filter="h1", normalized=True) -> str:
    """The claims of Fig. 9 decided on `results`, each panel with its statistic, interval and readings."""
    return verdicts.chapter_claims(results, "fig09_global")


# The claims and their rules (written before the results were looked at)

READINGS = ("scaling", "attack", "batchnorm", "epsilon")  # the readings a global score can flip under


def _global(ev, panel: Panel, reading, dataset=None) -> xr.Dataset:
    dataset = dataset or panel.dataset
    if not ev.holds(panel.model, dataset):
        raise Untestable(f"{panel.model} on {dataset}: {verdicts.PROFILES.get(dataset, 'a profile with it')}")
    return ev.scores(panel.model, dataset, reading).sel(layer="global", drop=True)


def _by_epoch(r: xr.DataArray, fmt="+.3f") -> str:
    return "; ".join(f"epoch {int(e)}: {estimate(r.sel(epoch=e), fmt)}" for e in r["epoch"].values)


def _sign(reading) -> int:
    return -1 if reading is not None and (reading.name, reading.value) == ("sign", "prose") else 1


def _p2(ev, panel, reading) -> Outcome:
    r = _global(ev, panel, reading)["r_e"].dropna("epoch", how="all")
    stat = (_sign(reading) * r).max("epoch")
    return Outcome(stat, f"global r_ε (h1, Eq. 16 as printed) by epoch — {_by_epoch(r)}; the rule's statistic, the "
                         f"largest r_ε over the epochs: {estimate(stat)}.")


def _p2c(ev, panel, reading) -> Outcome:
    r = _global(ev, panel, reading)
    gap = abs(r["r_x"] - r["r_xe"]).dropna("epoch", how="all")
    stat = gap.min("epoch")
    return Outcome(stat, f"|r_x − r_xε| by epoch — {_by_epoch(gap)}; the smallest: {estimate(stat)}.")


def _labels_agree(ev, panel, reading) -> Outcome:
    a, b = _global(ev, panel, reading), _global(ev, panel, reading, "tiny-imagenet")
    common = sorted(set(a["epoch"].values) & set(b["epoch"].values))
    if not common:
        raise Untestable("checkpoints at the same epochs on both data sets")
    a, b = (characterize(x[["r_x", "r_xe"]].sel(epoch=common), TAU) for x in (a, b))
    stat = sum((a[k] == b[k]).mean("epoch") for k in ("r_x", "r_xe")) / 2
    return Outcome(stat, f"the Fr/Ro/Af labels of global r_x and r_xε agree at {estimate(stat, '.0%')} of the "
                         f"{len(common)} shared epochs.")


def _comparable(ev, panel, reading) -> Outcome:
    a, b = _global(ev, panel, reading)["r_e"], _global(ev, panel, reading, "tiny-imagenet")["r_e"]
    common = sorted(set(a["epoch"].values) & set(b["epoch"].values))
    if not common:
        raise Untestable("checkpoints at the same epochs on both data sets")
    stat = abs(a.sel(epoch=common) - b.sel(epoch=common)).max("epoch")
    return Outcome(stat, f"largest |r_ε(CIFAR10) − r_ε(ImageNet Tiny)| over {len(common)} shared epochs: "
                         f"{estimate(stat)}.")


def _transition(ev, panel, reading) -> Outcome:
    r = _global(ev, panel, reading)[["r_x", "r_xe"]].dropna("epoch", how="all")
    first, last = r.isel(epoch=0), r.isel(epoch=-1)
    stat = xr.concat([-first["r_x"], -first["r_xe"], last["r_x"], last["r_xe"]], "part").min("part")
    return Outcome(stat, f"first epoch r_x {estimate(first['r_x'])}, r_xε {estimate(first['r_xe'])}; last epoch "
                         f"r_x {estimate(last['r_x'])}, r_xε {estimate(last['r_xe'])}; the rule's statistic (the "
                         f"smallest of −r(first), r(last)): {estimate(stat)}.")


def _converge(ev, panel, reading) -> Outcome:
    r = _global(ev, panel, reading)[["r_x", "r_xe"]].dropna("epoch", how="all").isel(epoch=slice(-3, None))
    stat = np.abs(r.to_array("score")).max(["score", "epoch"])
    return Outcome(stat, f"largest |r_x|, |r_xε| over the last {r.sizes['epoch']} epochs: {estimate(stat)}.")


def _versus(spec: str) -> tuple[Panel, ...]:
    return tuple(Panel(p.figure, p.model, p.dataset, versus="tiny-imagenet") for p in panels(spec))


CLAIMS = (
    Claim("P1", "*We find that ResNet18 and ResNet50 networks exhibit invariant parameter characteristics to different "
                "datasets: particularly for r_x and r_{x_ϵ} values related to the CIFAR10 and ImageNet Tiny "
                "performances, over 100 epochs.* (Sec. 5, Fig. 9)",
          _versus("9a cifar10; 9b cifar10"), f"the Fr/Ro/Af labels (τ = {TAU}) of global r_x and r_xε (h1) agree "
          "between CIFAR10 and ImageNet Tiny at more than 80 % of the shared epochs", _labels_agree, 0.8, True,
          "fig09_global", readings=READINGS),
    Claim("P2", "*The adversarial targeting results (r_ϵ values) are comparable for the CIFAR10 and ImageNet Tiny "
                "responses, with r_ϵ values for MNIST, suggesting that the clean dataset response is consistently "
                "greater than the adversarial dataset performance.* (Sec. 5, Fig. 9)",
          panels("9a mnist; 9b mnist; 9c mnist; 9d mnist"), f"the clean response greater at every epoch: global r_ε "
          f"(h1) < −τ = −{TAU} at every checkpoint, i.e. its largest value over the epochs below −τ (Eq. 16 as "
          "printed: r_ε < 0 means the adversarial response is below the clean one; under the prose's reversed "
          "sign, r_ε > +τ at every checkpoint)", _p2, -TAU, False, "fig09_global",
          readings=("sign", "scaling", "attack", "batchnorm", "epsilon")),
    Claim("P2b", "*The adversarial targeting results (r_ϵ values) are comparable for the CIFAR10 and ImageNet Tiny "
                 "responses, with r_ϵ values for MNIST, suggesting that the clean dataset response is consistently "
                 "greater than the adversarial dataset performance.* (Sec. 5, Fig. 9)",
          _versus("9a cifar10; 9b cifar10; 9c cifar10; 9d cifar10"),
          f"the sentence's first clause (its MNIST clause is P2): |r_ε(CIFAR10) − r_ε(ImageNet Tiny)| of the global "
          f"unit (h1) within τ = {TAU} at every shared epoch",
          _comparable, TAU, False, "fig09_global", readings=READINGS),
    Claim("P2c", "*From the ShuffleNet V2x1.0 parameter scores, we find distinctions in r_x and r_{x_ϵ}, for the MNSIT "
                 "dataset, over 100 epochs.* (Sec. 5, Fig. 9)", panels("9d mnist"),
          f"|r_x − r_xε| of the global unit (h1) larger than τ = {TAU} at every checkpoint", _p2c, TAU, True,
          "fig09_global", readings=READINGS),
    Claim("P3", "*We see the ShuffleNet V2x1.0 parameters as transitioning from fragile to antifragile for the "
                "ImageNet Tiny dataset.* (Sec. 5, Fig. 9)", panels("9d tiny-imagenet"),
          f"global r_x and r_xε (h1) Fr (< −τ) at the first epoch and Af (> τ) at the last, τ = {TAU}: the smallest "
          "of −r(first) and r(last) above τ", _transition, TAU, True, "fig09_global",
          readings=READINGS),
    Claim("P4", "*From the SqueezeNet-v1.1 results for the ImageNet Tiny dataset, we observe a convergence of r_x and "
                "r_{x_ϵ} to 0 over 100 epochs, indicating the network performance as robust, for both clean and "
                "adversarial datasets.* (Sec. 5, Fig. 9)", panels("9c tiny-imagenet"),
          f"global r_x and r_xε (h1) within ±τ = {TAU} at the last three epochs", _converge, TAU, False,
          "fig09_global", readings=READINGS),
)

chapters.register(chapters.Chapter("fig09_global", figure, summary, controls=("filter", "normalized"),
                                   paper=dict(filter="h1"), options={"normalized": [True, False]}, reads_folder=True,
                                   claims=CLAIMS))
