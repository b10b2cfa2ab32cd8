"""Baseline, scaled and combined responses, scores and characterization on hand-computed toy curves (Eq. 10–16)."""
import numpy as np
import pytest
import xarray as xr

import fragility as fr
from fragility import FragilityError


def toy(extra_dims=False):
    """A = 2, one layer, three filters; h1's numbers are chosen so every score is easy by hand.

    base accuracy: clean 0.8, adversarial 0.4; n_params 10; h1 removes 1, 5, 10 weights → φ̄ = 0.9, 0.5, 0.
    h1 clean β = 0.8, 0.4, 0.08 → β̄ = 1, 0.5, 0.1; adversarial β_ε = 0.4, 0.3, 0.04 → β̄_ε = 1, 0.75, 0.1.
    h2, h3: β̄ = 1, 1, 1 and β̄_ε = 0.5, 0.5, 0.5 (constant), removing 2, 2, 10 and 4, 3, 3 weights.
    """
    acc = np.array([
        [[0.8, 0.4], [0.4, 0.3], [0.08, 0.04]],
        [[0.8, 0.2], [0.8, 0.2], [0.8, 0.2]],
        [[0.8, 0.2], [0.8, 0.2], [0.8, 0.2]],
    ])[None]
    nf = np.array([[1, 5, 10], [2, 2, 10], [4, 3, 3]])[None]
    ds = xr.Dataset(
        {"accuracy": (("layer", "filter", "alpha", "input"), acc),
         "n_filtered": (("layer", "filter", "alpha"), nf),
         "n_params": (("layer",), np.array([10])),
         "base_accuracy": (("input",), np.array([0.8, 0.4])),
         "epsilon": ((), 0.1)},
        coords={"layer": ["conv1"], "filter": ["h1", "h2", "h3"], "alpha": [0.0, 0.5, 1.0],
                "input": ["clean", "adversarial"]},
    )
    if extra_dims:
        ds = xr.concat([ds, ds.assign(accuracy=ds.accuracy * 0.5)], dim="seed").assign_coords(seed=[0, 1])
    return ds


def test_baseline_eq10():
    np.testing.assert_allclose(fr.baseline(toy()).sel(layer="conv1", filter="h1"), [0.9, 0.5, 0.0])


def test_scaled_divides_by_the_matching_unperturbed_accuracy():
    s = fr.scaled(toy()).sel(layer="conv1", filter="h1")
    np.testing.assert_allclose(s.sel(input="clean"), [1.0, 0.5, 0.1])
    np.testing.assert_allclose(s.sel(input="adversarial"), [1.0, 0.75, 0.1])


def test_combined_is_the_mean_of_the_three_filters_eq13():
    c = fr.combined(toy()).sel(layer="conv1")
    np.testing.assert_allclose(c.sel(input="clean"), [1.0, 2.5 / 3, 2.1 / 3])
    with pytest.raises(FragilityError, match="lacks h3"):
        fr.combined(toy().sel(filter=["h1", "h2"]))


def test_scores_rectangle_rule_as_written():
    s = fr.scores(toy()).sel(layer="conv1")
    # r_x = (0.1 + 0 + 0.1)/2, r_xe = (0.1 + 0.25 + 0.1)/2, r_e = (0 + 0.25 + 0)/2 (A + 1 terms of width 1/A)
    assert float(s.r_x) == pytest.approx(0.1)
    assert float(s.r_xe) == pytest.approx(0.225)
    assert float(s.r_e) == pytest.approx(0.125)


def test_scores_trapezoid_and_simpson():
    t = fr.scores(toy(), rule="trapezoid").sel(layer="conv1")
    assert float(t.r_x) == pytest.approx(0.5 * (0.05 + 0 + 0.05))
    assert float(t.r_e) == pytest.approx(0.125)
    s = fr.scores(toy(), rule="simpson").sel(layer="conv1")
    assert float(s.r_x) == pytest.approx((0.1 + 4 * 0 + 0.1) / 6)
    assert float(s.r_xe) == pytest.approx((0.1 + 4 * 0.25 + 0.1) / 6)


def test_scores_of_another_filter_and_of_the_combined_response():
    h2 = fr.scores(toy(), filter="h2").sel(layer="conv1")
    # β̄ = 1, 1, 1; φ̄ = 0.8, 0.8, 0 → r_x = (0.2 + 0.2 + 1)/2
    assert float(h2.r_x) == pytest.approx(0.7)
    assert float(h2.r_e) == pytest.approx(-0.75)
    comb = fr.scores(toy(), filter="combined").sel(layer="conv1")
    base = (np.array([0.9, 0.5, 0.0]) + np.array([0.8, 0.8, 0.0]) + np.array([0.6, 0.7, 0.7])) / 3
    clean = np.array([1.0, 2.5 / 3, 2.1 / 3])
    assert float(comb.r_x) == pytest.approx(float(((clean - base).sum()) / 2))
    with pytest.raises(FragilityError, match="not in this sweep"):
        fr.scores(toy(), filter="h9")
    with pytest.raises(FragilityError, match="integration rule"):
        fr.scores(toy(), rule="gauss")


def test_scores_keep_extra_dimensions():
    s = fr.scores(toy(extra_dims=True))
    assert set(s.r_x.dims) == {"seed", "layer"}
    assert float(s.r_x.sel(seed=0, layer="conv1")) == pytest.approx(0.1)


@pytest.mark.parametrize("r, label", [(-0.0201, "Fr"), (-0.02, "Ro"), (0.0, "Ro"), (0.02, "Ro"), (0.0201, "Af"),
                                      (-0.5, "Fr"), (0.5, "Af")])
def test_characterize_boundaries(r, label):
    ds = xr.Dataset({"r_x": ("layer", [r])})
    assert fr.characterize(ds, tol=0.02).r_x.values.tolist() == [label]


def test_characterize_refuses_negative_tolerance():
    with pytest.raises(FragilityError, match="tol"):
        fr.characterize(xr.DataArray([0.1]), tol=-1)


def test_display_normalization():
    ds = xr.Dataset({"r_x": ("layer", [0.1, -0.4]), "r_xe": ("layer", [0.2, 0.05]), "r_e": ("layer", [0.3, -0.1])})
    out = fr.display_normalize(ds)
    np.testing.assert_allclose(out.r_x, [0.125, -0.5])
    np.testing.assert_allclose(out.r_xe, [0.25, 0.0625])
    np.testing.assert_allclose(out.r_e, [0.5, -0.1 / 0.6])
    zero = fr.display_normalize(xr.Dataset({"r_e": ("layer", [0.0, 0.0])}))
    np.testing.assert_array_equal(zero.r_e, [0.0, 0.0])
