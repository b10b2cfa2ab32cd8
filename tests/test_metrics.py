"""Metrics other than top-1 accuracy (fragility.metrics): top-k and functions of one's own, from the per-example
values through the sweep, the store, the scores and labels, the report and the profile key; the default unchanged."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import fragility as fr
from conftest import TINY_RUN
from fragility import FragilityError, metrics, models, pipeline, profiles, store, uncertainty
from ownpkg.metrics import NLL, negative_nll, nll


def network(n=24, size=16, seed=0):
    """A random smallcnn with inputs and labels it mostly gets right (filtering has something to destroy)."""
    model = models.build("smallcnn", 1, 10, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10
    return model, x, y


# Per-example values against independent computations.

def top_k_by_sorting(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Whether the label is among the first k classes when sorted by logit, largest first, equal logits in class
    order (a stable sort: how argmax breaks ties)."""
    order = np.argsort(-logits, axis=1, kind="stable")
    return (order[:, :k] == labels[:, None]).any(1)


logit_batches = st.integers(2, 12).flatmap(lambda c: st.tuples(
    st.just(c),
    st.lists(st.lists(st.integers(-3, 3), min_size=c, max_size=c), min_size=1, max_size=20),  # small integers: ties
    st.randoms(use_true_random=False)))


@settings(max_examples=100, deadline=None)
@given(logit_batches, st.booleans())
def test_top_k_equals_an_independent_sort_and_top_1_is_accuracy(case, real):
    classes, rows, rng = case
    logits = np.array(rows, dtype=np.float32)
    if real:  # no ties
        logits = logits + np.array([[rng.random() for _ in range(classes)] for _ in rows], dtype=np.float32)
    labels = np.array([rng.randrange(classes) for _ in rows])
    z, y = torch.from_numpy(logits), torch.from_numpy(labels)
    for k in range(1, classes + 1):
        np.testing.assert_array_equal(fr.TopK(k).per_example(z, y), top_k_by_sorting(logits, labels, k))
    np.testing.assert_array_equal(fr.TopK(1).per_example(z, y), fr.Accuracy().per_example(z, y))
    np.testing.assert_array_equal(fr.Accuracy().per_example(z, y), logits.argmax(1) == labels)


def test_chance_levels():
    y = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 5, 6])  # shares 0.3, 0.2, 0.1 …
    assert fr.Accuracy().chance(y, 10) == 0.3
    assert fr.TopK(2).chance(y, 10) == pytest.approx(0.5)
    assert fr.TopK(3).chance(torch.arange(10), 10) == pytest.approx(0.3)  # uniform labels: k / K
    assert math.isnan(fr.metric(nll, higher_is_better=False).chance(y, 10))
    assert NLL.chance(y, 10) == math.log(10)


# Through the sweep: the engine against the oracle, and the default unchanged.

def test_top_1_sweep_equals_the_accuracy_sweep(one_thread):
    model, x, y = network()
    options = dict(A=3, epsilon=0.05, batch_size=10, progress=False)
    acc, top1 = fr.sweep(model, x, y, **options), fr.sweep(model, x, y, metric=fr.TopK(1), **options)
    np.testing.assert_array_equal(top1.top1.values, acc.accuracy.values)
    np.testing.assert_array_equal(top1.top1_per_image.values, acc.correct.values)
    np.testing.assert_array_equal(top1.base_top1.values, acc.base_accuracy.values)
    assert float(top1.chance) == float(acc.chance)


def test_the_default_metric_changes_nothing(one_thread):
    model, x, y = network()
    options = dict(A=2, epsilon=0.05, batch_size=10, progress=False)
    plain = fr.sweep(model, x, y, **options)
    assert list(plain.data_vars) == ["accuracy", "n_filtered", "n_params", "threshold", "base_accuracy", "epsilon",
                                     "chance", "correct", "base_correct"]
    assert not [k for k in plain.attrs if k.startswith("metric")] and plain.correct.dtype == bool
    for named in ("accuracy", fr.Accuracy(), None):
        again = fr.sweep(model, x, y, metric=named, **options)
        xr.testing.assert_identical(again.drop_attrs(), plain.drop_attrs())
        assert {k: v for k, v in again.attrs.items() if k != "seconds"} == \
            {k: v for k, v in plain.attrs.items() if k != "seconds"}


