"""Live controls in Jupyter: a dropdown for each selection a chapter's figure takes, redrawing it on every change.

Outside a live kernel (a script, or the book's execution, which sets FRAGILITY_STATIC or FRAGILITY_VIEWS) the
chapter shows its figure without controls (see `fragility.views` for the rendered book's own controls).
"""
from __future__ import annotations

import inspect
import os

from .selection import choices

STATIC = "FRAGILITY_STATIC"
CONTROLLED = ("model", "dataset", "layer", "epoch", "seed", "filter", "input")


def live() -> bool:
    """True inside an interactive Jupyter kernel, unless FRAGILITY_STATIC or FRAGILITY_VIEWS is set."""
    if os.environ.get(STATIC) or os.environ.get("FRAGILITY_VIEWS"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def interactive(page):
    """The chapter's figure below a dropdown per selection it takes; each change redraws it in place (the figure is
    an ordinary output, so an executed notebook keeps it)."""
    import ipywidgets as widgets
    from IPython.display import display

    fn = page.chapter.figure
    names = [n for n in inspect.signature(fn).parameters if n in CONTROLLED]
    data = page.study if page.study is not None else page.responses
    current = {n: page.selections.get(n) for n in names}
    controls = {n: widgets.Dropdown(description=n) for n in names}
    busy = [False]

    def refresh():
        """Options valid for the chosen model and dataset; each value kept where still valid, else the default."""
        valid = choices(data, current.get("model"), current.get("dataset"))
        valid["seed"] = [("mean over seeds", None)] + [(str(s), s) for s in valid.get("seed", [])]
        busy[0] = True
        for n, w in controls.items():
            w.options = valid.get(n, [current[n]])
            values = [v[1] if isinstance(v, tuple) else v for v in w.options]
            w.value = current[n] = current[n] if current[n] in values else values[-1 if n == "epoch" else 0]
        busy[0] = False

    def redraw(change):
        if busy[0]:
            return
        current[change.owner.description] = change.new
        if change.owner.description in ("model", "dataset"):
            refresh()
        shown.update(page.call(fn, **current))

    refresh()
    display(widgets.HBox(list(controls.values())))
    shown = display(page.call(fn, **current), display_id=True)
    for w in controls.values():
        w.observe(redraw, "value")
