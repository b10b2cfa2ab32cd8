"""The machinery of the claims: a claim of the paper, the panels it names, the rule that decides it on each panel, the
interval of the rule's statistic, the verdict under every reading that could change it, and the claims table.

A `Claim` quotes the paper whole, names the panels its sentence names (Fig. 9/10: (a) ResNet-18, (b) ResNet-50,
(c) SqueezeNet 1.1, (d) ShuffleNet V2 ×1.0, each × MNIST / CIFAR10 / ImageNet Tiny) and carries its rule: a
statistic of the results, a threshold and the side of it on which the claim holds, all written down before the
results were looked at. The statistic is computed on every bootstrap replicate (`fragility.uncertainty`: test
images resampled within each unit, seeds resampled where there are several), so the verdict is

- ``holds`` when the whole interval lies on the claim's side of the threshold,
- ``differs`` when it lies wholly on the other side,
- ``inconclusive`` when it straddles the threshold (or the results are too few for the rule),
- ``untestable`` when the results do not hold the panel (the row names what would decide it).

Each verdict is also decided under every reading of `READINGS` that applies to its rule: the sign of r_ε (Eq. 16 as
printed, or the prose's reversed reading), the scaling of the responses (the paper's, or one that maps chance to 0 on
both curves), and — where the conventions study swept them — the attack (fixed, adaptive), BatchNorm while filtering
(running statistics, batch statistics) and ε (once per network, per checkpoint). The figure chapters and the studies
own their claims (each module registers them with its chapter); `claims(results)` collects them into one table.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from . import chapters, checks, metrics, uncertainty
from .scores import scores
from .store import layer_order, open_results
from .study import find_study

TAU = 0.02  # the tolerance of Fr / Ro / Af (the conclusion's ±2 %)
WORDS = {"Fr": "fragile", "Ro": "robust", "Af": "antifragile"}
VERDICTS = ("holds", "differs", "inconclusive", "untestable")
FIGURE_MODELS = {"a": "resnet18", "b": "resnet50", "c": "squeezenet1_1", "d": "shufflenet_v2_x1_0"}  # Fig. 9, 10
DATASETS = {"mnist": "MNIST", "cifar10": "CIFAR10", "tiny-imagenet": "ImageNet Tiny"}
PROFILES = {"mnist": "the reference (or mnist) profile", "cifar10": "the cifar10 profile (or paper)",
            "tiny-imagenet": "the tinyimagenet profile (or paper)"}


@dataclass(frozen=True)
class Panel:
    """A panel the paper names: a figure and letter (e.g. "10c"), its model and its dataset; `label` is "10c MNIST"."""

    figure: str
    model: str
    dataset: str
    versus: str | None = None  # a second data set the claim compares with (e.g. CIFAR10 against ImageNet Tiny)

    @property
    def label(self) -> str:
        name = f"{self.figure or self.model} {DATASETS.get(self.dataset, self.dataset)}"
        return f"{name} vs {DATASETS.get(self.versus, self.versus)}" if self.versus else name


def panels(spec: str) -> tuple[Panel, ...]:
    """Panels from the paper's own wording, e.g. "10a tiny-imagenet; 10c mnist cifar10 tiny-imagenet"."""
    out = []
    for part in spec.split(";"):
        head, *datasets = part.split()
        out += [Panel(head, FIGURE_MODELS[head[-1]], d) for d in datasets]
    return tuple(out)


@dataclass(frozen=True)
class Reading:
    """One way of reading the paper: `name` (e.g. "sign") and `value` (e.g. "prose"); the paper's is `DEFAULT`."""

    name: str
    value: str

    @property
    def label(self) -> str:
        return READING_LABELS[self.name, self.value]


