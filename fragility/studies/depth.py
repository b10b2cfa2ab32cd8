"""Fragility against depth (seed 004): one family at several depths under input and internal stress.

The variants are networks of one family at several depths: the profile's own models (e.g. ResNet-18 and ResNet-50,
their stored checkpoints and sweeps reused) and others trained here under the profile's protocol (e.g. ResNet-34,
or smallcnn at 1, 2, 4 blocks). External stress: FGSM of magnitude ε and Gaussian noise of standard deviation σ on
one magnitude grid in normalized input units (a sign step of size m and N(0, m²) noise add the same expected energy
m² per input value). Internal stress: each variant's sweep with an ε that satisfies constraint 3 for that network
(searched per variant, as the profile's ε is per model), summarized by its global and per-layer scores.

A variant trained here is three steps of its unit (fragility.steps), each a task of its own: `train` (its checkpoints
under the unit's folder), `epsilon` (epsilon.json) and `sweep` (sweep.nc); the unit reads them.
"""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from scipy.stats import spearmanr

from .. import partial as partials
from .. import chapters, checks, data, steps, store, training, uncertainty
from ..attacks import as_attack, epsilon_correct, search_epsilon
from ..engine import filterable_layers, sweep
from ..errors import FragilityError
from ..preserve import preserved
from ..scores import characterize, scores
from ..plot import draw
from ..selection import check_parameters
from ..verdicts import Claim, Outcome, Panel, Untestable, estimate
from .. import study as base

PERTURBATIONS = ("fgsm", "gaussian")  # the attack's row is named after it: fgsm unless another attack is used


def attack_row(ds) -> str:
    """The name of the attack's row of the `perturbation` coordinate (the one that is not Gaussian noise)."""
    return next(str(p) for p in ds["perturbation"].values if p != "gaussian")


def perturbation_correct(model, x, y, *, magnitudes, seed: int = 0, batch_size: int = 500,
                         attack=None) -> xr.DataArray:
    """Which examples are classified correctly, correct(perturbation ∈ {the attack's name (fgsm by default),
    gaussian}, magnitude, image): the attack at ε = magnitude; x + magnitude · z, z ~ N(0, 1) drawn once with
    `seed`."""
    attack = as_attack(attack)
    hits = epsilon_correct(model, x, y, epsilons=magnitudes, batch_size=batch_size, attack=attack)
    x, y = checks.examples(x, y)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device)
    with preserved(model):
        model.eval()
        noise = [base.classified(model, x + m * z, y, batch_size) for m in hits["epsilon"].values]
    out = xr.DataArray(np.stack([hits.values, np.stack(noise)]), name="correct",
                       coords={"perturbation": [attack.name, "gaussian"], "magnitude": hits["epsilon"].values},
                       dims=("perturbation", "magnitude", "image"))
    out.attrs["long_name"] = f"example classified correctly under {attack.label} (ε = magnitude) or Gaussian noise (σ)"
    return out


def perturbation_curves(model, x, y, *, magnitudes, seed: int = 0, batch_size: int = 500,
                        attack=None) -> xr.DataArray:
    """accuracy(perturbation ∈ {the attack's name (fgsm by default), gaussian}, magnitude): the attack at
    ε = magnitude; x + magnitude · z, z ~ N(0, 1) drawn once with `seed`."""
    attack = as_attack(attack)
    out = perturbation_correct(model, x, y, magnitudes=magnitudes, seed=seed, batch_size=batch_size, attack=attack)
    out = out.mean("image").rename("accuracy")
    out.attrs["long_name"] = f"accuracy under {attack.label} (ε = magnitude) or Gaussian noise (σ = magnitude)"
    return out


