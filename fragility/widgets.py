"""Live controls with a kernel (JupyterLab, Voilà, `fragility serve`): a drop-down menu for each selection a
chapter's figure takes, above the figure they select, redrawn on every change.

Each menu offers only what the results hold for the selections before it — model, then dataset, then seed (the
mean over seeds first, where there are several; only a seed every model holds when the figure draws every model),
then epoch (those the chosen seed holds); the layers of the chosen model — so no invalid combination reaches the
figure: a change that leaves a later selection invalid moves it to a valid one (the same value where it is still
offered, else the first; the last epoch) before anything is drawn, and a selection found invalid all the same is
refused with a line in the view, the figure left as it was.

The figure is a PNG held by an ipywidgets `Image`, so it redraws wherever widgets run with a kernel; the view's
output also carries that PNG, so an executed notebook still shows the figure where no widget can be rendered.

Outside a live kernel (a script, or the book's execution, which sets FRAGILITY_STATIC or FRAGILITY_VIEWS) the
chapter shows its figure without controls (see `fragility.views` for the rendered book's own controls).
"""
from __future__ import annotations

import base64
import html
import inspect
import io
import os

from IPython import get_ipython
from IPython.display import display

from .selection import choices, stored, study_name, where

STATIC = "FRAGILITY_STATIC"
CONTROLLED = ("model", "dataset", "seed", "epoch", "layer", "filter", "input", "normalized")  # in the order they narrow
DPI = 100
IN_MEMORY = 2**29  # responses up to this size (bytes) are read once, not once per redraw


def live() -> bool:
    """True inside an interactive Jupyter kernel, unless FRAGILITY_STATIC or FRAGILITY_VIEWS is set."""
    if os.environ.get(STATIC) or os.environ.get("FRAGILITY_VIEWS"):
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def label(name: str, value) -> str:
    """The text a menu shows for `value`."""
    if name == "seed" and value is None:
        return "mean over seeds"
    return "yes" if value is True else "no" if value is False else str(value)


def controls(page) -> list[str]:
    """The selections the chapter's figure takes that get a menu, in the order they narrow each other."""
    if page.chapter.figure is None:
        return []
    taken = inspect.signature(page.chapter.figure).parameters
    return [n for n in CONTROLLED if n in taken]


def options(page, selection: dict) -> dict[str, list]:
    """The values each menu offers given the selections before it: the models stored; the datasets of the chosen
    model; the seeds stored for model and dataset (held by every model when the figure draws every model), after
    the mean over them (None) when there are several; the epochs the chosen seed holds (any seed for the mean);
    the chosen model's layers; the fixed choices of filter and input, and the chapter's own options."""
    data = page.study if page.study is not None else page.responses
    names = controls(page)
    model, dataset = selection.get("model"), selection.get("dataset")
    valid = {**choices(data, model, dataset), **page.chapter.options}
    if "seed" in names:
        seeds = list(valid.get("seed", []))
        every = set(seeds)
        if "model" not in names:  # the figure draws every model: only a seed each of them holds
            for other in choices(data)["model"]:
                held = choices(data, other, dataset)["seed"]
                seeds, every = [s for s in seeds if s in held], every | set(held)
        valid["seed"] = [None] * (len(every) > 1) + seeds  # one seed in all: its mean is itself
    seed = selection.get("seed")
    if "epoch" in names and seed is not None and study_name(data) is None and seed in valid["seed"]:
        unit = stored(data).sel(model=valid["model"][0] if model not in valid["model"] else model,
                                dataset=valid["dataset"][0] if dataset not in valid["dataset"] else dataset,
                                seed=seed)
        held = where(unit, "epoch")
        valid["epoch"] = [e for e in valid["epoch"] if e in held]
    return {n: list(valid.get(n, [selection.get(n)])) for n in names}


def settle(page, selection: dict, fixed=()) -> tuple[dict, str | None]:
    """`selection` made valid menu by menu, in order: each value kept where it is offered, else the first offered
    (the last epoch); a value named in `fixed` is never moved: when its menu does not offer it, the second item
    says why (else None)."""
    out = dict(selection)
    for name in controls(page):
        offered = options(page, out)[name]
        if out.get(name) in offered:
            continue
        if name in fixed:
            shown = ", ".join(label(name, v) for v in offered)
            return out, f"{name} {label(name, out.get(name))} is not held for this selection: choose from {shown}."
        out[name] = offered[-1 if name == "epoch" else 0]
    return out, None


