"""Every claim of the paper and its related seeds, decided on stored results by a rule written down beforehand.

`claims(results)` returns one row per claim: its id, the claim in the paper's words and where it is made, the rule
that decides it with its thresholds, the evidence (the numbers the rule read), the verdict — ``holds``, ``differs``
or ``untestable`` (with what would test it) — and, where the verdict could hang on a reading, the verdict under
the authors' code conventions (adaptive FGSM, Simpson's rule, responses scaled at the first threshold). The rules
of the figures' claims are here; each study's claims are its module's (`fragility.studies`). The figure chapters'
"What our run shows" call the same rules.
"""
from __future__ import annotations


import numpy as np
import pandas as pd
import xarray as xr

from . import checks
from .errors import FragilityError
from .scores import characterize, layer_scores, scaled
from .selection import STAND_INS, choices, select
from .store import layer_order, open_results
from .studies import REGISTRY, open_study
from .studies.base import claim_row
from .studies.conventions import CODE, as_responses

TAU = 0.02
SHARE = 0.9  # "for every network, dataset and epoch", "consistently": at least 90 % of the cells
AGREE = 0.8  # "invariant across datasets": labels agree at 80 % of the shared epochs
KEPT = 0.98  # accuracy "kept": the scaled response β̄ ≥ 0.98
REMOVED = 0.1  # "part of the parameters": at least 10 % of the weights


def _models(ds) -> list[str]:
    return choices(ds)["model"]


def _datasets(ds, model) -> list[str]:
    return choices(ds, model)["dataset"]


def edge_layers(ds, model) -> tuple[str, str]:
    """The first and the last filterable layer of `model` (the first conv and the last linear layer)."""
    order = [n for n in layer_order(ds, model) if n != "global"]
    return order[0], order[-1]


def _global(ds, model, dataset, **reading) -> xr.Dataset:
    return layer_scores(ds, model, dataset, **reading).sel(layer="global")


def p1(ds, tol=TAU):
    tested, parts, ok = 0, [], True
    for model in [m for m in ("resnet18", "resnet50") if m in _models(ds)]:
        datasets = _datasets(ds, model)
        if len(datasets) < 2:
            continue
        tested += 1
        labels = characterize(xr.concat([_global(ds, model, d)[["r_x", "r_xe"]] for d in datasets], "dataset"), tol)
        same = (labels == labels.isel(dataset=0)).all("dataset")
        share = float(same.to_array().mean())
        ok &= share >= AGREE
        parts.append(f"{model}: labels agree across {', '.join(datasets)} at {share:.0%} of (epoch, score) cells")
    return claim_row(
        "P1", "*ResNet18 and ResNet50 networks exhibit invariant parameter characteristics to different datasets: "
              "particularly for r_x and r_xε values* (Sec. 5, Fig. 9)",
        f"the Fr/Ro/Af labels (τ = {tol}) of global r_x and r_xε agree across datasets at ≥ {AGREE:.0%} of the "
        "epochs, for ResNet-18 and ResNet-50", "; ".join(parts) or "models on one dataset only",
        "untestable" if not tested else "holds" if ok else "differs", "fig09_global",
        needs="two or more datasets per model: the paper, mnist + cifar10 or tinyimagenet profiles")


def p2(ds, tol=TAU):
    cells, parts = [], []
    for model in _models(ds):
        for dataset in _datasets(ds, model):
            if dataset in ("mnist", STAND_INS["mnist"]):
                r = _global(ds, model, dataset)["r_e"].dropna("epoch")
                cells += list(r.values < -tol)
                parts.append(f"{model} on {dataset}: global r_ε " + ", ".join(f"{v:+.3f}" for v in r.values))
    share = float(np.mean(cells)) if cells else np.nan
    return claim_row(
        "P2", "*r_ε values for MNIST, suggesting that the clean dataset response is consistently greater than the "
              "adversarial dataset performance* (Sec. 5, Fig. 9)",
        f"global r_ε (h1, Eq. 16 as printed) < −τ at ≥ {SHARE:.0%} of the (model, epoch) cells on MNIST (or digits, "
        "its offline stand-in)", ("; ".join(parts) + f" — {share:.0%} of cells below −τ") if cells else "",
        "untestable" if not cells else "holds" if share >= SHARE else "differs", "fig09_global",
        needs="MNIST (or digits) results")