def internal_stress(sweep_ds: xr.Dataset, filter: str = "h1", tol: float = 0.02) -> xr.Dataset:
    """A sweep's scores summarized for depth comparisons, over score ∈ {r_x, r_xe, r_e}: global_score, local_mean,
    local_min, fragile_fraction (share of layers labelled Fr), layer_score(score, layer) and position(layer) =
    i / (L − 1) in forward order. A sweep of the whole network alone gives NaN local summaries."""
    if "global" not in sweep_ds["layer"].values:
        raise FragilityError("the sweep has no 'global' unit: run it with include_global=True.")
    table = scores(sweep_ds, filter=filter).reset_coords(drop=True).to_array("score")
    local = table.drop_sel(layer="global")
    n = local.sizes["layer"]
    nothing = xr.full_like(table.sel(layer="global", drop=True), np.nan)
    return xr.Dataset({"global_score": table.sel(layer="global", drop=True),
                       "local_mean": local.mean("layer") if n else nothing,
                       "local_min": local.min("layer") if n else nothing,
                       "fragile_fraction": (characterize(local, tol) == "Fr").where(local.notnull()).mean("layer")
                       if n else nothing,
                       "layer_score": local, "position": ("layer", np.arange(n) / max(n - 1, 1))})


def _count_layers(model, sample) -> int:
    with preserved(model):
        return len(filterable_layers(model.eval(), sample))


def depth_profile(model, x, y, *, magnitudes, sweep_ds: xr.Dataset, seed: int = 0, filter: str = "h1",
                  tol: float = 0.02, batch_size: int = 500, attack=None) -> xr.Dataset:
    """One variant's unit: accuracy(perturbation, magnitude), base_accuracy, n_layers, n_params (filterable
    weights), the `internal_stress` of its sweep and the sweep's ε; `attack`: default FGSM."""
    hits = perturbation_correct(model, x, y, magnitudes=magnitudes, seed=seed, batch_size=batch_size, attack=attack)
    ds = xr.Dataset({"accuracy": hits.mean("image"), "correct": hits,
                     "base_accuracy": ((), float(sweep_ds["base_accuracy"].sel(input="clean"))),
                     "n_layers": ((), _count_layers(model, checks.examples(x, y)[0][:2])),
                     "n_params": ((), int(sweep_ds["n_params"].sel(layer="global")))})
    ds = ds.merge(internal_stress(sweep_ds, filter, tol))
    ds["epsilon"] = ((), float(sweep_ds["epsilon"]))
    ds.attrs.update(filter=filter, tol=tol, A=int(sweep_ds.attrs.get("A", 0)))
    return ds


def _variants(settings) -> list[tuple[str, str, int]]:
    """(label, model, smallcnn depth) of every network the study compares."""
    return [(m, m, 2) for m in settings["models"] or []] + [(f"smallcnn-d{d}", "smallcnn", d)
                                                            for d in settings["depths"] or []]


def _units(profile, settings):
    seeds = settings["seeds"] or profile.grid(profile.models[0]).seeds[:1]
    out = []
    for label, model, _ in _variants(settings):
        for dataset in profile.datasets:
            for seed in seeds:
                reused = model in profile.models and seed in profile.grid(model).seeds and model != "smallcnn"
                out.append(base.Unit((label, dataset, seed), model, ((model, dataset, seed),) if reused else ()))
    return out


def _validate(settings, profile):
    if not _variants(settings):
        raise FragilityError("studies.depth compares nothing: list models (e.g. [resnet18, resnet34, resnet50]) "
                             "and/or smallcnn depths (e.g. [1, 2, 4]).")
    seeds = settings["seeds"] or []
    grid_seeds = {s for m in profile.models for s in profile.grid(m).seeds}
    if seeds and not set(seeds) <= grid_seeds and not settings["epochs"]:
        raise FragilityError(f"studies.depth.seeds {seeds} are not the profile's seeds {sorted(grid_seeds)}: set "
                             "studies.depth.epochs to train its networks for those seeds.")


def _blocks(label: str) -> int:
    """The number of blocks of a smallcnn variant (smallcnn-d4: 4); 2, smallcnn's default, for any other label."""
    return int(re.fullmatch(r"smallcnn-d(\d+)", label)[1]) if label.startswith("smallcnn-d") else 2


def _config(ctx: base.Context) -> training.TrainConfig:
    """The training run of a variant the profile does not provide, under the profile's protocol."""
    s, profile = ctx.settings, ctx.profile
    label, dataset, seed = ctx.unit.key
    meta, epochs = data.info(dataset), s["epochs"] or profile.grid(profile.models[0]).epochs[-1]
    return training.TrainConfig(ctx.unit.model, dataset, seed, epochs=epochs, every=epochs,
                                batch_size=profile.train_batch_size, lr=profile.lr, channels=meta.channels,
                                classes=meta.classes, depth=_blocks(label), threads=profile.threads)