@pytest.mark.parametrize("attack", ["fixed", "adaptive"])
@pytest.mark.parametrize("masks", [1, 4])
def test_engine_equals_oracle_for_top_k_and_a_function(one_thread, attack, masks):
    model, x, y = network()
    options = dict(A=3, epsilon=0.1, attack=attack, batch_size=10, progress=False)
    top3 = fr.sweep(model, x, y, metric="top3", masks_per_pass=masks, **options)
    np.testing.assert_array_equal(top3.top3.values, fr.sweep_naive(model, x, y, metric="top3", **options).top3.values)
    assert top3.top3_per_image.dtype == bool and float(top3.top3.min()) < float(top3.base_top3.max())
    for metric in (NLL, fr.metric(negative_nll, higher_is_better=True)):
        fast = fr.sweep(model, x, y, metric=metric, masks_per_pass=masks, **options)
        plain = fr.sweep_naive(model, x, y, metric=metric, **options)
        for v in (metric.name, f"base_{metric.name}", f"{metric.name}_per_image"):
            # a fixed attack sweeps a channels-last copy: its convolutions round differently from the oracle's
            np.testing.assert_allclose(fast[v].values, plain[v].values, rtol=1e-5, atol=1e-6)
        # the response is the mean of the stored per-example values, and those are the function's own
        np.testing.assert_allclose(fast[metric.name].values, fast[f"{metric.name}_per_image"].values.mean(-1),
                                   rtol=1e-6)
        with torch.no_grad():
            expected = metric.function(model(x), y).numpy()
        np.testing.assert_allclose(fast[f"base_{metric.name}_per_image"].sel(input="clean"), expected, rtol=1e-5)
        assert fast.attrs["metric"] == metric.name
        assert fast.attrs["metric_higher_is_better"] == int(metric.higher_is_better)
        assert json.loads(fast.attrs["metric_definition"])["function"].endswith(metric.function.__name__)


def test_epsilon_is_searched_on_top_1_accuracy_whatever_the_metric(trained_cnn, digits, one_thread):
    x, y = digits[2][:100], digits[3][:100]
    options = dict(A=1, layers=[], epsilon="auto", batch_size=100, progress=False)
    found = {float(fr.sweep(trained_cnn, x, y, metric=m, **options).epsilon) for m in ("accuracy", "top3", NLL)}
    assert found == {fr.search_epsilon(trained_cnn, x, y, batch_size=100)}


def test_other_metrics_stored_under_their_own_names(one_thread, tmp_path):
    model, x, y = network()
    ds = fr.sweep(model, x, y, A=2, epsilon=0.05, metric=NLL, batch_size=10, progress=False)
    assert {"nll", "base_nll", "nll_per_image", "base_nll_per_image"} <= set(ds.data_vars)
    assert "accuracy" not in ds and "correct" not in ds
    assert ds.nll_per_image.dtype == np.float32 and float(ds.chance) == pytest.approx(math.log(10))
    for seed in (0, 1):
        store.write_unit(store.as_unit(ds, "smallcnn", "digits", seed, 1, profile="test"),
                         store.unit_path(tmp_path, "smallcnn", "digits", seed, 1))
    back = store.read_unit(store.unit_path(tmp_path, "smallcnn", "digits", 0, 1))
    np.testing.assert_array_equal(back.nll_per_image.values, ds.nll_per_image.values)
    both = fr.open_results(tmp_path)
    assert "nll" in both and "nll_per_image" not in both and both.attrs["metric"] == "nll"
    np.testing.assert_array_equal(both.nll.sel(seed=0).squeeze().values, ds.nll.values)
    rs = uncertainty.resample(tmp_path, "smallcnn", "digits", samples=5)
    np.testing.assert_allclose(rs.nll.isel(sample=0, seed=0, epoch=0).values, ds.nll.values, rtol=1e-6)
    assert rs.attrs["metric_higher_is_better"] == 0
    acc = fr.sweep(model, x, y, A=2, epsilon=0.05, batch_size=10, progress=False)
    store.write_unit(store.as_unit(acc, "smallcnn", "digits", 2, 1, profile="test"),
                     store.unit_path(tmp_path, "smallcnn", "digits", 2, 1))
    with pytest.raises(FragilityError, match="different metrics"):
        fr.open_results(tmp_path)


