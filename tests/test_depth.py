"""Fragility against depth (seed 004, claim S4): perturbation curves, internal stress, a unit, the verdict."""
import copy

import numpy as np
import pytest
import torch
import xarray as xr
from test_studies import combined

import fragility as fr
from fragility import FragilityError, models
from fragility.attacks import accuracy
from fragility.studies.depth import depth_profile, family, internal_stress, perturbation_curves, table, verdict

MAGNITUDES = [0.0, 0.1, 0.3]
SCORES = ["r_x", "r_xe", "r_e"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_perturbation_curves(trained_cnn, test_set):
    x, y = test_set
    model = copy.deepcopy(trained_cnn).train()
    curves = perturbation_curves(model, x, y, magnitudes=MAGNITUDES, seed=4, batch_size=25)
    assert model.training  # the caller's mode is restored
    model.eval()
    assert curves.dims == ("perturbation", "magnitude") and curves.shape == (2, 3)
    assert list(curves["perturbation"].values) == ["fgsm", "gaussian"]
    clean = accuracy(model, x, y)
    np.testing.assert_array_equal(curves.sel(magnitude=0.0).values, [clean, clean])  # ε = σ = 0: clean inputs
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    for m in MAGNITUDES[1:]:
        assert curves.sel(perturbation="gaussian", magnitude=m) == accuracy(model, x + m * z, y)
        assert curves.sel(perturbation="fgsm", magnitude=m) == accuracy(model, fr.fgsm(model, x, y, m), y)
    assert curves.sel(perturbation="fgsm", magnitude=0.3) < clean
    assert perturbation_curves(model, x, y, magnitudes=MAGNITUDES, seed=4).equals(curves)  # seeded noise
    with pytest.raises(FragilityError, match="epsilons"):
        perturbation_curves(model, x, y, magnitudes=[-0.1])


@pytest.fixture(scope="module")
def swept(trained_cnn, test_set):
    torch.set_num_threads(1)
    return fr.sweep(trained_cnn, *test_set, A=3, filters=("h1",), epsilon=0.2, batch_size=30, progress=False)


def test_internal_stress(swept):
    out = internal_stress(swept, tol=0.05)
    scores = fr.scores(swept)
    assert list(out["score"].values) == SCORES
    local = ["blocks.0.conv", "blocks.1.conv", "fc"]
    for name in SCORES:
        assert out["global_score"].sel(score=name) == scores[name].sel(layer="global")
        values = scores[name].sel(layer=local).values
        assert out["local_mean"].sel(score=name) == pytest.approx(values.mean())
        assert out["local_min"].sel(score=name) == values.min()
        assert out["fragile_fraction"].sel(score=name) == pytest.approx((values < -0.05).mean())
        np.testing.assert_array_equal(out["layer_score"].sel(score=name).values, values)
    np.testing.assert_allclose(out["position"].values, [0.0, 0.5, 1.0])
    with pytest.raises(FragilityError, match="include_global"):
        internal_stress(swept.sel(layer=local))


def test_internal_stress_of_a_global_only_sweep(swept):
    out = internal_stress(swept.sel(layer=["global"]))
    assert out.sizes["layer"] == 0
    for name in ("local_mean", "local_min", "fragile_fraction"):
        assert np.isnan(out[name].values).all()
    np.testing.assert_array_equal(out["global_score"].values, fr.scores(swept)[SCORES].sel(layer="global")
                                  .to_array("score").values)


def labelled(depth, x):
    """An untrained smallcnn of `depth` blocks and the labels it gets right (so stress has something to destroy)."""
    model = models.build("smallcnn", 1, 10, seed=depth, depth=depth).eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 10
    return model, y


@pytest.mark.parametrize("depth, local", [(1, True), (3, True), (3, False)])
def test_depth_profile(depth, local):
    x = torch.randn(24, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    model, y = labelled(depth, x)
    sweep = fr.sweep(model, x, y, A=2, filters=("h1",), layers=None if local else [], epsilon=0.1, batch_size=12,
                     progress=False)
    one = depth_profile(model, x, y, magnitudes=MAGNITUDES, sweep_ds=sweep, seed=2, batch_size=10)
    # the model's filterable layers, whether the sweep filtered them one by one or only all together
    assert int(one["n_layers"]) == depth + 1
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert int(one["n_params"]) == weights
    assert float(one["base_accuracy"]) == accuracy(model, x, y) == 0.75
    xr.testing.assert_equal(one["accuracy"], perturbation_curves(model, x, y, magnitudes=MAGNITUDES, seed=2))
    assert float(one["epsilon"]) == 0.1 and one.attrs["A"] == 2
    np.testing.assert_array_equal(one["global_score"].values,
                                  fr.scores(sweep)[SCORES].sel(layer="global").to_array("score").values)
    assert one.sizes["layer"] == (depth + 1 if local else 0)


def test_depth_profile_gives_the_model_back_as_it_was():
    """A model in train mode keeps its mode and its BatchNorm statistics (counting its layers runs it once)."""
    x = torch.randn(24, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    model, y = labelled(2, x)
    sweep = fr.sweep(model, x, y, A=2, filters=("h1",), epsilon=0.1, batch_size=12, progress=False)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    depth_profile(model, x, y, magnitudes=MAGNITUDES, sweep_ds=sweep)
    assert model.training
    assert [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])] == []


def test_family():
    assert [family(m) for m in ("smallcnn-d4", "smallcnn-d12", "resnet50", "resnet18", "smallcnn")] == [
        "smallcnn", "smallcnn", "resnet", "resnet", "smallcnn"]


def unit(n_layers, fgsm, gaussian, base=0.8, global_score=(0.0, -0.1, -0.1), fragile=0.5):
    """A depth unit: accuracy kept under FGSM and noise `fgsm`, `gaussian` at magnitudes 0.2 and 0.4."""
    acc = base * np.array([[1.0, *fgsm], [1.0, *gaussian]])
    return xr.Dataset({"accuracy": (("perturbation", "magnitude"), acc), "base_accuracy": ((), base),
                       "n_layers": ((), n_layers), "n_params": ((), 100 * n_layers),
                       "global_score": ("score", list(global_score)),
                       "fragile_fraction": ("score", [0.0, 0.0, fragile])},
                      coords={"perturbation": ["fgsm", "gaussian"], "magnitude": [0.0, 0.2, 0.4], "score": SCORES})


def study(variants, seeds=(0,), dataset="digits"):
    """Hand-made depth units {label: unit} (the same in every seed), combined."""
    return combined({(label, dataset, s): ds for label, ds in variants.items() for s in seeds})


def test_table():
    ds = study({"smallcnn-d4": unit(5, (0.5, 0.3), (0.9, 0.7), fragile=0.8),
                "resnet50": unit(50, (0.4, 0.2), (0.6, 0.4), base=0.9),
                "smallcnn-d1": unit(2, (0.8, 0.6), (1.0, 0.9), base=0.6)}, seeds=(0, 1))
    t = table(ds, "digits")
    assert list(t["model"].values) == ["resnet50", "smallcnn-d1", "smallcnn-d4"]  # by family, then depth
    np.testing.assert_allclose(t["fgsm"].values, [0.3, 0.7, 0.4])  # the share kept, mean over magnitudes > 0
    np.testing.assert_allclose(t["gaussian"].values, [0.5, 0.95, 0.8])
    np.testing.assert_allclose(t["base"].values, [0.9, 0.6, 0.8])
    np.testing.assert_array_equal(t["n_layers"].values, [50, 2, 5])
    np.testing.assert_allclose(t["fragile_fraction"].values, [0.5, 0.5, 0.8])
    assert t["global_score"].sel(model="resnet50", score="r_xe") == pytest.approx(-0.1)


def test_table_averages_seeds():
    ds = combined({("smallcnn-d1", "digits", 0): unit(2, (0.8, 0.6), (1.0, 0.9)),
                   ("smallcnn-d1", "digits", 1): unit(2, (0.6, 0.4), (1.0, 0.9)),
                   ("smallcnn-d2", "digits", 0): unit(3, (0.5, 0.5), (0.9, 0.9))})
    t = table(ds, "digits")
    np.testing.assert_allclose(t["fgsm"].sel(model="smallcnn-d1"), 0.6)
    np.testing.assert_allclose(table(ds, "digits", seed=1)["fgsm"].sel(model="smallcnn-d1"), 0.5)


@pytest.mark.parametrize("variants, expected", [
    # deeper keeps less under both perturbations: holds
    ({"smallcnn-d1": unit(2, (0.8, 0.6), (0.9, 0.8)), "smallcnn-d2": unit(3, (0.6, 0.4), (0.8, 0.7)),
      "smallcnn-d4": unit(5, (0.4, 0.2), (0.7, 0.5))}, "holds"),
    # deeper keeps more: differs
    ({"smallcnn-d1": unit(2, (0.4, 0.2), (0.7, 0.5)), "smallcnn-d4": unit(5, (0.8, 0.6), (0.9, 0.8))}, "differs"),
    # less under FGSM but more under noise: differs (both must fall)
    ({"smallcnn-d1": unit(2, (0.8, 0.6), (0.7, 0.5)), "smallcnn-d4": unit(5, (0.4, 0.2), (0.9, 0.8))}, "differs"),
    # one family holds, the other differs: differs
    ({"smallcnn-d1": unit(2, (0.8, 0.6), (0.9, 0.8)), "smallcnn-d4": unit(5, (0.4, 0.2), (0.7, 0.5)),
      "resnet18": unit(18, (0.4, 0.2), (0.7, 0.5)), "resnet50": unit(50, (0.8, 0.6), (0.9, 0.8))}, "differs"),
    # one depth per family: nothing to compare
    ({"smallcnn-d2": unit(3, (0.8, 0.6), (0.9, 0.8)), "resnet18": unit(18, (0.4, 0.2), (0.7, 0.5))}, "untestable"),
    ({"smallcnn-d2": unit(3, (0.8, 0.6), (0.9, 0.8))}, "untestable"),
])
def test_verdict(variants, expected):
    result, evidence = verdict(study(variants), "digits")
    assert result == expected
    if expected == "untestable":
        assert "no family with two depths" in evidence
    else:
        assert "smallcnn (" in evidence and "ρ" in evidence


def test_verdict_per_dataset():
    ds = combined({("smallcnn-d1", "digits", 0): unit(2, (0.8, 0.6), (0.9, 0.8)),
                   ("smallcnn-d4", "digits", 0): unit(5, (0.4, 0.2), (0.7, 0.5)),
                   ("smallcnn-d1", "mnist", 0): unit(2, (0.4, 0.2), (0.7, 0.5)),
                   ("smallcnn-d4", "mnist", 0): unit(5, (0.8, 0.6), (0.9, 0.8))})
    assert verdict(ds, "digits")[0] == "holds" and verdict(ds, "mnist")[0] == "differs"