def _checkpoint(ctx: base.Context) -> Path:
    config = _config(ctx)
    return training.checkpoint_path(ctx.folder(), config.model, config.dataset, config.seed, config.epochs)


def _steps(ctx: base.Context) -> list[steps.Step]:
    """A variant the profile provides (its checkpoint and sweep) has none; another one is trained (`train`: its last
    checkpoint), its ε searched (`epsilon`: epsilon.json) and swept (`sweep`: sweep.nc), under the unit's folder."""
    if ctx.unit.needs:
        return []
    return [steps.Step("train", _checkpoint(ctx), partial(_train, ctx), recorded=partial(_trained, ctx)),
            steps.Step("epsilon", ctx.folder("epsilon.json"), partial(_search, ctx), ("train",),
                       partial(steps.checked, ctx, ctx.folder("epsilon.json"))),
            steps.Step("sweep", ctx.folder("sweep.nc"), partial(_sweep, ctx), ("epsilon",),
                       partial(steps.checked, ctx, ctx.folder("sweep.nc")))]


def _train(ctx: base.Context) -> None:
    training.train(_config(ctx), *ctx.sets(), ctx.folder(), progress=ctx.progress, device=ctx.device)


def _trained(ctx: base.Context, found: dict | None = None) -> float:
    """The seconds the variant's last checkpoint (or its entries `found`) records; one FragilityError if it was
    trained otherwise."""
    path = _checkpoint(ctx)
    found = training.read_checkpoint(path) if found is None else found
    if found.get("config_hash") != training.config_hash(_config(ctx)) or found.get("freeze") or found.get(
            "start_epoch") is not None:
        raise FragilityError(f"{path} holds a checkpoint of another run (config {found.get('config')}) than the "
                             f"depth study's variant {ctx.unit.key[0]}: {store.MOVE}.")
    return float(found.get("seconds", 0.0))


def _network(ctx: base.Context):
    """The variant's network, trained here (step `train`), in eval mode."""
    net, found = training.load_checkpoint(_checkpoint(ctx), ctx.device)
    _trained(ctx, found)
    return net


def _search(ctx: base.Context) -> None:
    (x, y), profile = ctx.test, ctx.profile
    epsilon, seconds = base.timed(search_epsilon, _network(ctx), x, y, ratio=profile.ratio,
                                  batch_size=profile.batch_size, attack=profile.adversary())
    steps.write_json(ctx, {"epsilon": float(epsilon)}, ctx.folder("epsilon.json"), seconds)


def _epsilon(ctx: base.Context) -> float:
    """The variant's ε (step `epsilon`), checked."""
    path = ctx.folder("epsilon.json")
    try:
        epsilon = float(steps.read_json(ctx, path)["epsilon"])
    except (KeyError, TypeError, ValueError):
        epsilon = None
    if epsilon is None or not np.isfinite(epsilon) or epsilon < 0:
        raise FragilityError(f"{path} is not a readable ε record: {store.MOVE}.")
    return epsilon


def _sweep(ctx: base.Context) -> None:
    s, (x, y), profile = ctx.settings, ctx.test, ctx.profile
    found, seconds = base.timed(sweep, _network(ctx), x, y, A=s["A"] or profile.A, filters=("h1",),
                                layers=None if s["local"] else [], epsilon=_epsilon(ctx), attack=profile.adversary(),
                                batch_size=profile.batch_size, device=ctx.device, progress=ctx.progress,
                                partial=partials.beside(ctx.folder("sweep.nc")))
    steps.write_netcdf(ctx, found, ctx.folder("sweep.nc"), seconds)


def _run(ctx: base.Context) -> xr.Dataset:
    """The unit from the profile's checkpoint and sweep of the variant, or from its own steps' outputs."""
    s, (x, y) = ctx.settings, ctx.test
    if ctx.unit.needs:  # the profile's own checkpoint and sweep
        net, sweep_ds = ctx.network(model=ctx.unit.model), ctx.responses(model=ctx.unit.model)
    else:
        net, sweep_ds = _network(ctx), steps.read_netcdf(ctx, ctx.folder("sweep.nc"))
    ds = depth_profile(net, x.to(ctx.device), y.to(ctx.device), magnitudes=s["magnitudes"], sweep_ds=sweep_ds,
                       seed=ctx.seed, batch_size=ctx.profile.batch_size, attack=ctx.profile.adversary())
    blocks = _blocks(ctx.unit.key[0])
    return ds.assign_coords(depth=np.int64(blocks if ctx.unit.model == "smallcnn" else ds["n_layers"].item()))


