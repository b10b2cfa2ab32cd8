"""Fragile and robust neurons by nodal dropout, where FGSM hits, and the compress/amplify defense (seed 002).

A neuron is one output channel of a Conv2d (one output unit of a Linear). Nodal dropout silences it where it leaves
its block: at the output of the BatchNorm that follows the layer — a zeroed weight before a BatchNorm would leave
the constant β − γμ/√(σ² + ε), not silence — and ReLU(0) = 0 keeps it silent after the activation. Without a
following BatchNorm the layer's own output is silenced. The network is tested on clean inputs and on FGSM inputs
crafted once against the unperturbed network (fixed mode), as in the seed.

A neuron's fragility is the accuracy drop its silencing causes (on clean inputs by default; rank 0 the most
fragile) and its label follows `characterize` on the accuracy change. Where the attack hits: per neuron, the mean
``|a(x_ε) − a(x)|`` of its output a at the same point (after the activation), and its Spearman correlation with the
fragility. The defense scales each neuron's output at that point by g = c + (a − c)·q, q its position in the
fragility order (0 the most robust, 1 the most fragile), from the compression c < 1 to the amplification a > 1.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import xarray as xr
from scipy.stats import rankdata, spearmanr
from torch import nn
from tqdm.auto import tqdm

from .. import chapters, checks, uncertainty
from ..attacks import accuracy, as_attack
from ..errors import FragilityError
from ..preserve import preserved
from ..scores import characterize
from ..plot import draw
from ..selection import check_parameters
from ..verdicts import Claim, Outcome, Untestable, estimate, panels
from .. import study as base

INPUTS = ("clean", "adversarial")
NETWORKS = ("original", "defended")
DEFENSE_INPUTS = ("clean", "adversarial", "fixed")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish)
CORRELATED = 0.3  # |Spearman ρ| above which the attack's effect and the fragility are related


def silencing_point(model: nn.Module, layer: str, sample: torch.Tensor) -> tuple[str, str | None]:
    """(the module whose output channels are the layer's neurons: the following BatchNorm, else the layer itself;
    the activation applied to that output, or None)."""
    modules = dict(model.named_modules())
    if not isinstance(modules.get(layer), (nn.Conv2d, nn.Linear)):
        known = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear))]
        raise FragilityError(f"unknown layer {layer!r}: name a Conv2d or Linear layer ({', '.join(known[:8])}…).")
    point = base.consumer(model, layer, sample, nn.modules.batchnorm._BatchNorm) or layer
    return point, base.consumer(model, point, sample, ACTIVATIONS)


def _outputs(model, point: str, activation: str | None, x: torch.Tensor) -> torch.Tensor:
    """The neurons' outputs a(x) at the silencing point, after the activation."""
    modules, seen = dict(model.named_modules()), []
    hook = modules[point].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
            out = seen[0]
            return modules[activation](out.clone()) if activation else out
    finally:
        hook.remove()


