"""Reports people act on: every layer's scores r_x, r_xe, r_e (Eq. 14–16) with their 95 % bootstrap intervals and
labels, as one tidy table, and the plain lists that pruning and selective-training tools take.

``fr.report(results)`` returns a `Report`, a pandas DataFrame with one row per (model, dataset, layer, score):

=============  ==========================================================================================
column         meaning
=============  ==========================================================================================
model          the model
dataset        the data set
epoch          the checkpoint scored (default: each model's last stored one)
layer          the layer's qualified module name (``global``: the whole network at once, last)
layer_index    its forward position (0 the first filterable layer, ``global`` last)
n_params       its filterable weights (every one of them for ``global``)
score          ``r_x`` (Eq. 14, clean), ``r_xe`` (Eq. 15, adversarial) or ``r_e`` (Eq. 16, their difference)
value          the score's mean over the stored seeds (`fragility.selection.layer_scores`)
low, high      its 95 % percentile bootstrap interval: test images resampled within each unit and seeds resampled
               (`fragility.uncertainty`, the same replicates as the claims); NaN where the units hold no per-image
               results
label          Fr (value < −τ), Ro (|value| ≤ τ) or Af (value > τ), τ = 0.02 (`fragility.characterize`); "" for a
               NaN score
decided        the label again when it holds over the whole interval (Fr: high < −τ; Af: low > τ; Ro: −τ ≤ low
               and high ≤ τ); "—" when the interval crosses ±τ (the label is not settled at that confidence);
               "no interval" when the units hold no per-image results; "" for a NaN score
=============  ==========================================================================================

Its methods turn it into what tools take — plain Python lists and dicts, no dependency on any tool:

- ``top(n, label, score)``: the n most fragile (robust, antifragile) layers;
- ``freeze_list()``: the layers to freeze for selective training, chosen as `fragility.studies.selective` does;
- ``ignored_layers()``: the fragile layers, which a pruning tool should leave alone;
- ``pruning_ratios()``: a prune ratio per layer, read from the stored sweep (the rule is in its docstring);
- ``to_csv(path)``, ``to_markdown(path)``: the table, written atomically (with no path: returned as text).

Example:
    >>> rep = fr.report("results/quick")
    >>> rep.top(3, label="Fr")                      # the three most fragile layers under r_x
    >>> rep.ignored_layers(), rep.pruning_ratios()  # for a pruning tool
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from . import checks, files, metrics, store, uncertainty
from .errors import FragilityError
from .scores import LABELS, SCALINGS, characterize, scaled, scores
from .selection import INPUTS, choices, filters, layer_scores, values
from .studies import selective
from .verdicts import TAU

COLUMNS = ("model", "dataset", "epoch", "layer", "layer_index", "n_params", "score", "value", "low", "high", "label",
           "decided")
SCORES = ("r_x", "r_xe", "r_e")
UNDECIDED = "—"
NO_INTERVAL = "no interval"
PRUNING_FILTERS = ("h1", "h2")  # the filters that remove more weights at every threshold (h3 moves a window)
FREEZE_READINGS = ("prose", "equation")
MARK = "<!-- fragility report -->"  # the first line of a Markdown report: a file `to_markdown` may replace


def settle(label: np.ndarray, low: np.ndarray, high: np.ndarray, tol: float, intervals: bool = True) -> np.ndarray:
    """The `decided` column: the label where the whole interval [low, high] lies on its side of ±tol, else "—";
    "no interval" where there are no intervals; "" where there is no label."""
    low, high, label = np.asarray(low, float), np.asarray(high, float), np.asarray(label, dtype=object)
    holds = {"Fr": high < -tol, "Af": low > tol, "Ro": (low >= -tol) & (high <= tol)}
    out = np.full(label.shape, UNDECIDED if intervals else NO_INTERVAL, dtype=object)
    for name, where in holds.items():
        out[(label == name) & where] = name
    out[label == ""] = ""
    return out


def _pairs(ds: xr.Dataset, model, dataset) -> list[tuple[str, str]]:
    """The (model, dataset) pairs selected, each checked against what the results hold."""
    models = values(ds, "model")
    chosen = list(checks.names(model, "model", models)) if model is not None else models
    held = {m: choices(ds, m)["dataset"] for m in chosen}
    every = sorted({d for found in held.values() for d in found})
    if dataset is None:
        return [(m, d) for m in chosen for d in held[m]]
    if model is None:
        wanted = checks.names(dataset, "dataset", every)
    else:
        wanted = [checks.names(dataset, f"dataset of {m}", held[m]) for m in chosen][0]
    return [(m, d) for m in chosen for d in held[m] if d in wanted]


def _epochs(ds: xr.Dataset, pairs, epoch) -> dict[tuple[str, str], int]:
    """The checkpoint of each pair: `epoch` where every pair stored it, else each pair's last."""
    stored = {pair: [int(e) for e in choices(ds, *pair)["epoch"]] for pair in pairs}
    if epoch is None:
        return {pair: found[-1] for pair, found in stored.items()}
    checks.require(epoch, checks.whole(0), "epoch")
    for (m, d), found in stored.items():
        if int(epoch) not in found:
            raise FragilityError(f"epoch must be a checkpoint stored for {m} on {d}: one of "
                                 f"{', '.join(map(str, found))} (None: the last); got {epoch!r}.")
    return {pair: int(epoch) for pair in pairs}


