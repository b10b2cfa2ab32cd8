"""The report chapter ("Your network"): on a hand-made results folder whose scores, labels, lists and prune ratios are
known by construction, its table, top layers, Python to copy and exports; its figure; its registration, notebook and
place in the book; and the shipped reference (a partial run: models with few units)."""
import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import fragility as fr
from fragility import book, views
from fragility.chapters import CHAPTERS, ORDER
from fragility.errors import FragilityError
from fragility.figures import report as chapter
from test_report import PHI, TAU, area, below, results_folder, sweep

ROOT = Path(__file__).resolve().parents[1]
STEPS = np.array([1.0, 1.0, 0.5, 0.25, 0.0])  # kept whole up to α = 0.25, then falling
# (clean, adversarial) scaled responses of each layer of "mynet", in forward order
MYNET = {"stem": (below(0.1), below(0.1)), "mixer": (PHI, PHI), "head": (STEPS, np.array([1, 1, 0.75, 0.5, 0.25])),
         "tail": (np.ones(5), np.ones(5))}
LAYERS = [*MYNET, "global"]


def by_hand(clean, adversarial) -> dict[str, float]:
    """r_x, r_xe, r_e of Eq. 14–16 as written (Σ over the A + 1 thresholds, Δα = 1/A)."""
    return {"r_x": area(clean), "r_xe": area(adversarial), "r_e": area(adversarial) - area(clean)}


EXPECTED = {name: by_hand(*curves) for name, curves in {**MYNET, "global": (PHI, PHI)}.items()}


def label(value: float) -> str:
    return "Fr" if value < -TAU else "Af" if value > TAU else "Ro"


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """mynet on two data sets (one checkpoint, epoch 3) and a one-layer network "other", 400 test images each."""
    units = {("mynet", "waves", 0, 3): sweep(MYNET, n=400), ("mynet", "noise", 0, 3): sweep(MYNET, n=400),
             ("other", "waves", 0, 2): sweep({"fc": (PHI, PHI)}, n=400)}
    return results_folder(tmp_path_factory.mktemp("known"), units)


@pytest.fixture(scope="module")
def text(known):
    return chapter.summary(known)


def sections(text: str) -> dict[str, str]:
    """The summary's part for each network, by its heading "model on dataset"."""
    found = re.split(r"^\*\*(.+?)\*\*", text, flags=re.M)
    return dict(zip(found[1::2], found[2::2]))


def table(part: str, kind: str) -> list[list[str]]:
    """The cells (tags stripped) of each body row of the part's table of class fragility-<kind>."""
    block = re.search(rf"<table class='fragility-{kind}'>(.*?)</table>", part, flags=re.S).group(1)
    body = block.split("<tbody>")[1]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def numbers(cell: str) -> list[float]:
    return [float(n) for n in re.findall(r"[+-]\d+\.\d+", cell)]


def test_a_section_per_network_each_layer_a_row_with_its_scores_intervals_and_labels(known, text):
    parts = sections(text)
    assert list(parts) == ["mynet on noise", "mynet on waves", "other on waves"]
    rows = table(parts["mynet on waves"], "report")
    assert [r[1] for r in rows] == [*MYNET, "global (the whole network)"]
    assert [r[0] for r in rows] == ["0", "1", "2", "3", ""] and {r[2] for r in rows} == {"100"}
    rep = fr.report(known, model="mynet", dataset="waves")
    for row, name in zip(rows, LAYERS):
        for cell, score in zip(row[3:], ("r_x", "r_xe", "r_e")):
            value, low, high = numbers(cell)
            hand = EXPECTED[name][score]
            assert value == pytest.approx(hand, abs=0.012), (name, score, cell)  # 400 images: counts round
            assert re.search(rf"\b{label(hand)}\b", cell), (name, score, cell)
            found = rep[(rep["layer"] == name) & (rep["score"] == score)].iloc[0]
            assert (low, high) == (pytest.approx(found["low"], abs=5e-4), pytest.approx(found["high"], abs=5e-4))
            # ✓ exactly where the label holds over the whole interval shown
            holds = {"Fr": found["high"] < -TAU, "Af": found["low"] > TAU,
                     "Ro": -TAU <= found["low"] and found["high"] <= TAU}[label(hand)]
            assert cell.endswith("✓") == holds and cell.endswith("?") == (not holds), (name, score, cell)
    assert [r[1] for r in table(parts["other on waves"], "report")] == ["fc", "global (the whole network)"]
    assert "epoch 3: 4 layer(s)" in parts["mynet on waves"] and "epoch 2: 1 layer(s)" in parts["other on waves"]