def nodal_dropout(model: nn.Module, x, y=None, *, epsilon: float, layer: str | None = None, batch_size: int = 500,
                  progress: bool = True, attack=None) -> xr.Dataset:
    """Accuracy with each neuron of `layer` silenced in turn, on clean and fixed adversarial inputs (seed 002).

    Args:
        model: the network (given back as it was).
        x, y: test inputs and labels, or a DataLoader.
        epsilon: the attack's magnitude (≥ 0).
        layer: a Conv2d or Linear layer; default the first Conv2d in forward order.
        attack: the attack (default FGSM), crafted once against the unperturbed network at `epsilon`.

    Returns:
        accuracy(neuron, input), base_accuracy(input), attack_effect(neuron) (mean ``|a(x_ε) − a(x)|``),
        activation(neuron) (mean ``|a(x)|``) and epsilon; attrs name the layer and the silencing point.
    """
    epsilon = checks.number(epsilon, "epsilon", low=0)
    attack = as_attack(attack).at(epsilon)
    batch_size = checks.count(batch_size, "batch_size")
    progress = checks.flag(progress, "progress")
    x, y = checks.examples(x, y)
    with preserved(model):
        model.eval()
        if layer is None:
            layer = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
            if layer is None:
                raise FragilityError("the model has no Conv2d layer: name a Linear layer to silence its units.")
        point, activation = silencing_point(model, layer, x)
        x_adv = attack(model, x, y, batch_size=batch_size)
        base_acc = np.array([accuracy(model, inp, y, batch_size) for inp in (x, x_adv)])
        effect, level = _effect(model, point, activation, x, x_adv, batch_size)
        module = dict(model.named_modules())[point]
        correct = np.zeros((len(effect), 2))
        for c in tqdm(range(len(effect)), desc=f"nodal dropout {layer}", unit="neuron", disable=not progress):
            hook = module.register_forward_hook(lambda m, i, o, c=c: o.index_fill(1, torch.tensor([c], device=o.device),
                                                                                 0))
            try:
                correct[c] = [accuracy(model, inp, y, batch_size) for inp in (x, x_adv)]
            finally:
                hook.remove()
    ds = xr.Dataset({"accuracy": (("neuron", "input"), correct), "base_accuracy": (("input",), base_acc),
                     "attack_effect": (("neuron",), effect), "activation": (("neuron",), level),
                     "epsilon": ((), epsilon)},
                    coords={"neuron": np.arange(len(effect)), "input": list(INPUTS)},
                    attrs={"layer": layer, "point": point, "n_test": len(y)})
    ds["accuracy"].attrs["long_name"] = "accuracy with the neuron silenced after its BatchNorm and activation"
    ds["attack_effect"].attrs["long_name"] = "mean |a(x_ε) − a(x)| of the neuron's output"
    return ds


def _effect(model, point, activation, x, x_adv, batch_size) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron: mean ``|a(x_ε) − a(x)|`` and mean ``|a(x)|`` over examples and positions."""
    change = level = 0.0
    count = 0
    for xb, ab in zip(x.split(batch_size), x_adv.split(batch_size)):
        clean, adversarial = (_outputs(model, point, activation, inp).float() for inp in (xb, ab))
        dims = [d for d in range(clean.dim()) if d != 1]
        change = change + (adversarial - clean).abs().sum(dims)
        level = level + clean.abs().sum(dims)
        count += clean.numel() // clean.shape[1]
    return (change / count).cpu().numpy(), (level / count).cpu().numpy()


def spearman(a, b) -> float:
    """Spearman's ρ of the finite pairs (NaN with fewer than three, or when either side is constant)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    return np.nan if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0 else float(spearmanr(a[ok], b[ok])[0])


def rank_neurons(ds: xr.Dataset, by: str = "clean", tol: float = 0.02) -> xr.Dataset:
    """change(neuron, input) = accuracy − base, fragility = the drop on input `by`, rank (0 = most fragile), label
    (Fr/Ro/Af at tolerance tol) and correlation (Spearman, fragility against attack_effect; NaN when either is
    constant)."""
    checks.require(by, checks.one_of(INPUTS), "by")
    change = ds["accuracy"] - ds["base_accuracy"]
    fragility = -change.sel(input=by, drop=True)
    rank = xr.apply_ufunc(lambda f: rankdata(-f, method="ordinal", axis=-1) - 1, fragility,
                          input_core_dims=[["neuron"]], output_core_dims=[["neuron"]])
    correlation = xr.apply_ufunc(spearman, fragility, ds["attack_effect"], input_core_dims=[["neuron"], ["neuron"]],
                                 vectorize=True)
    return xr.Dataset({"change": change, "fragility": fragility, "rank": rank,
                       "label": characterize(change.sel(input=by, drop=True), tol), "correlation": correlation})


def defense_factors(fragility: xr.DataArray, compress: float = 0.5, amplify: float = 1.5) -> xr.DataArray:
    """Scale factor per neuron, g = c + (a − c)·q with q the neuron's position in the fragility order."""
    compress, amplify = checks.number(compress, "compress"), checks.number(amplify, "amplify")
    if not 0 < compress <= 1 <= amplify:
        raise FragilityError(f"need 0 < compress ≤ 1 ≤ amplify; got compress={compress!r}, amplify={amplify!r}.")
    q = (rankdata(fragility.values, method="average") - 1) / max(fragility.size - 1, 1)
    return xr.DataArray(compress + (amplify - compress) * q, coords=fragility.coords, dims="neuron", name="factor")


