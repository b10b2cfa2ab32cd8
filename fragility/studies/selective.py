"""Selective backpropagation (the paper's Fig. 12, Sec. 5): continue training with chosen layers frozen, against
regular training continued from the same checkpoint for the same epochs and seed.

Which layers the paper freezes is contradictory in its text, so every reading runs side by side, each against the
same regular training, from per-layer scores of the starting checkpoint (r_ε of h1 by default, tolerance τ):

- ``prose`` (default; the paper's stated intent): the layers whose filtering degrades the clean response more than
  the adversarial one, β̄_ε above β̄, i.e. r_ε > +τ with Eq. 16 as printed (the prose calls them "negative");
- ``equation``: r_ε < −τ with Eq. 16 as printed;
- ``random``: as many layers as ``prose`` freezes, drawn at random (seeded): does the choice of layers matter?

Frozen layers leave the optimizer (zeroing their gradients would not freeze them under Adam, whose momentum keeps
moving them); their BatchNorm statistics, being buffers, still follow the data. Each continued checkpoint is tested
under FGSM from ε = 0 to ε_E, the largest ε at which the starting checkpoint stays above chance (Definition 8).
"""
from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .. import chapters, checks, uncertainty
from ..attacks import epsilon_correct, largest_epsilon
from ..errors import FragilityError
from ..scores import characterize, scores
from ..training import TrainConfig, schedule, checkpoint_path, load_checkpoint, read_checkpoint, train
from ..plot import draw
from ..selection import check_parameters
from ..verdicts import Claim, Outcome, Panel, TooFew, Untestable, estimate, panels
from .. import study as base

READINGS = ("prose", "equation", "random")
TRAININGS = ("regular",) + READINGS
MARGIN = 0.01  # accuracy: a gain within ±0.01 is no effect
COLORS = {"regular": "tab:orange", "prose": "teal", "equation": "tab:purple", "random": "0.45"}


def frozen_layers(table: xr.Dataset, reading: str, score: str = "r_e", tol: float = 0.02, seed: int = 0,
                  count: int | None = None) -> list[str]:
    """The layers a reading freezes, from one checkpoint's per-layer scores (dim `layer`; `global` is ignored).

    prose: score > +tol; equation: score < −tol; random: `count` layers drawn with `seed`.
    """
    checks.require(reading, checks.one_of(READINGS), "reading")
    values = table[score].drop_sel(layer="global", errors="ignore")
    labels = characterize(values, tol).values
    names = [str(n) for n in values["layer"].values]
    if reading == "random":
        picked = np.random.default_rng(seed).choice(len(names), size=count or 0, replace=False)
        return [names[i] for i in sorted(picked)]
    wanted = "Af" if reading == "prose" else "Fr"
    return [n for n, label in zip(names, labels) if label == wanted]


def continue_training(checkpoint, train_set, test_set, root, epochs: int, every: int | None = None,
                      freeze: Sequence[str] = (), progress: bool = True, device=None) -> list[Path]:
    """Train the checkpoint's run for `epochs` more epochs into `root` (checkpoints every `every`, default the
    run's own), with the modules in `freeze` frozen. The checkpoint's optimizer and random states are restored, so
    that with nothing frozen this continues the original run exactly."""
    epochs = checks.count(epochs, "epochs")
    start = read_checkpoint(checkpoint)
    config = TrainConfig(**{**start["config"], "epochs": start["epoch"] + epochs,
                            "every": every or start["config"]["every"]})
    return train(config, train_set, test_set, root, progress=progress, freeze=freeze, start=checkpoint,
                 device=device)


def original_run(checkpoint, epochs: int, every: int | None = None) -> list[Path] | None:
    """The original run's own checkpoints at the epochs `continue_training(checkpoint, …, epochs, every)` with
    nothing frozen would write, when they are all there (that training would repeat them exactly); else None."""
    start = read_checkpoint(checkpoint)
    config = TrainConfig(**{**start["config"], "epochs": start["epoch"] + epochs})
    saves = schedule(start["epoch"] + 1, config.epochs, every or config.every)
    paths = [Path(checkpoint).with_name(f"epoch{e:03d}.pt") for e in saves]
    return paths if all(p.is_file() for p in paths) else None


