"""Fragility against depth (seed 004, claim S4): perturbation curves, internal stress, a unit, claim S4 decided with
its interval on hand-made units."""
import copy

import numpy as np
import pytest
import torch
import xarray as xr
from test_studies import combined, decided, evidence, nested

import fragility as fr
from fragility import FragilityError, models, verdicts
from fragility.attacks import accuracy
from fragility.studies.depth import (
    depth_profile,
    family,
    internal_stress,
    kept,
    perturbation_correct,
    perturbation_curves,
    table,
)

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


def test_perturbation_correct_is_per_image(trained_cnn, test_set):
    x, y = test_set
    model = copy.deepcopy(trained_cnn).eval()
    hits = perturbation_correct(model, x, y, magnitudes=MAGNITUDES, seed=4, batch_size=25)
    assert hits.dims == ("perturbation", "magnitude", "image") and hits.shape == (2, 3, len(y))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        np.testing.assert_array_equal(hits.sel(perturbation="gaussian", magnitude=0.3).values,
                                      (model(x + 0.3 * z).argmax(1) == y).numpy())
        np.testing.assert_array_equal(hits.sel(perturbation="fgsm", magnitude=0.1).values,
                                      (model(fr.fgsm(model, x, y, 0.1)).argmax(1) == y).numpy())
    xr.testing.assert_equal(hits.mean("image").rename("accuracy").drop_attrs(),
                            perturbation_curves(model, x, y, magnitudes=MAGNITUDES, seed=4).drop_attrs())


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
        # NaN where a score is undefined (an adversarial accuracy of 0 scales nothing): NaN must stay NaN
        np.testing.assert_equal(float(out["global_score"].sel(score=name)), float(scores[name].sel(layer="global")))
        values = scores[name].sel(layer=local).values
        labelled = values[np.isfinite(values)]  # the layers whose score is defined
        mean, low = (labelled.mean(), labelled.min()) if len(labelled) else (np.nan, np.nan)
        assert float(out["local_mean"].sel(score=name)) == pytest.approx(mean, nan_ok=True)
        np.testing.assert_equal(float(out["local_min"].sel(score=name)), low)
        fraction = (labelled < -0.05).mean() if len(labelled) else np.nan
        assert float(out["fragile_fraction"].sel(score=name)) == pytest.approx(fraction, nan_ok=True)
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
    xr.testing.assert_equal(one["correct"].mean("image").drop_attrs(), one["accuracy"].drop_attrs())  # per image
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


N = 2000  # test images of the hand-made units


def unit(n_layers, fgsm, gaussian, base=0.8, global_score=(0.0, -0.1, -0.1), fragile=0.5, n=N):
    """A depth unit: the share of the clean accuracy kept under FGSM and noise `fgsm`, `gaussian` at magnitudes 0.2
    and 0.4, with per-image results of n images (nested, so that their bootstrap replicates move together)."""
    acc = base * np.array([[1.0, *fgsm], [1.0, *gaussian]])
    correct = nested(acc, n)
    return xr.Dataset({"accuracy": (("perturbation", "magnitude"), correct.mean(-1)),
                       "correct": (("perturbation", "magnitude", "image"), correct), "base_accuracy": ((), base),
                       "n_layers": ((), n_layers), "n_params": ((), 100 * n_layers),
                       "global_score": ("score", list(global_score)),
                       "fragile_fraction": ("score", [0.0, 0.0, fragile])},
                      coords={"perturbation": ["fgsm", "gaussian"], "magnitude": [0.0, 0.2, 0.4], "score": SCORES,
                              "image": np.arange(n)})


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


def test_kept_resamples_the_images_of_every_variant_alike():
    ds = study({"smallcnn-d1": unit(2, (0.8, 0.6), (0.9, 0.8), n=500),
                "smallcnn-d2": unit(3, (0.6, 0.4), (0.8, 0.7), n=500)})
    k = kept(ds, "digits", samples=40)
    assert set(k["kept"].dims) == {"sample", "model", "perturbation"} and k.sizes["sample"] == 41
    np.testing.assert_allclose(k["kept"].sel(sample=0, perturbation="fgsm").values, [0.7, 0.5])
    np.testing.assert_allclose(k["kept"].sel(sample=0, perturbation="gaussian").values, [0.85, 0.75])
    np.testing.assert_array_equal(k["n_layers"].values, [2, 3])
    spread = k["kept"].sel(sample=slice(1, None), perturbation="fgsm")
    assert float(spread.std("sample").min()) > 0  # the images resampled
    # the same draws for both variants: their kept shares move together
    a, b = (spread.sel(model=m).values for m in ("smallcnn-d1", "smallcnn-d2"))
    assert np.corrcoef(a, b)[0, 1] > 0.5