def _filter(ds: xr.Dataset, filter) -> str:
    return checks.require(filter, checks.one_of(filters(ds)), "filter")


def _per_image(headers: dict, model: str, dataset: str) -> bool:
    """Whether every unit of (model, dataset) holds the per-image results the intervals resample."""
    return all(set(store.per_image(h.attrs)) <= set(h.variables) for k, h in headers.items()
               if k[:2] == (model, dataset))


def _rows(ds, folder, headers, model, dataset, epoch, filter, scaling, tol, samples, level) -> pd.DataFrame:
    """The rows of one (model, dataset) at one checkpoint."""
    r = layer_scores(ds, model, dataset, filter=filter, scaling=scaling).sel(epoch=epoch)
    layers = [str(n) for n in r["layer"].values]
    intervals = _per_image(headers, model, dataset)
    if intervals:
        rs = uncertainty.resample(folder, model, dataset, samples=samples).sel(epoch=[epoch])
        boot = scores(rs, filter=filter, scaling=scaling)
        boot = uncertainty.seed_mean(boot.where(np.isfinite(boot)), rs).isel(epoch=0).sel(layer=layers)
    n_params = ds["n_params"].sel(model=model, dataset=dataset, epoch=epoch, layer=layers).max("seed").values
    n_params = n_params.astype(np.int64) if np.isfinite(n_params).all() else n_params
    frames = []
    for name in SCORES:
        value = r[name].values
        low = high = np.full(len(layers), np.nan)
        if intervals:
            with warnings.catch_warnings():  # a NaN score (an unperturbed accuracy of 0) has a NaN interval
                warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
                low, high = (b.values for b in uncertainty.interval(boot[name], level))
        label = characterize(r[name], tol).values.astype(object)
        frames.append(pd.DataFrame({
            "model": model, "dataset": dataset, "epoch": epoch, "layer": layers, "layer_index": np.arange(len(layers)),
            "n_params": n_params, "score": name, "value": value, "low": low, "high": high, "label": label,
            "decided": settle(label, low, high, tol, intervals)}))
    table = pd.concat(frames, ignore_index=True)
    order = table["score"].map({s: i for i, s in enumerate(SCORES)})
    return table.assign(_order=order).sort_values(["layer_index", "_order"], kind="stable").drop(columns="_order")