def family(name) -> str:
    """A model's family: its name without a depth suffix (smallcnn-d4 → smallcnn, resnet50 → resnet)."""
    return re.sub(r"(-d\d+|(?<=[a-z])\d+)$", "", str(name))


def table(ds, dataset, seed=None) -> xr.Dataset:
    """Per variant, mean over seeds: n_layers, n_params, base, fgsm and gaussian (the share of the clean accuracy
    kept, averaged over the magnitudes > 0), global_score(score) and fragile_fraction (r_ε); ordered by family
    and depth."""
    models = [m for m, d in base.pairs(ds) if d == dataset]
    seeds = sorted({s for m in models for s in base.seeds(ds, m, dataset)}) if seed is None else [seed]
    sub = ds.sel(dataset=dataset, model=models, seed=seeds).load()
    kept = (sub["accuracy"].where(sub["magnitude"] > 0, drop=True) / sub["base_accuracy"]).mean("magnitude")
    out = xr.Dataset({"n_layers": sub["n_layers"].mean("seed"), "n_params": sub["n_params"].mean("seed"),
                      "base": sub["base_accuracy"].mean("seed"), "global_score": sub["global_score"].mean("seed"),
                      "fgsm": kept.sel(perturbation=attack_row(sub), drop=True).mean("seed"),
                      "gaussian": kept.sel(perturbation="gaussian", drop=True).mean("seed"),
                      "fragile_fraction": sub["fragile_fraction"].sel(score="r_e", drop=True).mean("seed")})
    return out.sortby([xr.DataArray([family(m) for m in out["model"].values], dims="model"), out["n_layers"]])


def _spearman(a, b) -> float:
    return float(spearmanr(a, b)[0]) if np.ptp(a) > 0 and np.ptp(b) > 0 else np.nan


def kept(ds, dataset, samples: int = uncertainty.SAMPLES) -> xr.Dataset:
    """Per variant and perturbation, the share of the clean accuracy kept (mean over the magnitudes > 0) with
    bootstrap replicates (images resampled with the same draws for every variant, and seeds): kept(sample, model,
    perturbation), and n_layers(model)."""
    models = [m for m, d in base.pairs(ds) if d == dataset]
    seeds = sorted({s for m in models for s in base.seeds(ds, m, dataset)})
    sub = ds.sel(dataset=dataset, model=models, seed=seeds).load()
    rs = uncertainty.bootstrap(sub["correct"], samples)
    acc = rs["accuracy"]
    share = (acc.where(acc["magnitude"] > 0, drop=True) / acc.sel(magnitude=0.0)).mean("magnitude")
    return xr.Dataset({"kept": uncertainty.seed_mean(share, rs), "n_layers": sub["n_layers"].mean("seed")})


def _s4(ev, panel, reading) -> Outcome:
    study = ev.study("depth")
    if study is None or panel.dataset not in [d for _, d in base.pairs(study)]:
        raise Untestable(f"the depth study on {panel.dataset}")
    k = kept(study, panel.dataset, ev.samples)
    families = {}
    for m in k["model"].values:
        families.setdefault(family(m), []).append(str(m))
    families = {f: ms for f, ms in families.items() if len(ms) >= 2}
    if not families:
        raise Untestable("two depths of one family in the depth study")
    parts, worst = [], None
    for fam, members in families.items():
        u = k.sel(model=members)
        depth = u["n_layers"].values
        rho = xr.concat([xr.DataArray([_spearman(depth, row) for row in
                                       u["kept"].sel(perturbation=p).transpose("sample", "model").values],
                                      dims="sample", coords={"sample": u["sample"]}) for p in PERTURBATIONS],
                        xr.DataArray(list(PERTURBATIONS), dims="perturbation"))
        top = rho.max("perturbation")
        worst = top if worst is None else np.maximum(worst, top)
        parts.append(f"{fam} ({', '.join(members)}; {', '.join(str(int(d)) for d in depth)} layers): kept under "
                     + ", ".join(f"{p} " + ", ".join(f"{float(v):.0%}" for v in u["kept"].sel(perturbation=p,
                                                                                            sample=0).values)
                                 + f" (ρ {estimate(rho.sel(perturbation=p), '+.2f')})" for p in PERTURBATIONS))
    return Outcome(worst, "; ".join(parts) + f"; the larger ρ: {estimate(worst, '+.2f')}.")