# Scores and labels of a lower-is-better metric: oriented so that Fr still means the stress hurts.

ALPHA = [0.0, 0.5, 1.0]


def sweep_of(values, base, name="accuracy", higher=True, chance=0.1):
    """A one-layer h1 sweep holding `values` (alpha, input) of a metric, unperturbed `base` (clean, adversarial);
    h1 removes 0, 5 and 10 of 10 weights (φ̄ = 1, 0.5, 0)."""
    names = store.metric_variables(name)
    ds = xr.Dataset({names["accuracy"]: (("layer", "filter", "alpha", "input"), np.array(values, float)[None, None]),
                     "n_filtered": (("layer", "filter", "alpha"), np.array([[[0, 5, 10]]])),
                     "n_params": (("layer",), np.array([10])),
                     names["base_accuracy"]: (("input",), np.array(base, float)), "chance": ((), chance)},
                    coords={"layer": ["conv1"], "filter": ["h1"], "alpha": ALPHA, "input": ["clean", "adversarial"]})
    if name != "accuracy":
        ds.attrs.update(metric=name, metric_higher_is_better=int(higher))
    return ds


def test_a_loss_that_grows_is_fragile_and_one_that_falls_antifragile():
    # the loss doubles at α = 0.5 and grows tenfold at α = 1: scaled 1, 0.5, 0.1 against φ̄ = 1, 0.5, 0
    hurt = sweep_of([[0.2, 0.4], [0.4, 0.8], [2.0, 4.0]], [0.2, 0.4], "nll", higher=False)
    s = fr.scores(hurt).sel(layer="conv1")
    assert float(s.r_x) == pytest.approx((0 + 0 + 0.1) / 2)
    # a loss that grows faster than the weights go: fragile; the same numbers read as a score: antifragile
    worse = sweep_of([[0.2, 0.4], [0.8, 1.6], [4.0, 8.0]], [0.2, 0.4], "nll", higher=False)
    r = fr.scores(worse).sel(layer="conv1")
    assert float(r.r_x) == pytest.approx((0 + (0.25 - 0.5) + 0.05) / 2)  # −0.1
    assert str(fr.characterize(r)["r_x"].values) == "Fr"
    assert r.attrs["metric"] == "nll" and r.attrs["higher_is_better"] == 0
    flipped = worse.assign_attrs(metric_higher_is_better=1)
    assert str(fr.characterize(fr.scores(flipped).sel(layer="conv1"))["r_x"].values) == "Af"
    # a loss the stress lowers: scaled above 1, antifragile
    better = sweep_of([[0.2, 0.4], [0.1, 0.2], [0.1, 0.2]], [0.2, 0.4], "nll", higher=False)
    assert str(fr.characterize(fr.scores(better).sel(layer="conv1"))["r_x"].values) == "Af"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.05, 1.0), min_size=6, max_size=6), st.lists(st.floats(0.05, 1.0), min_size=2,
                                                                         max_size=2),
       st.sampled_from(["unperturbed", "first"]), st.sampled_from(["h1", "combined"]))
def test_a_lower_is_better_metric_scores_as_its_reciprocal(acc, base, scaling, filter):
    """Scores of a loss m equal those of the higher-is-better 1/m: the reciprocal is the orientation."""
    values = np.array(acc).reshape(3, 2)
    one = sweep_of(values, base)
    loss = sweep_of(1 / values, 1 / np.array(base), "loss", higher=False)
    if filter == "combined":
        one, loss = (xr.concat([d] * 3, "filter", data_vars="all").assign_coords(filter=["h1", "h2", "h3"])
                     for d in (one, loss))
    a, b = fr.scores(one, filter, scaling=scaling), fr.scores(loss, filter, scaling=scaling)
    for name in ("r_x", "r_xe", "r_e"):
        np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-9)


