"""The figure chapters on one's own network swept under a metric other than top-1 accuracy (top-2, a loss) or with
fewer synaptic filters than three: each chapter draws and names what was swept, reads the metric's own values, and
the claims say why they cannot be decided; studies are refused at load time under another metric."""
from pathlib import Path

import numpy as np
import pytest
import yaml

import fragility as fr
from fragility import book, pipeline, profiles
from fragility.chapters import CHAPTERS
from fragility.errors import FragilityError
from fragility.selection import check_parameters, choices, curves

ROOT = Path(__file__).resolve().parents[1]
OWN = yaml.safe_load((ROOT / "tests" / "ownpkg" / "mine.yaml").read_text())
FIGURES = [n for n in CHAPTERS if n.startswith("fig") and not CHAPTERS[n].study]
NLL = {"function": "ownpkg.metrics:nll", "name": "nll", "higher_is_better": False}


def profile(name: str, **changes):
    return profiles.parse_profile({**OWN, "name": name, "epsilon": 0.1, "epochs": [2, 3], **changes})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The network of tests/ownpkg run three ways: under top-2, under a loss, and with h1 only."""
    root = tmp_path_factory.mktemp("own")
    made = {"top2": profile("top2", metric={"name": "topk", "k": 2}), "nll": profile("nll", metric=NLL),
            "h1": profile("h1", filters=["h1"])}
    for name, p in made.items():
        pipeline.run(p, root / name, progress=False)
    return {name: root / name for name in made}


def page(name: str, folder: Path, profile_name: str, **selections):
    """The chapter as its notebook loads it (a chapter with the paper's filter passes filter=None, as they do)."""
    extra = {"filter": None} if "filter" in CHAPTERS[name].paper else {}
    return book.load(name, folder, profile_name, **{**extra, **selections})


def drawn(p):
    """The chapter's figure and its summary text."""
    figure = p.call(p.chapter.figure)
    text = p.chapter.summary(p.folder, **p.selections) if p.chapter.reads_folder else p.call(p.chapter.summary)
    return figure, text


@pytest.mark.parametrize("kind", ["top2", "nll", "h1"])
@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_chapter_draws_and_sums_up(folders, kind, name):
    p = page(name, folders[kind], kind)
    assert p.missing is None
    figure, text = drawn(p)
    assert figure.axes and isinstance(text, str) and text
    assert "accuracy" not in " ".join(a.get_ylabel() for a in figure.axes) or kind == "h1"
    assert name != "fig08_scores" or "P5" not in text  # P5 is about the paper's four networks, not this one


def test_curves_hold_the_metrics_own_values(folders):
    for kind, name in (("top2", "top2"), ("nll", "nll")):
        ds = fr.open_results(folders[kind])
        c = curves(ds)
        sub = ds.isel(model=0, dataset=0, seed=0)
        assert np.allclose(c["accuracy"].sel(filter="h2").values, sub[name].sel(filter="h2").values, equal_nan=True)
        assert np.allclose(c["base_accuracy"].values, sub[f"base_{name}"].values)
    ds = fr.open_results(folders["nll"])
    sub = ds.isel(model=0, dataset=0, seed=0)
    by_hand = sub["base_nll"] / sub["nll"]  # a loss is scaled by its reciprocal: m(f(x, θ)) / m
    assert np.allclose(curves(ds)["response"].sel(filter="h1").values, by_hand.sel(filter="h1").values,
                       equal_nan=True)


def test_figures_name_the_metric_and_fit_its_values(folders):
    fig = page("fig04_baseline", folders["top2"], "top2").call(CHAPTERS["fig04_baseline"].figure)
    assert fig.axes[1].get_ylabel() == "top2, scaled top2"
    fig = page("fig05_targeted", folders["nll"], "nll").call(CHAPTERS["fig05_targeted"].figure)
    assert "test nll" in fig._suptitle.get_text()
    p = page("fig06_filters", folders["nll"], "nll")
    fig = p.call(CHAPTERS["fig06_filters"].figure)
    layer = check_parameters(p.responses, layer=None)["layer"]  # the layer the figure draws: the network's first
    loss = curves(p.responses)["accuracy"].sel(layer=layer, input="clean")
    assert float(loss.max()) > 1  # the loss leaves an accuracy's 0–1 scale
    panels = [a for a in fig.axes if a.get_ylabel() == r"nll $\beta$"]
    assert len(panels) == 3 and all(a.get_ylim()[1] >= float(loss.sel(filter=a.get_label()).max()) for a in panels)
    assert any(a.get_ylabel() == r"scaled nll (inverse ratio) $\tilde\beta$" for a in fig.axes)


def test_the_targeted_summary_reads_the_metrics_direction(folders):
    for kind, better in (("top2", lambda gap: gap > 0), ("nll", lambda gap: gap < 0)):
        p = page("fig05_targeted", folders[kind], kind)
        c = curves(p.responses).sel(layer=check_parameters(p.responses, layer=None)["layer"],
                                    filter=p.selections["filter"])
        gap = c["accuracy"].sel(input="clean") - c["accuracy"].sel(input="adversarial")
        text = p.call(CHAPTERS["fig05_targeted"].summary)
        assert f"the clean {kind} is better than the adversarial one at {float(better(gap).mean()):.0%}" in text
        assert ("lower is better" in text) == (kind == "nll")


def test_claims_under_another_metric_are_untestable_saying_why(folders):
    table = fr.claims(folders["top2"], samples=20)
    assert set(table["verdict"]) == {"untestable"}
    panels = table[table["panel"].notna() & (table["panel"] != "")]
    assert len(panels) and panels["evidence"].str.startswith("needs top-1 accuracy: these results measure top2").all()
    own = fr.claims(folders["h1"], samples=20)  # top-1 accuracy: untestable for want of the paper's networks
    assert not own["evidence"].str.contains("these results measure").any()


def test_fewer_filters_offer_and_draw_only_those_swept(folders):
    ds = fr.open_results(folders["h1"])
    assert choices(ds)["filter"] == ["h1"]
    assert curves(ds)["filter"].values.tolist() == ["h1"]
    p = page("fig05_targeted", folders["h1"], "h1")
    assert p.selections["filter"] == "h1" and any("filter h1 (the paper: combined)" in n for n in p.notes)
    with pytest.raises(FragilityError, match="unknown filter 'combined'.*choose from h1"):
        page("fig05_targeted", folders["h1"], "h1", filter="combined")
    fig, text = drawn(page("fig06_filters", folders["h1"], "h1"))
    titles = [a.get_title() for a in fig.axes]
    assert not any("h2" in t or "h3" in t or "combined" in t for t in titles)
    assert any(t.startswith("h1") for t in titles)
    assert "h1 " in text and "h2" not in text and "combined" not in text
    full = fr.open_results(folders["top2"])
    assert choices(full)["filter"] == ["h1", "h2", "h3", "combined"]


def test_studies_under_another_metric_are_refused_at_load_time():
    with pytest.raises(FragilityError, match="studies measure top-1 accuracy.*'topk'.*studies.neurons"):
        profile("s", metric={"name": "topk", "k": 2}, studies={"neurons": {}})
