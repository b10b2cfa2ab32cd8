"""The paper's figures 4–12 and the related studies, drawn from stored results.

Figures 4–11 take the combined Dataset of `open_results`, dims (model, dataset, seed, epoch, layer, filter, alpha,
input); Fig. 12 and the studies of seeds 002–004 take that of `store.open_study` (one unit per model, dataset and
seed, see "Beyond the paper" below). Every figure function takes the combined Dataset plus selections, and returns a
matplotlib Figure whose foot carries `provenance_line`. Responses and scores are computed per seed, then averaged
over seeds (SPEC §7) unless a seed is selected. A selection left as None takes its default (see `check_parameters`,
which checks the selections of a study's Dataset against that study).
"""
from __future__ import annotations

import re

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from .data import info
from .errors import FragilityError
from .neurons import rank_neurons
from .removal import compare_with_filtering
from .scores import baseline, characterize, combined, display_normalize, scaled, scores
from .store import layer_order

FILTERS = ("h1", "h2", "h3", "combined")
INPUTS = ("clean", "adversarial")
SCORES = {"r_x": r"$r_x$", "r_xe": r"$r_{x\epsilon}$", "r_e": r"$r_\epsilon$"}
MARKERS = {"trained": "s", "following re-estimated": "^", "all re-estimated": "D"}
ALPHA = r"normalized threshold $\alpha$"
PARAMETERS = ("model", "dataset", "seed", "epoch", "layer", "layers", "filter", "input")


def _values(ds: xr.Dataset, name: str) -> list:
    """The values of coordinate `name`, whether a dimension or a scalar left by a selection."""
    return np.atleast_1d(ds[name].values).tolist() if name in ds.coords else []


def _stored(ds: xr.Dataset) -> xr.DataArray:
    """True where a unit (model, dataset, seed, epoch) holds results: combined results pad missing ones with NaN."""
    return ds["base_accuracy"].notnull().any("input")


def _where(mask: xr.DataArray, dim: str) -> list:
    """Values of `dim` where `mask` is True for some value of its other dimensions."""
    hit = mask.any([d for d in mask.dims if d != dim]) if mask.ndim > 1 else mask
    return [v for v, ok in zip(_values(mask, dim), hit.values) if ok]


def _choose(kind: str, value, valid: list, where: str, default=None):
    """`value`, or `default` (the first valid choice) when None; else a FragilityError listing the valid choices."""
    if value is None:
        return valid[0] if default is None else default
    if value not in valid:
        shown = ", ".join(map(str, valid[:60])) + (", …" if len(valid) > 60 else "")
        raise FragilityError(f"unknown {kind} {value!r}{where}: choose from {shown}.")
    return value


def choices(ds: xr.Dataset, model=None, dataset=None) -> dict[str, list]:
    """The valid values of every selection for `model` and `dataset` (each default: the first)."""
    if study_kind(ds):
        return study_choices(ds, model, dataset)
    models = _values(ds, "model")
    model = model if model in models else models[0]
    stored = _stored(ds).sel(model=model)
    datasets = _where(stored, "dataset")
    unit = stored.sel(dataset=dataset if dataset in datasets else datasets[0])
    return {"model": models, "dataset": datasets, "seed": _where(unit, "seed"), "epoch": _where(unit, "epoch"),
            "layer": layer_order(ds, model), "filter": list(FILTERS), "input": list(INPUTS)}


def check_parameters(ds: xr.Dataset, **params) -> dict:
    """Selections checked against the results, defaults filled in; else one FragilityError naming the valid choices.

    Keys (only those given are checked): model (default the first), dataset (the first one the model was run on),
    seed (None: average over seeds), epoch (the last stored), layer (the model's first), layers (None: chosen by
    the figure), filter ("h1"; also "h2", "h3", "combined"), input ("clean" or "adversarial").
    """
    kind = study_kind(ds)
    allowed = STUDY_PARAMETERS[kind] if kind else PARAMETERS
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        whose = f"the {kind} study's figures" if kind else "the figures"
        raise FragilityError(f"unknown parameter(s) {', '.join(unknown)}: {whose} take {', '.join(allowed)}.")
    out = dict(params)
    model = out["model"] = _choose("model", params.get("model"), choices(ds)["model"], " in these results")
    valid = choices(ds, model)
    dataset = out["dataset"] = _choose("dataset", params.get("dataset"), valid["dataset"], f" for {model}")
    valid = choices(ds, model, dataset)
    where = {"seed": f" stored for {model} on {dataset}", "epoch": f" stored for {model} on {dataset}",
             "layer": f" of {model}", "filter": "", "input": ""}
    for key in where:
        if key in params and not (key == "seed" and params[key] is None):
            out[key] = _choose(key, params[key], valid[key], where[key], valid[key][-1] if key == "epoch" else None)
    for name in params.get("layers") or []:
        _choose("layer", name, valid["layer"], where["layer"])
    return out


def _select(ds: xr.Dataset, model=None, dataset=None, seed=None) -> xr.Dataset:
    """The loaded results of one model (and dataset — all when None — and seed), without the units and layers it
    lacks; the selections checked first."""
    model = check_parameters(ds, model=model, dataset=dataset, seed=seed)["model"]
    sub = ds.sel(model=model, layer=layer_order(ds, model))
    if dataset is not None:
        sub = sub.sel(dataset=dataset)
    if seed is not None:
        sub = sub.sel(seed=[seed])
    stored = _stored(sub)
    return sub.sel({d: _where(stored, d) for d in ("dataset", "seed", "epoch") if d in stored.dims}).load()


def _with_combined(da: xr.DataArray, combined_da: xr.DataArray | None = None) -> xr.DataArray:
    """`da` with filter "combined" appended: `combined_da`, or the mean over h1, h2, h3."""
    extra = da.sel(filter=["h1", "h2", "h3"]).mean("filter") if combined_da is None else combined_da
    return xr.concat([da, extra.expand_dims(filter=["combined"])], "filter", coords="minimal")


def curves(ds: xr.Dataset, model=None, dataset=None, seed=None) -> xr.Dataset:
    """One model's curves, averaged over seeds (or of one seed): scaled response β̄ (β̃ of Eq. 13 for filter
    "combined"), baseline φ̄ (Eq. 10; the mean of the three for "combined"), accuracy β, n_filtered, n_params and
    base_accuracy; dims (dataset, epoch, layer, filter, alpha, input) — no dataset dim when one is selected."""
    sub = _select(ds, model, dataset, seed)
    out = xr.Dataset({
        "response": _with_combined(scaled(sub), combined(sub)),
        "baseline": _with_combined(baseline(sub)),
        "accuracy": _with_combined(sub["accuracy"]),
        "n_filtered": _with_combined(sub["n_filtered"]),
        "n_params": sub["n_params"],
        "base_accuracy": sub["base_accuracy"],
    }).mean("seed")
    out["epsilon"] = sub["epsilon"]
    out.attrs = sub.attrs
    return out


def unit_scores(ds: xr.Dataset, model=None, dataset=None, seed=None, filter="h1", mean=True) -> xr.Dataset:
    """Scores r_x, r_xe, r_e (Eq. 14–16) of every layer of one model, global included, by (dataset,) epoch, layer;
    averaged over seeds unless `mean` is False. Non-finite scores (an unperturbed accuracy of 0) become NaN."""
    r = scores(_select(ds, model, dataset, seed), filter)
    r = r.where(np.isfinite(r))
    return r.mean("seed") if mean else r


def _range(values) -> str:
    values = sorted({float(f"{v:.3g}") for v in np.ravel(values) if np.isfinite(v)})
    return "?" if not values else f"{values[0]:g}" if len(values) == 1 else f"{values[0]:g}–{values[-1]:g}"


def provenance_line(ds: xr.Dataset) -> str:
    """Profile, models, datasets, seeds, n_test, A, ε, attack and code commit of the results shown."""
    a = ds.attrs
    return " · ".join([
        f"profile {a.get('profile', '?')}",
        f"model {', '.join(map(str, _values(ds, 'model')))}",
        f"data {', '.join(map(str, _values(ds, 'dataset')))}",
        f"seeds {', '.join(map(str, _values(ds, 'seed')))}",
        f"n_test {a.get('n_test', '?')}",
        f"A {a.get('A', '?')}",
        f"ε {_range(ds['epsilon'].values)}",
        f"attack {a.get('attack', '?')}",
        f"commit {str(a.get('git_commit', 'unknown'))[:10]}",
    ])


def _figure(shown: xr.Dataset, title: str, size: tuple[float, float], line: str | None = None) -> Figure:
    """A constrained-layout Figure with `title`, and the provenance line of the results `shown` (or `line`) at its
    foot."""
    fig = Figure(figsize=size, layout="constrained")
    fig.get_layout_engine().set(rect=(0, 0.03, 1, 0.97))
    fig.suptitle(title, fontsize=11)
    fig.text(0.5, 0.004, line or provenance_line(shown), ha="center", va="bottom", fontsize=6.5, color="0.35")
    return fig


def _label(score: float) -> str:
    return str(characterize(xr.DataArray(score)).item())