def report(results, model=None, dataset=None, filter: str = "h1", epoch: int | None = None,
           scaling: str = "unperturbed", *, tol: float = TAU, samples: int = uncertainty.SAMPLES,
           level: float = uncertainty.LEVEL) -> Report:
    """Every layer's scores with their intervals and labels, one tidy row per (model, dataset, layer, score).

    Args:
        results: a results folder written by `fragility run` (any profile).
        model: a model name or a list of them (None: every model stored).
        dataset: a data set name or a list of them (None: every data set each model was run on).
        filter: "h1" (default), "h2", "h3" or "combined" (Eq. 13): the filter the scores are computed from.
        epoch: the checkpoint to score; None (default): each model's last stored checkpoint.
        scaling: "unperturbed" (the paper), "first" or "chance" (see `fragility.scaled`).
        tol: the tolerance τ of the labels (the paper's ±2 %).
        samples: bootstrap replicates of the intervals.
        level: the intervals' coverage.

    Returns:
        A `Report` (a pandas DataFrame) with the columns of this module's docstring, rows by model, dataset, layer
        in forward order (``global`` last) and score (r_x, r_xe, r_e). ``attrs`` records the results folder, filter,
        scaling, tol, samples, level, the metric the scores are computed from (``metric``: "accuracy", top-1, unless
        the results were swept with another, `fragility.metrics`; ``higher_is_better``) and, where intervals are
        missing, why.

    Raises:
        FragilityError: a results folder that holds no responses (or a damaged unit); a model, dataset, filter,
            epoch or scaling the results do not hold (the error names the accepted values) — all checked before
            anything is computed.

    Example:
        >>> fr.report("results/reference", model="resnet18").top(5, label="Fr")
    """
    folder = checks.folder(results, "results")
    ds = store.open_results(folder)
    pairs = _pairs(ds, model, dataset)
    filter = _filter(ds, filter)
    lacking = sorted({m for m, _ in pairs if filter not in filters(ds, m)})  # swept with fewer filters
    if lacking and (model is not None or set(lacking) == {m for m, _ in pairs}):
        raise FragilityError(f"filter {filter!r} was not swept for {', '.join(lacking)}: choose from "
                             f"{', '.join(filters(ds, lacking[0]))}, or leave those models out.")
    pairs = [(m, d) for m, d in pairs if m not in lacking]
    epochs = _epochs(ds, pairs, epoch)
    checks.require(scaling, checks.one_of(SCALINGS), "scaling")
    if scaling == "chance" and "chance" not in ds:
        raise FragilityError("scaling 'chance' needs the sweeps' `chance`, which these results lack: choose "
                             "'unperturbed' or 'first'.")
    tol = checks.number(tol, "tol", low=0)
    samples = checks.count(samples, "samples")
    level = checks.number(level, "level", 0, 1, open_low=True, open_high=True)
    headers = store.scan(folder)
    tables = [_rows(ds, folder, headers, m, d, epochs[m, d], filter, scaling, tol, samples, level) for m, d in pairs]
    out = Report(pd.concat(tables, ignore_index=True)[list(COLUMNS)])
    missing = [f"{m} on {d}" for m, d in pairs if not _per_image(headers, m, d)]
    name, _, higher = metrics.stored(ds)
    out.attrs.update(results=str(folder.resolve()), filter=filter, scaling=scaling, tol=tol, samples=samples,
                     metric=name, higher_is_better=higher,
                     level=level, intervals=(f"no intervals for {', '.join(missing)}: its units hold no per-image "
                                             "results (stored by an older version)") if missing else "")
    return out


