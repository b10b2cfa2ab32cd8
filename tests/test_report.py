"""`fr.report` on hand-made results folders whose scores, labels and lists are known by construction, on a small
profile's real results, and `fragility report` on the command line."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fragility as fr
from fragility import cli, store, uncertainty
from fragility.report import COLUMNS, MARK, NO_INTERVAL, UNDECIDED, Report, settle

REPORT = sys.modules["fragility.report"]  # the module (`fragility.report` is the function fr.report)

A = 4
ALPHA = np.arange(A + 1) / A
PHI = 1 - ALPHA  # the baseline φ̄ when n_filtered = α · n_params (Eq. 10)
TAU = 0.02
BASE = (0.9, 0.45)  # unperturbed accuracy on clean and adversarial inputs


def area(curve) -> float:
    """Eq. 14–16 as written: Σ_i (curve_i − φ̄_i) Δα over i = 0..A, Δα = 1/A."""
    return float(np.sum(np.asarray(curve) - PHI) / A)


def below(offset):
    """A scaled response `offset` under the baseline (floored at 0)."""
    return np.maximum(PHI - offset, 0)


def sweep(curves: dict, n: int = 2000, base=BASE, n_filtered=None):
    """A sweep whose scaled responses β̄ (clean) and β̄_ε (adversarial) are `curves[layer] = (clean, adversarial)`
    for every filter, plus `global` on the baseline; each cell's first round(β̄ · base · n) of n images correct."""
    import xarray as xr

    curves = {**curves, "global": curves.get("global", (PHI, PHI))}
    layers = list(curves)
    beta = np.array([[curves[k][0], curves[k][1]] for k in layers]).transpose(0, 2, 1)  # (layer, alpha, input)
    target = np.clip(beta * np.array(base), 0, 1)
    target = np.broadcast_to(target[:, None], (len(layers), 3, A + 1, 2))
    correct = np.arange(n) < np.round(target * n)[..., None]
    base_correct = np.arange(n) < np.round(np.array(base) * n)[:, None]
    counts = (ALPHA * 100).astype(np.int64) if n_filtered is None else np.asarray(n_filtered, dtype=np.int64)
    n_filtered = np.broadcast_to(counts, (len(layers), 3, A + 1)).copy()
    return xr.Dataset({"accuracy": (("layer", "filter", "alpha", "input"), correct.mean(-1)),
                       "n_filtered": (("layer", "filter", "alpha"), n_filtered),
                       "n_params": (("layer",), np.full(len(layers), 100, dtype=np.int64)),
                       "threshold": (("layer", "filter", "alpha"), np.zeros(n_filtered.shape)),
                       "base_accuracy": (("input",), base_correct.mean(-1)), "epsilon": ((), 0.1),
                       "chance": ((), 0.1), "correct": (("layer", "filter", "alpha", "input", "image"), correct),
                       "base_correct": (("input", "image"), base_correct)},
                      coords={"layer": layers, "filter": ["h1", "h2", "h3"], "alpha": ALPHA,
                              "input": ["clean", "adversarial"], "image": np.arange(n)},
                      attrs={"A": A, "attack": "fixed", "n_test": n})


def results_folder(folder, units: dict):
    """Store {(model, dataset, seed, epoch): sweep} as a results folder."""
    for (model, dataset, seed, epoch), ds in units.items():
        store.write_unit(store.as_unit(ds, model, dataset, seed, epoch, profile="test"),
                         store.unit_path(folder, model, dataset, seed, epoch))
    return folder


SAME = {"conv1": (below(0.1), below(0.1)), "mid": (PHI, PHI), "fc": (PHI + 0.1, PHI + 0.1)}


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """ResNet-18 on mnist, 2 seeds × epochs 1 and 3: at epoch 3 conv1 is fragile (seed 0 under the baseline by 0.1,
    seed 1 by 0.06), mid robust, fc antifragile; at epoch 1 every layer sits on the baseline."""
    seed1 = {**SAME, "conv1": (below(0.06), below(0.06))}
    flat = dict.fromkeys(SAME, (PHI, PHI))
    units = {("resnet18", "mnist", 0, 3): sweep(SAME), ("resnet18", "mnist", 1, 3): sweep(seed1),
             ("resnet18", "mnist", 0, 1): sweep(flat), ("resnet18", "mnist", 1, 1): sweep(flat)}
    return results_folder(tmp_path_factory.mktemp("known"), units)


