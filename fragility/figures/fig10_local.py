"""Fig. 10 — local parameter scores (one layer filtered at a time) as the learning landscape, and the claims of
Sec. 5 about it, each on the panels its sentence names: P5 (the first conv and the last linear layer fragile; and
the "all" reading), P6 (robust cells), P6b (antifragile cells), P6c (the r_ε marks: Ro, r_x, r_xε), P11 (the edge
layers' labels invariant across architectures), P12 (periodic robustness)."""
from __future__ import annotations

import numpy as np
import xarray as xr

from .. import chapters, checks, metrics, verdicts
from ..errors import FragilityError
from ..plot import draw
from ..plot.draw import SCORES
from ..scores import characterize, scaled
from ..selection import any_filter, check_parameters, choices, filters, layer_scores, models_with, select
from ..verdicts import TAU, Claim, Outcome, Panel, TooFew, Untestable, estimate, panels
from .fig09_global import _sign, paper_order

LABEL_COLORS = {"Fr": "#d62728", "Ro": "#2ca02c", "Af": "#1f77b4"}  # the paper's Fig. 2b: red, green, blue
GREATER = {"Af": "r_xε", "Ro": "Ro", "Fr": "r_x"}  # r_ε's marks: which response is greater (Eq. 16 as printed)
SHARE = 0.05  # "present", "distinctly visible": more than 5 % of a panel's cells (one cell cannot decide it)
CHECKPOINTS = 5  # periodic robustness needs at least this many checkpoints to be called


def local_labels(r: xr.Dataset, tol: float = TAU) -> xr.Dataset:
    """Fr/Ro/Af of r_x and r_xε, and for r_ε which response is greater (r_xε, Ro or r_x), from raw scores."""
    labels = characterize(r, tol)
    labels["r_e"] = xr.apply_ufunc(np.vectorize(lambda v: GREATER.get(v, v), otypes=[object]), labels["r_e"])
    return labels


SCORE_MARKS = {"r_x": {"Fr": "Fr", "Ro": "Ro", "Af": "Af"}, "r_xe": {"Fr": "Fr", "Ro": "Ro", "Af": "Af"},
         "r_e": {"r_x": "Fr", "Ro": "Ro", "r_xε": "Af"}}  # each score's labels and the colour (by label) of each