class Report(pd.DataFrame):
    """The table `report` returns: a pandas DataFrame (select, sort, plot it as any other) with the methods below.

    Each method that concerns one network takes `model` and `dataset`, which may be left None when the report holds
    one of each. `global` (the whole network) is never listed as a layer by them.
    """

    @property
    def _constructor(self):
        return Report

    def _layers(self, model, dataset) -> pd.DataFrame:
        """The rows of one (model, dataset), `global` left out."""
        for column in ("model", "dataset", "layer", "score", "value", "label", "decided"):
            if column not in self.columns:
                raise FragilityError(f"this table lacks the column {column!r}: use the table fr.report returned.")
        models = list(dict.fromkeys(self["model"]))
        if model is None and len(models) != 1:
            raise FragilityError(f"model must be named: this report holds {', '.join(map(str, models))}.")
        model = checks.require(models[0] if model is None else model, checks.one_of(models), "model")
        rows = self[self["model"] == model]
        datasets = list(dict.fromkeys(rows["dataset"]))
        if dataset is None and len(datasets) != 1:
            raise FragilityError(f"dataset must be named: this report holds {model} on {', '.join(datasets)}.")
        dataset = checks.require(datasets[0] if dataset is None else dataset, checks.one_of(datasets), "dataset")
        return rows[(rows["dataset"] == dataset) & (rows["layer"] != "global")]

    def _tol(self) -> float:
        return float(self.attrs.get("tol", TAU))

    def top(self, n: int = 5, label: str = "Fr", score: str = "r_x", decided: bool = False) -> Report:
        """The `n` most fragile ("Fr": most negative first), robust ("Ro": nearest 0 first) or antifragile ("Af":
        most positive first) layers under `score`, over every model and dataset of the report (`global` left out);
        only those whose label is decided over the interval when `decided`."""
        n = checks.count(n, "n")
        label = checks.require(label, checks.one_of(LABELS), "label")
        score = checks.require(score, checks.one_of(SCORES), "score")
        decided = checks.flag(decided, "decided")
        rows = self[(self["score"] == score) & (self["label"] == label) & (self["layer"] != "global")]
        if decided:
            rows = rows[rows["decided"] == label]
        key = {"Fr": rows["value"], "Af": -rows["value"], "Ro": rows["value"].abs()}[label]
        return rows.assign(_key=key.values).sort_values("_key", kind="stable").drop(columns="_key").head(n)

    def freeze_list(self, model=None, dataset=None, reading: str = "prose", score: str = "r_e",
                    decided: bool = False) -> list[str]:
        """The layers to freeze for selective training (the paper's Sec. 5, Fig. 12), chosen as
        `fragility.studies.selective.frozen_layers` chooses them from the same scores and τ:

        - "prose" (default, the study's): the layers the paper's prose calls fragile, whose filtering degrades the
          clean response more than the adversarial one, r_ε > +τ with Eq. 16 as printed;
        - "equation": the layers labelled Fr by Eq. 16 as printed, r_ε < −τ.

        Only layers whose label is decided over the interval when `decided`. Returns layer names in forward order.
        """
        reading = checks.require(reading, checks.one_of(FREEZE_READINGS), "reading")
        score = checks.require(score, checks.one_of(SCORES), "score")
        decided = checks.flag(decided, "decided")
        rows = self._layers(model, dataset)
        rows = rows[rows["score"] == score]
        table = xr.Dataset({score: ("layer", rows["value"].to_numpy(float))}, coords={"layer": rows["layer"].values})
        frozen = selective.frozen_layers(table, reading, score, self._tol())
        if decided:
            sure = set(rows.loc[rows["decided"] == rows["label"], "layer"])
            frozen = [name for name in frozen if name in sure]
        return [str(name) for name in frozen]

    def ignored_layers(self, model=None, dataset=None, score="r_x", decided: bool = False) -> list[str]:
        """The fragile layers, which a pruning tool should leave alone: labelled Fr under `score` (a score name or
        a list of them: Fr under any; default r_x, the clean accuracy), only where decided when `decided`. Layer
        names in forward order."""
        wanted = checks.names(score, "score", SCORES)
        decided = checks.flag(decided, "decided")
        rows = self._layers(model, dataset)
        rows = rows[rows["score"].isin(wanted) & (rows["label"] == "Fr")]
        if decided:
            rows = rows[rows["decided"] == "Fr"]
        return [str(name) for name in dict.fromkeys(rows["layer"])]

    def pruning_ratios(self, model=None, dataset=None, filter: str = "h1", max_drop: float = 0.02,
                       input: str = "clean") -> dict[str, float]:
        """A prune ratio per layer (forward order), read from the stored sweep of the report's checkpoint.

        Rule: a layer's ratio is the share of its weights the filter removed, n_filtered / n_params (mean over
        seeds), at the largest threshold α_i up to which its accuracy (mean over seeds, scaled by the unperturbed
        network's: β̄ of Sec. 4.2) stays at or above 1 − `max_drop` at every threshold α_0 … α_i; 0.0 when the
        first threshold already drops more (or the accuracy is undefined). Robust and antifragile layers keep
        their accuracy further along the sweep, so they get larger ratios; 1.0 means the network kept its
        accuracy with every weight of the layer removed (a skip connection or BatchNorm carries it, Fig. 11).
        The filter is h1 (removes the lowest weights first) or h2 (the highest first): the ratio is a budget
        measured under that filter; a pruning tool that removes weights by another criterion (e.g. magnitude)
        applies it with its own.
        """
        filter = checks.require(filter, checks.one_of(PRUNING_FILTERS), "filter")
        max_drop = checks.number(max_drop, "max_drop", 0, 1, open_high=True)
        input = checks.require(input, checks.one_of(INPUTS), "input")
        rows = self._layers(model, dataset)
        if "results" not in self.attrs or "epoch" not in rows:
            raise FragilityError("pruning_ratios reads the stored sweep: use the table fr.report returned (its "
                                 "attrs name the results folder).")
        ds = store.open_results(checks.folder(self.attrs["results"], "the report's results folder"))
        model, dataset, epoch = rows["model"].iloc[0], rows["dataset"].iloc[0], int(rows["epoch"].iloc[0])
        layers = list(dict.fromkeys(rows["layer"]))
        swept = [f for f in filters(ds, model) if f != "combined"]
        if filter not in swept:
            raise FragilityError(f"filter must be h1 or h2 and swept for {model} in these results, which hold "
                                 f"{', '.join(swept)}; got {filter!r}.")
        sub = ds.sel(model=model, dataset=dataset, epoch=epoch, layer=layers).sel(filter=filter).load()
        response = scaled(sub).sel(input=input).mean("seed")  # the metric's, oriented (fragility.scores)
        share = (sub["n_filtered"] / sub["n_params"]).mean("seed")
        kept = np.logical_and.accumulate((response >= 1 - max_drop).transpose("layer", "alpha").values, axis=1)
        last = kept.sum(1) - 1  # the last threshold of the leading run that keeps the accuracy
        share = share.transpose("layer", "alpha").values
        return {name: (float(share[k, last[k]]) if last[k] >= 0 else 0.0) for k, name in enumerate(layers)}

    def to_csv(self, path=None):
        """The table as CSV (comma-separated, a header row, no index): written atomically to `path` (returned), or
        returned as text when `path` is None. An existing file is replaced only when it is a CSV report this library
        wrote (its header is this table's); anything else is refused."""
        if path is None:
            return pd.DataFrame(self).to_csv(index=False)
        path = target(path, "csv")
        return files.atomic(path, lambda tmp: pd.DataFrame(self).to_csv(tmp, index=False))

    def to_markdown(self, path=None, digits: int = 3):
        """The table as Markdown (a plain pipe table, no extra dependency): value and interval rounded to `digits`
        decimals. Written atomically to `path` (returned), or returned as text when `path` is None. An existing
        file is replaced only when it is a Markdown report this library wrote."""
        digits = checks.count(digits, "digits", 0)
        text = markdown(self, digits)
        if path is None:
            return text
        path = target(path, "markdown")

        def write(tmp):
            Path(tmp).write_text(f"{MARK}\n{text}")
        return files.atomic(path, write)