def cell(table, layer, score):
    found = table[(table["layer"] == layer) & (table["score"] == score)]
    assert len(found) == 1
    return found.iloc[0]


def test_a_tidy_row_per_layer_and_score_with_the_constructed_values(known):
    rep = fr.report(known, samples=100)
    assert isinstance(rep, pd.DataFrame) and isinstance(rep, Report) and tuple(rep.columns) == COLUMNS
    assert list(rep["layer"]) == [k for k in ("conv1", "mid", "fc", "global") for _ in range(3)]
    assert list(rep["score"]) == ["r_x", "r_xe", "r_e"] * 4
    assert list(rep["layer_index"]) == [k for k in range(4) for _ in range(3)]
    assert set(rep["epoch"]) == {3} and set(rep["n_params"]) == {100} and set(rep["model"]) == {"resnet18"}
    conv1 = (area(below(0.1)) + area(below(0.06))) / 2  # the mean over the two seeds
    expected = {("conv1", "r_x"): conv1, ("conv1", "r_xe"): conv1, ("conv1", "r_e"): 0.0,
                ("mid", "r_x"): 0.0, ("fc", "r_x"): area(PHI + 0.1), ("fc", "r_e"): 0.0, ("global", "r_x"): 0.0}
    for (layer, score), value in expected.items():
        assert cell(rep, layer, score)["value"] == pytest.approx(value, abs=2e-3), (layer, score)
    labels = {("conv1", "r_x"): "Fr", ("conv1", "r_e"): "Ro", ("mid", "r_x"): "Ro", ("fc", "r_xe"): "Af"}
    for (layer, score), label in labels.items():
        row = cell(rep, layer, score)
        assert row["label"] == label
        assert row["low"] <= row["value"] <= row["high"]
    # 2,000 images: the fragile and antifragile cells are settled over their whole interval
    assert cell(rep, "conv1", "r_x")["decided"] == "Fr" and cell(rep, "fc", "r_x")["decided"] == "Af"
    assert rep.attrs["filter"] == "h1" and rep.attrs["intervals"] == ""


def test_the_default_epoch_is_the_last_and_another_can_be_chosen(known):
    first = fr.report(known, epoch=1, samples=50)
    assert set(first["epoch"]) == {1} and set(first["label"]) == {"Ro"}
    with pytest.raises(fr.FragilityError, match=r"epoch .*1, 3"):
        fr.report(known, epoch=2)


def test_the_combined_response_of_identical_filters_is_each_filters(known):
    # the hand-made sweeps give h1, h2 and h3 the same curves: their mean (Eq. 13) scores the same
    h1, combined = fr.report(known, samples=20), fr.report(known, filter="combined", samples=20)
    np.testing.assert_allclose(combined["value"], h1["value"], atol=1e-12)
    assert list(combined["label"]) == list(h1["label"]) and combined.attrs["filter"] == "combined"


def test_few_images_leave_a_label_undecided(tmp_path):
    # r_x = −0.05: fragile, but with 40 test images its interval reaches past −τ
    folder = results_folder(tmp_path, {("m", "d", 0, 1): sweep({"a": (below(0.05), below(0.05))}, n=40)})
    row = cell(fr.report(folder, samples=200), "a", "r_x")
    assert row["label"] == "Fr" and row["low"] < -TAU < row["high"] and row["decided"] == UNDECIDED


def test_a_nan_score_has_no_label(tmp_path):
    folder = results_folder(tmp_path, {("m", "d", 0, 1): sweep(SAME, base=(0.0, 0.45))})  # clean accuracy 0
    rep = fr.report(folder, samples=20)
    row = cell(rep, "conv1", "r_x")
    assert np.isnan(row["value"]) and row["label"] == "" and row["decided"] == ""
    assert cell(rep, "conv1", "r_xe")["label"] == "Fr"  # the adversarial curve is still there


