"""A profile may sweep one model with fewer filters than the others (`models: {name: {filters: [h1]}}`): its units hold
only those filters and record their own sweep hash, the results combine with the others' (NaN where a model was not
swept), and every selection, figure and chapter offers a model only what it was swept with."""
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

import fragility as fr
from fragility import book, pipeline, profiles, store
from fragility.chapters import CHAPTERS
from fragility.errors import FragilityError
from fragility.figures import fig09_global, fig10_local
from fragility.selection import check_parameters, choices, curves, filters, models_with

ROOT = Path(__file__).resolve().parents[1]
OWN = yaml.safe_load((ROOT / "tests" / "ownpkg" / "mine.yaml").read_text())
WAVE = {"factory": "ownpkg.models:wave", "kwargs": {"width": 4}}
FIGURES = [n for n in CHAPTERS if n.startswith("fig") and not CHAPTERS[n].study]


def profile(narrow: list | None = None, **changes):
    """Two networks of one's own: `wave` with the profile's three filters, `narrow` with `narrow` (its own filters)."""
    own = {} if narrow is None else {"filters": narrow}
    return profiles.parse_profile({**OWN, "name": "mixed", "epsilon": 0.1, "epochs": [2, 3], **changes, "models": {
        "wave": WAVE, "narrow": {"factory": "ownpkg.models:wave", "kwargs": {"width": 3}, **own}}})


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed") / "results"
    pipeline.run(profile(["h1"]), folder, progress=False)
    return folder


def test_a_model_sweeps_its_own_filters_and_records_their_hash():
    p, plain = profile(["h1"]), profile()
    assert p.filters_of("narrow") == ("h1",) and p.filters_of("wave") == ("h1", "h2", "h3")
    assert p.sweep_hash == plain.sweep_hash == p.sweep_hash_of("wave") == plain.sweep_hash_of("narrow")
    assert p.sweep_hash_of("narrow") != p.sweep_hash
    assert profile(["h1", "h2", "h3"]).grid("narrow").filters is None  # the profile's own: the same units
    with pytest.raises(FragilityError, match=r"models\.narrow\.filters must be a list of distinct stresses.*got "
                                             r"\['h9'\]"):
        profile(["h9"])


def test_its_units_hold_those_filters_and_are_checked_against_them(mixed):
    units = store.scan(mixed)
    for key, header in units.items():
        expected = ["h1"] if key[0] == "narrow" else ["h1", "h2", "h3"]
        assert header.coords["filter"][0].tolist() == expected
        assert header.attrs["sweep_hash"] == profile(["h1"]).sweep_hash_of(key[0])
    assert pipeline.plan(profile(["h1"]), mixed) == []
    with pytest.raises(FragilityError, match="narrow.*computed with other settings"):
        pipeline.plan(profile(["h1", "h2"]), mixed)


def test_results_combine_with_nan_where_a_model_was_not_swept(mixed):
    ds = fr.open_results(mixed)
    whole = store.read_whole(mixed)
    assert ds["filter"].values.tolist() == whole["filter"].values.tolist() == ["h1", "h2", "h3"]
    for name in ("accuracy", "n_filtered", "threshold"):
        xr.testing.assert_equal(ds[name].load().astype(float), whole[name].astype(float))
    narrow = ds["accuracy"].sel(model="narrow")
    assert narrow.sel(filter=["h2", "h3"]).isnull().all() and narrow.sel(filter="h1").notnull().any()
    assert ds["accuracy"].sel(model="wave").notnull().all()


def test_selections_offer_a_model_only_its_filters(mixed):
    ds = fr.open_results(mixed)
    assert choices(ds, "narrow")["filter"] == filters(ds, "narrow") == ["h1"]
    assert choices(ds, "wave")["filter"] == ["h1", "h2", "h3", "combined"]
    assert curves(ds, "narrow")["filter"].values.tolist() == ["h1"]  # no "combined" of h1 alone
    assert curves(ds, "wave")["filter"].values.tolist() == ["h1", "h2", "h3", "combined"]
    assert models_with(ds, "h1") == ["narrow", "wave"] and models_with(ds, "h2") == ["wave"]
    with pytest.raises(FragilityError, match="unknown filter 'h2'.*choose from h1"):
        check_parameters(ds, model="narrow", filter="h2")


def test_the_global_and_local_figures_draw_the_models_swept_with_the_filter(mixed):
    ds = fr.open_results(mixed)
    titles = lambda fig: " ".join(a.get_title() for a in fig.axes) + " ".join(  # noqa: E731
        s.get_suptitle() for s in getattr(fig, "subfigs", []))
    assert "narrow" in titles(fig09_global.figure(ds, filter="h1")) and "wave" in titles(fig09_global.figure(ds))
    only = titles(fig09_global.figure(ds, filter="h2"))
    assert "wave" in only and "narrow" not in only
    local = titles(fig10_local.figure(ds, filter="h3"))
    assert "wave" in local and "narrow" not in local
    with pytest.raises(FragilityError, match=r"models \['narrow'\] were not swept with filter 'h2'"):
        fig10_local.figure(ds, filter="h2", models=["narrow"])


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_chapter_draws_the_model_with_fewer_filters(mixed, name):
    extra = {"filter": None} if "filter" in CHAPTERS[name].paper else {}
    extra.update({"model": "narrow"} if "model" in CHAPTERS[name].paper else {})
    p = book.load(name, mixed, "mixed", **extra)
    assert p.missing is None
    assert p.selections.get("filter", "h1") == "h1"
    figure = p.call(p.chapter.figure)
    text = p.chapter.summary(p.folder, **p.selections) if p.chapter.reads_folder else p.call(p.chapter.summary)
    assert figure.axes and isinstance(text, str) and text
    assert finite(figure), "the figure draws no finite value of the model"


def finite(figure) -> bool:
    """Whether some line, image or coloured mesh of `figure` holds a finite value."""
    found = [np.asarray(line.get_ydata(), float) for ax in figure.axes for line in ax.lines]
    found += [np.ma.filled(np.ma.asarray(im.get_array(), float), np.nan) for ax in figure.axes for im in ax.images]
    found += [np.ma.filled(np.ma.asarray(c.get_array(), float), np.nan) for ax in figure.axes for c in ax.collections
              if c.get_array() is not None]
    return any(np.isfinite(v).any() for v in found if v.size)


def test_the_layer_report_leaves_out_the_models_not_swept_with_its_filter(mixed):
    assert set(fr.report(mixed)["model"]) == {"narrow", "wave"}
    assert set(fr.report(mixed, filter="h2")["model"]) == {"wave"}
    with pytest.raises(FragilityError, match="filter 'combined' was not swept for narrow: choose from h1"):
        fr.report(mixed, model="narrow", filter="combined")