def s4(tmp_path, variants, dataset="digits"):
    return decided(evidence(tmp_path, "depth", {(label, dataset, 0): ds for label, ds in variants.items()}),
                   "depth", "S4", "resnet18", dataset)


@pytest.mark.parametrize("variants, expected, rho", [
    # deeper keeps less under both perturbations: ρ = −1 under both, in every replicate
    ({"smallcnn-d1": unit(2, (0.8, 0.6), (0.9, 0.8)), "smallcnn-d2": unit(3, (0.6, 0.4), (0.8, 0.7)),
      "smallcnn-d4": unit(5, (0.4, 0.2), (0.7, 0.5))}, "holds", -1),
    # deeper keeps more: differs
    ({"smallcnn-d1": unit(2, (0.4, 0.2), (0.7, 0.5)), "smallcnn-d4": unit(5, (0.8, 0.6), (0.9, 0.8))}, "differs", 1),
    # less under FGSM but more under noise: differs (both must fall: the larger ρ decides)
    ({"smallcnn-d1": unit(2, (0.8, 0.6), (0.7, 0.5)), "smallcnn-d4": unit(5, (0.4, 0.2), (0.9, 0.8))}, "differs", 1),
    # one family holds, the other differs: differs
    ({"smallcnn-d1": unit(2, (0.8, 0.6), (0.9, 0.8)), "smallcnn-d4": unit(5, (0.4, 0.2), (0.7, 0.5)),
      "resnet18": unit(18, (0.4, 0.2), (0.7, 0.5)), "resnet50": unit(50, (0.8, 0.6), (0.9, 0.8))}, "differs", 1),
])
def test_s4_rule(tmp_path, variants, expected, rho):
    found = s4(tmp_path, variants)
    assert found.verdict == expected
    assert (found.value, found.low, found.high) == pytest.approx((rho, rho, rho))
    assert "smallcnn (" in found.evidence and "ρ" in found.evidence
    assert f"the larger ρ: {rho:+.2f} [{rho:+.2f}, {rho:+.2f}]" in found.evidence


def test_s4_is_inconclusive_when_the_images_cannot_order_the_depths(tmp_path):
    # 0.61 against 0.6 of the clean accuracy kept, on 200 images (other images for each depth): the replicates order
    # the two depths both ways
    deep = unit(5, (0.61, 0.61), (0.61, 0.61), n=200)
    deep["correct"] = deep["correct"].roll(image=100)
    found = s4(tmp_path, {"smallcnn-d1": unit(2, (0.6, 0.6), (0.6, 0.6), n=200), "smallcnn-d4": deep})
    assert found.verdict == "inconclusive" and found.value == pytest.approx(1)
    assert (found.low, found.high) == pytest.approx((-1, 1))


@pytest.mark.parametrize("variants", [
    {"smallcnn-d2": unit(3, (0.8, 0.6), (0.9, 0.8)), "resnet18": unit(18, (0.4, 0.2), (0.7, 0.5))},
    {"smallcnn-d2": unit(3, (0.8, 0.6), (0.9, 0.8))},
])
def test_s4_needs_two_depths_of_one_family(tmp_path, variants):
    with pytest.raises(verdicts.Untestable, match="two depths of one family"):
        s4(tmp_path, variants)


def test_s4_per_dataset(tmp_path):
    ev = evidence(tmp_path, "depth", {("smallcnn-d1", "digits", 0): unit(2, (0.8, 0.6), (0.9, 0.8)),
                                      ("smallcnn-d4", "digits", 0): unit(5, (0.4, 0.2), (0.7, 0.5)),
                                      ("smallcnn-d1", "mnist", 0): unit(2, (0.4, 0.2), (0.7, 0.5)),
                                      ("smallcnn-d4", "mnist", 0): unit(5, (0.8, 0.6), (0.9, 0.8))})
    assert decided(ev, "depth", "S4", "resnet18", "digits").verdict == "holds"
    assert decided(ev, "depth", "S4", "resnet18", "mnist").verdict == "differs"
    with pytest.raises(verdicts.Untestable, match="the depth study on cifar10"):
        decided(ev, "depth", "S4", "resnet18", "cifar10")