def figure(ds, dataset=None, seed=None):
    """Seed 004: accuracy against (a) FGSM ε and (b) Gaussian noise σ, a line per variant (mean ± std over seeds;
    `plot_perturbation`); (c) each variant's global r_x, r_xε, r_ε (`plot_global`); (d) each layer's r_ε against
    its relative position (`plot_positions`)."""
    p = check_parameters(ds, dataset=dataset, seed=seed)
    t = table(ds, p["dataset"], seed)
    names = [str(m) for m in t["model"].values]
    sub = ds.sel(dataset=p["dataset"], model=names)
    sub = sub.sel(seed=[s for s in sub["seed"].values if s in (seed,) or seed is None])
    fig = draw.figure(sub, f"Fragility against depth (seed 004) · {p['dataset']}", 7.6,
                      line=draw.provenance_line(sub, sub["epsilon"].values, attack="fixed"))
    axes = fig.subplots(2, 2)
    plot_perturbation(sub, t, attack_row(sub), ax=axes[0, 0])
    plot_perturbation(sub, t, "gaussian", ax=axes[0, 1])
    plot_global(t, ax=axes[1, 0])
    plot_positions(sub, ax=axes[1, 1])
    return fig


def _named(sub) -> tuple[list[str], dict]:
    """The variants of `sub` in its order, and a colour for each."""
    names = [str(m) for m in sub["model"].values]
    return names, draw.colors(names)


def plot_perturbation(sub: xr.Dataset, t: xr.Dataset, kind: str, *, ax) -> None:
    """Panel (a) (the attack) or (b) (Gaussian noise) on `ax`: accuracy against the perturbation's magnitude, a line
    per variant, mean ± std over seeds.

    Args:
        sub: the study on one data set (`ds.sel(dataset=…)`, seeds selected): `accuracy` over (perturbation,
            magnitude, model, seed).
        t: the variants' `table` on that data set: `n_layers` over model.
        kind: the perturbation: the attack's row (`attack_row(sub)`) or "gaussian".
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(sub, {"accuracy": ("perturbation", "magnitude", "model", "seed")}, "sub")
    draw.panel(t, {"n_layers": ("model",)}, "t")
    checks.require(kind, checks.one_of([str(k) for k in sub["perturbation"].values]), "kind")
    draw.axes(ax)
    names, colors = _named(sub)
    text = r"Gaussian noise $\sigma$" if kind == "gaussian" else rf"{kind.upper()} magnitude $\epsilon$"
    for m in names:
        v = sub["accuracy"].sel(perturbation=kind, model=m).dropna("seed", how="all")
        draw.band(ax, sub["magnitude"].values, v, "seed", colors[m], f"{m} ({int(t['n_layers'].sel(model=m))} "
                  "layers)", "o-")
    ax.set(xlabel=f"{text} (normalized units)", ylabel="accuracy", ylim=(0, 1.02),
           title=f"({'ab'[kind == 'gaussian']}) {kind}")
    ax.legend()


def plot_global(t: xr.Dataset, *, ax) -> None:
    """Panel (c) on `ax`: each variant's global r_x, r_xε and r_ε (internal stress on the whole network) as bars.

    Args:
        t: the variants' `table` on one data set: `global_score` over (score, model).
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(t, {"global_score": ("score", "model")}, "t")
    draw.axes(ax)
    names = [str(m) for m in t["model"].values]
    x = np.arange(len(names))
    for k, (key, color) in enumerate(zip(draw.SCORES, ("tab:blue", "tab:orange", "tab:red"))):
        ax.bar(x + (k - 1) * 0.27, t["global_score"].sel(score=key), 0.27, color=color,
               label=f"global {draw.SCORES[key]}")
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xticks(x, names, rotation=15)
    ax.set(ylabel="score", title="(c) internal stress: whole-network scores")
    ax.legend()