def test_the_top_layers_are_the_most_fragile_robust_and_antifragile_ones(text):
    rows = {r[0]: r[1:] for r in table(sections(text)["mynet on waves"], "top")}
    named = {k: [re.findall(r"([\w.]+) [+-]\d", cell) for cell in cells] for k, cells in rows.items()}
    layers = list(MYNET)
    for k, score in enumerate(("r_x", "r_xe", "r_e")):
        for word, key in (("fragile", "Fr"), ("robust", "Ro"), ("antifragile", "Af")):
            values = {n: EXPECTED[n][score] for n in layers}
            held = [n for n in layers if label(values[n]) == key]
            shown = named[f"most {word} ({key})"][k]
            if key == "Ro":  # robust layers sit at 0 here: their order is the noise of the counts
                assert len(held) <= 3 and set(shown) == set(held), (word, score)
            else:  # the most fragile first (most negative), the most antifragile first (most positive)
                assert shown == sorted(held, key=values.get, reverse=key == "Af")[:3], (word, score)
            assert (shown == []) == ("none" in rows[f"most {word} ({key})"][k])


def test_the_python_to_copy_runs_and_gives_the_lists_tools_take(known, text):
    code = re.search(r"```python\n(.*?)```", sections(text)["mynet on waves"], flags=re.S).group(1)
    namespace = {}
    exec(code, namespace)  # copyable: it runs as shown
    assert isinstance(namespace["rep"], fr.Report)
    assert namespace["freeze"] == [n for n in MYNET if EXPECTED[n]["r_e"] > TAU] == ["head"]
    assert namespace["ignored_layers"] == [n for n in MYNET if EXPECTED[n]["r_x"] < -TAU] == ["stem"]
    # n_filtered = α · n_params; the clean response stays ≥ 0.98 up to α = 0 (stem, mixer), 0.25 (head), 1 (tail)
    assert namespace["pruning_ratios"] == {"stem": 0.0, "mixer": 0.0, "head": 0.25, "tail": 1.0}
    assert f"fr.report({str(known)!r}, filter='h1')" in code


def test_without_the_book_nothing_is_written_and_the_exports_are_named(known, tmp_path, monkeypatch):
    monkeypatch.delenv(chapter.VIEWS, raising=False)
    monkeypatch.chdir(tmp_path)
    text = chapter.summary(known, model="other")
    assert list(sections(text)) == ["other on waves"]
    assert 'rep.to_csv("report.csv")' in text and not list(tmp_path.iterdir())


def test_under_the_book_the_exports_are_written_beside_the_executed_notebook_and_linked(known, tmp_path,
                                                                                         monkeypatch):
    executed = tmp_path / "book" / "_executed"
    monkeypatch.setenv(chapter.VIEWS, str(executed / "_extra" / "views"))
    text = chapter.summary(known)
    folder = executed / "_extra" / "report"
    assert sorted(p.name for p in folder.iterdir()) == ["report.csv", "report.md"]
    for name in ("report.csv", "report.md"):
        assert f"href='../../report/{name}'" in text  # a page of book/_executed/ to <site>/report/
    written = pd.read_csv(folder / "report.csv")
    assert list(written.columns) == list(fr.report(known).columns) and len(written) == 3 * (5 + 5 + 2)
    mynet = written[(written["model"] == "mynet") & (written["dataset"] == "waves")]
    for row in mynet.itertuples():
        assert row.value == pytest.approx(EXPECTED[row.layer][row.score], abs=0.012)
        assert row.label == label(EXPECTED[row.layer][row.score])
    assert (folder / "report.md").read_text().startswith("<!-- fragility report -->\n| model |")
    chapter.summary(known, model="other")  # executed again: the library's own files are replaced
    assert set(pd.read_csv(folder / "report.csv")["model"]) == {"other"}
    (folder / "report.csv").write_text("my own notes\n")  # a user's file is never overwritten
    with pytest.raises(FragilityError, match="report.csv exists and is not a csv report fragility wrote"):
        chapter.summary(known)
    assert (folder / "report.csv").read_text() == "my own notes\n"