def plot_labels(scores: xr.DataArray, labels: xr.DataArray, marks: dict, title: str, names: bool = True, *,
                ax) -> None:
    """One (layer × epoch) map of a score's labels in the paper's colours (Fr red, Ro green, Af blue; for r_ε the
    same colours for r_x-, Ro- and r_xε-marked cells), each cell's raw score written in it, on `ax`.

    Args:
        scores: one score's raw values over (layer, epoch), of one model and data set.
        labels: their labels over (layer, epoch) (`local_labels`).
        marks: each label and the label whose colour it takes (`SCORE_MARKS[score]`).
        title: the map's title.
        names: write the layer names as row labels.
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(scores, {None: ("layer", "epoch")}, "scores")
    draw.panel(labels, {None: ("layer", "epoch")}, "labels")
    checks.require(marks, checks.Rule(lambda v: isinstance(v, dict) and len(v) == 3 and set(v.values()) <= set(
        LABEL_COLORS), "a mapping of three labels to Fr, Ro or Af"), "marks")
    checks.require(title, draw.TEXT, "title")
    checks.flag(names, "names")
    draw.axes(ax)
    from matplotlib.colors import ListedColormap  # deferred: matplotlib (0.6 s to import) serves drawing alone

    scores, labels = scores.transpose("layer", "epoch"), labels.transpose("layer", "epoch")
    order = list(marks)
    index = xr.apply_ufunc(np.vectorize(lambda v: float(order.index(v)) if v in order else np.nan, otypes=[float]),
                           labels)
    ax.imshow(index.values, aspect="auto", interpolation="nearest", vmin=-0.5, vmax=2.5,
              cmap=ListedColormap([LABEL_COLORS[marks[k]] for k in order]))
    layers, epochs = scores["layer"].values, scores["epoch"].values
    small = 6 if len(layers) > 30 else 7
    for (i, j), value in np.ndenumerate(scores.values):
        if np.isfinite(value):
            ax.text(j, i, f"{value:+.2f}", ha="center", va="center", fontsize=small - 1, color="white")
    ax.set_yticks(range(len(layers)), layers if names else [""] * len(layers), fontsize=small + 0.5)
    ax.set_xticks(range(len(epochs)), epochs)
    ax.set(title=title, xlabel="epoch")


def plot_local(r: xr.Dataset, tol: float = TAU, *, ax) -> None:
    """One model's panel of Fig. 10 on a list of Axes, three per data set: the (layer × epoch) label maps of r_x,
    r_xε and r_ε (`plot_labels`), labelled at tolerance `tol`.

    Args:
        r: one model's local scores (`fragility.selection.layer_scores(...)` without the layer "global"): `r_x`,
            `r_xe`, `r_e` over (dataset, layer, epoch).
        tol: the tolerance τ of the labels (Fr < −τ ≤ Ro ≤ τ < Af).
        ax: the Axes to draw into, three per data set (r_x, r_xε, r_ε of the first data set, then the next).
    """
    draw.panel(r, dict.fromkeys(SCORES, ("dataset", "layer", "epoch")), "r")
    tol = checks.number(tol, "tol", low=0)
    axes = draw.axes(ax, 3 * r.sizes["dataset"])
    labels = local_labels(r, tol)
    for k, (dataset, key) in enumerate((d, key) for d in r["dataset"].values for key in SCORES):
        plot_labels(r[key].sel(dataset=dataset), labels[key].sel(dataset=dataset), SCORE_MARKS[key],
                    f"{dataset}: {SCORES[key]}" + (" (greater)" if key == "r_e" else ""), k == 0, ax=axes[k])


@draw.styled
def figure(ds, seed=None, filter="h1", tol=TAU, models=None):
    """Fig. 10: local scores as layer × epoch maps, a panel per model lettered as the paper's (a) ResNet-18,
    (b) ResNet-50, (c) SqueezeNet 1.1, (d) ShuffleNet V2 ×1.0 (or `models`), a column per score and data set
    (`plot_local`). Cells are coloured by label as the paper's colour bar (Fr red, Ro green, Af blue, from the raw
    score and τ; for r_ε: r_x-marked — the clean response greater, Eq. 16 as printed r_ε < −τ — red, Ro green,
    r_xε-marked blue) and carry the raw score."""
    p = {**check_parameters(ds, seed=seed), "filter": any_filter(ds, filter)}
    checks.require(tol, checks.real(0), "tol")
    held = models_with(ds, p["filter"])  # a profile may sweep some models with fewer filters
    if models is not None:
        models = [check_parameters(ds, model=m)["model"] for m in models]
        lacking = [m for m in models if m not in held]
        if lacking:
            raise FragilityError(f"models {lacking} were not swept with filter {p['filter']!r}: choose from "
                                 f"{', '.join(held)}, or another filter.")
    order = paper_order(held if models is None else models)
    raw = {m: layer_scores(ds, m, seed=seed, filter=p["filter"]).drop_sel(layer="global")
           .transpose("dataset", "layer", "epoch") for _, m in order}
    heights = [1.2 + 0.15 * raw[m].sizes["layer"] for _, m in order]
    fig = draw.figure(select(ds, order[0][1]), f"Fig. 10 · local parameter scores, filter {p['filter']} "
                      f"(Fr < −{tol} ≤ Ro ≤ {tol} < Af)", 1.2 + sum(heights), line=draw.provenance_line(ds))
    subs = fig.subfigures(len(order), 1, height_ratios=heights, squeeze=False)[:, 0]
    for sub, (letter, name) in zip(subs, order):
        plot_local(raw[name], tol, ax=sub.subplots(1, 3 * raw[name].sizes["dataset"], squeeze=False)[0])
        sub.suptitle(f"({letter}) {name}", x=0.02, ha="left", fontsize=10)
    legend(fig)
    return fig


def legend(fig) -> None:
    """The labels' colours as a legend at the top of `fig` (a matplotlib Figure)."""
    from matplotlib.patches import Patch  # deferred: matplotlib (0.6 s to import) serves drawing alone

    fig.legend([Patch(color=c) for c in LABEL_COLORS.values()],
               ["Fr (r_ε: r_x, the clean response greater)", "Ro (within ±τ)", "Af (r_ε: r_xε, the adversarial "
                                                                               "response greater)"],
               loc="outside upper center", ncol=3, fontsize=8)


def summary(results, seed=None, filter="h1", tol=TAU, models=None) -> str:
    """The claims of Fig. 10 decided on `results`, per panel, and what drives antifragile scores."""
    ev = verdicts.Evidence(results)
    return verdicts.chapter_claims(ev, "fig10_local") + "\n\n" + antifragility_note(ev)


# The claims and their rules (written before the results were looked at)

def _local(ev, panel: Panel, reading) -> xr.Dataset:
    return ev.scores(panel.model, panel.dataset, reading).drop_sel(layer="global").dropna("epoch", how="all")