def invalid(page, selection: dict) -> str | None:
    """Why `selection` cannot be drawn (a value its menu does not offer), or None when it can."""
    return settle(page, selection, fixed=controls(page))[1]


def png(fig) -> bytes:
    """The figure as PNG bytes, at the book's resolution."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


class Live:
    """A chapter's live view: `menus` (an ipywidgets Dropdown per control), `image` (the figure, an ipywidgets
    Image holding `png`), `message` (an HTML line: empty, or why a change was refused) and `box`, all of them.

    `selection` is what the figure shows; choosing in a menu (its `index`) redraws it.
    """

    def __init__(self, page):
        import ipywidgets as widgets  # deferred: ipywidgets (0.3 s to import) serves a live kernel alone

        self.page, self.names = page, controls(page)
        if page.responses is not None and page.responses.nbytes <= IN_MEMORY:
            page.responses = page.responses.load()  # every redraw selects from it: read once
        self.selection = settle(page, {n: page.selections.get(n) for n in self.names})[0]
        self.offered: dict[str, list] = {}
        self.menus = {n: widgets.Dropdown(description=n, style={"description_width": "initial"},
                                          layout=widgets.Layout(width="auto")) for n in self.names}
        self.message = widgets.HTML("").add_class("fragility-message")
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))
        self.image.add_class("fragility-figure")
        self.box = widgets.VBox([widgets.HBox(list(self.menus.values()),
                                              layout=widgets.Layout(flex_flow="row wrap")),
                                 self.message, self.image]).add_class("fragility-live")
        self.png = b""
        self._busy = False
        self._refresh()
        self.draw()
        for menu in self.menus.values():
            menu.observe(self._chosen, "index")

    def _refresh(self) -> None:
        """Every menu's options for the current selection, its value shown (no redraw while they are set)."""
        self._busy = True
        try:
            self.selection = settle(self.page, self.selection)[0]
            offered = options(self.page, self.selection)
            for name, menu in self.menus.items():
                if offered[name] != self.offered.get(name):
                    menu.options = [label(name, v) for v in offered[name]]
                menu.index = offered[name].index(self.selection[name])
                menu.disabled = len(offered[name]) < 2
            self.offered = offered
        finally:
            self._busy = False

    def _chosen(self, change) -> None:
        if self._busy or change.new is None:
            return
        name = change.owner.description
        self.choose(**{name: self.offered[name][change.new]})

    def choose(self, **chosen) -> bool:
        """Select values (e.g. `layer="fc"`) and redraw; a value its menu does not offer is refused with a line in
        the view and nothing is drawn. True when the figure was redrawn."""
        unknown = sorted(set(chosen) - set(self.names))
        wanted, problem = settle(self.page, {**self.selection, **chosen}, fixed=chosen)
        if unknown:
            problem = f"no control {', '.join(unknown)}: this figure takes {', '.join(self.names)}."
        if problem:
            self.message.value = f"<span style='color:#b00'>{html.escape(problem)}</span>"
            self._refresh()  # the menus show what is drawn
            return False
        self.selection = wanted
        self._refresh()
        return self.draw()

    def draw(self) -> bool:
        """Redraw the figure for the current selection (checked first); True when it was redrawn."""
        problem = invalid(self.page, self.selection)
        if problem:
            self.message.value = f"<span style='color:#b00'>{html.escape(problem)}</span>"
            return False
        self.message.value = "<i style='color:#666'>drawing…</i>"
        try:
            self.png = png(self.page.call(self.page.chapter.figure, **self.selection))
        except Exception as err:  # shown in the view: a live kernel's callbacks have nowhere else to report
            self.message.value = (f"<span style='color:#b00'>could not draw this selection: "
                                  f"{html.escape(type(err).__name__)}: {html.escape(str(err))}</span>")
            return False
        self.image.value = self.png
        self.message.value = ""
        return True

    def _repr_mimebundle_(self, **kwargs):
        """The widgets where they can be rendered, else the figure as drawn."""
        bundle = self.box._repr_mimebundle_(**kwargs)
        bundle["image/png"] = base64.b64encode(self.png).decode("ascii")
        return bundle


def interactive(page) -> Live:
    """Display the chapter's live view (menus above the figure) and return it."""
    view = Live(page)
    display(view)
    return view
