"""Random weight removal per layer (seed 003, SPEC §10), and its comparison with synaptic filtering."""
import copy
import math

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import fragility as fr
from fragility import FragilityError
from fragility.attacks import accuracy
from fragility.removal import compare_with_filtering, random_mask, random_removal, removal_count

EPS = 0.2
P = [0.0, 0.3, 1.0]


pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def removal(trained_cnn, test_set):
    return random_removal(trained_cnn, *test_set, p=P, draws=2, seed=7, epsilon=EPS, batch_size=25, progress=False)


def with_weight(model, layer, weight):
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.get_submodule(layer).weight.copy_(weight)
    return out


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), p=st.floats(0, 1), q=st.floats(0, 1),
       seed=st.integers(0, 2**31), draw=st.integers(0, 5))
def test_random_mask_counts_and_nesting(shape, p, q, seed, draw):
    n = math.prod(shape)
    keep = random_mask(shape, p, seed=seed, layer="conv", draw=draw)
    assert keep.shape == tuple(shape) and keep.dtype == torch.bool
    assert int((~keep).sum()) == math.floor(p * n + 0.5) == removal_count(n, p)  # round(p·n), halves up
    assert torch.equal(keep, random_mask(shape, p, seed=seed, layer="conv", draw=draw))  # reproducible
    low, high = sorted((p, q))
    assert not (~random_mask(shape, low, seed=seed, layer="conv", draw=draw)
                & random_mask(shape, high, seed=seed, layer="conv", draw=draw)).any()  # nested within a draw


def test_random_mask_depends_on_seed_layer_and_draw():
    masks = [random_mask((40, 5), 0.5, seed=s, layer=l, draw=d) for s, l, d in
             [(0, "a", 0), (1, "a", 0), (0, "b", 0), (0, "a", 1)]]
    for other in masks[1:]:
        assert not torch.equal(masks[0], other)


def test_random_removal_layout(removal, trained_cnn):
    layers = ["blocks.0.conv", "blocks.1.conv", "fc"]
    assert removal["accuracy"].dims == ("layer", "p", "draw", "input")
    assert removal["accuracy"].shape == (3, 3, 2, 2) and list(removal["layer"].values) == layers
    sizes = [trained_cnn.get_submodule(n).weight.numel() for n in layers]
    np.testing.assert_array_equal(removal["n_params"].values, sizes)
    np.testing.assert_array_equal(removal["n_removed"].values, [[math.floor(p * n + 0.5) for p in P] for n in sizes])
    assert float(removal["epsilon"]) == EPS and removal.attrs["seed"] == 7


def test_random_removal_against_independent_evaluations(removal, trained_cnn, test_set):
    x, y = test_set
    x_adv = fr.fgsm(trained_cnn, x, y, EPS)
    base = [accuracy(trained_cnn, x, y), accuracy(trained_cnn, x_adv, y)]
    np.testing.assert_array_equal(removal["base_accuracy"].values, base)
    for layer in removal["layer"].values:
        w = trained_cnn.get_submodule(layer).weight.detach()
        for draw in (0, 1):
            got = removal["accuracy"].sel(layer=layer, draw=draw)
            np.testing.assert_array_equal(got.sel(p=0.0).values, base)  # nothing removed
            empty = with_weight(trained_cnn, layer, torch.zeros_like(w))  # everything removed
            np.testing.assert_array_equal(got.sel(p=1.0).values, [accuracy(empty, x, y), accuracy(empty, x_adv, y)])
            part = with_weight(trained_cnn, layer, w * random_mask(w.shape, 0.3, seed=7, layer=layer, draw=draw))
            np.testing.assert_array_equal(got.sel(p=0.3).values, [accuracy(part, x, y), accuracy(part, x_adv, y)])
    assert (removal["accuracy"].sel(layer="blocks.0.conv", p=1.0, input="clean") < base[0]).all()


def test_random_removal_is_reproducible_and_clean_only_by_default(removal, trained_cnn, test_set):
    again = random_removal(trained_cnn, *test_set, layers=["fc", "blocks.0.conv"], p=P, draws=2, seed=7,
                           progress=False)
    assert list(again["input"].values) == ["clean"] and "epsilon" not in again
    assert list(again["layer"].values) == ["blocks.0.conv", "fc"]  # forward order
    xr.testing.assert_equal(again["accuracy"], removal["accuracy"].sel(layer=["blocks.0.conv", "fc"], input=["clean"]))


@pytest.mark.parametrize("bad, match", [({"p": [0.5, 1.2]}, "p must"), ({"p": [0.1, 0.1]}, "p must"),
                                        ({"draws": 0}, "draws"), ({"layers": ["conv9"]}, "unknown layer")])