def test_the_above_chance_scaling_of_a_loss():
    # chance loss log 10 ≈ 2.30: a loss that reaches it scales to 0, one half way to it to 0.5
    c = math.log(10)
    ds = sweep_of([[0.3, 0.6], [(0.3 + c) / 2, (0.6 + c) / 2], [c, c]], [0.3, 0.6], "nll", higher=False, chance=c)
    s = fr.scaled(ds, "chance").sel(layer="conv1", filter="h1")
    np.testing.assert_allclose(s.sel(input="clean"), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(s.sel(input="adversarial"), [1.0, 0.5, 0.0])


def test_scalings_a_metric_cannot_have_are_refused():
    no_chance = sweep_of([[0.2, 0.4]] * 3, [0.2, 0.4], "nll", higher=False, chance=np.nan)
    with pytest.raises(FragilityError, match="chance level"):
        fr.scores(no_chance, scaling="chance")
    negative = sweep_of([[-0.2, -0.4]] * 3, [-0.2, -0.4], "loglik", higher=True)
    for scaling in ("unperturbed", "first"):
        with pytest.raises(FragilityError, match="negative values"):
            fr.scores(negative, scaling=scaling)
    with pytest.raises(FragilityError, match="metric_higher_is_better"):
        fr.scores(negative.drop_attrs().assign_attrs(metric="loglik"))  # no longer says which way it improves


# The report on results of a loss.

def loss_unit(curve, n=400, base=0.2):
    """A sweep of a loss `nll` on n images whose mean is base / scaled at every filter's α (per-image values vary)."""
    rng = np.random.default_rng(0)
    noise = rng.uniform(0.5, 1.5, n).astype(np.float32)
    noise /= noise.mean()
    layers = list(curve)
    scaled = np.array([curve[k] for k in layers])  # (layer, alpha): the scaled response β̄ = base / m
    per = (base / scaled)[:, None, :, None, None] * noise  # (layer, filter, alpha, input, image)
    per = np.broadcast_to(per, (len(layers), 3, len(ALPHA), 2, n)).astype(np.float32)
    base_per = np.broadcast_to(base * noise, (2, n)).astype(np.float32)
    ds = xr.Dataset({
        "nll": (("layer", "filter", "alpha", "input"), per.mean(-1, dtype=np.float64)),
        "n_filtered": (("layer", "filter", "alpha"), np.broadcast_to([0, 5, 10], (len(layers), 3, 3)).copy()),
        "n_params": (("layer",), np.full(len(layers), 10)), "threshold": (("layer", "filter", "alpha"),
                                                                          np.zeros((len(layers), 3, 3))),
        "base_nll": (("input",), base_per.mean(-1, dtype=np.float64)), "epsilon": ((), 0.1), "chance": ((), np.nan),
        "nll_per_image": (("layer", "filter", "alpha", "input", "image"), per),
        "base_nll_per_image": (("input", "image"), base_per)},
        coords={"layer": layers, "filter": ["h1", "h2", "h3"], "alpha": ALPHA, "input": ["clean", "adversarial"],
                "image": np.arange(n)},
        attrs={"A": 2, "metric": "nll", "metric_higher_is_better": 0})
    return ds


def test_report_labels_a_growing_loss_fragile(tmp_path):
    curves = {"conv1": [1.0, 0.2, 0.0001], "fc": [1.0, 1.0, 1.0], "global": [1.0, 0.5, 0.0001]}
    for seed in (0, 1):
        store.write_unit(store.as_unit(loss_unit(curves), "resnet18", "mnist", seed, 1, profile="test"),
                         store.unit_path(tmp_path, "resnet18", "mnist", seed, 1))
    rep = fr.report(tmp_path, samples=20)
    assert rep.attrs["metric"] == "nll" and rep.attrs["higher_is_better"] is False
    r_x = rep[rep.score == "r_x"].set_index("layer")
    assert r_x.loc["conv1", "value"] == pytest.approx((0 + (0.2 - 0.5) + 0.0001) / 2, abs=1e-6)
    assert r_x.loc["conv1", "label"] == "Fr" and r_x.loc["fc", "label"] == "Af"
    assert r_x.loc["conv1", "decided"] == "Fr"  # the intervals resample the stored per-image values
    assert rep.ignored_layers(score="r_x") == ["conv1"]
    assert fr.report(tmp_path, samples=5).pruning_ratios()["fc"] == 1.0
    with pytest.raises(FragilityError, match="chance level"):
        fr.report(tmp_path, scaling="chance", samples=5)


def test_report_states_the_default_metric(tmp_path):
    ds = sweep_of([[0.8, 0.4], [0.4, 0.2], [0.1, 0.1]], [0.8, 0.4]).assign(
        threshold=(("layer", "filter", "alpha"), np.zeros((1, 1, 3))), epsilon=0.1)
    store.write_unit(store.as_unit(ds.drop_vars([]).assign(
        correct=(("layer", "filter", "alpha", "input", "image"), np.zeros((1, 1, 3, 2, 4), bool)),
        base_correct=(("input", "image"), np.zeros((2, 4), bool))).assign_coords(image=np.arange(4)),
        "m", "d", 0, 1, profile="test"), store.unit_path(tmp_path, "m", "d", 0, 1))
    assert fr.report(tmp_path, samples=2).attrs["metric"] == "accuracy"


# The profile key.

def test_profile_metric_round_trip_and_hash(tmp_path):
    default = profiles.parse_profile(TINY_RUN)
    plain = {k: v for k, v in TINY_RUN.items() if k != "studies"}  # studies measure top-1 accuracy only
    # the hashes the code at c2f5f5c (before metrics) gave: stored results stay valid
    assert (default.sweep_hash, default.config_hash("smallcnn", "digits", 0)) == ("599335b75616", "0f9d05e1c516")
    assert {n: profiles.load_profile(n).sweep_hash for n in ("quick", "reference", "paper")} == \
        {"quick": "674fb0d3e51f", "reference": "7da72fa5c522", "paper": "70cc17d9053c"}
    assert "metric" not in default.sweep_settings and default.measure() == fr.Accuracy()
    assert profiles.parse_profile({**TINY_RUN, "metric": "accuracy"}) == default
    top5 = [profiles.parse_profile({**plain, "metric": m}) for m in ("top5", {"name": "topk", "k": 5}, "topk")]
    assert len({p.metric for p in top5}) == 1 and top5[0].measure() == fr.TopK(5)
    assert top5[0].sweep_settings["metric"] == {"name": "topk", "k": 5}
    assert top5[0].sweep_hash != default.sweep_hash and len({p.sweep_hash for p in top5}) == 1
    assert top5[0].config_hash("smallcnn", "digits", 0) == "0f9d05e1c516"  # training is the same
    own = profiles.parse_profile({**plain, "metric": {"function": "ownpkg.metrics:nll", "name": "nll",
                                                         "higher_is_better": False}})
    built = own.measure()
    assert (built.name, built.higher_is_better, built.function) == ("nll", False, nll)
    assert own.sweep_settings["metric"]["function"] == "ownpkg.metrics:nll"
    assert profiles.parse_profile({**plain, "metric": "ownpkg.metrics:NLL"}).measure() == NLL
    text = (tmp_path / "p.yaml")
    text.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in {**plain, "metric": {"name": "topk",
                                                                                          "k": 3}}.items()))
    assert profiles.load_profile(text).measure() == fr.TopK(3)