def scale_channels(model: nn.Module, module: str, factors) -> nn.Module:
    """A copy of `model` whose `module` (a Conv2d, Linear or BatchNorm) has output channel c scaled by factors[c]."""
    kinds = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
    if not isinstance(dict(model.named_modules()).get(module), kinds):
        known = [n for n, m in model.named_modules() if isinstance(m, kinds)]
        raise FragilityError(f"unknown module {module!r}: name a Conv2d, Linear or BatchNorm module "
                             f"({', '.join(known[:8])}…).")
    scaled = copy.deepcopy(model)
    target = scaled.get_submodule(module)
    f = torch.as_tensor(np.asarray(factors, dtype=float), dtype=target.weight.dtype, device=target.weight.device)
    if f.shape != target.weight.shape[:1] or not torch.isfinite(f).all():
        raise FragilityError(f"need {target.weight.shape[0]} finite factors for the channels of {module!r}; "
                             f"got shape {tuple(f.shape)}.")
    with torch.no_grad():
        target.weight.mul_(f.view(-1, *[1] * (target.weight.dim() - 1)))
        if target.bias is not None:
            target.bias.mul_(f)
    return scaled


def defend(model: nn.Module, x, y, dropout_ds: xr.Dataset, *, by: str = "clean", compress: float = 0.5,
           amplify: float = 1.5, batch_size: int = 500, attack=None) -> xr.Dataset:
    """The compress/amplify defense at the neurons' silencing point, at the dropout's ε: accuracy(network, input)
    before (original) and after (defended) — adversarial: the attack (default FGSM) against that network; fixed:
    against the original — and factor(neuron)."""
    if "point" not in dropout_ds.attrs or "epsilon" not in dropout_ds:
        raise FragilityError("dropout_ds must be a Dataset returned by nodal_dropout (its point and ε are needed).")
    x, y = checks.examples(x, y)
    point, epsilon = dropout_ds.attrs["point"], float(dropout_ds["epsilon"])
    attack = as_attack(attack).at(epsilon)
    factors = defense_factors(rank_neurons(dropout_ds, by)["fragility"], compress, amplify)
    with preserved(model):
        model.eval()
        defended = scale_channels(model, point, factors.values).eval()
        fixed = attack(model, x, y, batch_size=batch_size)
        hits = np.array([[base.classified(net, inputs, y, batch_size)
                          for inputs in (x, attack(net, x, y, batch_size=batch_size), fixed)]
                         for net in (model, defended)])
    return xr.Dataset({"defense_accuracy": (("network", "defense_input"), hits.mean(-1)),
                       "defense_correct": (("network", "defense_input", "image"), hits), "factor": factors},
                      coords={"network": list(NETWORKS), "defense_input": list(DEFENSE_INPUTS)},
                      attrs={"by": by, "compress": compress, "amplify": amplify})


def _run(ctx: base.Context) -> xr.Dataset:
    s, (x, y) = ctx.settings, ctx.test
    net = ctx.network().to(ctx.device)
    x, y = x.to(ctx.device), y.to(ctx.device)
    epsilon = float(ctx.responses()["epsilon"])
    attack = ctx.profile.adversary()
    dropout = nodal_dropout(net, x, y, epsilon=epsilon, layer=s["layer"], batch_size=ctx.profile.batch_size,
                            progress=ctx.progress, attack=attack)
    return dropout.merge(defend(net, x, y, dropout, by=s["by"], compress=s["compress"], amplify=s["amplify"],
                                batch_size=ctx.profile.batch_size, attack=attack), combine_attrs="override")


def _validate(settings, profile):
    for model in settings["models"] or profile.models[:1]:
        if model not in profile.models:
            raise FragilityError(f"studies.neurons.models: {model} is not a model of the profile.")
    base.check_layers(settings["layer"], "neurons.layer", profile, settings["models"] or profile.models[:1])


def _units(profile, settings):
    return [base.Unit((m, d, s), m, ((m, d, s),)) for m, d, s in profile.runs()
            if m in (settings["models"] or profile.models[:1])]