def selective_backprop(checkpoint, train_set, test_set, root, epochs: int, *, x, y, sweep_ds: xr.Dataset,
                       filter: str = "h1", score: str = "r_e", tol: float = 0.02, readings=READINGS, every=None,
                       levels: int = 11, seed: int = 0, batch_size: int = 500, device=None, image=None,
                       progress: bool = True, attack=None) -> xr.Dataset:
    """Fig. 12 for one (model, dataset, seed): every reading's continued training against regular training.

    Regular training is the original run continued exactly (the checkpoint's optimizer and random states
    restored): its own later checkpoints when they are there, else retrained from the checkpoint.

    Args:
        checkpoint: the starting checkpoint (a `fragility.training` file).
        train_set, test_set: the data sets of the run.
        root: the folder the continued trainings are written to.
        epochs: epochs to continue for; every: their checkpoint interval (default the run's).
        x, y: the test inputs of the curves; sweep_ds: the starting checkpoint's local sweep (its scores decide).
        filter, score, tol: the score that decides (r_e of h1 by default) and the tolerance τ.
        readings: some of "prose", "equation", "random".
        levels: points of the ε grid from 0 to ε_E.
        seed: seeds the random reading's draw.
        image: the test examples' indices (the `image` coordinate; default 0 … n − 1).
        attack: the attack of the curves (default FGSM).

    Returns:
        accuracy(training, epoch, level), correct(training, epoch, level, image), start_accuracy(level),
        start_correct(level, image), epsilon(level) = level · ε_E, epsilon_E, score(layer), frozen(training, layer),
        reused(training) (regular training read from the original run's checkpoints).
    """
    readings = checks.names(readings, "readings", READINGS)
    levels = checks.count(levels, "levels", 2)
    model, meta = load_checkpoint(checkpoint, map_location=device or "cpu")
    table = scores(sweep_ds, filter=filter).reset_coords(drop=True)
    sets = {"regular": []}
    for reading in readings:
        sets[reading] = frozen_layers(table, reading, score, tol, seed=seed, count=len(
            frozen_layers(table, "prose", score, tol)))
    epsilon_e = largest_epsilon(model, x, y, batch_size=batch_size, attack=attack)
    grid = np.linspace(0, 1, levels)
    image = np.arange(len(y)) if image is None else np.asarray(image)
    curves, trained, reused = {}, {}, {}
    for training, frozen in sets.items():
        if tuple(frozen) not in trained:  # readings that freeze the same layers share one training
            paths = original_run(checkpoint, epochs, every) if not frozen else None
            reused[training] = paths is not None
            paths = paths or continue_training(checkpoint, train_set, test_set, Path(root) / training, epochs, every,
                                               frozen, progress, device)
            trained[tuple(frozen)] = xr.concat([_curve(p, x, y, grid * epsilon_e, batch_size, device, image, attack)
                                                for p in paths], "epoch")
        curves[training] = trained[tuple(frozen)]
        reused.setdefault(training, False)
    layers = [str(n) for n in table["layer"].values if n != "global"]
    start = epsilon_correct(model, x, y, epsilons=grid * epsilon_e, batch_size=batch_size, attack=attack)
    stacked = xr.concat(list(curves.values()), "training").assign_coords(training=list(curves))
    ds = xr.Dataset({
        "accuracy": stacked.mean("image"),
        "correct": stacked,
        "start_accuracy": start.mean("image"),
        "start_correct": start.assign_coords(image=image),
        "score": table[score].sel(layer=layers),
        "frozen": (("training", "layer"), [[n in sets[t] for n in layers] for t in curves]),
        "reused": ("training", [reused[t] for t in curves]),
        "epsilon_E": ((), epsilon_e),
    }).rename(epsilon="level").assign_coords(level=grid)
    ds["epsilon"] = ("level", grid * epsilon_e)
    ds.attrs.update(start_epoch=meta["epoch"], epochs=epochs, filter=filter, score=score, tol=tol, n_test=len(y))
    ds["accuracy"].attrs["long_name"] = "accuracy of the continued network under FGSM of magnitude ε"
    ds["correct"].attrs["long_name"] = "example classified correctly by the continued network under FGSM"
    ds["frozen"].attrs["long_name"] = "layer frozen in that training"
    ds["reused"].attrs["long_name"] = "read from the original run's checkpoints (the run continued exactly)"
    ds["epsilon_E"].attrs["long_name"] = "ε_E: largest ε with the starting checkpoint above chance (Definition 8)"
    return ds