def _trend(ds, model, dataset, test, tol):
    r = _global(ds, model, dataset)[["r_x", "r_xe"]].dropna("epoch", how="all")
    return test(r, characterize(r, tol)), ", ".join(f"{k} " + " → ".join(f"{v:+.3f}" for v in r[k].values)
                                                    for k in ("r_x", "r_xe"))


def p3(ds, tol=TAU):
    model, dataset = "shufflenet_v2_x1_0", "tiny-imagenet"
    if model not in _models(ds) or dataset not in _datasets(ds, model):
        return claim_row("P3", "*We see the ShuffleNet V2x1.0 parameters as transitioning from fragile to antifragile "
                               "for the ImageNet Tiny dataset* (Sec. 5, Fig. 9)",
                         "global r_x and r_xε of ShuffleNet V2 ×1.0 on Tiny ImageNet: Fr at the first epoch, Af at the "
                         "last", "", "untestable", "fig09_global", needs="the tinyimagenet (or paper) profile")
    ok, text = _trend(ds, model, dataset, lambda r, lab: all(
        lab[k].values[0] == "Fr" and lab[k].values[-1] == "Af" for k in ("r_x", "r_xe")), tol)
    return claim_row("P3", "*ShuffleNet V2x1.0 parameters as transitioning from fragile to antifragile for the "
                           "ImageNet Tiny dataset* (Sec. 5, Fig. 9)", "Fr at the first epoch, Af at the last",
                     text, "holds" if ok else "differs", "fig09_global")


def p4(ds, tol=TAU):
    model, dataset = "squeezenet1_1", "tiny-imagenet"
    claim = ("*From the SqueezeNet-v1.1 results for the ImageNet Tiny dataset, we observe a convergence of r_x and "
             "r_xε to 0 over 100 epochs, indicating the network performance as robust* (Sec. 5, Fig. 9)")
    rule = f"global r_x and r_xε of SqueezeNet 1.1 on Tiny ImageNet within ±τ = {tol} at the last three epochs"
    if model not in _models(ds) or dataset not in _datasets(ds, model):
        return claim_row("P4", claim, rule, "", "untestable", "fig09_global", needs="the tinyimagenet profile")
    ok, text = _trend(ds, model, dataset, lambda r, lab: bool((abs(r.isel(epoch=slice(-3, None))) <= tol)
                                                            .to_array().all()), tol)
    return claim_row("P4", claim, rule, text, "holds" if ok else "differs", "fig09_global")


def _edges_fragile(ds, reading: dict, tol) -> tuple[float, float, str]:
    """Shares of (model, dataset, epoch) cells where the first and the last layer have r_x and r_xε < −τ."""
    first, last, parts = [], [], []
    for model in _models(ds):
        a, b = edge_layers(ds, model)
        for dataset in _datasets(ds, model):
            r = layer_scores(ds, model, dataset, **reading)
            both = ((r["r_x"] < -tol) & (r["r_xe"] < -tol)).where(r["r_x"].notnull())
            fa, fb = both.sel(layer=a).dropna("epoch"), both.sel(layer=b).dropna("epoch")
            first += list(fa.values.astype(bool))
            last += list(fb.values.astype(bool))
            parts.append(f"{model}/{dataset}: `{a}` r_x " + ", ".join(f"{v:+.2f}" for v in r["r_x"].sel(layer=a).values)
                         + f"; `{b}` r_x " + ", ".join(f"{v:+.2f}" for v in r["r_x"].sel(layer=b).values))
    return float(np.mean(first)), float(np.mean(last)), "; ".join(parts)


def _conventions(path) -> xr.Dataset | None:
    try:
        return open_study(path, "conventions") if path is not None else None
    except FragilityError:
        return None


def p5(ds, code=None, tol=TAU):
    first, last, text = _edges_fragile(ds, {}, tol)
    verdict = "holds" if first >= SHARE and last >= SHARE else "differs"
    code_text = ""
    if code is not None:
        c_first, c_last, _ = _edges_fragile(as_responses(code, "adaptive"), CODE, tol)
        code_text = (f"{'holds' if c_first >= SHARE and c_last >= SHARE else 'differs'} (first layer "
                     f"{c_first:.0%}, last layer {c_last:.0%} of the swept cells)")
    return claim_row(
        "P5", "*All of the evaluated network and dataset parameter scores exhibit invariant fragility characteristics "
              "(marked as 'Fr') at the 1-st convolutional layer and the l-th linear layer, for both clean (r_x) and "
              "adversarial (r_xε) parameter scores* (Sec. 5, Fig. 10)",
        f"the first and the last filterable layer have r_x < −τ and r_xε < −τ (h1, τ = {tol}) in ≥ {SHARE:.0%} of "
        "the (model, dataset, epoch) cells, each", f"first layer fragile in {first:.0%}, last layer in {last:.0%} "
                                                   f"of the cells — {text}", verdict, "fig10_local", code=code_text)