def _area(ax, alpha, upper, lower, styles, name: str, score: float) -> None:
    """Two curves and the area between them: blue where `upper` lies above (score > 0 side), red below."""
    upper, lower = np.asarray(upper, float), np.asarray(lower, float)
    for curve, (style, color, label) in zip((upper, lower), styles):
        ax.plot(alpha, curve, style, color=color, lw=2, label=label)
    for side, color, sign in ((upper >= lower, "tab:blue", ">"), (upper < lower, "tab:red", "<")):
        ax.fill_between(alpha, lower, upper, where=side, interpolate=True, color=color, alpha=0.25,
                        label=f"{name} {sign} 0 side")
    ax.set(xlabel=ALPHA, title=f"{name} = {score:+.3f} ({_label(score)})")
    ax.legend(fontsize=7)


def fig04_baseline(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1", input="clean"):
    """Fig. 4: (a) baseline φ̄ (Eq. 10) and filtered count against α; (b) β̄ and β against φ̄ with the area shaded."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter,
                         input=input)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], epoch=p["epoch"], filter=p["filter"])
    alpha, base = c["alpha"].values, float(c["base_accuracy"].sel(input=p["input"]))
    fig = _figure(c, f"Fig. 4 · {p['model']} on {p['dataset']} · layer {p['layer']} · epoch {p['epoch']} · "
                     f"{p['filter']} · {p['input']}", (11, 4.2))
    ax, bx = fig.subplots(1, 2)
    ax.plot(alpha, c["baseline"], ":", color="green", lw=2, label=r"baseline $\bar\phi$ (Eq. 10)")
    ax.set(xlabel=ALPHA, ylabel=r"baseline $\bar\phi$", title="(a) baseline", ylim=(-0.05, 1.05))
    twin = ax.twinx()
    twin.plot(alpha, c["n_filtered"], "-", color="teal", label=r"parameters filtered $\phi_\alpha$")
    twin.plot([alpha[-1]], [float(c["n_params"])], "o", color="gold", mec="k", ms=9,
              label=r"parameters in the layer $\phi$")
    twin.set_ylabel("number of parameters filtered")
    ax.legend(handles=ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0], fontsize=7,
              loc="center left")
    bx.plot(alpha, c["accuracy"].sel(input=p["input"]), ":", color="tab:blue", label=r"accuracy $\beta$")
    bx.plot([0], [base], "o", color="red", ms=8, label=f"unperturbed accuracy {base:.3f}")
    key = "r_xe" if p["input"] == "adversarial" else "r_x"
    score = float(unit_scores(ds, p["model"], p["dataset"], seed, p["filter"])[key].sel(layer=p["layer"],
                                                                                       epoch=p["epoch"]))
    _area(bx, alpha, c["response"].sel(input=p["input"]), c["baseline"],
          (("-", "tab:blue", r"scaled $\bar\beta$"), (":", "green", r"baseline $\bar\phi$")), SCORES[key], score)
    bx.set(ylabel="accuracy, scaled accuracy", title="(b) " + bx.get_title())
    return fig


def _image(fig, ax, values, alpha, rows, title, label, ylabel="epoch", cmap="viridis", norm=None, vmax=1.0):
    """(rows × α) image, pixels centred on the thresholds, with row labels and a colour bar (`norm`, else 0..vmax)."""
    half = (alpha[1] - alpha[0]) / 2
    im = ax.imshow(values, aspect="auto", origin="lower", interpolation="nearest", cmap=cmap, norm=norm,
                   extent=(alpha[0] - half, alpha[-1] + half, -0.5, len(rows) - 0.5))
    if norm is None:
        im.set_clim(0, vmax)
    ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=7 if len(rows) <= 30 else 4.5)
    ax.set(title=title, xlabel=ALPHA, ylabel=ylabel)
    fig.colorbar(im, ax=ax, label=label, shrink=0.9)


def _signed(values) -> TwoSlopeNorm:
    """A colour scale centred on 0 and symmetric about it."""
    lim = max(float(np.nanmax(np.abs(values))), 1e-9)
    return TwoSlopeNorm(0, -lim, lim)


def fig05_targeted(ds, model=None, dataset=None, layer=None, seed=None, filter="combined"):
    """Fig. 5: epoch × α images of one layer's scaled response: clean, adversarial, targeted = clean − adversarial."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, filter=filter)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], filter=p["filter"])
    beta = c["response"].transpose("input", "epoch", "alpha").values
    alpha, epochs, top = c["alpha"].values, c["epoch"].values, max(1.0, float(np.nanmax(beta)))
    fig = _figure(c, f"Fig. 5 · {p['model']} on {p['dataset']} · layer {p['layer']} · {p['filter']} response",
                  (14, 3.8))
    axes = fig.subplots(1, 3)
    _image(fig, axes[0], beta[0], alpha, epochs, r"clean $\bar\beta$", "scaled accuracy", vmax=top)
    _image(fig, axes[1], beta[1], alpha, epochs, r"adversarial $\bar\beta_\epsilon$", "scaled accuracy", vmax=top)
    _image(fig, axes[2], beta[0] - beta[1], alpha, epochs, r"targeted $\bar\beta - \bar\beta_\epsilon$",
           "clean − adversarial", cmap="RdBu_r", norm=_signed(beta[0] - beta[1]))
    return fig


def _epoch_lines(ax, lines: xr.DataArray, title: str, ylabel: str) -> None:
    """One line per epoch of `lines` (epoch, alpha), coloured from dark (first) to light (last)."""
    epochs = lines["epoch"].values
    for e, color in zip(epochs, colormaps["viridis"](np.linspace(0, 0.9, len(epochs)))):
        ax.plot(lines["alpha"], lines.sel(epoch=e), color=color, lw=1.3, label=f"epoch {e}")
    ax.set(title=title, xlabel=ALPHA, ylabel=ylabel)


def fig06_filters(ds, model=None, dataset=None, layer=None, seed=None, input="clean"):
    """Fig. 6: accuracy β of one layer against α for h1, h2, h3 (a line per epoch), and the combined β̃ (Eq. 13)."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, seed=seed, input=input)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], input=p["input"])
    fig = _figure(c, f"Fig. 6 · {p['model']} on {p['dataset']} · layer {p['layer']} · {p['input']} inputs", (12, 7))
    axes = fig.subplot_mosaic([["h1", "h2", "h3"], ["combined"] * 3])
    for h, name in (("h1", "high-pass"), ("h2", "low-pass"), ("h3", "pulse wave")):
        _epoch_lines(axes[h], c["accuracy"].sel(filter=h), f"{h} ({name})", r"accuracy $\beta$")
    _epoch_lines(axes["combined"], c["response"].sel(filter="combined"),
                 r"combined $\tilde\beta$ (Eq. 13): mean of the scaled h1, h2, h3", r"scaled accuracy $\tilde\beta$")
    axes["combined"].legend(fontsize=7, ncol=1 + len(c["epoch"]) // 6)
    return fig


def fig07_landscape(ds, model=None, epoch=None, seed=None, input="clean"):
    """Fig. 7: combined responses β̃ of every layer × α at one epoch (default the last), and global epoch × α,
    a row per dataset."""
    p = check_parameters(ds, model=model, seed=seed, input=input)
    datasets = choices(ds, p["model"])["dataset"]
    c = curves(ds, p["model"], seed=seed).sel(filter="combined", input=p["input"])
    fig = _figure(c, f"Fig. 7 · {p['model']} · combined {p['input']} responses", (12, 1.2 + 3.3 * len(datasets)))
    axes = fig.subplots(len(datasets), 2, squeeze=False, width_ratios=(1.3, 1))
    alpha = c["alpha"].values
    for row, name in zip(axes, datasets):
        e = check_parameters(ds, model=p["model"], dataset=name, seed=seed, epoch=epoch)["epoch"]
        beta = c["response"].sel(dataset=name).dropna("epoch", how="all")
        top = max(1.0, float(np.nanmax(beta)))
        local = beta.sel(epoch=e).drop_sel(layer="global").transpose("layer", "alpha")
        _image(fig, row[0], local.values, alpha, local["layer"].values, f"{name}: every layer, epoch {e}",
               r"scaled accuracy $\tilde\beta$", ylabel="layer", vmax=top)
        glob = beta.sel(layer="global").transpose("epoch", "alpha")
        _image(fig, row[1], glob.values, alpha, glob["epoch"].values, f"{name}: global (whole network)",
               r"scaled accuracy $\tilde\beta$", vmax=top)
    return fig


def fig08_scores(ds, model=None, dataset=None, layer=None, epoch=None, seed=None, filter="h1"):
    """Fig. 8: (a) r_x and r_xε as areas between the scaled responses and φ̄; (b) r_ε between adversarial and clean."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed, filter=filter)
    where = dict(layer=p["layer"], epoch=p["epoch"])
    c = curves(ds, p["model"], p["dataset"], seed).sel(filter=p["filter"], **where)
    r = unit_scores(ds, p["model"], p["dataset"], seed, p["filter"]).sel(where)
    clean, adversarial, phi = c["response"].sel(input="clean"), c["response"].sel(input="adversarial"), c["baseline"]
    fig = _figure(c, f"Fig. 8 · {p['model']} on {p['dataset']} · layer {p['layer']} · epoch {p['epoch']} · "
                     f"filter {p['filter']}", (11, 7.5))
    axes = fig.subplots(2, 2, sharex=True)
    alpha, base = c["alpha"].values, (":", "green", r"baseline $\bar\phi$")
    blue, orange = ("-", "tab:blue", r"clean $\bar\beta$"), ("-", "tab:orange", r"adversarial $\bar\beta_\epsilon$")
    _area(axes[0, 0], alpha, clean, phi, (blue, base), SCORES["r_x"], float(r["r_x"]))
    _area(axes[1, 0], alpha, adversarial, phi, (orange, base), SCORES["r_xe"], float(r["r_xe"]))
    _area(axes[0, 1], alpha, adversarial, clean, (orange, blue), SCORES["r_e"], float(r["r_e"]))
    _area(axes[1, 1], alpha, adversarial - clean, 0 * clean, (("-", "k", r"$\bar\beta_\epsilon - \bar\beta$"),
                                                             (":", "0.5", "zero")), SCORES["r_e"], float(r["r_e"]))
    for ax, panel in ((axes[0, 0], "(a) "), (axes[0, 1], "(b) ")):
        ax.set_title(panel + ax.get_title())
    for ax, label in zip(axes.flat, ["scaled accuracy"] * 3 + ["adversarial − clean"]):
        ax.set_ylabel(label)
    return fig


def fig09_global(ds, filter="h1"):
    """Fig. 9: global r_x, r_xε, r_ε against epoch, a row per model and a line per dataset, mean ± std over seeds."""
    p = check_parameters(ds, filter=filter)
    models = choices(ds)["model"]
    fig = _figure(ds, f"Fig. 9 · global parameter scores, filter {p['filter']} (mean ± std over seeds)",
                  (12, 1.2 + 2.8 * len(models)))
    axes = fig.subplots(len(models), 3, squeeze=False, sharex=True)
    for row, name in zip(axes, models):
        r = unit_scores(ds, name, filter=p["filter"], mean=False).sel(layer="global")
        for dataset, color in zip(r["dataset"].values, colormaps["tab10"].colors):
            for ax, key in zip(row, SCORES):
                v = r[key].sel(dataset=dataset).dropna("epoch", how="all")
                mean, std = v.mean("seed"), v.std("seed")
                ax.plot(v["epoch"], mean, "o-", color=color, ms=3, label=str(dataset))
                ax.fill_between(v["epoch"], mean - std, mean + std, color=color, alpha=0.2)
        for ax, key in zip(row, SCORES):
            ax.axhline(0, color="0.5", lw=0.8)
            ax.set(title=f"{name}: {SCORES[key]}", xlabel="epoch", ylabel=SCORES[key])
        row[0].legend(fontsize=7)
    return fig


def fig10_local(ds, model=None, seed=None, filter="h1", tol=0.02):
    """Fig. 10: local scores as layer × epoch heatmaps per dataset, display-normalized to [−0.5, 0.5] over the
    figure, each cell labelled Fr/Ro/Af from the raw score with tolerance `tol`."""
    p = check_parameters(ds, model=model, seed=seed, filter=filter)
    r = unit_scores(ds, p["model"], seed=seed, filter=p["filter"]).drop_sel(layer="global")
    r = r.transpose("dataset", "layer", "epoch")
    shown, labels = display_normalize(r), characterize(r, tol)
    layers, epochs, rows = r["layer"].values, r["epoch"].values, r.sizes["dataset"]
    fig = _figure(_select(ds, p["model"], seed=seed), f"Fig. 10 · {p['model']} · local parameter scores, filter "
                  f"{p['filter']} (Fr < −{tol} ≤ Ro ≤ {tol} < Af)", (14, 1.5 + rows * (1 + 0.2 * len(layers))))
    axes = fig.subplots(rows, 3, squeeze=False)
    for row, dataset in zip(axes, r["dataset"].values):
        for ax, key in zip(row, SCORES):
            values = shown[key].sel(dataset=dataset).values
            im = ax.imshow(values, aspect="auto", cmap="RdYlGn", vmin=-0.5, vmax=0.5, interpolation="nearest")
            for (i, j), text in np.ndenumerate(labels[key].sel(dataset=dataset).values):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, text, ha="center", va="center", fontsize=6)
            ax.set_yticks(range(len(layers)), layers, fontsize=6 if len(layers) <= 30 else 4)
            ax.set_xticks(range(len(epochs)), epochs, fontsize=7)
            ax.set(title=f"{dataset}: {SCORES[key]}", xlabel="epoch")
        fig.colorbar(im, ax=row.tolist(), label="normalized score", shrink=0.9)
    return fig