def _cells(r: xr.DataArray) -> int:
    return int(r.sel(sample=0).notnull().sum())


def _share(hit: xr.DataArray, r: xr.DataArray) -> xr.DataArray:
    """The share of the finite cells of r (over every dim but sample) where `hit` holds."""
    dims = [d for d in r.dims if d != "sample"]
    return hit.where(r.notnull()).sum(dims) / r.notnull().sum(dims)


def _edges(ev, panel, reading) -> Outcome:
    layers = ev.layers(panel.model)
    r = _local(ev, panel, reading)[["r_x", "r_xe"]].sel(layer=[layers[0], layers[-1]])
    stat = r.to_array("score").max(["score", "layer", "epoch"])
    parts = [f"`{n}` {k} {estimate(r[k].sel(layer=n).max('epoch'))}" for n in (layers[0], layers[-1])
             for k in ("r_x", "r_xe")]
    return Outcome(stat, "largest score over the epochs — " + ", ".join(parts) + f"; over both layers and scores: "
                                                                                 f"{estimate(stat)}.")


def _marks(score: str, kind: str):
    """The share of a panel's local cells of `score` labelled `kind` ("Ro", "Af" or, for r_ε under the reading's
    sign, "r_x" / "r_xe" marks)."""
    def statistic(ev, panel, reading) -> Outcome:
        r = _local(ev, panel, reading)
        values = r[list(score.split("+"))].to_array("score") * (_sign(reading) if score == "r_e" else 1)
        hit = {"Ro": abs(values) <= TAU, "Af": values > TAU, "r_x": values < -TAU, "r_xe": values > TAU}[kind]
        stat = _share(hit, values)
        return Outcome(stat, f"{kind}-labelled cells: {estimate(stat, '.1%')} of the panel's {_cells(values)} "
                             f"(layer, epoch{', score' if '+' in score else ''}) cells of {score.replace('+', ' and ')}"
                             f" (h1, τ = {TAU}).")
    return statistic


def _agree(ev, panel, reading) -> Outcome:
    held = [m for m in verdicts.FIGURE_MODELS.values() if ev.holds(m, panel.dataset)]
    if len(held) < 2:
        raise Untestable(f"two or more of the paper's models on {panel.dataset}")
    votes = []
    for model in held:
        layers = ev.layers(model)
        r = ev.scores(model, panel.dataset, reading)["r_x"].sel(layer=[layers[0], layers[-1]])
        votes.append(characterize(r.dropna("epoch", how="all").isel(epoch=-1), TAU).values)  # (sample, 2)
    votes = np.stack(votes)  # (model, sample, edge)
    same = (votes == votes[:1]).all(axis=(0, 2)).astype(float)
    stat = xr.DataArray(same, dims="sample", coords={"sample": np.arange(len(same))})
    shown = ", ".join(f"{m} {'/'.join(v)}" for m, v in zip(held, votes[:, 0]))
    return Outcome(stat, f"r_x labels of the first/last layer at the last epoch — {shown}; the same for every model: "
                         f"{verdicts.occurrence(stat)}.")


def returns(labels) -> bool:
    """Ro, then something else, then Ro again."""
    labels = list(labels)
    first = labels.index("Ro") if "Ro" in labels else None
    if first is None:
        return False
    rest = labels[first:]
    gap = next((i for i, v in enumerate(rest) if v != "Ro"), None)
    return gap is not None and "Ro" in rest[gap:]


def _periodic(ev, panel, reading) -> Outcome:
    r = _local(ev, panel, reading)["r_x"]
    if r.sizes["epoch"] < CHECKPOINTS:
        raise TooFew(f"{r.sizes['epoch']} checkpoints of {panel.model} on {panel.dataset}: the rule needs at least "
                     f"{CHECKPOINTS} to call a return to robustness periodic")
    labels = characterize(r, TAU).transpose("sample", "layer", "epoch").values
    found = np.array([[returns(row) for row in sample] for sample in labels])  # (sample, layer)
    stat = xr.DataArray(found.any(1).astype(float), dims="sample", coords={"sample": np.arange(len(found))})
    names = [str(n) for n, ok in zip(r["layer"].values, found[0]) if ok]
    return Outcome(stat, f"{len(names)} layer(s) whose r_x label goes Ro → not Ro → Ro over "
                         f"{r.sizes['epoch']} checkpoints" + (f" (e.g. `{names[0]}`)" if names else "")
                         + f"; some layer does so: {verdicts.occurrence(stat)}.")