def _label_counts(ds, reading, tol) -> tuple[dict, str]:
    total, parts = {"Fr": 0, "Ro": 0, "Af": 0}, []
    for model in _models(ds):
        r = xr.concat([layer_scores(ds, model, d, **reading) for d in _datasets(ds, model)], "dataset")
        labels = characterize(r[["r_x", "r_xe"]].drop_sel(layer="global").where(r["r_x"].notnull()), tol)
        counts = {k: int(sum((labels[v] == k).sum() for v in ("r_x", "r_xe"))) for k in total}
        total = {k: total[k] + counts[k] for k in total}
        parts.append(f"{model}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return total, "; ".join(parts)


def p6(ds, code=None, tol=TAU):
    total, text = _label_counts(ds, {}, tol)
    code_text = ""
    if code is not None:
        c_total, _ = _label_counts(as_responses(code, "adaptive"), CODE, tol)
        code_text = (f"{'holds' if c_total['Ro'] and c_total['Af'] else 'differs'} ("
                     + ", ".join(f"{k} {v}" for k, v in c_total.items()) + ")")
    return claim_row(
        "P6", "*We see the presence of robust parameters (marked as 'Ro') [...] Antifragile parameters (marked as "
              "'Af') are distinctly visible* (Sec. 5, Fig. 10)",
        f"among the local (layer, epoch) cells of r_x and r_xε (h1, τ = {tol}) there are Ro cells and Af cells",
        text, "holds" if total["Ro"] and total["Af"] else "differs", "fig10_local", code=code_text)


def kept_share(ds, model, dataset, layer="global") -> float:
    """The largest share of `layer`'s weights any filter removes with the clean scaled response β̄ still ≥ 0.98
    in every seed (last epoch); 0 when no threshold keeps it."""
    sub = select(ds, model, dataset)
    sub = sub.sel(epoch=sub["epoch"].values[-1], layer=layer)
    ok = (scaled(sub).sel(input="clean") >= KEPT).mean("seed") == 1
    share = (sub["n_filtered"] / sub["n_params"]).mean("seed")
    return float(share.where(ok).max().fillna(0.0))


def p10(ds):
    parts, shares = [], []
    for model in _models(ds):
        for dataset in _datasets(ds, model):
            share = kept_share(ds, model, dataset)
            shares.append(share)
            parts.append(f"{model}/{dataset}: {share:.0%} of all weights")
    return claim_row(
        "P10", "*Such an identification method can be applied to distill a trained network in order to make it usable "
               "in several resource-constrained applications* (Sec. 6; Han et al.'s point that parameters can be "
               "filtered out without significantly affecting performance, Sec. 2)",
        f"some filter removes ≥ {REMOVED:.0%} of the whole network's weights (global) with the clean scaled response "
        f"β̄ ≥ {KEPT} in every seed, last epoch, for every model", "; ".join(parts),
        "holds" if shares and min(shares) >= REMOVED else "differs", "fig07_landscape")


def p11(ds, tol=TAU):
    parts, tested, ok = [], 0, True
    datasets = sorted({d for m in _models(ds) for d in _datasets(ds, m)})
    for dataset in datasets:
        models = [m for m in _models(ds) if dataset in _datasets(ds, m)]
        if len(models) < 2:
            continue
        tested += 1
        labels = {}
        for m in models:
            r = layer_scores(ds, m, dataset)["r_x"].dropna("epoch", how="all").isel(epoch=-1)
            labels[m] = [str(characterize(r.sel(layer=n), tol).item()) for n in edge_layers(ds, m)]
        same = all(v == next(iter(labels.values())) for v in labels.values())
        ok &= same
        parts.append(f"{dataset}: " + ", ".join(f"{m} {'/'.join(v)}" for m, v in labels.items()))
    return claim_row(
        "P11", "*For a given dataset, the filtering scores identify the parameters that are invariant in "
               "characteristics across different network architectures* (Abstract, Sec. 6)",
        "on each dataset with ≥ 2 models, the r_x label of the first and of the last layer (last epoch) is the same "
        "for every model", "; ".join(parts), "untestable" if not tested else "holds" if ok else "differs",
        "fig10_local", needs="two or more models on one dataset")


def p12(ds, tol=TAU):
    parts, found, tested = [], [], 0
    for model in _models(ds):
        for dataset in _datasets(ds, model):
            r = layer_scores(ds, model, dataset)["r_x"].drop_sel(layer="global").dropna("epoch", how="all")
            if r.sizes["epoch"] < 3:
                continue
            tested += 1
            labels = characterize(r, tol).transpose("layer", "epoch").values
            periodic = [str(n) for n, row in zip(r["layer"].values, labels) if _returns(list(row))]
            found.append(bool(periodic))
            parts.append(f"{model}/{dataset}: {len(periodic)} layer(s)" + (f", e.g. `{periodic[0]}`" if periodic
                                                                            else ""))
    return claim_row(
        "P12", "*periodic robustness characteristics are shown in Fig. 10a ImageNet Tiny; Fig. 10b MNIST, CIFAR10 and "
               "ImageNet Tiny; [...]* (Sec. 5, Fig. 10)",
        "every (model, dataset) with ≥ 3 epochs has a layer whose r_x label is Ro, then not Ro, then Ro again over "
        "epochs", "; ".join(parts), "untestable" if not tested else "holds" if all(found) else "differs",
        "fig10_local", needs="three or more checkpoints")


def _returns(labels: list[str]) -> bool:
    """Ro, then something else, then Ro again."""
    first = labels.index("Ro") if "Ro" in labels else None
    if first is None:
        return False
    rest = labels[first:]
    gap = next((i for i, v in enumerate(rest) if v != "Ro"), None)
    return gap is not None and "Ro" in rest[gap:]


def claims(results, tol: float = TAU) -> pd.DataFrame:
    """Every claim decided on the results of one folder written by `fragility run`.

    Args:
        results: the results folder (responses, and the studies it holds).
        tol: the tolerance τ of Fr/Ro/Af.

    Returns:
        A DataFrame, one row per claim: id, claim (the paper's words and where), rule, evidence, verdict
        (holds / differs / untestable), code_reading (the verdict under the authors' code conventions, where it
        could differ) and chapter (the book chapter that shows the evidence).

    Example:
        >>> fr.claims("results/reference")[["id", "verdict"]]
    """
    tol = checks.number(tol, "tol", low=0)
    path = checks.folder(results, "results")
    ds = open_results(path)
    code = _conventions(path)
    rows = [p1(ds, tol), p2(ds, tol), p3(ds, tol), p4(ds, tol), p5(ds, code, tol), p6(ds, code, tol), p10(ds),
            p11(ds, tol), p12(ds, tol)]
    for name, found in REGISTRY.items():
        try:
            study = open_study(path, name)
        except FragilityError:
            study = None
        if study is not None:
            rows += found.claims(study, ds)
    rows += [claim_row(k, text, rule, "", "untestable", chapter, needs=f"the {name} study in the profile")
             for k, (name, text, rule, chapter) in _STUDY_CLAIMS.items() if k not in {r["id"] for r in rows}]
    order = {k: i for i, k in enumerate(["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "P11", "P12",
                                         "S2a", "S2b", "S3a", "S3b", "S4"])}
    return pd.DataFrame(sorted(rows, key=lambda r: order.get(r["id"], 99))).reset_index(drop=True)


# the claims a study decides, for a results folder that lacks the study
_STUDY_CLAIMS = {
    "P7": ("batchnorm", "*Even after filtering all parameters in a layer, the network performs relatively well* "
                        "because of the following BatchNorm (Fig. 11)", "see the batchnorm study", "fig11_batchnorm"),
    "P8": ("selective", "Selective backpropagation raises adversarial accuracy over regular training (Fig. 12)",
           "see the selective study", "fig12_selective"),
    "P9": ("selective", "The gain of selective backpropagation is larger on CIFAR-10 and Tiny ImageNet (Sec. 5)",
           "see the selective study", "fig12_selective"),
    "S2a": ("neurons", "The attack concentrates on the fragile neurons (seed 002)", "see the neurons study",
            "study_neurons"),
    "S2b": ("neurons", "The compress/amplify defense raises FGSM accuracy (seed 002)", "see the neurons study",
            "study_neurons"),
    "S3a": ("removal", "Top layers tolerate > 70 % random removal (seed 003)", "see the removal study",
            "study_removal"),
    "S3b": ("removal", "The first layer falls to chance (seed 003)", "see the removal study", "study_removal"),
    "S4": ("depth", "Deeper networks are more fragile (seed 004)", "see the depth study", "study_depth"),
}


def antifragility_note(ds, model=None, dataset=None, tol=TAU) -> str:
    """What drives antifragile scores under h1 in one model: the share of its layers labelled Af, its last layer's
    r_x under each filter, and how much of that layer h1 removes before the clean accuracy halves."""
    model = model or _models(ds)[0]
    dataset = dataset or _datasets(ds, model)[0]
    r = {h: layer_scores(ds, model, dataset, filter=h)["r_x"].isel(epoch=-1) for h in ("h1", "h2", "h3")}
    local = r["h1"].drop_sel(layer="global")
    share = float((characterize(local, tol) == "Af").mean())
    last = edge_layers(ds, model)[1]
    sub = select(ds, model, dataset)
    sub = sub.sel(epoch=sub["epoch"].values[-1], layer=last, filter="h1")
    beta = scaled(sub).sel(input="clean").mean("seed")
    removed = (sub["n_filtered"] / sub["n_params"]).mean("seed")
    halves = bool((beta < 0.5).any())
    half = int(np.argmax(beta.values < 0.5)) if halves else len(beta) - 1
    h1, h2 = float(r["h1"].sel(layer=last)), float(r["h2"].sel(layer=last))
    other = (f"h2, which removes the largest weights first, gives the opposite sign ({h2:+.2f}): the score says "
             "which weights the filter removes first as much as how fragile the layer is."
             if np.sign(h2) != np.sign(h1) and abs(h2) > tol else
             f"h2, which removes the largest weights first, gives {h2:+.2f}: the sign does not hinge on the order "
             "alone.")
    return (f"{model} on {dataset} (last epoch): {share:.0%} of its layers are antifragile under h1 (r_x > {tol}); "
            f"its last layer `{last}` has r_x = {h1:+.2f} under h1, {h2:+.2f} under h2 and "
            f"{float(r['h3'].sel(layer=last)):+.2f} under h3. h1 removes the most negative weights first: "
            + (f"it has removed {float(removed[half]):.0%} of `{last}`'s weights before its clean accuracy falls "
               f"below half of the unperturbed one (α = {float(beta['alpha'][half]):.2f})" if halves else
               f"`{last}` keeps more than half of its clean accuracy until every weight is gone")
            + ", while the baseline φ̄ (Eq. 10) counts every "
            f"removed weight alike — β̄ − φ̄ is the area r_x (Eq. 14), {'positive' if h1 > 0 else 'negative'} here. "
            + other)


def report(results) -> str:
    """The claims of `claims(results)` as an HTML table whose chapter column links to the figure chapters, after a
    count of verdicts and what drives antifragile scores."""
    import html

    table = claims(results)
    counts = table["verdict"].value_counts()
    head = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in ("holds", "differs", "untestable"))
    rows = "".join(
        f"<tr><td><b>{html.escape(r.id)}</b></td><td>{_markup(r.claim)}</td><td>{html.escape(r.rule)}</td>"
        f"<td>{_markup(r.evidence)}</td><td class='verdict-{r.verdict}'><b>{r.verdict}</b>"
        + (f"<br><small>authors' code: {html.escape(r.code_reading)}</small>" if r.code_reading else "")
        + f"</td><td><a href='{r.chapter}.html'>{r.chapter.split('_')[0]}</a></td></tr>"
        for r in table.itertuples())
    note = antifragility_note(open_results(checks.folder(results, "results")))
    return (f"<p>{len(table)} claims: {head}.</p><p>{html.escape(note)}</p>"
            "<table class='claims'><thead><tr><th>id</th><th>claim (the paper's words)</th><th>rule</th>"
            "<th>evidence</th><th>verdict</th><th>chapter</th></tr></thead><tbody>" + rows + "</tbody></table>")


def _markup(text: str) -> str:
    """Escaped text with *emphasis* and `code` kept."""
    import html
    import re

    text = html.escape(text)
    text = re.sub(r"\*([^*]+)\*", r"<i>\1</i>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