def retention(ds, model=None, dataset=None, epoch=None, seed=None) -> xr.DataArray:
    """Per layer, the share of the above-chance clean accuracy kept with every weight of the layer removed
    (h1 at α = 1): (β − 1/K) / (acc(f(x, θ)) − 1/K), averaged over seeds; 0 is chance, 1 the unfiltered network."""
    p = check_parameters(ds, model=model, dataset=dataset, epoch=epoch, seed=seed)
    c = curves(ds, p["model"], p["dataset"], seed).sel(epoch=p["epoch"], filter="h1", input="clean")
    chance = 1 / info(p["dataset"]).classes
    kept = (c["accuracy"].isel(alpha=-1) - chance) / (c["base_accuracy"] - chance)
    return kept.drop_sel(layer="global").rename("retention")


def kept_layers(ds, model=None, dataset=None, epoch=None, seed=None, threshold=0.5, k=3) -> list[str]:
    """The (at most k) layers, best first, whose full removal keeps ≥ `threshold` of the above-chance accuracy."""
    r = retention(ds, model, dataset, epoch, seed)
    r = r.sortby(r, ascending=False)
    return [str(n) for n in r["layer"].values[(r >= threshold).values][:k]]


def fig11_batchnorm(ds, model=None, dataset=None, epoch=None, seed=None, layers=None, removal=None):
    """Fig. 11: clean accuracy against α (h1, h2) of the layers that best keep accuracy when fully filtered (or
    `layers`), with chance level and — given `removal` from `fragility.batchnorm.remove_layers` — the accuracy
    with every weight removed under the trained and the re-estimated BatchNorm statistics."""
    p = check_parameters(ds, model=model, dataset=dataset, epoch=epoch, seed=seed, layers=layers)
    layers = list(layers or kept_layers(ds, p["model"], p["dataset"], p["epoch"], seed, threshold=-np.inf))
    c = curves(ds, p["model"], p["dataset"], seed).sel(epoch=p["epoch"], input="clean")
    chance, alpha = 1 / info(p["dataset"]).classes, c["alpha"].values
    fig = _figure(c, f"Fig. 11 · {p['model']} on {p['dataset']} · epoch {p['epoch']} · layers fully filtered",
                  (4 * len(layers) + 3, 4.2))
    axes = fig.subplots(1, len(layers), squeeze=False, sharey=True)[0]
    for ax, layer in zip(axes, layers):
        unit = c.sel(layer=layer)
        for h, color in (("h1", "tab:blue"), ("h2", "tab:orange")):
            ax.plot(alpha, unit["accuracy"].sel(filter=h), color=color, label=f"{h}, BatchNorm as trained")
        full = _where(unit["n_filtered"].sel(filter="h1") >= unit["n_params"], "alpha")[0]
        ax.axvline(full, color="purple", ls=":", label="every weight removed")
        ax.axhline(chance, color="0.4", ls="--", lw=0.8, label=f"chance 1/{round(1 / chance)}")
        if removal is not None and layer in removal["layer"].values:
            for state in removal["statistics"].values:
                value = removal["accuracy"].sel(layer=layer, statistics=state)
                ax.plot([1.0], [float(value.mean("seed") if "seed" in value.dims else value)], MARKERS[str(state)],
                        ms=8, mec="k", label=f"removed · BatchNorm statistics {state}")
        ax.set(title=layer, xlabel=ALPHA, ylabel="clean accuracy", ylim=(0, 1.02))
    legend = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(legend.values(), legend.keys(), loc="outside right upper", fontsize=7)
    return fig


# ----------------------------------------------------------------------------------------------------------------------
# Beyond the paper's Fig. 4–11: Fig. 12 (selective backpropagation, SPEC §8) and the related studies of seeds 002–004
# (SPEC §10). Each function takes the Dataset of `store.open_study(results, study)`: one unit per (model, dataset,
# seed) — the Dataset the study function returned — combined along model, dataset and seed, NaN where a unit or a
# coordinate value is missing. `check_parameters` and `choices` check a study's selections against that study.

STUDY_PARAMETERS = {
    "selective": ("model", "dataset", "seed"),
    "neurons": ("model", "dataset", "seed", "input"),
    "removal": ("model", "dataset", "seed", "layer", "input", "filter"),
    "depth": ("model", "dataset", "seed"),
}
_MARKS = (("selective", "start_accuracy"), ("neurons", "attack_effect"), ("removal", "n_removed"),
          ("depth", "perturbation"))