def test_bad_selections_are_one_error_naming_the_choices(known, tmp_path):
    with pytest.raises(FragilityError, match="model must be one of 'mynet', 'other'; got 'nope'"):
        chapter.summary(known, model="nope")
    with pytest.raises(FragilityError, match="filter"):
        chapter.summary(known, filter="h9")
    with pytest.raises(FragilityError, match="no stored responses"):
        chapter.figure(tmp_path)
    with pytest.raises(FragilityError, match="unknown model 'nope'"):
        chapter.figure(known, model="nope")


def test_the_figure_draws_every_layer_of_a_model_a_row_per_data_set(known):
    fig = chapter.figure(known, model="mynet")
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    for axis in fig.axes[::3]:
        assert [t.get_text() for t in axis.get_yticklabels()] == LAYERS
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["noise · epoch 3", "waves · epoch 3"]
    foot = next(t.get_text() for t in fig.texts if t.get_text().startswith("profile "))
    assert "mynet" in fig.get_suptitle() and "model mynet" in foot and "data noise, waves" in foot
    labels = fig.legends[0].get_texts()
    assert {"fragile", "robust band ±τ"} <= {t.get_text() for t in labels}
    other = chapter.figure(known, model="other")
    assert [t.get_text() for t in other.axes[0].get_yticklabels()] == ["fc", "global"]


def test_the_panel_function_refuses_what_is_not_one_network(known):
    from matplotlib.figure import Figure as Plain

    rep = fr.report(known)
    axes = Plain().subplots(1, 3)
    with pytest.raises(FragilityError, match="model must be named"):
        chapter.plot_scores(rep, ax=axes)
    one = rep[(rep["model"] == "other")]
    with pytest.raises(FragilityError, match="a sequence of 3 matplotlib Axes"):
        chapter.plot_scores(one, ax=axes[:2])
    with pytest.raises(FragilityError, match="r_x, r_xe and r_e once per layer"):
        chapter.plot_scores(one[one["score"] != "r_e"], ax=axes)
    chapter.plot_scores(one, ax=axes)
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["fc", "global"]


def test_the_chapter_is_registered_with_its_notebook_in_the_book(known):
    found = CHAPTERS["report"]
    assert found.figure is chapter.figure and found.summary is chapter.summary
    assert found.reads_folder and found.draws_folder and found.controls == ("model",) and not found.claims
    assert list(CHAPTERS)[-2:] == ["report", "claims"] and ORDER[-2:] == ("report", "claims")
    assert chapter.VIEWS == book.VIEWS
    page = book.load("report", known, "test", model=None, filter="h1")
    assert isinstance(page.call(page.chapter.figure), Figure)  # the figure is given the results folder
    assert [c["model"] for c in views.combinations(page)] == ["mynet", "other"]
    import papermill as pm  # the book's own dependency: reads the notebook's parameters

    declared = pm.inspect_notebook(str(ROOT / "notebooks" / "report.ipynb"))
    assert set(declared) == {"results", "profile", "model", "filter"}
    assert "file: book/_executed/report" in (ROOT / "_toc.yml").read_text()


@pytest.mark.parametrize("profile, expected", [("reference", "results/reference"), ("mine.yaml", "results/mine"),
                                               ("some/where/mine.yml", "results/mine"), ("quick", "results/quick")])
def test_a_profile_file_has_its_results_under_its_name(profile, expected):
    assert book.default_results(profile) == Path(expected)


def test_a_profile_path_that_names_no_file_is_refused():
    with pytest.raises(FragilityError, match="cannot name a file of a results folder"):
        book.default_results("../elsewhere")


def test_the_shipped_reference_has_a_report(monkeypatch):
    """A partial run: each model's last checkpoint, however few units it holds."""
    monkeypatch.delenv(chapter.VIEWS, raising=False)
    reference = ROOT / "results" / "reference"
    ds = fr.open_results(reference)
    text = chapter.summary(reference)
    parts = sections(text)
    models = [str(m) for m in ds["model"].values]
    assert [p.split(" on ")[0] for p in parts] == models
    for model, part in zip(models, parts.values()):
        assert [r[1].split(" ")[0] for r in table(part, "report")] == list(fr.layer_order(ds, model))
        assert "ignored_layers = " in part and "pruning_ratios = " in part
    fig = chapter.figure(reference, model=models[-1])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(fr.layer_order(ds, models[-1]))