def _number(value, digits: int) -> str:
    """`value` with a sign and `digits` decimals ("" when not a number); a value that rounds to 0 is "+0.000"."""
    return "" if not np.isfinite(value) else f"{round(float(value), digits) + 0.0:+.{digits}f}"


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A report's rows as a Markdown pipe table: model, dataset, epoch, layer, score, value, 95 % interval, label,
    decided."""
    header = ["model", "dataset", "epoch", "layer", "score", "value", "interval", "label", "decided"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for row in table.itertuples(index=False):
        interval = "" if not (np.isfinite(row.low) and np.isfinite(row.high)) else \
            f"[{_number(row.low, digits)}, {_number(row.high, digits)}]"
        cells = [row.model, row.dataset, row.epoch, row.layer, row.score, _number(row.value, digits), interval,
                 row.label, row.decided]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _first_line(path: Path) -> str:
    with open(path, errors="replace") as f:
        return f.readline(4096).strip()


FORMATS = ("csv", "markdown")


def target(path, format: str, name: str = "path") -> Path:
    """`path` checked for writing a report in `format` ("csv" or "markdown"): a file (not a folder) in a folder that
    can be written to, and — when it exists — a report this library wrote in that format (a CSV whose header is
    this table's, a Markdown file that starts with its mark), never a user's file."""
    format = checks.require(format, checks.one_of(FORMATS), "format")
    ours = {"csv": ",".join(COLUMNS), "markdown": MARK}[format]
    path = checks.path(path, name)
    if path.is_dir():
        raise FragilityError(f"{name} {path} is a folder: name a file.")
    checks.folder(path.parent, f"the folder of {name}", create=True)
    if os.path.lexists(path):
        try:
            mine = path.is_file() and not path.is_symlink() and _first_line(path) == ours
        except OSError:
            mine = False
        if not mine:
            raise FragilityError(f"{name} {path} exists and is not a {format} report fragility wrote: choose another "
                                 "file name (or move that file away).")
    return path
