"""Every live control does something: for each chapter, the view its notebook builds in a kernel (the ipywidgets
objects `fragility.widgets.interactive` returns) draws a different figure for another value of each control, and no
selection the results do not hold ever reaches the figure's code — what they hold is read here from the files of
the results folder, not through the code under test."""
import ast
import base64
import dataclasses
import functools
import io
import re
import shutil
from pathlib import Path

import numpy as np
import papermill as pm
import pytest
import traitlets
import xarray as xr
from PIL import Image

from fragility import book, widgets
from fragility.chapters import CHAPTERS

pytestmark = pytest.mark.slow  # they read the tiny pipeline run (minutes, once per session)
ROOT = Path(__file__).resolve().parents[1]
FIGURES = [name for name, chapter in CHAPTERS.items() if chapter.figure is not None]
# the tiny run has two models (one with two seeds), two epochs, several layers: every figure chapter offers
# something to switch but two studies of one seed and one dataset, conventions (of one model) and depth (whose
# figure draws every depth)
FIXED = ("study_conventions", "study_depth")


class Held:
    """What a results folder holds, from its file names and coordinates: the response units (model, dataset, seed,
    epoch) with their layers, and each study's units (model, dataset, seed) with their layers."""

    def __init__(self, results: Path):
        self.units, self.studies = {}, {}
        for path in Path(results, "responses").glob("*/*/seed*/epoch*.nc"):
            model, dataset, seed, epoch = path.parts[-4], path.parts[-3], path.parts[-2], path.stem
            with xr.open_dataset(path, engine="h5netcdf") as ds:
                layers = {str(n) for n in ds["layer"].values}
            self.units[(model, dataset, int(seed[4:]), int(epoch[5:]))] = layers
        for path in Path(results, "studies").glob("*/*.nc"):
            label, dataset, seed = re.fullmatch(r"(.+)__(.+)__seed(\d+)", path.stem).groups()
            with xr.open_dataset(path, engine="h5netcdf") as ds:
                layers = {str(n) for n in ds["layer"].values} if "layer" in ds.coords else set()
            self.studies.setdefault(path.parent.name, {})[(label, dataset, int(seed))] = layers

    def problem(self, chapter, selection: dict) -> str | None:
        """Why the results cannot show `selection` in `chapter` (None: they can). None stands for any value (the
        mean over seeds, the default dataset); a figure without a model selection draws every model."""
        units = self.studies[chapter.study] if chapter.study else self.units
        models = [selection["model"]] if "model" in selection else sorted({key[0] for key in units})
        for model in models:
            wanted = (model, selection.get("dataset"), selection.get("seed"), selection.get("epoch"))
            found = [layers for key, layers in units.items()
                     if all(w is None or w == k for w, k in zip(wanted, key))]
            if not found:
                return f"no unit {wanted} in the results"
            if selection.get("layer") is not None and not any(selection["layer"] in layers for layers in found):
                return f"{model} has no layer {selection['layer']!r}"
        return None


def spy(page, held: Held) -> tuple[list, list]:
    """Route the chapter's figure through a recorder: (every selection drawn, those the results lack)."""
    calls, bad, real = [], [], page.chapter.figure

    @functools.wraps(real)
    def figure(*args, **kwargs):
        selection = {k: v for k, v in kwargs.items() if k in widgets.CONTROLLED}
        calls.append(selection)
        reason = held.problem(page.chapter, selection)
        if reason:
            bad.append((selection, reason))
        return real(*args, **kwargs)

    page.chapter = dataclasses.replace(page.chapter, figure=figure)
    return calls, bad


def notebook_parameters(name: str) -> dict:
    """The selections a chapter notebook passes to `book.load`: its parameters cell's defaults."""
    found = pm.inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"))
    return {k: ast.literal_eval(v["default"]) for k, v in found.items() if k not in ("results", "profile")}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def same_image(a: bytes, b: bytes) -> bool:
    first, second = pixels(a), pixels(b)
    return first.shape == second.shape and bool((first == second).all())