_UNIT = ("model", "dataset", "seed")
DEFENSE_LABELS = {"clean": "clean", "adversarial": "FGSM against\neach network", "fixed": "FGSM against\nthe original"}
TOP_LAYERS = 2  # removal: seed 003's "top convolutional or dense layers" are the last two layers in forward order


def study_kind(ds: xr.Dataset) -> str | None:
    """The study a combined Dataset holds — attrs["study"] when set, else told by its variables — or None for the
    sweep results of `open_results`."""
    kind = ds.attrs.get("study")
    if kind in STUDY_PARAMETERS:
        return kind
    if "layer_index" in ds.variables:
        return None
    return next((k for k, name in _MARKS if name in ds.variables), None)


def _units(ds: xr.Dataset) -> xr.DataArray:
    """True where a (model, dataset, seed) unit of a study is stored."""
    present = ds["start_accuracy" if study_kind(ds) == "selective" else "base_accuracy"].notnull()
    others = [d for d in present.dims if d not in _UNIT]
    return present.any(others) if others else present


def _have(ds: xr.Dataset, name: str, dim: str, **where) -> list:
    """Values of `dim` where variable `name` has a value, at the selections `where`, in the Dataset's order."""
    have = ds[name].sel(where).notnull()
    have = have.any([d for d in have.dims if d != dim]) if have.ndim > 1 else have
    return [v for v, ok in zip(_values(have, dim), have.values) if ok]


def study_choices(ds: xr.Dataset, model=None, dataset=None) -> dict[str, list]:
    """`choices` for a study's Dataset: models, datasets, seeds stored, and the study's layers and inputs."""
    kind = study_kind(ds)
    units = _units(ds)
    models = _where(units, "model")
    if not models:
        raise FragilityError(f"the {kind} study holds no results.")
    model = model if model in models else models[0]
    datasets = _where(units.sel(model=model), "dataset")
    dataset = dataset if dataset in datasets else datasets[0]
    out = {"model": models, "dataset": datasets, "seed": _where(units.sel(model=model, dataset=dataset), "seed")}
    if kind == "selective":
        out["layer"] = _have(ds, "score", "layer", model=model, dataset=dataset)
    if kind == "removal":
        out["layer"] = [str(n) for n in _have(ds, "n_params", "layer", model=model, dataset=dataset)]
        out["filter"] = ["h1", "h2"]  # the filters whose removed set grows with α (`removal.compare_with_filtering`)
    if kind in ("neurons", "removal"):
        stored = _have(ds, "accuracy", "input", model=model, dataset=dataset)
        out["input"] = [i for i in INPUTS if i in stored]
    return out


def _seeds(ds: xr.Dataset, p: dict, seed) -> list:
    """[seed], or every seed stored for the selected model and dataset."""
    return [seed] if seed is not None else choices(ds, p["model"], p["dataset"])["seed"]


def study_provenance_line(ds: xr.Dataset, epsilon=None, **attrs) -> str:
    """`provenance_line` of a study's results (`ds` as shown, `attrs` overriding its attributes), with the FGSM
    magnitude(s) `epsilon`; the parts a study does not have (A of a study without a sweep, say) left out."""
    view = xr.Dataset(coords={k: (k, np.atleast_1d(ds[k].values)) for k in _UNIT if k in ds.coords},
                      attrs={**ds.attrs, **attrs})
    view["epsilon"] = ("value", np.ravel(np.asarray(np.nan if epsilon is None else epsilon, dtype=float)))
    return " · ".join(part for part in provenance_line(view).split(" · ") if not part.endswith(" ?"))


def _chance(dataset: str) -> float:
    try:
        return 1 / info(dataset).classes
    except FragilityError:
        return np.nan


def _near_chance(model: str, base: float, chance: float) -> str:
    """A caution when `base` accuracy is close to chance (within a fifth of the way to 1), else ""."""
    if np.isfinite(chance) and base < chance + 0.2 * (1 - chance):
        return (f"\n\n*Caution: {model} is close to chance on clean inputs ({base:.3f}, chance {chance:.2f}), so the "
                "shares of its accuracy kept under stress mean little.*")
    return ""


def _seed_text(seeds: list) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± std over {len(seeds)} seeds"


def _grid(fig, ax, values, rows, columns, title: str, label: str, cmap="viridis", norm=None, marks=None,
          xlabel="fraction p of the layer's weights removed") -> None:
    """A (rows × columns) image with categorical ticks and a colour bar (`norm`, else 0..1); cell text from `marks`
    (an array of strings), else the values when there are few cells."""
    im = ax.imshow(values, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm,
                   **({} if norm is not None else {"vmin": 0, "vmax": 1}))
    texts = marks if marks is not None else (np.vectorize(lambda v: f"{v:.2f}" if np.isfinite(v) else "")(values)
                                             if values.size <= 120 else None)
    if texts is not None:
        for (i, j), text in np.ndenumerate(texts):
            ax.text(j, i, text, ha="center", va="center", fontsize=6, color="0.1")
    ax.set_xticks(range(len(columns)), [f"{c:g}" for c in columns], fontsize=7)
    ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=7 if len(rows) <= 30 else 4.5)
    ax.set(title=title, xlabel=xlabel)
    fig.colorbar(im, ax=ax, label=label, shrink=0.9)


# Fig. 12 — selective backpropagation (SPEC §8)

def selective_curves(ds: xr.Dataset, model=None, dataset=None, seed=None) -> xr.Dataset:
    """Fig. 12's data for one model and dataset, per seed: accuracy(seed, training, epoch, epsilon) of the continued
    checkpoints, start_accuracy(seed, epsilon), score and frozen(seed, layer), epsilon_max(seed) = ε_E.

    When the seeds' ε grids differ (ε_E searched per seed), epsilon becomes ε / ε_E on a common grid (each seed's
    curve interpolated linearly) and attrs["relative"] is 1.
    """
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed)
    seeds = _seeds(ds, p, seed)
    sub = ds.sel(model=p["model"], dataset=p["dataset"]).sel(seed=seeds)
    sub = sub[["accuracy", "start_accuracy", "score", "frozen"]].reset_coords(drop=True).load()
    grids = [sub["start_accuracy"].sel(seed=s).dropna("epsilon")["epsilon"].values for s in seeds]
    same = all(len(g) == len(grids[0]) and np.allclose(g, grids[0]) for g in grids)
    curves = sub[["accuracy", "start_accuracy"]]
    if same:
        curves = curves.sel(epsilon=grids[0])
    else:
        common = np.linspace(0, 1, max(map(len, grids)))
        curves = xr.concat([curves.sel(seed=s, epsilon=g).assign_coords(epsilon=g / g.max()).interp(epsilon=common)
                            for s, g in zip(seeds, grids)], "seed")
    out = curves.dropna("epoch", how="all", subset=["accuracy"])
    layers = choices(ds, p["model"], p["dataset"])["layer"]
    out["score"] = sub["score"].sel(layer=layers).where(np.isfinite(sub["score"].sel(layer=layers)))
    out["frozen"] = sub["frozen"].sel(layer=layers).fillna(False).astype(bool)
    out["epsilon_max"] = ("seed", [float(g.max()) for g in grids])
    out = out.assign_coords(model=p["model"], dataset=p["dataset"])
    out.attrs = {**ds.attrs, "relative": int(not same)}
    return out


def _frozen_text(c: xr.Dataset) -> str:
    """The layers frozen in the selective run, with the share of seeds where they were."""
    n, counts = c.sizes["seed"], c["frozen"].sum("seed")
    parts = [f"{layer} ({int(k)}/{n} seeds)" if n > 1 else str(layer)
             for layer, k in zip(c["layer"].values, counts.values) if k]
    return ", ".join(parts) if parts else "none"


def _datasets(ds: xr.Dataset, p: dict, datasets, seed) -> list:
    datasets = [datasets] if isinstance(datasets, str) else datasets
    return [check_parameters(ds, model=p["model"], dataset=d, seed=seed)["dataset"]
            for d in (datasets or choices(ds, p["model"])["dataset"])]


def fig12_selective(ds, model=None, seed=None, datasets=None):
    """Fig. 12: accuracy against FGSM ε from 0 to ε_E of every checkpoint after the start, selective training
    (fragile layers frozen, teal) against regular training (orange), mean ± std over seeds (or one seed), a panel
    per dataset (`datasets`, default every one); the starting checkpoint dotted."""
    p = check_parameters(ds, model=model, seed=seed)
    names = _datasets(ds, p, datasets, seed)
    panels = [selective_curves(ds, p["model"], name, seed) for name in names]
    seeds = sorted({int(s) for c in panels for s in c["seed"].values})
    shown = ds.sel(model=[p["model"]], dataset=names, seed=seeds)
    line = study_provenance_line(shown, np.concatenate([c["epsilon_max"].values for c in panels]))
    start = ds.attrs.get("start_epoch")
    fig = _figure(shown, f"Fig. 12 · {p['model']} · selective backpropagation (fragile layers frozen, teal) against "
                         f"regular training (orange)\ncontinued{f' from epoch {start}' if start is not None else ''}, "
                         f"{_seed_text(seeds)}",
                  (5.4 * len(names) + 1.2, 4.8), line)
    axes = fig.subplots(1, len(names), squeeze=False, sharey=True)[0]
    for ax, name, c in zip(axes, names, panels):
        x, epochs = c["epsilon"].values, c["epoch"].values
        for training, cmap, style in (("selective", "BuGn", "-"), ("regular", "Oranges", "--")):
            for i, (e, color) in enumerate(zip(epochs, colormaps[cmap](np.linspace(0.45, 0.95, len(epochs))))):
                v = c["accuracy"].sel(training=training, epoch=e)
                mean, std = v.mean("seed"), v.std("seed")
                label = (f"{training}, epochs {epochs[0]}–{epochs[-1]} (light → dark)" if len(epochs) > 1
                         else f"{training}, epoch {e}") if i == len(epochs) - 1 else None
                ax.plot(x, mean, style, color=color, lw=1.6, label=label)
                ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15, lw=0)
        ax.plot(x, c["start_accuracy"].mean("seed"), ":", color="k", lw=1.2, label="starting checkpoint")
        xlabel = (r"$\epsilon / \epsilon_E$ (the seeds' $\epsilon_E$ differ)" if c.attrs["relative"]
                  else r"FGSM magnitude $\epsilon$")
        ax.set(title=f"{name}: frozen {_frozen_text(c)}", xlabel=xlabel, ylabel="accuracy", ylim=(0, 1.02))
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)
    return fig