def ranking(ds, model, dataset, seed=None, by="clean", tol=0.02) -> xr.Dataset:
    """`rank_neurons` of one model and dataset, per seed (every stored seed, or `seed`)."""
    seeds = base.seeds(ds, model, dataset) if seed is None else [seed]
    ranked = []
    for s in seeds:
        unit = ds.sel(model=model, dataset=dataset, seed=s)[["accuracy", "base_accuracy", "attack_effect"]]
        unit = unit.dropna("neuron", how="all", subset=["attack_effect"])
        r = rank_neurons(unit, by, tol)
        r["drop"], r["attack_effect"] = -r["change"], unit["attack_effect"]
        ranked.append(r.reset_coords(drop=True))
    return xr.concat(ranked, xr.DataArray(seeds, dims="seed"), join="outer")


def defense(ds, model, dataset, seed=None) -> xr.DataArray:
    """defense_accuracy(seed, network, defense_input) of one model and dataset."""
    seeds = base.seeds(ds, model, dataset) if seed is None else [seed]
    return ds["defense_accuracy"].sel(model=model, dataset=dataset, seed=seeds).reset_coords(drop=True)


def _neurons_rho(ds, model, dataset, by: str, samples: int, seed: int = 0) -> xr.DataArray:
    """Per replicate, the mean over seeds of the Spearman ρ between each neuron's fragility and the attack's effect
    on it: neurons (and seeds) resampled; sample 0 as stored."""
    r = ranking(ds, model, dataset, None, by)
    rng = np.random.default_rng(seed)
    values = []
    for s in r["seed"].values:
        unit = r.sel(seed=s).dropna("neuron", how="all", subset=["fragility"])
        f, e = unit["fragility"].values, unit["attack_effect"].values
        picks = uncertainty.draws(len(f), samples, rng)  # how often each neuron is drawn
        values.append([spearman(np.repeat(f, k.astype(int)), np.repeat(e, k.astype(int))) for k in picks])
    rho = xr.DataArray(np.array(values).T, dims=("sample", "seed"), coords={"sample": np.arange(samples + 1)})
    weights = xr.DataArray(uncertainty.draws(len(values), samples, rng), dims=("sample", "seed"))
    return rho.weighted(weights).mean("seed")


def _s2a(ev, panel, reading) -> Outcome:
    study = _study(ev, panel)
    rho = _neurons_rho(study, panel.model, panel.dataset, "clean", ev.samples)
    per_seed = ranking(study, panel.model, panel.dataset)["correlation"].values
    return Outcome(rho, f"`{study.attrs.get('layer', 'the first conv layer')}`: Spearman ρ(fragility, attack effect) "
                        f"per seed " + ", ".join(f"{v:+.2f}" for v in per_seed) + f"; mean {estimate(rho, '+.2f')} "
                        "(neurons and seeds resampled).")


def _s2b(ev, panel, reading) -> Outcome:
    study = _study(ev, panel)
    crafted = "fixed" if reading is not None and (reading.name, reading.value) == ("defended", "original") \
        else "adversarial"
    sub = study.sel(model=panel.model, dataset=panel.dataset, seed=base.seeds(study, panel.model, panel.dataset))
    rs = uncertainty.bootstrap(sub["defense_correct"], ev.samples)
    acc = uncertainty.seed_mean(rs["accuracy"], rs)
    gain = acc.sel(network="defended", defense_input=crafted) - acc.sel(network="original", defense_input=crafted)
    clean = acc.sel(network="defended", defense_input="clean") - acc.sel(network="original", defense_input="clean")
    how = "crafted against the original network" if crafted == "fixed" else "each network attacked by its own FGSM"
    before = estimate(acc.sel(network="original", defense_input=crafted))
    return Outcome(gain, f"FGSM accuracy ({how}) {before}"
                         f" → {estimate(acc.sel(network='defended', defense_input=crafted))}, gain {estimate(gain)}; "
                         f"clean accuracy changes by {estimate(clean)}.")


def _study(ev, panel):
    study = ev.study("neurons")
    if study is None or (panel.model, panel.dataset) not in base.pairs(study):
        raise Untestable(f"the neurons study on {panel.model} and {panel.dataset}")
    return study