READINGS = {"sign": ("printed", "prose"), "scaling": ("paper", "chance"), "attack": ("fixed", "adaptive"),
            "batchnorm": ("running", "batch"), "epsilon": ("once", "per-checkpoint"),
            # selective backpropagation (Fig. 12): which layers are frozen, the gain raw or relative, against what
            "freeze": ("prose", "equation", "random"), "gain": ("raw", "relative"), "against": ("regular", "random"),
            # the defense of seed 002: FGSM crafted against each (defended) network, or against the original one
            "defended": ("each network", "original")}
DEFAULT = {name: values[0] for name, values in READINGS.items()}
READING_LABELS = {
    ("sign", "printed"): "r_ε as Eq. 16 prints it (β̄_ε − β̄)", ("sign", "prose"): "r_ε's sign as the prose reads it",
    ("scaling", "paper"): "β / unperturbed accuracy", ("scaling", "chance"): "above-chance scaling",
    ("attack", "fixed"): "FGSM crafted once (fixed)", ("attack", "adaptive"): "FGSM per filtered network (adaptive)",
    ("batchnorm", "running"): "BatchNorm running statistics", ("batchnorm", "batch"): "BatchNorm batch statistics",
    ("epsilon", "once"): "ε searched once per network", ("epsilon", "per-checkpoint"): "ε searched per checkpoint",
    ("freeze", "prose"): "the prose's layers frozen", ("freeze", "equation"): "the equation's layers frozen",
    ("freeze", "random"): "as many random layers frozen", ("gain", "raw"): "raw gain",
    ("gain", "relative"): "gain relative to each arm's clean accuracy", ("against", "regular"): "against regular",
    ("against", "random"): "against the random control",
    ("defended", "each network"): "FGSM against each network", ("defended", "original"): "FGSM against the original"}
SWEPT = {"attack": "adaptive", "batchnorm": "batch", "epsilon": "epsilon"}  # readings the conventions study sweeps


class Untestable(Exception):
    """The results cannot decide a panel; the message says what would."""


class TooFew(Exception):
    """The results hold the panel but too few checkpoints (or seeds) for the rule: inconclusive, saying why."""


@dataclass(frozen=True)
class Outcome:
    """A rule's statistic on every bootstrap replicate (`samples`, dim "sample", sample 0 the point value) and the
    evidence text (the numbers the rule used, each with its interval)."""

    samples: xr.DataArray
    evidence: str


@dataclass(frozen=True)
class Claim:
    """A claim of the paper and the rule that decides it on each panel it names.

    `statistic(evidence, panel, reading) -> Outcome`; the claim holds on a panel when the statistic is above
    `threshold` (`above=True`) or below it. `readings` are the names in `READINGS` under which it is decided too.
    """

    id: str
    quote: str  # the paper's words, whole, and where (section, figure)
    panels: tuple[Panel, ...]
    rule: str
    statistic: Callable
    threshold: float
    above: bool
    chapter: str
    readings: tuple[str, ...] = ("scaling",)
    needs: str = ""  # what would decide the claim where no panel is held
    note: str = ""  # how the panels were read from the sentence (e.g. the "all" reading)
    own_readings: tuple[str, ...] = ()  # swept readings the statistic applies to its own data (not the conventions')


def label_of(value: float, tol: float = TAU) -> str:
    """Fr, Ro or Af of one score (— when it is not a number)."""
    return "—" if not np.isfinite(value) else "Fr" if value < -tol else "Af" if value > tol else "Ro"