def fig12_summary(ds, model=None, seed=None, datasets=None, tol=0.01) -> str:
    """Markdown: per dataset, what was frozen and the selective − regular accuracy over ε > 0 (per epoch, per seed,
    overall), set against the paper's claim with a margin of ±tol accuracy."""
    p = check_parameters(ds, model=model, seed=seed)
    lines = []
    for name in _datasets(ds, p, datasets, seed):
        c = selective_curves(ds, p["model"], name, seed)
        gain = c["accuracy"].sel(training="selective") - c["accuracy"].sel(training="regular")
        attacked = gain.where(c["epsilon"] > 0, drop=True)
        overall = float(attacked.mean())
        clean = (f"; on clean inputs (ε = 0) the difference is {float(gain.isel(epsilon=0).mean()):+.3f}"
                 if float(c["epsilon"][0]) == 0 else "")
        wins = attacked.mean("seed") >= 0
        frozen = {int(s): [str(n) for n, f in zip(c["layer"].values, c["frozen"].sel(seed=s).values) if f]
                  for s in c["seed"].values}
        eps = _range(c["epsilon_max"].values)
        lines.append(
            f"- **{p['model']} on {name}** ({_seed_text(list(frozen))}, ε_E {eps}): layers frozen — "
            + "; ".join(f"seed {s}: {', '.join(f) or 'none'}" for s, f in frozen.items()) + ". "
            f"Selective − regular accuracy averaged over ε ∈ (0, ε_E] and seeds: "
            + ", ".join(f"epoch {int(e)} {float(v):+.3f}" for e, v in zip(c["epoch"].values,
                                                                            attacked.mean(["seed", "epsilon"]).values))
            + f"; overall **{overall:+.3f}**, per seed "
            + ", ".join(f"{int(s)}: {float(v):+.3f}" for s, v in zip(c["seed"].values,
                                                                     attacked.mean(["epoch", "epsilon"]).values))
            + f". Selective is at least as accurate at {int(wins.sum())} of {wins.size} (epoch, ε > 0) points"
            f"{clean}.")
        if not any(frozen.values()):
            verdict = ("no layer scored below −τ in any seed, so nothing was frozen and the selective run is the "
                       "regular one: this run cannot test the claim")
        elif overall > tol:
            verdict = f"selective training is more robust by more than {tol}: **consistent with the paper's claim**"
        elif overall < -tol:
            verdict = f"selective training is less robust by more than {tol}: **contrary to the paper's claim**"
        else:
            verdict = f"the difference stays within ±{tol}: **no measurable effect** either way"
        lines.append(f"  Verdict: {verdict}.")
    return "\n".join(lines)


# Seed 002 — fragile and robust neurons by nodal dropout, and the compress/amplify defense

def neuron_ranking(ds, model=None, dataset=None, seed=None, input="clean", tol=0.02) -> xr.Dataset:
    """`neurons.rank_neurons` of one model and dataset's nodal dropout, per seed, ranked by the drop on `input`:
    change(seed, neuron, input), drop = −change, fragility, rank (0 = most fragile), label, attack_effect and
    correlation(seed) (Spearman, fragility against attack effect)."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, input=input)
    ranked = []
    for s in _seeds(ds, p, seed):
        unit = ds.sel(model=p["model"], dataset=p["dataset"], seed=s)[["accuracy", "base_accuracy", "attack_effect"]]
        unit = unit.sel(input=list(INPUTS)).dropna("neuron", how="all", subset=["attack_effect"])
        r = rank_neurons(unit, by=p["input"], tol=tol)
        r["drop"], r["attack_effect"] = -r["change"], unit["attack_effect"]
        ranked.append(r.reset_coords(drop=True))
    return xr.concat(ranked, xr.DataArray(_seeds(ds, p, seed), dims="seed"), join="outer")


def defense_accuracy(ds, model=None, dataset=None, seed=None) -> xr.DataArray:
    """accuracy(seed, network, input) before (original) and after (defended) the compress/amplify defense — the
    `neurons.defend` variables, stored with the prefix ``defense_`` — the inputs it has no value for left out."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed)
    if "defense_accuracy" not in ds:
        raise FragilityError("this neurons study holds no defense (no variable defense_accuracy).")
    d = ds["defense_accuracy"].sel(model=p["model"], dataset=p["dataset"]).sel(seed=_seeds(ds, p, seed))
    dim = next(n for n in d.dims if "input" in n)
    d = d.dropna(dim, how="all").rename({dim: "input"}).reset_coords(drop=True)
    return d.sel(input=[i for i in DEFENSE_LABELS if i in d["input"].values] +
                 [i for i in d["input"].values if i not in DEFENSE_LABELS])


def _ranked_drops(r: xr.Dataset) -> np.ndarray:
    """(seed, position, input) drops with each seed's neurons in fragility order, NaN-padded."""
    rows = []
    for s in r["seed"].values:
        unit = r.sel(seed=s).dropna("neuron", how="all", subset=["fragility"])
        order = unit["neuron"].values[np.argsort(unit["rank"].values, kind="stable")]
        rows.append(unit["drop"].sel(neuron=order, input=list(INPUTS)).values)
    out = np.full((len(rows), max(len(v) for v in rows), len(INPUTS)), np.nan)
    for i, v in enumerate(rows):
        out[i, :len(v)] = v
    return out


