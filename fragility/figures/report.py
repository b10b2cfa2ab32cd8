"""The report chapter ("Your network"): for each model and data set of a results folder — the paper's networks or
one's own — every layer's scores r_x, r_xε, r_ε (Eq. 14–16) with their 95 % intervals and labels, its most
fragile, robust and antifragile layers, and what tools take (the freeze list, the layers a pruner should ignore,
a prune ratio per layer) as Python to copy, all from `fragility.report`.

When `python -m fragility.book execute` runs the chapter, the report is also written as CSV and Markdown (atomically,
`Report.to_csv` / `to_markdown`) into <executed notebooks>/_extra/report/, which the book copies to <site>/report/:
the chapter links them.
"""
from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

from .. import chapters, checks
from ..errors import FragilityError
from ..plot import draw
from ..plot.draw import SCORES as TEX
from ..report import SCORES, UNDECIDED, Report, report as layer_report
from ..selection import check_parameters, filters, select
from ..store import open_results
from ..verdicts import TAU, WORDS

VIEWS = "FRAGILITY_VIEWS"  # set by `fragility.book.execute`: <executed notebooks>/_extra/views
EXPORTS = "report"  # <executed notebooks>/_extra/report/, served at <site>/report/
PREFIX = "../../report/"  # from a page of book/_executed/ to the site's report folder
FILES = {"csv": "report.csv", "markdown": "report.md"}
NAMES = {"r_x": "r_x", "r_xe": "r_xε", "r_e": "r_ε"}
EQUATIONS = {"r_x": "Eq. 14, clean", "r_xe": "Eq. 15, adversarial", "r_e": "Eq. 16, their difference"}
COLOURS = {"Fr": "tab:red", "Ro": "0.35", "Af": "tab:blue"}
TOP = 3  # layers listed per label and score
BAND = "robust band ±τ"
LEGEND = 0.45  # inches below the panels for the legend (two rows), above the provenance line