def decide(low: float, high: float, threshold: float, above: bool) -> str:
    """The verdict of an interval against the rule's threshold (strictly above / below holds)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "inconclusive"
    if above:
        return "holds" if low > threshold else "differs" if high <= threshold else "inconclusive"
    return "holds" if high < threshold else "differs" if low >= threshold else "inconclusive"


def estimate(samples: xr.DataArray, fmt: str = "+.3f") -> str:
    """"value [low, high]" of a statistic over its replicates (the 95 % bootstrap interval)."""
    low, high = uncertainty.interval(samples)
    value = float(samples.sel(sample=0))
    return f"{value:{fmt}} [{float(low):{fmt}}, {float(high):{fmt}}]"


def occurrence(found: xr.DataArray) -> str:
    """A yes/no statistic (1 or 0 on each replicate) in words: "yes as stored; yes in 41 % of the 200 bootstrap
    replicates". Its percentile interval is [1, 1] when at least 97.5 % of the replicates say yes (holds against a
    threshold of 0.5), [0, 0] when at most 2.5 % do (differs), [0, 1] between (inconclusive)."""
    boot = found.sel(sample=found["sample"] > 0)
    return (f"{'yes' if float(found.sel(sample=0)) else 'no'} as stored; yes in {float(boot.mean()):.0%} of the "
            f"{boot.sizes['sample']} bootstrap replicates")


class Evidence:
    """What the rules read from one results folder, each piece computed once: the responses, their bootstrap
    replicates under each reading, the studies."""

    def __init__(self, results, samples: int = uncertainty.SAMPLES):
        self.folder = checks.folder(results, "results")
        self.samples = samples
        self.responses = open_results(self.folder)
        self._cache: dict = {}

    def _once(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def holds(self, model: str, dataset: str) -> bool:
        """Whether the results hold any unit of `model` on `dataset`."""
        ds = self.responses
        if model not in ds["model"].values or dataset not in ds["dataset"].values:
            return False
        return bool(ds[metrics.stored(ds)[1]].sel(model=model, dataset=dataset).notnull().any())

    def replicates(self, model: str, dataset: str, reading: Reading | None = None) -> xr.Dataset:
        """The responses of one panel with a `sample` dim: as stored, or as the conventions study swept them under
        a reading of the attack, BatchNorm or ε (then seed 0 and the checkpoints it swept, filter h1)."""
        if reading is None or reading.name not in SWEPT or reading.value == DEFAULT[reading.name]:
            return self._once(("stored", model, dataset), lambda: uncertainty.resample(
                self.folder, model, dataset, samples=self.samples))
        return self._once((reading, model, dataset), lambda: swept_reading(self, model, dataset, SWEPT[reading.name]))

    def scores(self, model: str, dataset: str, reading: Reading | None = None, filter: str = "h1",
               epochs=None) -> xr.Dataset:
        """r_x, r_xe, r_e (Eq. 14–16) of every layer (and `global`) by (sample, epoch, layer), mean over the
        replicate's seeds, under `reading`'s scaling; only `epochs` when given."""
        swept = reading if reading is not None and reading.name in SWEPT else None
        scaling = "chance" if reading is not None and (reading.name, reading.value) == ("scaling", "chance") \
            else "unperturbed"

        def compute():
            rs = self.replicates(model, dataset, swept)
            if epochs is not None:
                rs = rs.sel(epoch=list(epochs))
            r = scores(rs, filter=filter, scaling=scaling)
            return uncertainty.seed_mean(r.where(np.isfinite(r)), rs)
        return self._once(("scores", model, dataset, swept, scaling, filter, None if epochs is None else
                           tuple(epochs)), compute)

    def layers(self, model: str) -> list[str]:
        """The model's filterable layers in forward order (without `global`)."""
        return [n for n in layer_order(self.responses, model) if n != "global"]

    def study(self, name: str) -> xr.Dataset | None:
        """A study's combined units, or None when the results hold none (a damaged unit is named)."""
        return self._once(("study", name), lambda: find_study(self.folder, name))