def study_neurons(ds, model=None, dataset=None, seed=None, input="clean", tol=0.02):
    """Seed 002: (a) accuracy drop when each neuron of the layer is removed, clean and FGSM, neurons in fragility
    order (ranked by the drop on `input`); (b) the attack's effect on each neuron against its fragility, with the
    Spearman correlation; (c) accuracy before and after the compress/amplify defense. Mean ± std over seeds at each
    rank (or one seed)."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, input=input)
    seeds = _seeds(ds, p, seed)
    r = neuron_ranking(ds, p["model"], p["dataset"], seed, p["input"], tol)
    shown = ds.sel(model=[p["model"]], dataset=[p["dataset"]], seed=seeds)
    layer = ds.attrs.get("layer", "the first conv layer")
    fig = _figure(shown, f"Nodal dropout (seed 002) · {p['model']} on {p['dataset']} · layer {layer} · "
                         f"{_seed_text(seeds)}", (15, 4.6),
                  study_provenance_line(shown, shown["epsilon"].values, attack="fixed"))
    ax, bx, cx = fig.subplots(1, 3, width_ratios=(1.6, 1, 1))
    drops = _ranked_drops(r)
    x = np.arange(drops.shape[1])
    for k, (name, color) in enumerate(zip(INPUTS, ("tab:blue", "tab:orange"))):
        mean, std = np.nanmean(drops[:, :, k], 0), np.nanstd(drops[:, :, k], 0)
        ax.bar(x + (k - 0.5) * 0.4, mean, 0.4, yerr=std if len(seeds) > 1 else None, color=color, label=name,
               error_kw={"lw": 0.6})
    ax.axhline(0, color="0.4", lw=0.8)
    ax.axhline(tol, color="0.4", ls=":", lw=0.8, label=f"τ = {tol}: fragile above (by {p['input']})")
    if len(seeds) == 1:
        unit = r.sel(seed=seeds[0]).dropna("neuron", how="all", subset=["fragility"])
        ticks = unit["neuron"].values[np.argsort(unit["rank"].values, kind="stable")]
        ax.set_xticks(x, [str(int(n)) for n in ticks], fontsize=6 if len(x) <= 64 else 3)
        ax.set_xlabel(f"neuron, most fragile first (by the {p['input']} drop)")
    else:
        ax.set_xlabel(f"fragility rank (0 = most fragile by the {p['input']} drop)")
    ax.set(ylabel="accuracy drop when the neuron is removed", title="(a) nodal dropout, neurons in fragility order")
    ax.legend(fontsize=7)
    for s, color in zip(r["seed"].values, colormaps["tab10"].colors):
        unit = r.sel(seed=s)
        bx.scatter(unit["attack_effect"], unit["fragility"], s=14, color=color,
                   label=f"seed {s}: ρ = {float(unit['correlation']):+.2f}")
    bx.axhline(0, color="0.4", lw=0.8)
    bx.set(xlabel=r"attack effect: mean $|a(x_\epsilon) - a(x)|$", ylabel=f"fragility ({p['input']} drop)",
           title=f"(b) where FGSM hits: mean ρ = {float(r['correlation'].mean()):+.2f}")
    bx.legend(fontsize=7)
    if "defense_accuracy" in ds:
        d = defense_accuracy(ds, p["model"], p["dataset"], seed)
        x = np.arange(d.sizes["input"])
        for k, (network, color) in enumerate(zip(d["network"].values, ("0.6", "tab:green"))):
            v = d.sel(network=network)
            cx.bar(x + (k - 0.5) * 0.4, v.mean("seed"), 0.4, yerr=v.std("seed") if len(seeds) > 1 else None,
                   color=color, label=str(network), error_kw={"lw": 0.6})
            for values in v.transpose("seed", "input").values:
                cx.plot(x + (k - 0.5) * 0.4, values, ".", color="k", ms=3)
        cx.set_xticks(x, [DEFENSE_LABELS.get(str(i), str(i)) for i in d["input"].values], fontsize=7)
        a = ds.attrs
        how = f" (compress {a['compress']:g}, amplify {a['amplify']:g})" if {"compress", "amplify"} <= set(a) else ""
        cx.set(ylabel="accuracy", ylim=(0, 1.02), title=f"(c) defense{how}")
        cx.legend(fontsize=7)
    else:
        cx.set_axis_off()
        cx.text(0.5, 0.5, "no defense stored", ha="center", va="center")
    return fig


def neurons_summary(ds, model=None, dataset=None, seed=None, input="clean", tol=0.02) -> str:
    """Markdown: the fragile and robust neurons, the correlation with the attack's effect and the defense's effect,
    each set against seed 002's statements."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, input=input)
    r = neuron_ranking(ds, p["model"], p["dataset"], seed, p["input"], tol)
    layer, n = ds.attrs.get("layer", "the first conv layer"), int(r["fragility"].notnull().sum("neuron").max())
    lines = [f"{p['model']} on {p['dataset']}, layer `{layer}` ({n} neurons), {_seed_text(list(r['seed'].values))}; "
             f"neurons ranked by their {p['input']} accuracy drop, labelled at τ = {tol}:"]
    for s in r["seed"].values:
        unit = r.sel(seed=s).dropna("neuron", how="all", subset=["fragility"])
        labels = unit["label"].values.tolist()
        order = unit["neuron"].values[np.argsort(unit["rank"].values, kind="stable")]
        top = ", ".join(f"{int(k)} ({float(unit['drop'].sel(neuron=k, input='clean')):+.3f} clean, "
                        f"{float(unit['drop'].sel(neuron=k, input='adversarial')):+.3f} FGSM)" for k in order[:3])
        lines.append(f"- seed {s}: {labels.count('Fr')} fragile, {labels.count('Ro')} robust, {labels.count('Af')} "
                     f"antifragile; most fragile {top}; ρ(fragility, attack effect) = "
                     f"{float(unit['correlation']):+.2f}.")
    drop = r["drop"].mean(["seed", "neuron"])
    rho = float(r["correlation"].mean())
    lines.append(f"\nRemoving one neuron costs {float(drop.sel(input='clean')):.3f} clean and "
                 f"{float(drop.sel(input='adversarial')):.3f} FGSM accuracy on average. The attack's effect and the "
                 f"fragility correlate with mean ρ = {rho:+.2f}: "
                 + ("**consistent with seed 002** (the attack moves the fragile neurons most)." if rho > 0.3 else
                    "**contrary to seed 002** (the attack moves the robust neurons most)." if rho < -0.3 else
                    "**no clear relation** (|ρ| ≤ 0.3), so this run does not confirm that the attack targets the "
                    "fragile neurons."))
    if "defense_accuracy" in ds:
        d = defense_accuracy(ds, p["model"], p["dataset"], seed).mean("seed")
        change = d.sel(network="defended") - d.sel(network="original")
        parts = [f"{i}: {float(d.sel(network='original', input=i)):.3f} → {float(d.sel(network='defended', input=i)):.3f}"
                 for i in d["input"].values]
        gain = float(change.sel(input="adversarial")) if "adversarial" in d["input"].values else np.nan
        lines.append("\nDefense, accuracy before → after: " + "; ".join(parts) + ". "
                     + (f"Under FGSM crafted against each network the defense changes accuracy by {gain:+.3f}: "
                        + ("**it helps**, as seed 002 proposes." if gain > 0.01 else
                           "**it hurts**, contrary to seed 002." if gain < -0.01 else
                           "**no measurable effect** (within ±0.01).") if np.isfinite(gain) else ""))
    return "\n".join(lines)


# Seed 003 — random removal of a fraction of one layer's weights, beside synaptic filtering

def _removal_layers(ds, p: dict, results=None) -> list[str]:
    """The removal study's layers of the model, in forward order when the sweep results know it."""
    layers = choices(ds, p["model"], p["dataset"])["layer"]
    if results is not None and p["model"] in _values(results, "model"):
        order = layer_order(results, p["model"])
        layers = [n for n in order if n in layers] + [n for n in layers if n not in order]
    return layers


