"""Extending fragility from outside the package with a study and a figure chapter: each one module of the user's,
registered when imported, then run by `fragility.studies`, checked in profiles and shown by `fragility.book`."""
import importlib.util
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

import fragility as fr
from fragility import FragilityError, book, chapters, data, profiles, store, studies
from fragility import study as base

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = '''
"""A user's own study (the labels of the test subset) and figure chapter (the three filters' accuracy), each a few
functions and one registration."""
import numpy as np
import xarray as xr

from fragility import chapters, checks
from fragility import study as base
from fragility.figures import fig06_filters
from fragility.plot import draw
from fragility.selection import check_parameters, curves


def _units(profile, settings):
    return [base.Unit((m, d, s), m) for m, d, s in profile.runs()]  # it reads no checkpoint: nothing to train


def _run(ctx):
    _, y = ctx.test
    counts = np.bincount(y.numpy(), minlength=ctx.settings["classes"])
    return xr.Dataset({"label_count": ("label", counts)}, coords={"label": np.arange(len(counts))})


def plot_counts(counts, *, ax):
    """The number of test images of each label, as bars on `ax`."""
    draw.panel(counts, {None: ("label",)}, "counts")
    draw.axes(ax)
    ax.bar(counts["label"].values, counts.values)
    ax.set(xlabel="label", ylabel="test images")


def figure(ds, model=None, dataset=None, seed=None):
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed)
    counts = ds["label_count"].sel(model=p["model"], dataset=p["dataset"]).mean("seed")
    fig = draw.figure(ds, f"Labels · {p['model']} on {p['dataset']}", 3.0)
    plot_counts(counts, ax=fig.subplots())
    return fig


def summary(ds, model=None, dataset=None, seed=None):
    p = check_parameters(ds, model=model, dataset=dataset, seed=seed)
    return f"{int(ds['label_count'].sel(model=p['model'], dataset=p['dataset']).mean('seed').sum())} test images."


STUDY = base.register(base.Study(
    "toy", "the labels of the test subset", {"classes": base.Setting(10, checks.whole(1))}, _units, _run,
    ("label_count",), ("model", "dataset", "seed"), figure, summary))
chapters.register(chapters.Chapter("toy_study", figure, summary, study="toy"))


def filters(ds, model=None, dataset=None, layer=None, epoch=None, seed=None):
    """The accuracy of h1, h2 and h3 on one layer, drawn with Fig. 6's own panel function."""
    p = check_parameters(ds, model=model, dataset=dataset, layer=layer, epoch=epoch, seed=seed)
    c = curves(ds, p["model"], p["dataset"], seed).sel(layer=p["layer"], input="clean")
    fig = draw.figure(c, f"Three filters · {p['layer']}", 3.0)
    for ax, h in zip(fig.subplots(1, 3), ("h1", "h2", "h3")):
        fig06_filters.plot_accuracy(c.sel(filter=h), ax=ax)
    return fig


def filters_summary(ds, **selections):
    return "The three filters side by side."


chapters.register(chapters.Chapter("toy_figure", filters, filters_summary, controls=("layer",)))
'''


@pytest.fixture
def toy(tmp_path):
    """The module above, written under tmp_path and imported; what it registered is unregistered after."""
    path = tmp_path / "my_study.py"
    path.write_text(TOY)
    spec = importlib.util.spec_from_file_location("my_study", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["my_study"] = module
    spec.loader.exec_module(module)
    yield module
    base.REGISTRY.pop("toy", None)
    for name in ("toy_study", "toy_figure"):
        chapters.CHAPTERS.pop(name, None)
    sys.modules.pop("my_study", None)


PROFILE = {"name": "toy", "description": "a registered study", "models": ["smallcnn"], "datasets": ["digits"],
           "seeds": [0], "epochs": [1], "every": 1, "n_test": 60, "A": 2, "filters": ["h1", "h2", "h3"],
           "attack": "fixed", "epsilon": 0.1, "ratio": 0.5, "batch_size": 30, "train_batch_size": 100, "lr": 0.003}


def test_a_toy_study_is_checked_in_profiles(toy):
    assert base.REGISTRY["toy"] is toy.STUDY and chapters.CHAPTERS["toy_study"].study == "toy"
    # after the shipped chapters, before the claims chapter that sums them up
    assert list(chapters.CHAPTERS)[-3:] == ["toy_study", "toy_figure", "claims"]
    assert profiles.parse_profile({**PROFILE, "studies": {"toy": {}}}).studies == {"toy": {"classes": 10}}
    for raw, message in [({"toy": {"bins": 3}}, "study toy has unknown setting.*its settings are classes"),
                         ({"toy": {"classes": 0}}, "studies.toy.classes must be a whole number ≥ 1; got 0"),
                         ({"nope": {}}, "unknown study 'nope': choose from .*, toy")]:
        with pytest.raises(FragilityError, match=message):
            profiles.parse_profile({**PROFILE, "studies": raw})
    with pytest.raises(FragilityError, match="registered twice"):
        base.register(toy.STUDY)
    with pytest.raises(FragilityError, match="registered twice"):
        chapters.register(chapters.CHAPTERS["toy_figure"])


def test_a_toy_study_and_chapter_run_and_draw_like_the_shipped_ones(toy, trained_cnn, digits, tmp_path):
    profile = profiles.parse_profile({**PROFILE, "studies": {"toy": {}}})
    results = tmp_path / "results"
    sweep = fr.sweep(trained_cnn, digits[2][:40], digits[3][:40], A=2, epsilon=0.1, progress=False)
    store.write_unit(store.as_unit(sweep, "smallcnn", "digits", 0, 1, profile="toy"),
                     store.unit_path(results, "smallcnn", "digits", 0, 1))  # the book's pages open the responses
    studies.run(profile, results, progress=False)
    assert studies.stored(profile, results) == {("toy", ("smallcnn", "digits", 0))}
    test = data.load("digits", "test")
    labels = test.labels[data.subset_indices(len(test), 60, seed=0)].numpy()
    expected = [int((labels == k).sum()) for k in range(10)]
    found = fr.open_study(results, "toy")
    assert found["label_count"].sel(model="smallcnn", dataset="digits", seed=0).values.tolist() == expected
    page = book.load("toy_study", results, "toy")
    assert not page.missing and page.call(page.chapter.summary) == "60 test images."
    fig = page.call(page.chapter.figure)
    assert isinstance(fig, Figure) and [p.get_height() for p in fig.axes[0].patches] == expected
    page = book.load("toy_figure", results, "toy", layer="fc")
    fig = page.call(page.chapter.figure)
    for ax, h in zip(fig.axes, ("h1", "h2", "h3")):  # β of the filter at each α, the one epoch stored
        assert ax.get_title() == f"{h}: accuracy"
        np.testing.assert_allclose(ax.get_lines()[0].get_ydata(),
                                   sweep["accuracy"].sel(layer="fc", filter=h, input="clean").values)