READINGS = ("scaling", "attack", "batchnorm", "epsilon")
P5 = ("*All of the evaluated network and dataset parameter scores exhibit invariant fragility characteristics (marked "
      "as 'Fr') at the 1-st convolutional layer and the l-th linear layer, for both clean (r_x) and adversarial "
      "(r_{x_ϵ}) parameter scores. This is further shown in Fig. 10a ImageNet Tiny; Fig. 10c MNIST, CIFAR10 and "
      "ImageNet Tiny, and Fig. 10d ImageNet Tiny.* (Sec. 5, Fig. 10)")
P5_RULE = (f"the first and the last filterable layer have r_x < −τ and r_xε < −τ (h1, τ = {TAU}) at every checkpoint: "
           "the largest of those scores below −τ")
MARKS = ("*In Fig. 10, we show that the network response is greater for the adversarial dataset than the clean dataset "
         "(marked by 'r_{x_ϵ}'), as shown in layers of Fig. 10c CIFAR10 and ImageNet Tiny. We find instances where "
         "both the adversarial performance and clean performance are equal, indicating that the layer response is "
         "robust (marked by 'Ro') and shown in Fig. 10a MNIST, CIFAR10 and ImageNet Tiny; Fig. 10b MNIST, CIFAR10 "
         "and ImageNet Tiny; Fig. 10c MNIST, and Fig. 10d CIFAR10 and ImageNet Tiny. Furthermore, we see instances "
         "of the network performances for the clean dataset being greater than that of the adversarial dataset "
         "(marked by 'r_x'), shown in Fig. 10a MNIST and CIFAR10; Fig. 10b MNIST, CIFAR10 and ImageNet Tiny, and "
         "Fig. 10d MNIST and CIFAR10.* (Sec. 5, \"Adversarially targeted parameters\")")
YES_NO = ("holds when so in at least 97.5 % of the bootstrap replicates (the interval of the 1/0 answer is [1, 1]), "
          "differs when in at most 2.5 % ([0, 0]), inconclusive between")
SHARE_RULE = f"more than {SHARE:.0%} of the panel's local cells (layer × epoch, h1, τ = {TAU})"

CLAIMS = (
    Claim("P5", P5, panels("10a tiny-imagenet; 10c mnist cifar10 tiny-imagenet; 10d tiny-imagenet"), P5_RULE, _edges,
          -TAU, False, "fig10_local", readings=READINGS),
    Claim("P5-all", P5 + " — the sentence's \"All of the evaluated network and dataset\" read over the panels it does "
                         "not list", panels("10a mnist cifar10; 10b mnist cifar10 tiny-imagenet; 10d mnist cifar10"),
          P5_RULE, _edges, -TAU, False, "fig10_local", readings=READINGS),
    Claim("P6", "*We see the presence of robust parameters (marked as 'Ro') in Fig. 10a CIFAR10 and ImageNet Tiny; "
                "Fig. 10b ImageNet Tiny; Fig. 10c MNIST and CIFAR10, and Fig. 10d CIFAR10 ImageNet Tiny.* (Sec. 5)",
          panels("10a cifar10 tiny-imagenet; 10b tiny-imagenet; 10c mnist cifar10; 10d cifar10 tiny-imagenet"),
          f"Ro (|r| ≤ τ) in {SHARE_RULE} of r_x and r_xε", _marks("r_x+r_xe", "Ro"), SHARE, True, "fig10_local",
          readings=READINGS),
    Claim("P6b", "*Antifragile parameters (marked as 'Af') are distinctly visible in Fig. 10a MNIST and CIFAR10; Fig. "
                 "10b MNIST, CIFAR10 and ImageNet Tiny; Fig. 10d MNIST and CIFAR10.* (Sec. 5)",
          panels("10a mnist cifar10; 10b mnist cifar10 tiny-imagenet; 10d mnist cifar10"),
          f"Af (r > τ) in {SHARE_RULE} of r_x and r_xε", _marks("r_x+r_xe", "Af"), SHARE, True, "fig10_local",
          readings=READINGS),
    Claim("P6c-Ro", MARKS, panels("10a mnist cifar10 tiny-imagenet; 10b mnist cifar10 tiny-imagenet; 10c mnist; "
                                  "10d cifar10 tiny-imagenet"),
          f"r_ε marked Ro (|r_ε| ≤ τ) in {SHARE_RULE} of r_ε", _marks("r_e", "Ro"), SHARE, True, "fig10_local",
          readings=READINGS),
    Claim("P6c-rx", MARKS, panels("10a mnist cifar10; 10b mnist cifar10 tiny-imagenet; 10d mnist cifar10"),
          f"r_ε marked r_x (the clean response greater: r_ε < −τ as Eq. 16 prints it, r_ε > τ under the prose's sign) "
          f"in {SHARE_RULE} of r_ε", _marks("r_e", "r_x"), SHARE, True, "fig10_local", readings=("sign",) + READINGS),
    Claim("P6c-rxe", MARKS, panels("10c cifar10 tiny-imagenet"),
          f"r_ε marked r_xε (the adversarial response greater: r_ε > τ as Eq. 16 prints it) in {SHARE_RULE} of r_ε",
          _marks("r_e", "r_xe"), SHARE, True, "fig10_local", readings=("sign",) + READINGS),
    Claim("P11", "*For a given dataset, the filtering scores identify the parameters that are invariant in "
                 "characteristics across different network architectures.* (Abstract, Sec. 6)",
          tuple(Panel("10a–d", "resnet18", d) for d in ("mnist", "cifar10", "tiny-imagenet")),
          "on each data set, the r_x label (h1) of the first and of the last layer at the last epoch is the same for "
          f"every one of the paper's models held: {YES_NO}", _agree, 0.5, True, "fig10_local",
          readings=READINGS),
    Claim("P12", "*Furthermore, periodic robustness characteristics are shown in Fig. 10a ImageNet Tiny; Fig. 10b "
                 "MNIST, CIFAR10 and ImageNet Tiny; Fig. 10c MNIST, CIFAR10, ImageNet Tiny, and Fig. 10d CIFAR10 and "
                 "ImageNet Tiny.* (Sec. 5)",
          panels("10a tiny-imagenet; 10b mnist cifar10 tiny-imagenet; 10c mnist cifar10 tiny-imagenet; "
                 "10d cifar10 tiny-imagenet"),
          f"some layer's r_x label (h1) goes Ro → not Ro → Ro over the checkpoints (at least {CHECKPOINTS} of them, "
          f"else inconclusive): {YES_NO}", _periodic, 0.5,
          True, "fig10_local", readings=READINGS),
)