def removal_curves(ds, model=None, dataset=None, seed=None, input="clean", results=None) -> xr.Dataset:
    """Accuracy of one model and dataset with a random fraction p of one layer's weights removed: mean and std over
    draws and seeds (layer, p), base (unperturbed accuracy, mean over seeds), fraction (actual removed share) and
    n_params; layers in forward order when the sweep `results` are given; attrs chance = 1 / classes."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, input=input)
    sub = ds.sel(model=p["model"], dataset=p["dataset"]).sel(seed=_seeds(ds, p, seed),
                                                             layer=_removal_layers(ds, p, results))
    acc = sub["accuracy"].sel(input=p["input"]).dropna("p", how="all")
    out = xr.Dataset({
        "mean": acc.mean(["seed", "draw"]),
        "std": acc.std(["seed", "draw"]),
        "base": sub["base_accuracy"].sel(input=p["input"]).mean("seed"),
        "fraction": (sub["n_removed"] / sub["n_params"]).sel(p=acc["p"]).mean("seed"),
        "n_params": sub["n_params"].max("seed"),
    }).reset_coords(drop=True)
    out.attrs.update(model=p["model"], dataset=p["dataset"], input=p["input"], chance=_chance(p["dataset"]))
    return out


def removal_tolerance(curves: xr.Dataset, keep: float = 0.9, at: float = 0.7) -> xr.Dataset:
    """Per layer of `removal_curves`: tolerated, the largest p up to which the mean accuracy stays ≥ keep × base
    (every smaller p too); accuracy_at, kept_at (share of base) and above_chance_at (share of the above-chance
    accuracy) at p = `at` (linear between the grid's p; NaN outside it); accuracy_full at p = 1 (NaN if absent)."""
    ps, chance = curves["p"].values, curves.attrs.get("chance", np.nan)
    rows = []
    for layer in curves["layer"].values:
        mean, base = curves["mean"].sel(layer=layer).values, float(curves["base"])
        ok = mean >= keep * base
        tolerated = ps[len(ok) - 1 if ok.all() else np.argmin(ok) - 1] if ok[0] else np.nan
        value = float(np.interp(at, ps, mean)) if ps.min() <= at <= ps.max() else np.nan
        rows.append((tolerated, value, value / base, (value - chance) / (base - chance),
                     float(mean[ps == 1][0]) if (ps == 1).any() else np.nan))
    names = ("tolerated", "accuracy_at", "kept_at", "above_chance_at", "accuracy_full")
    out = xr.Dataset({n: ("layer", [row[i] for row in rows]) for i, n in enumerate(names)},
                     coords={"layer": curves["layer"].values})
    out.attrs.update(keep=keep, at=at, chance=chance)
    return out


def _removal_epoch(ds, p: dict):
    """The checkpoint epoch the removal study ran on, when its units record it (a variable or attribute)."""
    if "epoch" in ds.variables and "epoch" not in ds.dims:
        value = ds["epoch"].sel(model=p["model"], dataset=p["dataset"]) if "model" in ds["epoch"].dims else ds["epoch"]
        return int(value.max())
    return int(ds.attrs["epoch"]) if "epoch" in ds.attrs else None


def removal_vs_filtering(ds, results, model=None, dataset=None, seed=None, input="clean", filter="h1",
                         tol=0.02) -> xr.Dataset:
    """`removal.compare_with_filtering` of the removal study and the sweep `results` of the same model, dataset and
    seeds at the checkpoint the removal ran on (recorded, else the last stored epoch): random_mean, random_std,
    filtered, difference, agree over (seed, layer, p) for `input`; attrs epoch."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, input=input, filter=filter)
    filter = p["filter"]
    epoch = check_parameters(results, model=p["model"], dataset=p["dataset"], epoch=_removal_epoch(ds, p))["epoch"]
    swept = _where(_stored(results).sel(model=p["model"], dataset=p["dataset"], epoch=epoch), "seed")
    seeds = [s for s in _seeds(ds, p, seed) if s in swept]
    if not seeds:
        raise FragilityError(f"no seed of the removal study of {p['model']} on {p['dataset']} has sweep results at "
                             f"epoch {epoch} (swept seeds: {', '.join(map(str, swept))}).")
    layers = [n for n in _removal_layers(ds, p, results) if n in layer_order(results, p["model"])]
    removal = ds.sel(model=p["model"], dataset=p["dataset"]).sel(seed=seeds, layer=layers, input=[p["input"]])
    removal = removal[[n for n in ("accuracy", "n_removed", "n_params", "epsilon") if n in removal]]
    removal = removal.dropna("p", how="all", subset=["accuracy"]).dropna("draw", how="all", subset=["accuracy"])
    sweep = results.sel(model=p["model"], dataset=p["dataset"], epoch=epoch).sel(seed=seeds, layer=layers)
    out = compare_with_filtering(removal.reset_coords(drop=True), sweep.reset_coords(drop=True), filter, tol)
    out = out.sel(input=p["input"], drop=True)
    out.attrs.update(epoch=epoch)
    return out


def study_removal(ds, model=None, dataset=None, seed=None, layer=None, input="clean", results=None, filter="h1",
                  tol=0.02):
    """Seed 003: (a) mean accuracy, layer × removed fraction p; (b) mean ± std (over draws and seeds) per layer;
    with the sweep `results`: (c) one layer's random removal beside `filter` synaptic filtering at the same removed
    fraction, (d) filtering − random for every layer and p ('=' within ±tol)."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, layer=layer, input=input, filter=filter)
    seeds, filter = _seeds(ds, p, seed), p["filter"]
    c = removal_curves(ds, p["model"], p["dataset"], seed, p["input"], results)
    layer = p["layer"] if layer is not None else str(c["layer"].values[0])
    cmp = removal_vs_filtering(ds, results, p["model"], p["dataset"], seed, p["input"], filter, tol) \
        if results is not None else None
    shown = ds.sel(model=[p["model"]], dataset=[p["dataset"]], seed=seeds)
    eps = shown["epsilon"].values if "epsilon" in shown and p["input"] == "adversarial" else None
    line = study_provenance_line(shown, eps, attack="fixed" if eps is not None else "?")
    fig = _figure(shown, f"Random weight removal (seed 003) · {p['model']} on {p['dataset']} · {p['input']} inputs · "
                         f"{_seed_text(seeds)} × {ds.sizes.get('draw', 1)} draws", (13, 9 if cmp is not None else 4.8),
                  line)
    axes = fig.subplots(2 if cmp is not None else 1, 2, squeeze=False)
    ps, layers, chance = c["p"].values, c["layer"].values, c.attrs["chance"]
    _grid(fig, axes[0, 0], c["mean"].transpose("layer", "p").values, layers, ps,
          "(a) mean accuracy, random removal", "accuracy")
    ax = axes[0, 1]
    for name, color in zip(layers, colormaps["viridis"](np.linspace(0, 0.9, len(layers)))):
        mean, std = c["mean"].sel(layer=name), c["std"].sel(layer=name)
        ax.plot(ps, mean, "o-", color=color, ms=3, label=str(name))
        ax.fill_between(ps, mean - std, mean + std, color=color, alpha=0.15, lw=0)
    ax.axhline(chance, color="0.4", ls="--", lw=0.8, label=f"chance {chance:.2g}")
    ax.axhline(0.9 * float(c["base"]), color="0.4", ls=":", lw=0.8, label="90 % of the unperturbed accuracy")
    ax.set(xlabel="fraction p of the layer's weights removed", ylabel="accuracy", ylim=(0, 1.02),
           title="(b) per layer, mean ± std over draws and seeds")
    ax.legend(fontsize=6, ncol=1 + len(layers) // 12)
    if cmp is not None:
        ax = axes[1, 0]
        unit = cmp.sel(layer=layer)
        x = unit["fraction"].mean("seed")
        mean, std = c["mean"].sel(layer=layer), c["std"].sel(layer=layer)
        ax.plot(x, mean, "o-", color="tab:purple", label="random removal (mean ± std)")
        ax.fill_between(x, mean - std, mean + std, color="tab:purple", alpha=0.2, lw=0)
        ax.plot(x, unit["filtered"].mean("seed"), "s--", color="tab:blue", ms=4,
                label=f"{filter} at the same fraction (interpolated)")
        sweep = results.sel(model=p["model"], dataset=p["dataset"], epoch=cmp.attrs["epoch"], layer=layer,
                            filter=filter, input=p["input"]).sel(seed=cmp["seed"].values)
        ax.plot((sweep["n_filtered"] / sweep["n_params"]).mean("seed"), sweep["accuracy"].mean("seed"), ".",
                color="tab:blue", ms=4, alpha=0.6, label=f"{filter} sweep thresholds (epoch {cmp.attrs['epoch']})")
        ax.axhline(chance, color="0.4", ls="--", lw=0.8)
        ax.set(xlabel="fraction of the layer's weights removed", ylabel="accuracy", ylim=(0, 1.02),
               title=f"(c) {layer}: random against {filter} filtering")
        ax.legend(fontsize=7)
        diff = cmp["difference"].mean("seed").sel(layer=layers).transpose("layer", "p")
        marks = np.where(np.abs(diff.values) <= tol, "=", "")
        _grid(fig, axes[1, 1], diff.values, layers, cmp["p"].values,
              f"(d) {filter} − random at the same fraction ('=' within ±{tol})", "accuracy difference",
              cmap="RdBu", norm=_signed(diff.values), marks=marks)
    return fig


def removal_summary(ds, model=None, dataset=None, seed=None, input="clean", results=None, filter="h1", keep=0.9,
                    at=0.7, tol=0.02) -> str:
    """Markdown: per layer the tolerated removal (≥ keep × base), the accuracy at p = `at` and at p = 1 and, with
    the sweep `results`, filtering − random; then seed 003's claim for the first and the top layers."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, input=input, filter=filter)
    filter = p["filter"]
    c = removal_curves(ds, p["model"], p["dataset"], seed, p["input"], results)
    t = removal_tolerance(c, keep, at)
    cmp = removal_vs_filtering(ds, results, p["model"], p["dataset"], seed, p["input"], filter, tol) \
        if results is not None else None
    base, chance = float(c["base"]), c.attrs["chance"]
    head = f"| layer | weights | tolerated p (≥ {keep:.0%} of {base:.3f}) | accuracy at p = {at:g} | at p = 1 |"
    rows = [head + (f" {filter} − random at p = {at:g} |" if cmp is not None else ""),
            "|---" * (5 + (cmp is not None)) + "|"]
    for name in c["layer"].values:
        u = t.sel(layer=name)
        row = (f"| `{name}` | {int(c['n_params'].sel(layer=name))} | {float(u['tolerated']):.2f} | "
               f"{float(u['accuracy_at']):.3f} ({float(u['kept_at']):.0%}) | {float(u['accuracy_full']):.3f} |")
        if cmp is not None:
            d = cmp["difference"].mean("seed").sel(layer=name)
            row += f" {float(np.interp(at, d['p'].values, d.values)):+.3f} |"
        rows.append(row)
    first, top = str(c["layer"].values[0]), [str(n) for n in c["layer"].values[-TOP_LAYERS:]]
    decrease = {n: 1 - float(t["kept_at"].sel(layer=n)) for n in top}
    held = all(v < 0.3 for v in decrease.values())
    above = float(t["above_chance_at"].sel(layer=first))
    lines = [f"{p['model']} on {p['dataset']}, {p['input']} inputs, {_seed_text(_seeds(ds, p, seed))}, "
             f"unperturbed accuracy {base:.3f}, chance {chance:.2f}:", "", *rows, "",
             f"- Top layers ({', '.join(f'`{n}`' for n in top)}): accuracy decrease at p = {at:g} "
             + ", ".join(f"{v:.0%}" for v in decrease.values())
             + (" — **consistent with seed 003** (< 30 % decrease with > 70 % removed)." if held else
                " — **contrary to seed 003**, which reports < 30 % decrease with > 70 % removed."),
             f"- First layer (`{first}`): at p = {at:g} it keeps {above:.0%} of the above-chance accuracy — "
             + ("**consistent with seed 003** (near chance)." if above < 0.1 else
                "**not at chance**, contrary to seed 003's first-layer collapse.")]
    if cmp is not None:
        diff = cmp["difference"].mean("seed")
        agree = np.abs(diff) <= tol
        where = ""
        if bool((~agree).any()):
            cell = abs(diff).stack(cell=("layer", "p")).idxmax("cell").item()
            where = (f"; the largest difference is {float(diff.sel(layer=cell[0], p=cell[1])):+.3f} at `{cell[0]}`, "
                     f"p = {cell[1]:g}")
        lines.append(f"- Beside {filter} synaptic filtering of the same fraction (epoch {cmp.attrs['epoch']}): they "
                     f"agree within ±{tol} at {int(agree.sum())} of {agree.size} (layer, p) cells; {filter} keeps "
                     f"more accuracy at {int((diff > tol).sum())} and less at {int((diff < -tol).sum())}{where}. "
                     f"{filter} removes the most negative weights first, random removal any weights.")
    return "\n".join(lines) + _near_chance(p["model"], base, chance)


# Seed 004 — fragility against depth

def _family(name) -> str:
    """A model's family: its name without a depth suffix or trailing number (smallcnn-d4 → smallcnn, resnet50 →
    resnet)."""
    return re.sub(r"(-d\d+|\d+)$", "", str(name))


def depth_profiles(ds, dataset=None, seed=None, models=None) -> xr.Dataset:
    """The depth study on one dataset, per seed, for `models` (default every one run on it), ordered by family and
    then by number of filterable layers; magnitudes without any value dropped."""
    p = check_parameters(ds, dataset=dataset, seed=seed)
    units = _units(ds).sel(dataset=p["dataset"])
    available = _where(units, "model")
    models = [models] if isinstance(models, str) else models
    chosen = available if models is None else [
        _choose("model", m, available, f" in the depth study on {p['dataset']}") for m in models]
    seeds = [seed] if seed is not None else _where(units.sel(model=chosen), "seed")
    sub = ds.sel(dataset=p["dataset"]).sel(model=chosen, seed=seeds)
    sub = sub.dropna("magnitude", how="all", subset=["accuracy"])
    for name in ("global_score", "local_mean", "local_min", "layer_score"):
        if name in sub:  # a score is infinite where the unperturbed accuracy it is scaled by is 0
            sub[name] = sub[name].where(np.isfinite(sub[name]))
    depth = sub["n_layers"].mean("seed")
    order = sorted(chosen, key=lambda m: (_family(m), float(depth.sel(model=m)), str(m)))
    return sub.sel(model=order).load()


def depth_table(ds, dataset=None, seed=None, models=None) -> xr.Dataset:
    """Per model, mean over seeds: n_layers, n_params, base accuracy, fgsm and gaussian — the share of the clean
    accuracy kept, averaged over the magnitudes > 0 — and, with internal stress, global_score(score) and
    fragile_fraction (r_ε)."""
    sub = depth_profiles(ds, dataset, seed, models)
    acc = sub["accuracy"].where(sub["magnitude"] > 0, drop=True)
    kept = (acc / sub["base_accuracy"]).mean("magnitude")
    out = xr.Dataset({"n_layers": sub["n_layers"].mean("seed"), "n_params": sub["n_params"].mean("seed"),
                      "base": sub["base_accuracy"].mean("seed"),
                      "fgsm": kept.sel(perturbation="fgsm", drop=True).mean("seed"),
                      "gaussian": kept.sel(perturbation="gaussian", drop=True).mean("seed")})
    if "global_score" in sub:
        out["global_score"] = sub["global_score"].mean("seed")
        out["fragile_fraction"] = sub["fragile_fraction"].sel(score="r_e", drop=True).mean("seed")
    out.attrs.update(dataset=str(sub["dataset"].values), seeds=[int(s) for s in sub["seed"].values])
    return out


def study_depth(ds, dataset=None, seed=None, models=None):
    """Seed 004: accuracy against (a) FGSM ε and (b) Gaussian noise σ, one line per model (mean ± std over seeds);
    internal stress: (c) global r_x, r_xε, r_ε per model, (d) each layer's r_ε against its relative position."""
    sub = depth_profiles(ds, dataset, seed, models)
    seeds, names = [int(s) for s in sub["seed"].values], [str(m) for m in sub["model"].values]
    line = study_provenance_line(sub, sub["epsilon"].values if "epsilon" in sub else None)
    fig = _figure(sub, f"Fragility against depth (seed 004) · {sub['dataset'].item()} · {_seed_text(seeds)}",
                  (13, 9), line)
    axes = fig.subplots(2, 2)
    colors = dict(zip(names, colormaps["tab10"].colors))
    layers = sub["n_layers"].mean("seed")
    for ax, kind, label in ((axes[0, 0], "fgsm", r"FGSM magnitude $\epsilon$"),
                            (axes[0, 1], "gaussian", r"Gaussian noise $\sigma$")):
        for m in names:
            v = sub["accuracy"].sel(perturbation=kind, model=m)
            mean, std = v.mean("seed"), v.std("seed")
            ax.plot(sub["magnitude"], mean, "o-", ms=3, color=colors[m], label=f"{m} ({int(layers.sel(model=m))} layers)")
            ax.fill_between(sub["magnitude"], mean - std, mean + std, color=colors[m], alpha=0.15, lw=0)
        ax.set(xlabel=f"{label} (normalized input units)", ylabel="accuracy", ylim=(0, 1.02),
               title="(a) FGSM attack" if kind == "fgsm" else "(b) Gaussian noise")
        ax.legend(fontsize=7)
    cx, dx = axes[1]
    if "global_score" in sub:
        x = np.arange(len(names))
        for k, (key, color) in enumerate(zip(SCORES, ("tab:blue", "tab:orange", "tab:red"))):
            v = sub["global_score"].sel(score=key)
            cx.bar(x + (k - 1) * 0.27, v.mean("seed"), 0.27, yerr=v.std("seed") if len(seeds) > 1 else None,
                   color=color, label=f"global {SCORES[key]}", error_kw={"lw": 0.6})
        cx.axhline(0, color="0.4", lw=0.8)
        cx.set_xticks(x, names, fontsize=7, rotation=20)
        cx.set(ylabel="score", title="(c) internal stress: whole-network scores")
        cx.legend(fontsize=7)
        for m in names:
            unit = sub.sel(model=m).mean("seed")
            pos, score = unit["position"], unit["layer_score"].sel(score="r_e")
            keep = pos.notnull() & score.notnull()
            order = np.argsort(pos.values[keep.values])
            dx.plot(pos.values[keep.values][order], score.values[keep.values][order], "o-", ms=3, color=colors[m],
                    label=m)
        dx.axhline(0, color="0.4", lw=0.8)
        dx.set(xlabel="relative layer position (0 first, 1 last)", ylabel=SCORES["r_e"],
               title=r"(d) each layer's $r_\epsilon$ against its position")
        dx.legend(fontsize=7)
    else:
        for ax in (cx, dx):
            ax.set_axis_off()
        cx.text(0.5, 0.5, "no internal stress stored", ha="center", va="center")
    return fig


def depth_summary(ds, dataset=None, seed=None, models=None) -> str:
    """Markdown: per model its depth, clean accuracy, accuracy kept under FGSM and noise and global scores; per family
    whether deeper variants are more fragile (Spearman ρ of the number of layers against each measure)."""
    from scipy.stats import spearmanr

    t = depth_table(ds, dataset, seed, models)
    internal = "global_score" in t
    rows = ["| model | layers | parameters | clean accuracy | kept under FGSM | kept under noise |"
            + (" global r_x | global r_xε | global r_ε |" if internal else ""),
            "|---" * (6 + 3 * internal) + "|"]
    for m in t["model"].values:
        u = t.sel(model=m)
        rows.append(f"| {m} | {int(u['n_layers'])} | {int(u['n_params'])} | {float(u['base']):.3f} | "
                    f"{float(u['fgsm']):.0%} | {float(u['gaussian']):.0%} |"
                    + ("".join(f" {float(u['global_score'].sel(score=k)):+.3f} |" for k in SCORES) if internal else ""))
    lines = [f"On {t.attrs['dataset']} ({_seed_text(t.attrs['seeds'])}); *kept* is the share of the clean accuracy "
             "kept, averaged over the magnitudes > 0:", "", *rows, ""]
    chance = _chance(t.attrs["dataset"])
    families = {}
    for m in t["model"].values:
        families.setdefault(_family(m), []).append(str(m))
    for family, members in families.items():
        if len(members) < 2:
            lines.append(f"- {family}: one depth only ({members[0]}), nothing to compare.")
            continue
        u = t.sel(model=members)
        depth = u["n_layers"].values
        measures = {"FGSM": u["fgsm"].values, "noise": u["gaussian"].values}
        if internal:
            measures["global r_ε"] = u["global_score"].sel(score="r_e").values
        parts = []
        for name, values in measures.items():
            rho = (spearmanr(depth, values).statistic
                   if np.ptp(depth) > 0 and np.ptp(values) > 0 else np.nan)
            parts.append(f"{name} ρ = {rho:+.2f}" if np.isfinite(rho) else f"{name}: no variation")
        fgsm = spearmanr(depth, measures["FGSM"]).statistic if np.ptp(depth) > 0 and np.ptp(measures["FGSM"]) > 0 \
            else np.nan
        verdict = ("**consistent with seed 004's expectation** (the deeper, the less accuracy kept under FGSM)"
                   if fgsm < 0 else "**contrary to seed 004's expectation** (deeper variants keep more under FGSM)"
                   if fgsm > 0 else "no trend under FGSM")
        lines.append(f"- {family} ({', '.join(members)}): Spearman ρ of the number of layers against "
                     + ", ".join(parts) + f" — {verdict}.")
    return "\n".join(lines) + "".join(_near_chance(str(m), float(t["base"].sel(model=m)), chance)
                                      for m in t["model"].values)