@pytest.mark.parametrize("value, match", [
    (5, "metric must be"), (["top5"], "metric must be"), ("top0", "metric must be"), ("nope", "metric must be"),
    ({"name": "nope"}, "metric kind"), ({"name": "topk", "k": 0}, "k must be"), ({"name": "topk", "x": 1}, "unknown"),
    ({"function": "ownpkg.metrics:nll", "name": "nll"}, "higher_is_better"),
    ({"function": "ownpkg.metrics:nll", "name": "accuracy", "higher_is_better": False}, "name"),
    ({"function": "ownpkg.metrics:missing", "name": "a", "higher_is_better": True}, "no attribute"),
    ({"function": "ownpkg.metrics:nll", "higher_is_better": True, "extra": 1}, "unknown key"),
    ("ownpkg.metrics:nll", "not a Metric"),
])
def test_profile_refuses_bad_metrics_in_one_line(value, match):
    with pytest.raises(FragilityError, match=match) as err:
        profiles.parse_profile({**TINY_RUN, "metric": value})
    assert "metric" in str(err.value) and "\n" not in str(err.value)


# Bad input: one FragilityError each.

def wrong_shape(logits, labels):
    return logits[:, :2]


def not_finite(logits, labels):
    return torch.full((len(labels),), float("nan"))


def raises(logits, labels):
    raise ValueError("boom")