def figure(ds, model=None, dataset=None, seed=None, input="clean"):
    """Seed 002: (a) the accuracy drop when each neuron is silenced, clean and FGSM, in fragility order
    (`plot_drops`); (b) the attack's effect on each neuron against its fragility (`plot_effects`); (c) accuracy
    before and after the defense (`plot_defense`)."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, input=input)
    r = ranking(ds, p["model"], p["dataset"], seed, p["input"])
    seeds = [int(s) for s in r["seed"].values]
    shown = ds.sel(model=[p["model"]], dataset=[p["dataset"]], seed=seeds)
    fig = draw.figure(shown, f"Nodal dropout (seed 002) · {p['model']} on {p['dataset']} · "
                             f"{ds.attrs.get('layer', '')} · {draw.seed_text(seeds)}", 7.4,
                      line=draw.provenance_line(shown, attack="fixed"))
    axes = fig.subplot_mosaic([["a", "a"], ["b", "c"]])
    plot_drops(r, p["input"], ax=axes["a"])
    plot_effects(r, p["input"], ax=axes["b"])
    plot_defense(defense(ds, p["model"], p["dataset"], seed), ax=axes["c"])
    return fig


def _ranked(r, input) -> None:
    draw.panel(r, {"rank": ("seed", "neuron"), "drop": ("seed", "neuron", "input"), "fragility": ("seed", "neuron"),
                   "attack_effect": ("seed", "neuron"), "correlation": ("seed",)}, "r")
    checks.require(input, checks.one_of(INPUTS), "input")


def plot_drops(r: xr.Dataset, input: str = "clean", *, ax) -> None:
    """Panel (a) on `ax`: the accuracy drop when each neuron is silenced, on clean and FGSM inputs, neurons in
    fragility order (mean ± std over seeds).

    Args:
        r: one model's `ranking` on one data set: `rank`, `fragility`, `attack_effect` over (seed, neuron), `drop`
            over (seed, neuron, input), `correlation` over seed.
        input: the inputs whose drop ranks the neurons: "clean" or "adversarial".
        ax: the matplotlib Axes to draw into.
    """
    _ranked(r, input)
    draw.axes(ax)
    seeds = [int(s) for s in r["seed"].values]
    order = [r.sel(seed=s)["rank"].dropna("neuron") for s in seeds]
    drops = np.full((len(seeds), max(len(o) for o in order), 2), np.nan)
    for i, (s, o) in enumerate(zip(seeds, order)):
        ranked = o["neuron"].values[np.argsort(o.values, kind="stable")]
        drops[i, :len(ranked)] = r["drop"].sel(seed=s, neuron=ranked, input=list(INPUTS)).values
    x = np.arange(drops.shape[1])
    for k, (name, color) in enumerate(zip(INPUTS, ("tab:blue", "tab:orange"))):
        ax.bar(x + (k - 0.5) * 0.4, np.nanmean(drops[:, :, k], 0), 0.4, color=color, label=name,
               yerr=np.nanstd(drops[:, :, k], 0) if len(seeds) > 1 else None, error_kw={"lw": 0.5})
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set(xlabel=f"fragility rank (0 = most fragile by the {input} drop)", ylabel="accuracy drop",
           title="(a) silencing each neuron after its BatchNorm and activation")
    ax.legend()


def plot_effects(r: xr.Dataset, input: str = "clean", *, ax) -> None:
    """Panel (b) on `ax`: each neuron's attack effect ``|a(x_ε) − a(x)|`` against its fragility, a colour per seed with
    its Spearman ρ.

    Args:
        r: one model's `ranking` on one data set, as `plot_drops` takes it.
        input: the inputs whose drop is the fragility: "clean" or "adversarial".
        ax: the matplotlib Axes to draw into.
    """
    _ranked(r, input)
    draw.axes(ax)
    for s, color in draw.colors([int(s) for s in r["seed"].values]).items():
        unit = r.sel(seed=s)
        ax.scatter(unit["attack_effect"], unit["fragility"], s=12, color=color,
                   label=f"seed {s}: ρ = {float(unit['correlation']):+.2f}")
    ax.set(xlabel=r"attack effect $|a(x_\epsilon) - a(x)|$", ylabel=f"fragility ({input} drop)",
           title="(b) where FGSM hits")
    ax.legend()


def plot_defense(d: xr.DataArray, *, ax) -> None:
    """Panel (c) on `ax`: the accuracy of the original and the defended network on clean inputs, FGSM crafted
    against each network and FGSM crafted against the original (mean ± std over seeds).

    Args:
        d: one model's `defense` on one data set, over (network, defense_input, seed).
        ax: the matplotlib Axes to draw into.
    """
    draw.panel(d, {None: ("network", "defense_input", "seed")}, "d")
    draw.axes(ax)
    x = np.arange(d.sizes["defense_input"])
    for k, (network, color) in enumerate(zip(NETWORKS, ("0.6", "tab:green"))):
        v = d.sel(network=network)
        ax.bar(x + (k - 0.5) * 0.4, v.mean("seed"), 0.4, color=color, label=network,
               yerr=v.std("seed") if d.sizes["seed"] > 1 else None, error_kw={"lw": 0.5})
    ax.set_xticks(x, ["clean", "FGSM vs\neach net", "FGSM vs\noriginal"])
    ax.set(ylabel="accuracy", ylim=(0, 1.02), title="(c) compress/amplify defense")
    ax.legend()


def summary(ds, model=None, dataset=None, seed=None, input="clean") -> str:
    """Markdown: fragile and robust neurons per seed, and the defense's accuracy before and after under both attack
    readings (the claims S2a and S2b are decided in the claims chapter, with their intervals)."""
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed, input=input)
    r = ranking(ds, p["model"], p["dataset"], seed, p["input"])
    lines = []
    for s in r["seed"].values:
        labels = r["label"].sel(seed=s).dropna("neuron").values.tolist()
        lines.append(f"- seed {int(s)}: {labels.count('Fr')} fragile, {labels.count('Ro')} robust, "
                     f"{labels.count('Af')} antifragile neurons ({p['input']} accuracy drop, τ = 0.02); Spearman ρ "
                     f"(fragility, attack effect) {float(r['correlation'].sel(seed=s)):+.2f}.")
    d = defense(ds, p["model"], p["dataset"], seed).mean("seed")
    for crafted, text in (("adversarial", "each network attacked by its own FGSM"),
                          ("fixed", "FGSM crafted against the original network")):
        lines.append(f"- defense, {text}: accuracy {float(d.sel(network='original', defense_input=crafted)):.3f} → "
                     f"{float(d.sel(network='defended', defense_input=crafted)):.3f}.")
    lines.append(f"- clean accuracy {float(d.sel(network='original', defense_input='clean')):.3f} → "
                 f"{float(d.sel(network='defended', defense_input='clean')):.3f}.")
    return "\n".join(lines)


CLAIMS = (
    Claim("S2a", "*Our method identifies the specific neurons of a network that are most affected by the adversarial "
                 "attack being applied* (seed 002, fragile neurons by nodal dropout)", panels("a mnist cifar10"),
          f"the mean over seeds of the Spearman ρ between a neuron's fragility (its clean accuracy drop when silenced) "
          f"and the attack's effect on it is above +{CORRELATED}", _s2a, CORRELATED, True, "study_neurons", ()),
    Claim("S2b", "*We propose to make fragile neurons more robust against these attacks by compressing features within "
                 "robust neurons and amplifying the fragile neurons proportionally* (seed 002)",
          panels("a mnist cifar10"), "the defense raises accuracy under FGSM by more than 0.01 (examples crafted "
                                     "against each network; against the original network as a reading)", _s2b, 0.01,
          True, "study_neurons", ("defended",)),
)


STUDY = base.register(base.Study(
    name="neurons", title="Fragile neurons by nodal dropout (seed 002)",
    settings={"models": base.Setting(None, base.models_rule()),
              "layer": base.Setting(None, checks.Rule(lambda v: isinstance(v, str), "a layer name")),
              "by": base.Setting("clean", checks.one_of(INPUTS)),
              "compress": base.Setting(0.5, checks.real(0, 1, open_low=True)),
              "amplify": base.Setting(1.5, checks.real(1))},
    units=_units, run=_run, variables=("accuracy", "base_accuracy", "attack_effect", "defense_accuracy",
                                       "defense_correct"),
    parameters=("model", "dataset", "seed", "input"), figure=figure, summary=summary, claims=CLAIMS,
    extra_choices=lambda ds, model, dataset: {"input": list(INPUTS)}, validate=_validate))
chapters.register(chapters.Chapter("study_neurons", figure, summary, study="neurons", paper=dict(model="resnet18"),
                                   controls=("seed", "input"), claims=CLAIMS))