def swept_reading(ev: Evidence, model: str, dataset: str, reading: str) -> xr.Dataset:
    """One reading's sweeps from the conventions study as bootstrap replicates (seed 0, the checkpoints it swept,
    filter h1), with the same image draws as the stored responses; `Untestable` when it was not swept here."""
    study = ev.study("conventions")
    if study is None or model not in study["model"].values or dataset not in study["dataset"].values \
            or reading not in study["reading"].values:
        raise Untestable(f"the conventions study with {model} and the {reading} reading")
    unit = study.sel(model=model, dataset=dataset, reading=reading).dropna("seed", how="all", subset=["accuracy"])
    unit = unit.dropna("epoch", how="all", subset=["accuracy"])
    if not unit.sizes.get("seed") or not unit.sizes.get("epoch"):
        raise Untestable(f"the conventions study with {model} and the {reading} reading")
    seed = int(unit["seed"][0])
    unit = unit.isel(seed=0, drop=True).dropna("layer", how="all", subset=["n_params"])
    weights = uncertainty.draws(unit.sizes["image"], ev.samples, np.random.default_rng(0))
    weights = xr.DataArray(weights / weights.sum(1, keepdims=True), dims=("sample", "image"))
    rs = xr.Dataset({"accuracy": xr.dot(unit["correct"].astype(float), weights, dim="image"),
                     "base_accuracy": xr.dot(unit["base_correct"].astype(float), weights, dim="image"),
                     "n_filtered": unit["n_filtered"], "n_params": unit["n_params"], "chance": unit["chance"]})
    rs = rs.expand_dims(seed=[seed]).transpose("sample", "seed", ...)
    rs["seed_weight"] = xr.DataArray(np.ones((ev.samples + 1, 1)), dims=("sample", "seed"))
    return rs.assign_coords(sample=np.arange(ev.samples + 1))


def row(claim: Claim, panel: Panel | None, verdict: str, evidence: str, value=np.nan, low=np.nan, high=np.nan,
        readings: str = "") -> dict:
    """One row of the claims table."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
    return {"id": claim.id, "panel": panel.label if panel else "", "claim": claim.quote, "rule": claim.rule,
            "evidence": evidence, "statistic": value, "interval": (low, high), "threshold": claim.threshold,
            "verdict": verdict, "readings": readings, "chapter": claim.chapter}


@dataclass(frozen=True)
class Decision:
    """A claim decided on one panel under one reading: its verdict, the statistic's value and interval, evidence."""

    verdict: str
    value: float
    low: float
    high: float
    evidence: str


def decision(claim: Claim, ev: Evidence, panel: Panel, reading: Reading | None = None) -> Decision:
    """The claim on a panel under a reading (None: the paper's); `Untestable` propagates."""
    try:
        out = claim.statistic(ev, panel, reading)
    except TooFew as why:
        return Decision("inconclusive", np.nan, np.nan, np.nan, str(why))
    low, high = (float(v) for v in uncertainty.interval(out.samples))
    return Decision(decide(low, high, claim.threshold, claim.above), float(out.samples.sel(sample=0)), low, high,
                    out.evidence)


class _Restricted(Evidence):
    """The stored responses restricted to the seed and checkpoints a swept reading covers, filter h1: the paper's
    reading on the same cells, to compare like with like."""

    def __init__(self, ev: Evidence, cells: xr.Dataset):
        self.folder, self.samples, self.responses, self._cache = ev.folder, ev.samples, ev.responses, {}
        self._ev, self._cells = ev, cells

    def replicates(self, model, dataset, reading=None):
        rs = self._ev.replicates(model, dataset)
        return rs.sel(seed=self._cells["seed"].values, epoch=self._cells["epoch"].values, filter=["h1"])

    def study(self, name):
        return self._ev.study(name)


def _readings(claim: Claim, ev: Evidence, panel: Panel, verdict: str) -> str:
    """"same under every reading" or which reading flips the verdict, with each reading's verdict."""
    flips, same, missing = [], [], []
    for name in claim.readings:
        for value in READINGS[name][1:]:
            reading = Reading(name, value)
            try:
                found = decision(claim, ev, panel, reading).verdict
                base, where = verdict, ""
                if name in SWEPT and name not in claim.own_readings:  # the paper's reading on the swept cells
                    cells = ev.replicates(panel.model, panel.dataset, reading)
                    base = decision(claim, _Restricted(ev, cells), panel).verdict
                    where = (f" on seed {int(cells['seed'][0])}, epoch(s) "
                             f"{', '.join(map(str, cells['epoch'].values))}; the paper's reading there: {base}")
            except Untestable:
                missing.append(reading.label)
                continue
            (same if found == base else flips).append(f"{reading.label}: {found}{where}")
    text = ("flips under " + "; ".join(flips)) if flips else "same under every reading"
    if same and flips:
        text += "; unchanged under " + "; ".join(same)
    elif same:
        text += " (" + "; ".join(same) + ")"
    if missing:
        text += "; not swept for this panel: " + ", ".join(missing)
    return text