def test_random_removal_refuses_bad_input(trained_cnn, test_set, bad, match):
    with pytest.raises(FragilityError, match=match):
        random_removal(trained_cnn, *test_set, progress=False, **bad)


def toy_pair():
    """A removal and an h1 sweep of one 10-weight layer with hand-made numbers."""
    removal = xr.Dataset({
        "accuracy": (("layer", "p", "draw", "input"),
                     np.array([[0.9, 0.9], [0.7, 0.5], [0.6, 0.6], [0.3, 0.5], [0.1, 0.1]])[None, :, :, None]),
        "n_removed": (("layer", "p"), [[0, 2, 4, 5, 10]]),
        "n_params": ("layer", [10]),
    }, coords={"layer": ["conv"], "p": [0.0, 0.2, 0.4, 0.5, 1.0], "draw": [0, 1], "input": ["clean"]})
    sweep = xr.Dataset({
        "accuracy": (("layer", "filter", "alpha", "input"), np.array([[[0.8], [0.8], [0.4], [0.1]]])[:, None]),
        "n_filtered": (("layer", "filter", "alpha"), [[[2, 2, 6, 10]]]),
        "n_params": ("layer", [10]),
        "base_accuracy": ("input", [0.9]),
    }, coords={"layer": ["conv"], "filter": ["h1"], "alpha": [0, 1 / 3, 2 / 3, 1], "input": ["clean"]})
    return removal, sweep


def test_compare_with_filtering_aligns_fractions():
    removal, sweep = toy_pair()
    out = compare_with_filtering(removal, sweep, tol=0.05)
    assert out["filtered"].dims == ("layer", "p", "input")
    np.testing.assert_allclose(out["fraction"].sel(layer="conv").values, [0.0, 0.2, 0.4, 0.5, 1.0])
    # (0, base 0.9) → (0.2, 0.8) → (0.6, 0.4) → (1, 0.1): linear in the removed fraction
    np.testing.assert_allclose(out["filtered"].sel(layer="conv", input="clean").values, [0.9, 0.8, 0.6, 0.5, 0.1])
    np.testing.assert_allclose(out["random_mean"].sel(layer="conv", input="clean").values, [0.9, 0.6, 0.6, 0.4, 0.1])
    np.testing.assert_allclose(out["random_std"].sel(layer="conv", input="clean").values, [0, 0.1, 0, 0.1, 0],
                               atol=1e-12)
    np.testing.assert_allclose(out["difference"].sel(layer="conv", input="clean").values, [0, 0.2, 0, 0.1, 0],
                               atol=1e-12)
    assert list(out["agree"].sel(layer="conv", input="clean").values) == [True, False, True, False, True]


def test_compare_with_filtering_keeps_extra_dimensions():
    removal, sweep = toy_pair()
    out = compare_with_filtering(removal.expand_dims(seed=[0, 1]), sweep.expand_dims(seed=[0, 1]))
    assert out["filtered"].sizes == {"seed": 2, "layer": 1, "p": 5, "input": 1}
    np.testing.assert_allclose(out["filtered"].sel(seed=1, layer="conv", input="clean").values,
                               [0.9, 0.8, 0.6, 0.5, 0.1])


def test_compare_with_filtering_refuses_mismatches():
    removal, sweep = toy_pair()
    with pytest.raises(FragilityError, match="h1 or h2"):
        compare_with_filtering(removal, sweep, filter="h3")
    with pytest.raises(FragilityError, match="not in this sweep"):
        compare_with_filtering(removal, sweep, filter="h2")
    with pytest.raises(FragilityError, match="share no layer"):
        compare_with_filtering(removal.assign_coords(layer=["fc"]), sweep)
    with pytest.raises(FragilityError, match="different weights"):
        compare_with_filtering(removal.assign(n_params=("layer", [12])), sweep)


def test_compare_with_a_real_sweep(removal, trained_cnn, test_set):
    sweep = fr.sweep(trained_cnn, *test_set, A=4, filters=("h1",), include_global=False, epsilon=EPS,
                     batch_size=25, progress=False)
    out = compare_with_filtering(removal, sweep)
    # nothing removed and everything removed are the same network both ways
    np.testing.assert_array_equal(out["difference"].sel(p=[0.0, 1.0]).values, 0.0)
    assert list(out["input"].values) == ["clean", "adversarial"]
    with pytest.raises(FragilityError, match="different ε"):
        compare_with_filtering(removal, sweep.assign(epsilon=0.3))
