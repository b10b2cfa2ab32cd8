"""Fragility against depth (seed 004, SPEC §10): input perturbation curves, internal stress, assembly."""
import numpy as np
import pytest
import torch

import fragility as fr
from fragility import FragilityError, models
from fragility.attacks import accuracy
from fragility.depth import assemble, depth_profile, internal_stress, perturbation_curves

MAGNITUDES = [0.0, 0.1, 0.3]


pytestmark = pytest.mark.usefixtures("one_thread")



def test_perturbation_curves(trained_cnn, test_set):
    x, y = test_set
    curves = perturbation_curves(trained_cnn, x, y, magnitudes=MAGNITUDES, seed=4, batch_size=25)
    assert curves.dims == ("perturbation", "magnitude") and curves.shape == (2, 3)
    assert list(curves["perturbation"].values) == ["fgsm", "gaussian"]
    clean = accuracy(trained_cnn, x, y)
    np.testing.assert_array_equal(curves.sel(magnitude=0.0).values, [clean, clean])  # ε = σ = 0: clean inputs
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    for m in MAGNITUDES[1:]:
        assert curves.sel(perturbation="gaussian", magnitude=m) == accuracy(trained_cnn, x + m * z, y)
        assert curves.sel(perturbation="fgsm", magnitude=m) == accuracy(trained_cnn, fr.fgsm(trained_cnn, x, y, m), y)
    assert curves.sel(perturbation="fgsm", magnitude=0.3) < clean
    assert perturbation_curves(trained_cnn, x, y, magnitudes=MAGNITUDES, seed=4).equals(curves)  # seeded noise


def test_internal_stress(trained_cnn, test_set):
    sweep = fr.sweep(trained_cnn, *test_set, A=3, filters=("h1",), epsilon=0.2, batch_size=30, progress=False)
    out = internal_stress(sweep, tol=0.05)
    table = fr.scores(sweep)
    assert list(out["score"].values) == ["r_x", "r_xe", "r_e"]
    local = ["blocks.0.conv", "blocks.1.conv", "fc"]
    for name in ("r_x", "r_xe", "r_e"):
        assert out["global_score"].sel(score=name) == table[name].sel(layer="global")
        values = table[name].sel(layer=local).values
        assert out["local_mean"].sel(score=name) == pytest.approx(values.mean())
        assert out["local_min"].sel(score=name) == values.min()
        assert out["fragile_fraction"].sel(score=name) == pytest.approx((values < -0.05).mean())
        np.testing.assert_array_equal(out["layer_score"].sel(score=name).values, values)
    np.testing.assert_allclose(out["position"].values, [0.0, 0.5, 1.0])
    with pytest.raises(FragilityError, match="include_global"):
        internal_stress(sweep.sel(layer=local))


def test_depth_profiles_assemble_along_model_and_depth():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(24, 1, 16, 16, generator=gen)
    profiles = {}
    for depth in (1, 3):
        model = models.build("smallcnn", 1, 10, seed=depth, depth=depth).eval()
        y = model(x).argmax(1).detach()  # labels the untrained network gets right, so stress has something to destroy
        profiles[f"smallcnn-{depth}"] = depth_profile(model, x, y, magnitudes=MAGNITUDES, A=2, epsilon=0.1,
                                                      batch_size=10, progress=False)
        one = profiles[f"smallcnn-{depth}"]
        assert int(one["n_layers"]) == depth + 1 and float(one["base_accuracy"]) == 1.0
        np.testing.assert_array_equal(one["accuracy"].sel(magnitude=0.0).values, [1.0, 1.0])
        assert float(one["epsilon"]) == 0.1 and one.attrs["A"] == 2
    both = assemble(profiles, depths={"smallcnn-1": 1, "smallcnn-3": 3})
    assert list(both["model"].values) == ["smallcnn-1", "smallcnn-3"] and list(both["depth"].values) == [1, 3]
    assert both["accuracy"].dims == ("model", "perturbation", "magnitude") and both["accuracy"].shape == (2, 2, 3)
    assert list(both["n_layers"].values) == [2, 4]
    # layers the shallower network lacks are missing there, not invented
    assert np.isnan(both["position"].sel(model="smallcnn-1", layer="blocks.2.conv"))
    assert both["position"].sel(model="smallcnn-3", layer="blocks.2.conv") == pytest.approx(2 / 3)
    external = depth_profile(models.build("smallcnn", 1, 10, seed=0, depth=1).eval(), x, y, magnitudes=MAGNITUDES,
                             internal=False)
    assert "global_score" not in external and external.attrs["internal"] == 0
    with pytest.raises(FragilityError, match="one depth for each"):
        assemble(profiles, depths={"smallcnn-1": 1})
    with pytest.raises(FragilityError, match="no profiles"):
        assemble({})