def decide_claim(claim: Claim, ev: Evidence) -> list[dict]:
    """The rows of one claim: one per panel it names."""
    rows = []
    measured = metrics.stored(ev.responses)[0]
    for panel in claim.panels:
        if measured != "accuracy":  # the paper's statements are about top-1 accuracy; another response cannot decide
            rows.append(row(claim, panel, "untestable", f"needs top-1 accuracy: these results measure {measured}, "
                                                        "and the paper's statements are about top-1 accuracy"))
            continue
        if not ev.holds(panel.model, panel.dataset):
            rows.append(row(claim, panel, "untestable", f"needs {panel.model} on {panel.dataset}: "
                                                        f"{PROFILES.get(panel.dataset, 'a profile with it')}"))
            continue
        try:
            found = decision(claim, ev, panel)
        except Untestable as why:
            rows.append(row(claim, panel, "untestable", f"needs {why}"))
            continue
        rows.append(row(claim, panel, found.verdict, found.evidence + (f" {claim.note}" if claim.note else ""),
                        found.value, found.low, found.high, _readings(claim, ev, panel, found.verdict)))
    if not claim.panels:
        rows.append(row(claim, None, "untestable", f"needs {claim.needs}"))
    return rows


COLUMNS = ("id", "panel", "claim", "rule", "evidence", "statistic", "interval", "threshold", "verdict", "readings",
           "chapter")


def claims(results, samples: int = uncertainty.SAMPLES) -> pd.DataFrame:
    """Every claim of the paper and its related seeds, one row per claim and panel, decided on one results folder.

    Args:
        results: a results folder written by `fragility run`.
        samples: bootstrap replicates of the intervals.

    Returns:
        A DataFrame with the columns id, panel (e.g. "10c MNIST"), claim (the paper's words, whole, and where),
        rule, evidence (the numbers the rule used, each with its 95 % interval), statistic (the rule's statistic),
        interval (its bootstrap interval), threshold, verdict (holds / differs / inconclusive / untestable),
        readings ("same under every reading", or which reading flips the verdict) and chapter.

    Raises:
        FragilityError: no results under the folder, or a damaged, foreign or stale unit (named).

    Example:
        >>> fr.claims("results/reference")[["id", "panel", "verdict", "readings"]]
    """
    ev = Evidence(results, checks.count(samples, "samples"))
    found = [c for chapter in chapters.CHAPTERS.values() for c in chapter.claims]
    rows = [r for claim in sorted(found, key=lambda c: _number(c.id)) for r in decide_claim(claim, ev)]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _number(claim_id: str) -> tuple:
    """P2 < P2b < P10 < S2a: by letter, number, suffix."""
    digits = "".join(ch for ch in claim_id[1:] if ch.isdigit())
    return ("PS".find(claim_id[0]) % 3, int(digits or 0), claim_id)


def chapter_claims(results, chapter: str) -> str:
    """The claims a chapter owns, decided on `results` (a folder or an `Evidence`), as Markdown bullets."""
    ev = results if isinstance(results, Evidence) else Evidence(results)
    rows = [r for c in chapters.CHAPTERS[chapter].claims for r in decide_claim(c, ev)]
    return "\n".join(f"- **{r['id']}** {r['panel']} — **{r['verdict']}**: {r['evidence']} *Readings:* "
                     f"{r['readings'] or '—'}." for r in rows)