@pytest.mark.parametrize("make, match", [
    (lambda: fr.metric(5, name="a", higher_is_better=True), "function"),
    (lambda: fr.metric(lambda z, y: z[:, 0], higher_is_better=True), "name"),
    (lambda: fr.metric(nll, name="accuracy", higher_is_better=False), "name"),
    (lambda: fr.metric(nll, name="base_loss", higher_is_better=False), "name"),
    (lambda: fr.metric(nll, name="top5", higher_is_better=False), "name"),
    (lambda: fr.metric(nll, name="correct", higher_is_better=False), "name"),
    (lambda: fr.metric(nll, name="Loss", higher_is_better=False), "name"),
    (lambda: fr.metric(nll), "higher_is_better"),
    (lambda: fr.metric(nll, higher_is_better="no"), "higher_is_better"),
    (lambda: fr.metric(nll, higher_is_better=False, chance=float("nan")), "chance"),
    (lambda: fr.TopK(0), "k must be"), (lambda: fr.TopK(2.5), "k must be"), (lambda: fr.TopK(True), "k must be"),
])
def test_bad_metric_definitions(make, match):
    with pytest.raises(FragilityError, match=match):
        make()


@pytest.mark.parametrize("metric, match", [
    ("nope", "metric must be"), (5, "metric must be"), (nll, "fr.metric"), (fr.TopK(10), "less than the model's 10"),
    (fr.metric(wrong_shape, higher_is_better=True), r"shape \(2,\)"),
    (fr.metric(not_finite, higher_is_better=True), "NaN or infinite"),
    (fr.metric(raises, higher_is_better=True), "ValueError: boom"),
    ("ownpkg.metrics:nowhere", "no attribute"),
])
def test_bad_metric_in_a_sweep_is_one_clear_error(one_thread, metric, match):
    model, x, y = network(n=4)
    with pytest.raises(FragilityError, match=match):
        fr.sweep(model, x, y, A=1, epsilon=0.05, metric=metric, progress=False)


def test_registering_a_metric_kind():
    with pytest.raises(FragilityError, match="Metric subclass"):
        metrics.register_metric("mine")(int)
    with pytest.raises(FragilityError, match="already registered"):
        metrics.register_metric("topk")(type("Other", (fr.Metric,), {}))
    assert metrics.as_metric("topk") == fr.TopK(5) and metrics.as_metric(None) == fr.Accuracy()


# Through the pipeline and the command line.

@pytest.mark.slow
def test_a_profile_with_a_loss_runs_end_to_end(tmp_path):
    """`fragility run` with a loss of one's own: units hold it under its name, the report reads it, verify agrees."""
    raw = {**TINY_RUN, "name": "loss", "models": ["smallcnn"], "seeds": [0], "epochs": [2], "studies": None,
           "A": 2, "metric": {"function": "ownpkg.metrics:nll", "name": "nll",
                                             "higher_is_better": False}}
    text = tmp_path / "loss.yaml"
    text.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in raw.items()))
    results = tmp_path / "results"
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fragility.cli", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path)

    done = cli("run", "--profile", str(text), "--results", str(results), "--quiet")
    assert done.returncode == 0, done.stderr
    unit = store.read_unit(store.unit_path(results, "smallcnn", "digits", 0, 2))
    assert {"nll", "base_nll", "nll_per_image", "base_nll_per_image"} <= set(unit.data_vars)
    assert unit.attrs["metric"] == "nll" and unit.attrs["metric_higher_is_better"] == 0
    profile = profiles.load_profile(text)
    assert unit.attrs["sweep_hash"] == profile.sweep_hash and not pipeline.plan(profile, results)
    # ε was searched once (on top-1 accuracy) and recorded; the attack raises the loss
    assert pipeline.stored_epsilon(profile, results, "smallcnn", "digits") == float(unit.epsilon)
    assert float(unit.base_nll.sel(input="adversarial")) > float(unit.base_nll.sel(input="clean"))
    rep = fr.report(results, samples=10)
    assert rep.attrs["metric"] == "nll" and set(rep.label) <= {"Fr", "Ro", "Af"} and len(rep) == 3 * unit.sizes["layer"]
    table = cli("report", "--results", str(results))
    assert table.returncode == 0 and "smallcnn" in table.stdout, table.stderr
    again = cli("verify", "--profile", str(text), "--results", str(results), "--scratch", str(tmp_path / "scratch"))
    assert again.returncode == 0, again.stdout + again.stderr
    (tmp_path / "bad.yaml").write_text(text.read_text().replace('"higher_is_better": false', '"higher_is_better": 0'))
    bad = cli("status", "--profile", str(tmp_path / "bad.yaml"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "higher_is_better" in bad.stderr