def test_units_without_per_image_results_give_nan_intervals_and_say_so(tmp_path, monkeypatch):
    # a store that accepts units without `correct` (as older versions wrote them)
    for name in store.PER_IMAGE:
        monkeypatch.delitem(store.VARIABLES, name)
    ds = sweep(SAME).drop_vars(["correct", "base_correct", "image"])
    folder = results_folder(tmp_path, {("m", "d", 0, 1): ds})
    rep = fr.report(folder)
    assert rep["low"].isna().all() and rep["high"].isna().all()
    assert set(rep.loc[rep["label"] != "", "decided"]) == {NO_INTERVAL}
    assert cell(rep, "conv1", "r_x")["label"] == "Fr" and "m on d" in rep.attrs["intervals"]
    assert "| Fr | no interval |" in rep.to_markdown()


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """Models a (on digits and other) and b (on digits), one seed and checkpoint each."""
    units = {("a", "digits", 0, 1): sweep(SAME, n=200), ("a", "other", 0, 1): sweep(SAME, n=200),
             ("b", "digits", 0, 2): sweep({"x": (PHI, PHI)}, n=200)}
    return results_folder(tmp_path_factory.mktemp("two"), units)


def test_several_models_and_datasets(two):
    rep = fr.report(two, samples=20)
    assert list(dict.fromkeys(zip(rep["model"], rep["dataset"]))) == [("a", "digits"), ("a", "other"),
                                                                       ("b", "digits")]
    assert set(rep.loc[rep["model"] == "b", "epoch"]) == {2}
    assert set(fr.report(two, dataset="other", samples=20)["model"]) == {"a"}
    assert set(fr.report(two, model=["b"], samples=20)["layer"]) == {"x", "global"}
    with pytest.raises(fr.FragilityError, match="model must be named"):
        rep.ignored_layers()
    assert rep.ignored_layers(model="a", dataset="other") == ["conv1"]
    with pytest.raises(fr.FragilityError, match="dataset must be named"):
        rep.ignored_layers(model="a")


BAD = {
    "no folder": (lambda f: {"results": f / "nope"}, ["results", "does not exist"]),
    "model": (lambda f: {"results": f, "model": "vgg"}, ["model must be one of 'a', 'b'; got 'vgg'"]),
    "models": (lambda f: {"results": f, "model": ["a", "vgg"]}, ["model", "list of distinct names from a, b", "vgg"]),
    "dataset": (lambda f: {"results": f, "dataset": "cifar10"}, ["dataset", "digits", "other"]),
    "dataset of a model": (lambda f: {"results": f, "model": "b", "dataset": "other"},
                           ["other", "dataset of b", "digits"]),
    "filter": (lambda f: {"results": f, "filter": "h4"}, ["filter", "'h1'", "'combined'"]),
    "epoch": (lambda f: {"results": f, "epoch": 5}, ["epoch", "1"]),
    "epoch type": (lambda f: {"results": f, "epoch": "last"}, ["epoch", "whole number"]),
    "scaling": (lambda f: {"results": f, "scaling": "paper"}, ["scaling", "'unperturbed'", "'chance'"]),
    "samples": (lambda f: {"results": f, "samples": 0}, ["samples", "≥ 1"]),
}