@draw.styled
def figure(results, model=None, filter="h1"):
    """Every layer of one model (default the first) on each of its data sets, at each one's last stored checkpoint:
    r_x, r_xε and r_ε (Eq. 14–16) with their 95 % intervals, coloured by label (`plot_scores`)."""
    folder = checks.folder(results, "results")
    ds = open_results(folder)
    model = check_parameters(ds, model=model)["model"]
    table = layer_report(folder, model=model, filter=filter)
    pairs = list(dict.fromkeys(zip(table["dataset"], table["epoch"])))
    rows = [int((table["dataset"] == d).sum() // len(SCORES)) for d, _ in pairs]
    height = 1.4 + LEGEND + sum(1.1 + 0.22 * n for n in rows)
    fig = draw.figure(select(ds, model),
                      f"{model}: every layer's scores and their 95 % intervals · {table.attrs['filter']}", height)
    fig.get_layout_engine().set(rect=(0, (0.25 + LEGEND) / height, 1, 1 - (0.25 + LEGEND) / height))
    axes = fig.subplots(len(pairs), len(SCORES), squeeze=False, sharey="row", height_ratios=rows)
    for row, (dataset, epoch) in zip(axes, pairs):
        plot_scores(table[table["dataset"] == dataset], ax=row)
        row[0].set_ylabel(f"{dataset} · epoch {epoch}")
    shown = {label: handle for axis in axes.flat for handle, label in zip(*axis.get_legend_handles_labels())}
    order = [f"{WORDS[k]}{s}" for k in COLOURS for s in ("", ", not settled")] + [BAND]
    labels = sorted(shown, key=lambda t: order.index(t) if t in order else len(order))
    fig.legend([shown[t] for t in labels], labels, loc="lower center", bbox_to_anchor=(0.5, 0.22 / height),
               ncol=min(4, len(labels)), fontsize=8, frameon=False)
    return fig


def plot_scores(table, *, ax) -> None:
    """One network's row of the report chapter's figure on three Axes (r_x, r_xε, r_ε): each layer's score (a dot,
    filled when its label holds over the whole interval) and its 95 % interval (a line), coloured by label (Fr red,
    Ro grey, Af blue), the band ±τ shaded; layers top to bottom in forward order, `global` last. The artists carry
    labels for a legend (`figure` draws one for the whole figure).

    Args:
        table: the rows of one model and data set of `fragility.report(...)` (a `Report` or a DataFrame with its
            columns), every layer with the three scores.
        ax: the three Axes to draw into.
    """
    Report(table)._layers(None, None)  # one model and data set, or one FragilityError saying which
    layers = list(dict.fromkeys(table["layer"]))
    if len(table) != len(layers) * len(SCORES) or set(table["score"]) != set(SCORES):
        raise FragilityError(f"table must hold r_x, r_xe and r_e once per layer; got {len(table)} rows for "
                              f"{len(layers)} layer(s): pass the rows of fr.report for one model and data set.")
    tol = float(table.attrs.get("tol", TAU)) if hasattr(table, "attrs") else TAU
    axes = draw.axes(ax, len(SCORES))
    y = np.arange(len(layers))
    for k, (axis, score) in enumerate(zip(axes, SCORES)):
        rows = table[table["score"] == score].set_index("layer").loc[layers]
        axis.axvspan(-tol, tol, color="0.92", zorder=0, label=BAND)
        axis.axvline(0, color="0.5", lw=0.8, zorder=1)
        for label, colour in COLOURS.items():
            here = (rows["label"] == label).to_numpy()
            if not here.any():
                continue
            axis.hlines(y[here], rows["low"].to_numpy(float)[here], rows["high"].to_numpy(float)[here],
                        color=colour, lw=1.6, zorder=2)
            sure = here & (rows["decided"] == label).to_numpy()
            axis.plot(rows["value"].to_numpy(float)[sure], y[sure], "o", color=colour, ms=5, zorder=3,
                      label=WORDS[label])
            axis.plot(rows["value"].to_numpy(float)[here & ~sure], y[here & ~sure], "o", mfc="white", color=colour,
                      ms=5, zorder=3, label=f"{WORDS[label]}, not settled")
        axis.set_yticks(y, layers)
        axis.tick_params(axis="y", labelleft=k == 0)
        axis.set_ylim(len(layers) - 0.5, -0.5)
        axis.grid(axis="x", alpha=0.3)
        axis.set(title=f"{TEX[score]} ({EQUATIONS[score]})", xlabel="score")


def _signed(value) -> str:
    return "—" if not np.isfinite(value) else f"{round(float(value), 3) + 0.0:+.3f}"


def _cell(row) -> str:
    """A score, its interval and its label (✓ when the label holds over the whole interval, ? when the interval
    crosses ±τ)."""
    if not row.label:
        return "<td>—</td>"
    interval = f" <small>[{_signed(row.low)}, {_signed(row.high)}]</small>" if np.isfinite(row.low) else ""
    mark = " ✓" if row.decided == row.label else " ?" if row.decided == UNDECIDED else ""
    return f"<td>{_signed(row.value)}{interval} <b class='label-{row.label}'>{row.label}</b>{mark}</td>"


def table_html(table: Report) -> str:
    """One network's rows as an HTML table, one row per layer: its forward position, name, weights and the three
    scores with their intervals and labels (one line per row, as a Markdown HTML block)."""
    head = "".join(f"<th>{NAMES[s]} <small>({EQUATIONS[s]})</small></th>" for s in SCORES)
    lines = ["<table class='fragility-report'>",
             f"<thead><tr><th>#</th><th>layer</th><th>weights</th>{head}</tr></thead><tbody>"]
    for layer, rows in table.groupby("layer", sort=False):
        first = rows.iloc[0]
        cells = {r.score: _cell(r) for r in rows.itertuples()}
        name = "<i>global</i> (the whole network)" if layer == "global" else f"<code>{html.escape(layer)}</code>"
        index = "" if layer == "global" else int(first["layer_index"])
        weights = f"{int(first['n_params']):,}" if np.isfinite(first["n_params"]) else "—"
        lines.append(f"<tr><td>{index}</td><td>{name}</td><td>{weights}</td>{''.join(cells[s] for s in SCORES)}</tr>")
    return "\n".join(lines + ["</tbody></table>"])


def top_html(table: Report, n: int = TOP) -> str:
    """The `n` most fragile, robust and antifragile layers under each score (`Report.top`), as an HTML table."""
    head = "".join(f"<th>{NAMES[s]}</th>" for s in SCORES)
    lines = [f"<table class='fragility-top'><thead><tr><th></th>{head}</tr></thead><tbody>"]
    for label in COLOURS:
        cells = []
        for score in SCORES:
            found = table.top(n, label=label, score=score)
            listed = ", ".join(f"<code>{html.escape(r.layer)}</code> {_signed(r.value)}"
                               + (" ✓" if r.decided == label else "") for r in found.itertuples())
            cells.append(f"<td>{listed or 'none'}</td>")
        lines.append(f"<tr><th>most {WORDS[label]} ({label})</th>{''.join(cells)}</tr>")
    return "\n".join(lines + ["</tbody></table>"])


def _python(name: str, value, comment: str) -> str:
    """`name = value` after its comment: on one line when it fits in 100 characters, else one item per line."""
    text = f"{name} = {value!r}"
    if len(text) > 100:
        items = [f"{k!r}: {v!r}" for k, v in value.items()] if isinstance(value, dict) else [repr(v) for v in value]
        ends = "{}" if isinstance(value, dict) else "[]"
        text = f"{name} = {ends[0]}\n" + "".join(f"    {item},\n" for item in items) + ends[1]
    return f"# {comment}\n{text}"


def conversions(table: Report, shown: str) -> str:
    """The lists and ratios tools take for one network, as Python to copy, each with the call that gives it."""
    model, dataset = str(table["model"].iloc[0]), str(table["dataset"].iloc[0])
    args = f"{model!r}, {dataset!r}"
    swept = [f for f in ("h1", "h2") if f in filters(open_results(table.attrs["results"]), model)]
    pieces = [f"import fragility as fr\n\nrep = fr.report({shown!r}, filter={table.attrs['filter']!r})  "
              f"# this table (every model and data set)",
              _python("freeze", table.freeze_list(model, dataset),
                      f"rep.freeze_list({args}): the layers to keep fixed while the rest retrains\n"
                      "# (Sec. 5, Fig. 12: r_ε > +τ, the layers the paper's prose calls fragile)"),
              _python("ignored_layers", table.ignored_layers(model, dataset),
                      f"rep.ignored_layers({args}): fragile under r_x (< −τ), for a pruner to leave alone")]
    if swept:
        ratios = {k: round(v, 3) for k, v in table.pruning_ratios(model, dataset, filter=swept[0]).items()}
        pieces.append(_python("pruning_ratios", ratios,
                              f"rep.pruning_ratios({args}, filter={swept[0]!r}): per layer, the share of its "
                              f"weights\n# {swept[0]} removed with the accuracy still within 2 % of the unperturbed "
                              "network's"))
    else:
        pieces.append("# rep.pruning_ratios needs a sweep with filter h1 or h2, which these results lack")
    return "```python\n" + "\n\n".join(pieces) + "\n```"


def exports(table: Report, folder) -> dict[str, Path]:
    """Write `table` as CSV and Markdown into `folder` (created; each file atomic, replacing only a report this
    library wrote): {"csv": path, "markdown": path}."""
    folder = checks.folder(folder, "folder", create=True)
    return {"csv": table.to_csv(folder / FILES["csv"]), "markdown": table.to_markdown(folder / FILES["markdown"])}


def _exports_text(table: Report) -> str:
    """Links to the CSV and Markdown written beside the executed notebook, or how to write them."""
    if os.environ.get(VIEWS):
        exports(table, Path(os.environ[VIEWS]).parent / EXPORTS)
        links = " · ".join(f"<a href='{PREFIX}{name}' download>{name}</a>" for name in FILES.values())
        return (f"<p>The whole table: {links} (<code>rep.to_csv(path)</code>, <code>rep.to_markdown(path)"
                "</code>).</p>")
    return ("<p>The whole table as files: <code>rep.to_csv(\"report.csv\")</code>, "
            "<code>rep.to_markdown(\"report.md\")</code>.</p>")


def summary(results, model=None, filter="h1", **_selections) -> str:
    """For each model and data set (`model`: one of them, None: every one): the report's table, its top layers and
    the conversions, as Markdown with HTML blocks; under `fragility.book.execute`, the CSV and Markdown exports
    written and linked."""
    folder = checks.folder(results, "results")
    table = layer_report(folder, model=model, filter=filter)
    shown, tol = str(results), float(table.attrs["tol"])
    networks = len(set(zip(table["model"], table["dataset"])))
    parts = [f"{networks} network(s) of `{shown}`, filter {table.attrs['filter']}, labels at τ = {tol:g} "
             "(Fr < −τ ≤ Ro ≤ τ < Af); intervals: 95 % bootstrap over the test images and "
             f"seeds ({table.attrs['samples']} replicates). ✓: the label holds over the whole interval; ?: the "
             "interval crosses ±τ."]
    if table.attrs.get("intervals"):
        parts.append(f"*{table.attrs['intervals']}.*")
    for (model_, dataset), rows in table.groupby(["model", "dataset"], sort=False):
        rows = Report(rows)
        rows.attrs = dict(table.attrs)
        epochs = sorted({int(e) for e in rows["epoch"]})
        n = len(set(rows["layer"]) - {"global"})
        parts += [f"**{model_} on {dataset}**, epoch {', '.join(map(str, epochs))}: {n} layer(s)",
                  table_html(rows), f"Its most fragile, robust and antifragile layers (up to {TOP} per score):",
                  top_html(rows), "What tools take:", conversions(rows, shown)]
    parts.append(_exports_text(table))
    return "\n\n".join(parts)


chapters.register(chapters.Chapter("report", figure, summary, controls=("model",), reads_folder=True,
                                   draws_folder=True))
