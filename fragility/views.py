"""Interactive figures without a kernel: every view a chapter's controls can select is drawn with matplotlib when the
book is executed, and the page switches between them with a few lines of JavaScript.

The views of chapter <name> are written to <views folder>/<name>/NNN.png; the book copies that folder to
<site>/views/ (html_extra_path), so a page at <site>/book/_executed/<name>.html finds them at ../../views/<name>/.
"""
from __future__ import annotations

import html
import itertools
import json
import multiprocessing
import os
from pathlib import Path

from IPython.display import HTML, display

from .selection import check_parameters, paper_defaults

PREFIX = "../../views/"  # from a page of book/_executed/ to the site's views folder
SCRIPT = """
(function () {
  var root = document.currentScript.parentElement;
  var spec = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  var selects = Array.from(root.querySelectorAll("select"));
  var image = root.querySelector("img");
  function pick(changed) {
    var want = selects.map(function (s) { return Number(s.value); });
    var best = -1, score = -1;
    spec.views.forEach(function (view, i) {
      var s = 0;
      view.forEach(function (v, k) { if (v === want[k]) { s += (k === changed) ? 100 : 1; } });
      if (s > score) { best = i; score = s; }
    });
    spec.views[best].forEach(function (v, k) { selects[k].value = String(v); });
    image.src = spec.base + spec.files[best];
    image.setAttribute("data-view", String(best));
  }
  selects.forEach(function (s, k) { s.addEventListener("change", function () { pick(k); }); });
})();
"""


def _label(value) -> str:
    return "mean over seeds" if value is None else "yes" if value is True else "no" if value is False else str(value)


def combinations(page) -> list[dict]:
    """Every selection of the chapter's controls: the model's own layers, epochs… for each model when the model is a
    control; a seed control offers the mean over seeds (None) first."""
    controls = page.chapter.controls
    models = page.options()["model"] if "model" in controls else [page.selections.get("model")]
    out = []
    for model in models:
        options = page.options(model=model, dataset=page.selections.get("dataset"))
        if "seed" in options:
            options["seed"] = [None] + list(options["seed"])
        others = [c for c in controls if c != "model"]
        for values in itertools.product(*(options[c] for c in others)):
            combo = dict(zip(others, values))
            if "model" in controls:
                combo.update(model=model, **_own(page, model))
            out.append(combo)
    return out


def _own(page, model) -> dict:
    """The selections that depend on the model (dataset, epoch, layer) for another model than the chapter's: the
    paper's where that model has them, else its defaults."""
    data = page.study if page.study is not None else page.responses
    keys = [k for k in ("dataset", "epoch", "layer", "layers") if k in page.selections
            and k not in page.chapter.controls]
    chosen, _ = paper_defaults(data, {"model": model, **{k: page.chapter.paper.get(k) for k in keys}})
    return {k: chosen.get(k) for k in keys}


def current(page) -> dict:
    """The chapter's own selection of each control, defaults resolved."""
    data = page.study if page.study is not None else page.responses
    checked = check_parameters(data, **{c: page.selections.get(c) for c in page.chapter.controls
                                        if c not in page.chapter.options})
    return {c: checked.get(c, page.selections.get(c)) for c in page.chapter.controls}


IN_MEMORY = 2**29  # responses up to this size (bytes) are read once before drawing, not once per view
_WORK: tuple = ()  # (page, combos, folder) of the views being drawn, inherited by the forked drawing processes


def _draw(i: int) -> str:
    page, combos, folder = _WORK
    name = f"{i:03d}.png"
    page.call(page.chapter.figure, **combos[i]).savefig(folder / name, dpi=100)
    return name


def render(page, combos: list[dict], folder: Path, processes: int | None = None) -> list[str]:
    """Draw every view into `folder` and return the file names, in the order of `combos`; the views are shared out
    over the machine's cores (forked processes), or drawn here when there is one core or one view."""
    global _WORK
    folder.mkdir(parents=True, exist_ok=True)
    processes = min(processes or os.cpu_count() or 1, len(combos))
    _WORK = (page, combos, folder)
    try:
        if processes < 2:
            return [_draw(i) for i in range(len(combos))]
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            return pool.map(_draw, range(len(combos)))
    finally:
        _WORK = ()


def markup(page, combos: list[dict], files: list[str], start: int) -> str:
    """The HTML of the controls, the default view and the script that switches views."""
    controls = page.chapter.controls
    labels = {c: list(dict.fromkeys(combo[c] for combo in combos)) for c in controls}
    views = [[labels[c].index(combo[c]) for c in controls] for combo in combos]
    spec = {"base": PREFIX + page.chapter.name + "/", "files": files, "views": views}
    selects = "".join(
        f"<label style='margin-right:1em'>{c} <select name='{c}'>" + "".join(
            f"<option value='{k}'{' selected' if k == views[start][j] else ''}>{html.escape(_label(v))}</option>"
            for k, v in enumerate(labels[c])) + "</select></label>" for j, c in enumerate(controls))
    return (f"<div class='fragility-views' id='views-{page.chapter.name}'><form>{selects}</form>"
            f"<img src='{spec['base'] + files[start]}' data-view='{start}' style='max-width:100%' "
            f"alt='{html.escape(page.chapter.name)}: the figure for the selection above'>"
            f"<script type='application/json'>{json.dumps(spec)}</script><script>{SCRIPT}</script></div>")


def show(page, folder: Path):
    """Draw every view of the chapter into folder/<chapter>/ and display them behind the chapter's controls."""
    if not page.chapter.controls:
        return display(page.call(page.chapter.figure))
    if page.responses is not None and page.responses.nbytes <= IN_MEMORY:
        page.responses = page.responses.load()  # every view selects from it: one read, shared with the forks
    combos = combinations(page)
    chosen = current(page)
    start = next((i for i, c in enumerate(combos) if all(c[k] == chosen[k] for k in page.chapter.controls
                                                         if k != "dataset")), 0)
    files = render(page, combos, Path(folder) / page.chapter.name)
    return display(HTML(markup(page, combos, files, start)))