@pytest.mark.parametrize("case", BAD)
def test_each_argument_is_checked_before_anything_is_computed(case, two, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("computed before the arguments were checked")
    monkeypatch.setattr(uncertainty, "resample", never)
    monkeypatch.setattr(REPORT, "layer_scores", never)
    make, words = BAD[case]
    with pytest.raises(fr.FragilityError) as found:
        fr.report(**make(two if case != "no folder" else tmp_path))
    assert all(w in str(found.value) for w in words), str(found.value)


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(fr.FragilityError, match="no stored responses"):
        fr.report(tmp_path)


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """Layers l0–l5 under the baseline by 0.04, 0.12, 0.08, above it by 0.06, and on it (±0.004)."""
    offsets = {"l0": -0.04, "l1": -0.12, "l2": -0.08, "l3": 0.06, "l4": 0.004, "l5": -0.004}
    curves = {k: (np.maximum(PHI + o, 0), np.maximum(PHI + o, 0)) for k, o in offsets.items()}
    # r_ε: p above (the adversarial curve over the clean one), q below
    curves.update(p=(PHI, PHI + 0.1), q=(PHI, below(0.1)))
    return fr.report(results_folder(tmp_path_factory.mktemp("ranked"), {("m", "d", 0, 1): sweep(curves)}),
                     samples=100)


def test_top_ranks_by_label(ranked):
    assert list(ranked.top(2, label="Fr")["layer"]) == ["l1", "l2"]
    assert list(ranked.top(10, label="Fr")["layer"]) == ["l1", "l2", "l0"]
    assert list(ranked.top(1, label="Af")["layer"]) == ["l3"]
    assert list(ranked.top(4, label="Ro")["layer"]) == ["p", "q", "l5", "l4"]  # |r_x| = 0, 0, 0.004, 0.005
    assert set(ranked.top(3, label="Af", score="r_e")["layer"]) == {"p"}
    assert "global" not in set(ranked.top(20, label="Ro")["layer"])
    assert isinstance(ranked.top(1), Report)
    for bad in ({"n": 0}, {"label": "fragile"}, {"score": "r_y"}, {"decided": "yes"}):
        with pytest.raises(fr.FragilityError, match=next(iter(bad))):
            ranked.top(**bad)


def test_freeze_list_follows_the_selective_study(ranked):
    # prose: r_ε > +τ, what the paper's prose calls fragile; equation: r_ε < −τ (Fr by Eq. 16 as printed)
    assert ranked.freeze_list() == ["p"]
    assert ranked.freeze_list(reading="equation") == ["q"]
    assert ranked.freeze_list(decided=True) == ["p"]
    with pytest.raises(fr.FragilityError, match="reading"):
        ranked.freeze_list(reading="random")


def test_ignored_layers_are_the_fragile_ones(ranked):
    assert ranked.ignored_layers() == ["l0", "l1", "l2"]
    assert ranked.ignored_layers(score=["r_x", "r_xe"]) == ["l0", "l1", "l2", "q"]
    assert ranked.ignored_layers(score="r_e") == ["q"]
    with pytest.raises(fr.FragilityError, match="score"):
        ranked.ignored_layers(score="r_q")


def test_pruning_ratios_read_the_sweep(tmp_path):
    curves = {"flat": [1, 1, 1, 0.5, 0], "steep": [0.9, 0.7, 0.3, 0.1, 0], "late": [1, 1, 1, 1, 0.99],
              "dip": [1, 0.9, 1, 1, 0]}
    curves = {k: (np.array(v, float), PHI) for k, v in curves.items()}
    seeds = {0: [1, 10, 35, 70, 100], 1: [1, 20, 45, 80, 100]}  # weights removed at each threshold, of 100
    folder = results_folder(tmp_path, {("m", "d", s, 1): sweep(curves, n_filtered=counts)
                                       for s, counts in seeds.items()})
    rep = fr.report(folder, samples=20)
    ratios = rep.pruning_ratios()
    assert list(ratios) == ["flat", "steep", "late", "dip"]
    # flat keeps β̄ ≥ 0.98 up to α = 0.5: (35 + 45) / 2 of 100 removed; dip only at α = 0; late to the end
    assert ratios == pytest.approx({"flat": 0.40, "steep": 0.0, "late": 1.0, "dip": 0.01})
    # within 20 %: steep holds only at α = 0, dip until α = 0.75
    assert rep.pruning_ratios(max_drop=0.2) == pytest.approx({"flat": 0.40, "steep": 0.01, "late": 1.0, "dip": 0.75})
    assert rep.pruning_ratios(input="adversarial")["flat"] == pytest.approx(0.01)  # PHI falls at once
    for bad in ({"filter": "h3"}, {"max_drop": 1}, {"input": "noisy"}):
        with pytest.raises(fr.FragilityError, match=next(iter(bad))):
            rep.pruning_ratios(**bad)


def test_csv_and_markdown_are_written_atomically_and_never_over_a_users_file(known, tmp_path):
    rep = fr.report(known, samples=20)
    out = rep.to_csv(tmp_path / "r.csv")
    back = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(back.columns) == list(COLUMNS) and len(back) == len(rep)
    np.testing.assert_allclose(back["value"], rep["value"])
    assert list(back["decided"]) == list(rep["decided"]) and rep.to_csv().splitlines()[0] == ",".join(COLUMNS)
    rep.to_csv(out)  # its own file: replaced
    text = rep.to_markdown()
    lines = text.splitlines()
    assert len(lines) == len(rep) + 2 and lines[0].startswith("| model | dataset | epoch | layer | score |")
    md = rep.to_markdown(tmp_path / "r.md")
    assert md.read_text().splitlines()[0] == MARK and md.read_text().endswith(text)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.md"]  # no temporary file left
    mine = tmp_path / "notes.csv"
    mine.write_text("my notes\n")
    for write in (rep.to_csv, rep.to_markdown):
        with pytest.raises(fr.FragilityError, match="not a .* report fragility wrote"):
            write(mine)
    with pytest.raises(fr.FragilityError, match="folder"):
        rep.to_csv(tmp_path)
    assert mine.read_text() == "my notes\n"


@given(value=st.floats(-0.2, 0.2), a=st.floats(-0.3, 0.3), b=st.floats(-0.3, 0.3), tol=st.floats(0, 0.1))
def test_decided_only_where_the_whole_interval_carries_the_label(value, a, b, tol):
    low, high = min(a, b), max(a, b)
    label = "Fr" if value < -tol else "Af" if value > tol else "Ro"
    found = settle(np.array([label]), np.array([low]), np.array([high]), tol)[0]
    side = {"Fr": lambda r: r < -tol, "Af": lambda r: r > tol, "Ro": lambda r: -tol <= r <= tol}[label]
    assert found == (label if side(low) and side(high) else UNDECIDED)


def test_the_command_line_prints_and_writes_reports(known, tmp_path, capsys):
    assert cli.main(["report", "--results", str(known)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model |") and len(lines) == 2 + 12
    out = tmp_path / "r.csv"
    assert cli.main(["report", "--results", str(known), "--out", str(out), "--epoch", "1"]) == 0
    assert pd.read_csv(out)["epoch"].eq(1).all()
    for argv, words in ((["--model", "vgg"], "model"), (["--format", "xml"], "--format"),
                        (["--epoch", "last"], "--epoch"), (["--filter", "h9"], "filter")):
        assert cli.main(["report", "--results", str(known), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fragility: error:") and words in err and len(err.strip().splitlines()) == 1
    (tmp_path / "user.md").write_text("mine\n")
    assert cli.main(["report", "--results", str(known), "--out", str(tmp_path / "user.md")]) == 2
    assert (tmp_path / "user.md").read_text() == "mine\n"


@pytest.mark.slow
def test_a_small_profiles_real_results(small):
    _, results = small
    done = subprocess.run([sys.executable, "-m", "fragility.cli", "report", "--results", str(results), "--format",
                           "csv"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rep = fr.report(results, samples=100)
    layers = fr.layer_order(fr.open_results(results), "smallcnn")
    assert list(rep["layer"].unique()) == layers and len(rep) == 3 * len(layers)
    assert set(rep["epoch"]) == {2}  # the profile's last checkpoint
    assert rep.loc[rep["layer"] == "global", "n_params"].iloc[0] == rep.loc[rep["layer"] != "global"].drop_duplicates(
        "layer")["n_params"].sum()
    finite = rep[np.isfinite(rep["value"])]
    assert len(finite) and (finite["low"] <= finite["high"]).all() and finite["low"].notna().all()
    # the same scores computed the plain way: fr.scores on the stored responses, averaged over seeds
    plain = fr.scores(fr.open_results(results).sel(model="smallcnn", dataset="digits", epoch=2)).mean("seed")
    for score in ("r_x", "r_xe", "r_e"):
        rows = rep[rep["score"] == score]
        np.testing.assert_allclose(rows["value"], plain[score].sel(layer=list(rows["layer"])).values, atol=1e-9)
    assert done.stdout.splitlines()[0] == ",".join(COLUMNS) and len(done.stdout.splitlines()) == len(rep) + 1
    ratios = rep.pruning_ratios()
    assert list(ratios) == layers[:-1] and all(0 <= r <= 1 for r in ratios.values())
    with pytest.raises(fr.FragilityError, match="'h1'"):
        fr.report(results, filter="combined")  # the small profile sweeps h1 alone