def _curve(path, x, y, epsilons, batch_size, device, image, attack) -> xr.DataArray:
    net, meta = load_checkpoint(path, device or "cpu")
    found = epsilon_correct(net, x, y, epsilons=epsilons, batch_size=batch_size, attack=attack)
    return found.assign_coords(epoch=meta["epoch"], image=image)


def _validate(settings, profile):
    for model in settings["models"] or profile.models[:1]:
        if model not in profile.models:
            raise FragilityError(f"studies.selective.models: {model} is not a model of the profile "
                                 f"({', '.join(profile.models)}).")
        if settings["epoch"] is not None and settings["epoch"] not in profile.grid(model).epochs:
            raise FragilityError(f"studies.selective.epoch {settings['epoch']} is not a checkpoint of {model}: "
                                 f"choose from {list(profile.grid(model).epochs)}.")


def _start(ctx) -> int:
    epochs = ctx.epochs()
    return ctx.settings["epoch"] or epochs[max(len(epochs) // 2 - 1, 0)]


def _units(profile, settings):
    return [base.Unit((m, d, s), m, ((m, d, s),)) for m, d, s in profile.runs()
            if m in (settings["models"] or profile.models[:1])]


def _run(ctx: base.Context) -> xr.Dataset:
    s, start = ctx.settings, _start(ctx)
    grid = ctx.profile.grid(ctx.unit.model)
    x, y = ctx.test
    model, dataset, seed = ctx.unit.key
    return selective_backprop(
        checkpoint_path(ctx.results, model, dataset, seed, start), *ctx.sets(), ctx.folder(),
        s["epochs"] or max(grid.epochs[-1] - start, grid.every), x=x, y=y, sweep_ds=ctx.responses(start),
        filter=s["filter"], score=s["score"], tol=s["tol"], readings=s["readings"], every=s["every"],
        levels=s["levels"], seed=zlib.crc32(f"{model}/{dataset}/{seed}".encode()),
        batch_size=ctx.profile.batch_size, device=ctx.device, image=ctx.image, progress=ctx.progress,
        attack=ctx.profile.adversary())


# Derived quantities, the figure and the claims


def curves(ds: xr.Dataset, model, dataset, seed=None) -> xr.Dataset:
    """One model and dataset's curves per seed (every seed, or `seed`): accuracy(seed, training, epoch, level),
    correct(…, image), start_accuracy, epsilon(seed, level), frozen(seed, training, layer); `level` is ε / ε_E."""
    seeds = base.seeds(ds, model, dataset) if seed is None else [seed]
    sub = ds.sel(model=model, dataset=dataset, seed=seeds)
    sub = sub[["accuracy", "correct", "start_accuracy", "epsilon", "frozen", "epsilon_E"]].load()
    return sub.dropna("epoch", how="all", subset=["accuracy"]).dropna("training", how="all", subset=["accuracy"])


def resampled(c: xr.Dataset, samples: int = uncertainty.SAMPLES, seed: int = 0) -> xr.Dataset:
    """The curves' accuracy with bootstrap replicates (`fragility.uncertainty.bootstrap`): accuracy(sample, seed,
    training, epoch, level) and seed_weight(sample, seed)."""
    return uncertainty.bootstrap(c["correct"].where(c["accuracy"].notnull()), samples, seed)


def gains(accuracy: xr.DataArray, arm: str = "prose", against: str = "regular", relative: bool = False):
    """gain(…, level) of `arm` over `against` per ε / ε_E (mean over the continued checkpoints): accuracy under
    attack minus the other's, or (`relative`) each divided by its own clean accuracy (ε = 0) first."""
    if relative:
        accuracy = accuracy / accuracy.sel(level=0)
    return (accuracy.sel(training=arm) - accuracy.sel(training=against)).mean("epoch")


def _p8(ev, panel, reading) -> Outcome:
    study = ev.study("selective")
    if study is None or (panel.model, panel.dataset) not in base.pairs(study):
        raise Untestable(f"the selective study on {panel.model} and {panel.dataset} (its models: setting, e.g. "
                         f"studies: selective: models: [{panel.model}])")
    c = curves(study, panel.model, panel.dataset)
    choice = {"freeze": "prose", "gain": "raw", "against": "regular"}
    if reading is not None and reading.name in choice:
        choice[reading.name] = reading.value
    arm = choice["freeze"]
    if arm not in c["training"].values or not bool(c["frozen"].sel(training=arm).any()):
        raise TooFew(f"the {arm} reading froze no layer, so it is regular training")
    if choice["against"] not in c["training"].values or choice["against"] == arm:
        raise Untestable(f"the {choice['against']} arm in the selective study")
    rs = resampled(c, ev.samples)
    per_level = uncertainty.seed_mean(gains(rs["accuracy"], arm, choice["against"], choice["gain"] == "relative"),
                                      rs)
    stat = per_level.where(per_level["level"] > 0, drop=True).mean("level")
    counts = {t: sorted({int(v) for v in c["frozen"].sel(training=t).sum("layer").values})
              for t in READINGS if t in c["training"].values}
    shown = "; ".join(f"ε/ε_E {float(v):.1f}: {estimate(per_level.sel(level=v))}" for v in per_level["level"].values
                      if v > 0 and round(float(v) * 10) % 2 == 0)
    return Outcome(stat, f"{c.sizes['seed']} seed(s), continued from epoch {int(study.attrs.get('start_epoch', 0))} "
                         f"for {c.sizes['epoch']} checkpoint(s); layers frozen of {c.sizes['layer']} — "
                         + ", ".join(f"{t} {' or '.join(map(str, n))}" for t, n in counts.items())
                         + f"; {choice['gain']} gain of {arm} over {choice['against']} by ε/ε_E — {shown}; mean over "
                           f"(0, 1]: {estimate(stat)}.")


def _p9(ev, panel, reading) -> Outcome:
    """P8's statistic (the gain over regular training) on the panel's data set minus the same on `panel.versus`
    (MNIST, Fig. 12a): each data set's replicates drawn apart, so the difference's interval holds both spreads."""
    this = _p8(ev, panel, reading)
    other = _p8(ev, Panel("12a", panel.model, panel.versus), reading)
    stat = this.samples - other.samples
    return Outcome(stat, f"the P8 statistic on {panel.dataset}: {estimate(this.samples)}; on {panel.versus}: "
                         f"{estimate(other.samples)}; {panel.dataset} − {panel.versus}: {estimate(stat)}.")


def figure(ds, model=None, seed=None, datasets=None):
    """Fig. 12: (top) accuracy against ε / ε_E (each seed's grid 0 … ε_E, so seeds with other ε_E are not averaged
    on one raw grid) after continued training — regular (orange; the original run continued exactly) and each
    reading (prose teal, equation purple, random grey) — mean ± std over the continued checkpoints and seeds, the
    starting checkpoint dotted (`plot_curves`); (bottom) each reading's gain over regular training per ε / ε_E, raw
    (solid) and relative to each arm's clean accuracy (dashed), with its 95 % bootstrap interval (`plot_gains`); a
    column per data set."""
    p = check_parameters(ds, model=model, seed=seed)
    names = [check_parameters(ds, model=p["model"], dataset=d)["dataset"]
             for d in ([datasets] if isinstance(datasets, str) else datasets or _datasets(ds, p["model"]))]
    shown = ds.sel(model=[p["model"]], dataset=names)
    panels = [curves(ds, p["model"], name, seed) for name in names]
    seeds = sorted({int(s) for c in panels for s in c["seed"].values})
    fig = draw.figure(shown, f"Fig. 12 · {p['model']} · selective backpropagation from epoch "
                             f"{ds.attrs.get('start_epoch', '?')} · {draw.seed_text(seeds)}", 7.2,
                      line=draw.provenance_line(shown.sel(seed=seeds), np.concatenate(
                          [c["epsilon_E"].values.ravel() for c in panels])))
    axes = fig.subplots(2, len(names), squeeze=False, sharex=True)
    for (top, bottom), name, c in zip(axes.T, names, panels):
        plot_curves(c, ax=top)
        top.set_title(f"{name}: ε_E {draw.value_range(c['epsilon_E'].values)}")
        plot_gains(c, ax=bottom)
    return fig


def _checked(c: xr.Dataset) -> xr.Dataset:
    draw.panel(c, {"accuracy": ("training", "epoch", "level", "seed"), "start_accuracy": ("level", "seed"),
                   "frozen": ("training", "layer", "seed")}, "c")
    if "regular" not in c["training"].values:
        raise FragilityError("c must hold the training 'regular' (the original run continued), which the readings "
                             "are compared with.")
    return c


def plot_curves(c: xr.Dataset, *, ax) -> None:
    """Accuracy against ε / ε_E per training, mean ± std over checkpoints and seeds, and the starting checkpoint
    dotted, on `ax`.

    Args:
        c: one model's `curves` on one data set: `accuracy` over (training, epoch, level, seed), `start_accuracy`
            over (level, seed) and `frozen` over (training, layer, seed).
        ax: the matplotlib Axes to draw into.
    """
    _checked(c)
    draw.axes(ax)
    x = c["level"].values
    for training in [t for t in c["training"].values if t != "regular"] + ["regular"]:
        frozen = c["frozen"].sel(training=training)
        same = [str(t) for t in c["training"].values[:list(c["training"].values).index(training)]
                if bool((c["frozen"].sel(training=t) == frozen).all())]
        text = "regular (the original run)" if training == "regular" else (
            f"{training} ({int(frozen.sum('layer').max())} layers frozen" + (f", = {same[0]}" if same else "") + ")")
        draw.band(ax, x, c["accuracy"].sel(training=training), ["seed", "epoch"], COLORS[str(training)], text,
                  "--" if training == "regular" else "-")
    ax.plot(x, c["start_accuracy"].mean("seed"), ":", color="k", lw=1.2, label="starting checkpoint")
    ax.set(ylabel="accuracy", ylim=(0, 1.02))
    ax.legend()


def plot_gains(c: xr.Dataset, *, ax) -> None:
    """Each reading's gain over regular training per ε / ε_E, raw (solid) and relative to each arm's clean accuracy
    (dashed), with its 95 % bootstrap interval, on `ax`.

    Args:
        c: one model's `curves` on one data set, as `plot_curves` takes them.
        ax: the matplotlib Axes to draw into.
    """
    _checked(c)
    draw.axes(ax)
    rs = resampled(c)
    for training in [t for t in c["training"].values if t != "regular"]:
        for relative, style in ((False, "-"), (True, "--")):
            g = uncertainty.seed_mean(gains(rs["accuracy"], str(training), relative=relative), rs)
            low, high = uncertainty.interval(g)
            ax.plot(g["level"], g.sel(sample=0), style, color=COLORS[str(training)],
                    label=f"{training}, {'relative' if relative else 'raw'}")
            ax.fill_between(g["level"], low, high, color=COLORS[str(training)], alpha=0.12, lw=0)
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set(xlabel=r"$\epsilon / \epsilon_E$", ylabel="gain over regular training")
    ax.legend(ncol=2)


def _datasets(ds, model) -> list[str]:
    return base.REGISTRY["selective"].choices(ds, model)["dataset"]


def summary(ds, model=None, seed=None, datasets=None) -> str:
    """Markdown: per data set, what each reading froze and its gain over regular training and over the random
    control, raw and relative, with intervals."""
    p = check_parameters(ds, model=model, seed=seed)
    lines = []
    for name in [datasets] if isinstance(datasets, str) else datasets or _datasets(ds, p["model"]):
        c = curves(ds, p["model"], name, seed)
        rs = resampled(c)
        frozen = {t: sorted({str(n) for n in c["layer"].values[c["frozen"].sel(training=t).any("seed").values]})
                  for t in READINGS if t in c["training"].values}
        lines += [f"**{p['model']} on {name}** (continued from epoch {ds.attrs.get('start_epoch', '?')}, ε_E "
                  f"{', '.join(f'{v:.3g}' for v in c['epsilon_E'].values)}; regular training is the original run "
                  "continued exactly):", ""]
        for t, f in frozen.items():
            n = " or ".join(map(str, sorted({int(v) for v in c["frozen"].sel(training=t).sum("layer").values})))
            parts = []
            for against in ("regular", "random"):
                if against == t or against not in c["training"].values:
                    continue
                for relative in (False, True):
                    g = uncertainty.seed_mean(gains(rs["accuracy"], t, against, relative), rs)
                    parts.append(f"over {against} {'relative' if relative else 'raw'} "
                                 f"{estimate(g.where(g['level'] > 0, drop=True).mean('level'))}")
            lines.append(f"- {t} froze {n} of {c.sizes['layer']} layers per seed ({', '.join(f'`{x}`' for x in f[:6])}"
                         f"{', …' if len(f) > 6 else ''}); mean gain over ε/ε_E ∈ (0, 1]: {'; '.join(parts)}")
        if "prose" in frozen and "random" in c["training"].values:  # per level, against both
            per = {a: uncertainty.seed_mean(gains(rs["accuracy"], "prose", a), rs) for a in ("regular", "random")}
            shown = [v for v in per["regular"]["level"].values if v > 0 and round(float(v) * 10) % 2 == 0]
            lines.append("- prose's raw gain by ε/ε_E, over regular | over the random control: " + "; ".join(
                f"{float(v):.1f}: {estimate(per['regular'].sel(level=v))} | {estimate(per['random'].sel(level=v))}"
                for v in shown))
        share = max(int(c["frozen"].sel(training=t).sum("layer").max()) for t in frozen) / c.sizes["layer"] \
            if frozen else 0  # per seed: the union over seeds is not what any one run froze
        if share > 0.8:
            lines += ["", f"A reading that freezes {share:.0%} of the layers leaves only a few to train: \"selective\" "
                          "backpropagation is then close to freezing the network, and the random control, freezing "
                          "as many, tells whether the choice of layers matters."]
    return "\n".join(lines)


CLAIMS = (
    Claim("P8", "*As can be seen from the results, our proposed method, shown in teal, outperforms the networks "
                "trained using regular backpropagation training, shown in orange, when considering robustness to "
                "adversarial attacks.* (Sec. 5, Fig. 12); *We show that our synaptic filtering method improves the "
                "test accuracy of ResNet and ShuffleNet models on adversarial dataset when only the robust and "
                "antifragile parameters are selectively retrained at any given epoch, thus demonstrating applications "
                "of the proposed strategy in improving model robustness.* (Abstract; Sec. 1 likewise)",
          panels("12a mnist") + (Panel("12b", "resnet18", "cifar10"), Panel("12c", "resnet18", "tiny-imagenet"))
          + tuple(Panel("", "shufflenet_v2_x1_0", d) for d in ("mnist", "cifar10", "tiny-imagenet")),
          f"the mean gain in accuracy under FGSM of the prose reading over regular training (the original run "
          f"continued exactly), over ε/ε_E ∈ (0, 1], the continued checkpoints and seeds, is above +{MARGIN}", _p8,
          MARGIN, True, "fig12_selective", readings=("freeze", "gain", "against")),
    Claim("P9", "*Our proposed method shows to improve network robustness better on the CIFAR10 (Fig. 12b) and "
                "ImageNet Tiny (Fig. 12c) dataset compared to the MNIST (Fig. 12a) dataset.* (Sec. 5)",
          (Panel("12b", "resnet18", "cifar10", versus="mnist"), Panel("12c", "resnet18", "tiny-imagenet",
                                                                      versus="mnist")),
          "P8's statistic (the mean gain of the prose reading over regular training under FGSM, ε/ε_E ∈ (0, 1]) "
          "larger on the panel's data set than on MNIST: their difference above 0", _p9, 0.0, True,
          "fig12_selective", readings=("freeze", "gain", "against")),
)


def _choices(ds, model, dataset):
    have = ds["score"].sel(model=model, dataset=dataset).notnull()
    return {"layer": [str(n) for n, ok in zip(have["layer"].values, have.any("seed").values) if ok]}


STUDY = base.register(base.Study(
    name="selective", title="Selective backpropagation (Fig. 12)",
    settings={"models": base.Setting(None, base.models_rule()),
              "epoch": base.Setting(None, checks.whole(1)), "epochs": base.Setting(None, checks.whole(1)),
              "every": base.Setting(None, checks.whole(1)), "filter": base.Setting("h1", checks.one_of(
                  ("h1", "h2", "h3", "combined"))), "score": base.Setting("r_e", checks.one_of(("r_x", "r_xe", "r_e"))),
              "tol": base.Setting(0.02, checks.real(0)), "levels": base.Setting(11, checks.whole(2)),
              "readings": base.Setting(list(READINGS), checks.items(checks.one_of(READINGS)))},
    units=_units, run=_run, variables=("accuracy", "correct", "start_accuracy", "epsilon", "frozen", "score",
                                                "epsilon_E"),
    parameters=("model", "dataset", "seed"), figure=figure, summary=summary, claims=CLAIMS, validate=_validate,
    extra_choices=_choices))
chapters.register(chapters.Chapter("fig12_selective", figure, summary, study="selective",
                                   paper=dict(model="resnet18"), controls=("seed",), claims=CLAIMS))