def plot_positions(sub: xr.Dataset, *, ax) -> None:
    """Panel (d) on `ax`: each layer's r_ε (mean over seeds) against its relative position in its network (0 the
    first layer, 1 the last), a line per variant.

    Args:
        sub: the study on one data set, as `plot_perturbation` takes it: `position` over (layer, model, seed) and
            `layer_score` over (score, layer, model, seed).
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(sub, {"position": ("layer", "model", "seed"), "layer_score": ("score", "layer", "model", "seed")},
               "sub")
    draw.axes(ax)
    names, colors = _named(sub)
    for m in names:
        unit = sub.sel(model=m).mean("seed")
        keep = unit["position"].notnull() & unit["layer_score"].sel(score="r_e").notnull()
        order = np.argsort(unit["position"].values[keep.values])
        ax.plot(unit["position"].values[keep.values][order], unit["layer_score"].sel(score="r_e").values[keep.values]
                [order], "o-", ms=3, color=colors[m], label=m)
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set(xlabel="relative layer position (0 first, 1 last)", ylabel=draw.SCORES["r_e"],
           title=r"(d) each layer's $r_\epsilon$")
    ax.legend()


def summary(ds, dataset=None, seed=None) -> str:
    """Markdown: per variant its depth, accuracy kept under FGSM and noise and global scores; the verdict of S4."""
    p = check_parameters(ds, dataset=dataset, seed=seed)
    t = table(ds, p["dataset"], seed)
    rows = ["| network | layers | weights | ε (constraint 3) | clean accuracy | kept under FGSM | kept under noise "
            "| global r_x | global r_xε | global r_ε |", "|---" * 10 + "|"]
    eps = ds["epsilon"].sel(dataset=p["dataset"]).mean("seed")
    for m in t["model"].values:
        u = t.sel(model=m)
        rows.append(f"| {m} | {int(u['n_layers'])} | {int(u['n_params'])} | {float(eps.sel(model=m)):.3g} | "
                    f"{float(u['base']):.3f} | {float(u['fgsm']):.0%} | {float(u['gaussian']):.0%} | "
                    + " | ".join(f"{float(u['global_score'].sel(score=k)):+.3f}" for k in ("r_x", "r_xe", "r_e"))
                    + " |")
    return "\n".join(rows + ["", "*Kept*: the share of the clean accuracy kept, averaged over the magnitudes > 0 "
                                  "(claim S4 is decided in the claims chapter, with its interval)."])


CLAIMS = (
    Claim("S4", "*as the number of layers in a neural network increases, a phenomenon known as fragility becomes more "
                "pronounced* (seed 004)", (Panel("ResNet depths", "resnet18", "mnist"),
                                           Panel("ResNet depths", "resnet18", "cifar10")),
          "in each family with ≥ 2 depths, Spearman ρ of the number of layers against the share of the clean accuracy "
          "kept under FGSM and under Gaussian noise (mean over magnitudes > 0) is negative for both: the larger ρ "
          "below 0 (note: ResNet-18/34 use basic blocks, ResNet-50 bottlenecks)", _s4, 0.0, False, "study_depth", ()),
)


STUDY = base.register(base.Study(
    name="depth", title="Fragility against depth (seed 004)",
    settings={"models": base.Setting(None, base.models_rule()),
              "depths": base.Setting(None, checks.items(checks.whole(1))),
              "epochs": base.Setting(None, checks.whole(1)), "A": base.Setting(None, checks.whole(1)),
              "local": base.Setting(True, checks.Rule(lambda v: isinstance(v, bool), "true or false")),
              "magnitudes": base.Setting([0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8],
                                         checks.items(checks.real(0), increasing=True)),
              "seeds": base.Setting(None, checks.items(checks.whole(0)))},
    units=_units, run=_run, steps=_steps,
    variables=("accuracy", "correct", "base_accuracy", "n_layers", "global_score"),
    parameters=("dataset", "seed"), figure=figure, summary=summary, claims=CLAIMS, validate=_validate))
chapters.register(chapters.Chapter("study_depth", figure, summary, study="depth", claims=CLAIMS))