def antifragility_note(ev, model: str = "resnet18", dataset: str = "mnist") -> str:
    """What an antifragile last layer means here: its β̄ against the share of its weights removed under h1 and h2,
    its r_x under each filter, and the threshold the sentence describes (`fc` of ResNet-18 on MNIST by default)."""
    ds = ev.responses
    if not ev.holds(model, dataset):
        model = choices(ds)["model"][0]
        dataset = choices(ds, model)["dataset"][0]
    last = ev.layers(model)[-1]
    sub = select(ds, model, dataset)
    if not {"h1", "h2"} <= set(filters(sub)):  # the note compares the two removal orders
        return ""
    sub = sub.sel(epoch=sub["epoch"].values[-1], layer=last)
    beta = scaled(sub).sel(input="clean").mean("seed")
    removed = (sub["n_filtered"] / sub["n_params"]).mean("seed")
    r = layer_scores(ds, model, dataset, filter="h1")["r_x"].sel(layer=last).isel(epoch=-1)
    parts = []
    for h in ("h1", "h2"):
        kept = beta.sel(filter=h) >= 0.98
        gone = float(removed.sel(filter=h).where(kept).max())
        alpha = float(beta["alpha"].where(kept.values).max())
        parts.append(f"under {h} its clean scaled response β̄ stays ≥ 0.98 until {gone:.0%} of its weights are gone "
                     f"(α = {alpha:.2f})")
    r2 = float(layer_scores(ds, model, dataset, filter="h2")["r_x"].sel(layer=last).isel(epoch=-1))
    peak = float(beta.sel(filter=["h1", "h2"]).max())
    return (f"**What an antifragile last layer means here** ({model} on {dataset}, `{last}`, last epoch): "
            + "; ".join(parts) + f". Its r_x is {float(r):+.3f} under h1 and {r2:+.3f} under h2. The layer is "
            f"redundant — it keeps its {metrics.shown(ds)[0]} while most of its weights are removed, in either removal "
            "order — while the baseline φ̄ = 1 − (share removed) (Eq. 10) falls in proportion, so β̄ − φ̄ is positive: "
            "\"antifragile\" here is Eq. 14's \"degrades less than in proportion to the weights removed\", not "
            f"Definition 6's \"performance increases\" (β̄ never exceeds {peak:.3f}).")


chapters.register(chapters.Chapter("fig10_local", figure, summary, controls=("filter",), paper=dict(filter="h1"),
                                   reads_folder=True, claims=CLAIMS))
