"""Live controls for the figures: dropdowns that redraw a `fragility.plots` function, or its static figure.

In a live Jupyter kernel `interactive_figure` shows a dropdown for each selection the figure function takes
(model, dataset, layer, epoch, seed, filter, input) and redraws on every change. Executed for the book (papermill,
with FRAGILITY_STATIC=1) or outside Jupyter it returns the static figure of the given selection.
"""
from __future__ import annotations

import inspect
import os

from . import plots

STATIC = "FRAGILITY_STATIC"
CONTROLLED = ("model", "dataset", "layer", "epoch", "seed", "filter", "input")


def live() -> bool:
    """True inside an interactive Jupyter kernel, unless FRAGILITY_STATIC is set (book execution)."""
    if os.environ.get(STATIC):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def interactive_figure(plot_fn, ds, **choices):
    """`plot_fn(ds, **choices)`; live, shown below dropdowns for its selections that redraw it in place (the
    figure is an ordinary output, so an executed notebook keeps it), and None is returned."""
    names = [n for n in inspect.signature(plot_fn).parameters if n in CONTROLLED]
    if not live() or not names:
        return plot_fn(ds, **choices)
    import ipywidgets as widgets
    from IPython.display import display

    current = plots.check_parameters(ds, **{n: choices.get(n) for n in names})
    controls = {n: widgets.Dropdown(description=n) for n in names}
    busy = [False]

    def refresh():
        """Options valid for the chosen model and dataset; each value kept where still valid, else the default."""
        valid = plots.choices(ds, current.get("model"), current.get("dataset"))
        valid["seed"] = [("mean over seeds", None)] + [(str(s), s) for s in valid["seed"]]
        busy[0] = True
        for n, w in controls.items():
            w.options = valid[n]
            values = [v[1] if isinstance(v, tuple) else v for v in valid[n]]
            w.value = current[n] = current[n] if current[n] in values else values[-1 if n == "epoch" else 0]
        busy[0] = False

    def figure():
        return plot_fn(ds, **{**choices, **{n: current[n] for n in names}})

    def redraw(change):
        if busy[0]:
            return
        current[change.owner.description] = change.new
        if change.owner.description in ("model", "dataset"):
            refresh()
        shown.update(figure())

    refresh()
    display(widgets.HBox(list(controls.values())))
    shown = display(figure(), display_id=True)
    for w in controls.values():
        w.observe(redraw, "value")
    return None