@pytest.mark.parametrize("name", FIGURES)
def test_every_control_draws_a_different_figure(tiny_run, one_thread, name):
    _, results = tiny_run
    held = Held(results)
    page = book.load(name, str(results), "tiny", **notebook_parameters(name))
    calls, bad = spy(page, held)
    view = widgets.interactive(page)
    assert pixels(view.png).size and view.image.value == view.png and view.message.value == ""
    assert set(view.menus) == set(widgets.controls(page)) and view.menus
    switched = []
    for control, menu in view.menus.items():
        assert list(menu.options) == [widgets.label(control, v) for v in view.offered[control]]
        assert menu.disabled == (len(menu.options) < 2)
        if len(menu.options) < 2:
            continue
        before = view.png
        menu.index = (menu.index + 1) % len(menu.options)
        assert view.message.value == "", f"{name}: {control} = {menu.value}: {view.message.value}"
        assert view.selection[control] == view.offered[control][menu.index]
        assert view.image.value == view.png
        assert not same_image(before, view.png), f"{name}: {control} = {menu.value} draws the same figure"
        switched.append(control)
    assert bool(switched) == (name not in FIXED), f"{name}: switched {switched}"
    assert len(calls) == 1 + len(switched)  # one drawing per change, none while the menus are narrowed
    assert not bad, bad


@pytest.fixture
def gappy(tiny_run, tmp_path) -> Path:
    """The tiny run's responses, with smallcnn's seed 1 lacking epoch 2."""
    _, results = tiny_run
    folder = tmp_path / "results"
    for part in ("responses", "epsilon"):
        shutil.copytree(results / part, folder / part)
    (folder / "responses" / "smallcnn" / "digits" / "seed1" / "epoch002.nc").unlink()
    return folder


def test_no_selection_the_results_lack_reaches_the_figure(gappy, one_thread):
    held = Held(gappy)
    page = book.load("fig04_baseline", str(gappy), "tiny", model="smallcnn", seed=0, epoch=2, layer="fc")
    calls, bad = spy(page, held)
    view = widgets.interactive(page)
    assert view.offered["seed"] == [None, 0, 1] and view.offered["epoch"] == [1, 2]
    assert set(view.offered["layer"]) == held.units[("smallcnn", "digits", 0, 1)]

    view.menus["seed"].index = view.offered["seed"].index(1)  # seed 1 lacks epoch 2: epoch moves to 1 first
    assert view.selection["seed"] == 1 and view.selection["epoch"] == 1
    assert list(view.menus["epoch"].options) == ["1"] and view.menus["epoch"].value == "1"
    assert view.message.value == ""
    with pytest.raises(traitlets.TraitError):  # a menu takes only what it offers
        view.menus["epoch"].value = "2"
    with pytest.raises(traitlets.TraitError):
        view.menus["layer"].value = "conv1"  # ResNet-18's, not smallcnn's

    drawn, before = len(calls), view.png
    for refused, words in ((dict(epoch=2), "epoch 2 is not held"), (dict(layer="conv1"), "layer conv1"),
                           (dict(model="resnet18", layer="fc", seed=1), "seed 1"), (dict(colour="red"), "colour")):
        assert not view.choose(**refused)
        assert words in view.message.value, view.message.value
        assert view.png == before and len(calls) == drawn and view.selection["seed"] == 1
        assert view.menus["seed"].value == "1" and view.menus["epoch"].value == "1"

    view.menus["model"].index = view.offered["model"].index("resnet18")  # one seed, its own layers
    assert view.selection["seed"] == 0 and view.offered["seed"] == [0]
    assert view.selection["layer"] == "fc" and view.menus["layer"].value == "fc"  # both models have fc
    assert view.message.value == "" and view.png != before
    assert view.choose(model="smallcnn", layer="blocks.1.conv")
    assert view.selection["seed"] == 0 and list(view.menus["seed"].options) == ["mean over seeds", "0", "1"]
    assert len(calls) == drawn + 2 and not bad, bad


def test_a_figure_of_every_model_offers_only_seeds_each_model_holds(tiny_run, one_thread):
    _, results = tiny_run
    page = book.load("fig10_local", str(results), "tiny", **notebook_parameters("fig10_local"))
    view = widgets.interactive(page)
    assert view.offered["seed"] == [None, 0]  # ResNet-18 has seed 0 only, smallcnn 0 and 1: no seed 1
    assert not view.choose(seed=1) and "seed 1" in view.message.value


def test_the_live_view_carries_the_figure_for_outputs_without_widgets(tiny_run, one_thread):
    _, results = tiny_run
    page = book.load("fig09_global", str(results), "tiny", **notebook_parameters("fig09_global"))
    view = widgets.interactive(page)
    bundle = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == view.png
    assert view.offered["normalized"] == [True, False] and view.menus["normalized"].value == "yes"
