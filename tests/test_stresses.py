"""Internal stresses as classes on one base: the Gaussian weight noise and the random removal against their
definitions, the synaptic filters' classes against the functional interface, and the registry."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fragility as fr
from fragility import FragilityError
from fragility.filters import synaptic_mask
from fragility.stresses import STRESSES, GaussianNoise, RandomRemoval, Stress, Weights, as_stresses, register_stress
from fragility.stresses.gaussian import noise
from fragility.stresses.random import random_mask, removal_count

pytestmark = pytest.mark.usefixtures("one_thread")


def two_layers():
    """Weights of two layers with very different spreads, as a `global` unit holds them."""
    gen = torch.Generator().manual_seed(0)
    return {"small": torch.randn(40, 50, generator=gen) * 0.01, "large": torch.randn(30, 60, generator=gen) * 3.0}


@pytest.mark.parametrize("kind", ["h1", "h2", "h3"])
def test_filter_classes_are_the_synaptic_filters(kind):
    theta = torch.randn(200, generator=torch.Generator().manual_seed(1))
    unit = Weights.of({"w": theta})
    for i in range(6):
        expected = synaptic_mask(theta, kind, i, 5)
        assert torch.equal(STRESSES[kind]().masks(unit, i, 5)["w"], expected)
        n, key = STRESSES[kind]().effect(unit, i, 5)
        assert n == int((~expected).sum()) and (key is None) == (n == 0)
        assert torch.equal(STRESSES[kind]().weights(unit, i, 5)["w"], theta * expected)


def test_gaussian_zero_sigma_is_the_unperturbed_network():
    unit = Weights.of(two_layers())
    stress = GaussianNoise()
    assert stress.unchanged(0, 4) and stress.effect(unit, 0, 4) == (0, None)
    assert all(torch.equal(w, unit.theta[n]) for n, w in stress.weights(unit, 0, 4).items())
    off = GaussianNoise(scale=0.0)
    assert all(off.effect(unit, i, 4) == (0, None) for i in range(5))
    n, key = stress.effect(unit, 2, 4)
    assert n == 0 and key is not None  # noise removes nothing, but changes the network


def test_gaussian_scales_each_layer_by_its_own_std():
    theta = two_layers()
    unit, stress, A = Weights.of(theta), GaussianNoise(scale=2.0, seed=3), 4
    for i in range(1, A + 1):
        sigma = i / A * 2.0
        for name, w in stress.weights(unit, i, A).items():
            w64 = theta[name].double()
            expected = w64 + sigma * w64.std(correction=0) * noise(w64.shape, 3, name, i)
            torch.testing.assert_close(w.double(), expected.float().double(), atol=0, rtol=0)
            spread = float((w.double() - w64).std()) / (sigma * float(w64.std(correction=0)))
            assert spread == pytest.approx(1.0, rel=0.1)  # z ~ N(0, 1): the noise's std is σ_i · std(θ_layer)
        assert float(stress.thresholds(A, unit.lo, unit.hi)[i]) == sigma
    # the local unit of a layer draws what the global unit draws for it
    local = stress.weights(Weights.of({"large": theta["large"]}), 2, A)["large"]
    assert torch.equal(local, stress.weights(unit, 2, A)["large"])


def test_gaussian_draws_repeat_and_thresholds_draw_independently():
    unit, A = Weights.of(two_layers()), 5
    stress = GaussianNoise(seed=1)
    first, again = stress.weights(unit, 3, A), GaussianNoise(seed=1).weights(unit, 3, A)
    assert all(torch.equal(first[n], again[n]) for n in first)
    other = GaussianNoise(seed=2).weights(unit, 3, A)
    assert not torch.equal(first["large"], other["large"])
    theta = unit.theta64["large"]
    z = [(stress.weights(unit, i, A)["large"].double() - theta).flatten() / (i / A) for i in (1, 2, 3)]
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert abs(float(torch.corrcoef(torch.stack([z[a], z[b]]))[0, 1])) < 0.1  # 1,800 draws: |ρ| ~ 0.02
    assert GaussianNoise(seed=1).effect(unit, 3, A) == stress.effect(unit, 3, A)
    assert stress.effect(unit, 3, A) != stress.effect(unit, 2, A)


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=3), A=st.integers(1, 8), data=st.data(),
       seed=st.integers(0, 100), draw=st.integers(0, 3))
def test_random_stress_is_the_removal_studys_mask(shape, A, data, seed, draw):
    i = data.draw(st.integers(0, A))
    theta = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).double()
    unit = Weights.of({"conv": theta})
    stress = RandomRemoval(seed=seed, draw=draw)
    mask = stress.masks(unit, i, A)["conv"]
    assert torch.equal(mask, random_mask(tuple(shape), i / A, seed=seed, layer="conv", draw=draw))
    assert int((~mask).sum()) == removal_count(math.prod(shape), i / A) == stress.effect(unit, i, A)[0]
    assert float(stress.thresholds(A, 0, 1)[i]) == i / A
    chosen = RandomRemoval(seed=seed, draw=draw, fractions=(0.0, 0.35, 1.0))
    assert torch.equal(chosen.masks(unit, 1, A)["conv"], random_mask(tuple(shape), 0.35, seed=seed, layer="conv",
                                                                     draw=draw))


def test_random_stress_removes_the_same_share_of_every_layer_in_global():
    theta = two_layers()
    unit = Weights.of(theta)
    masks = RandomRemoval(seed=2).masks(unit, 3, 10)
    for name, w in theta.items():
        assert int((~masks[name]).sum()) == removal_count(w.numel(), 0.3)
        assert torch.equal(masks[name], RandomRemoval(seed=2).masks(Weights.of({name: w}), 3, 10)[name])


def test_sweep_with_noise_and_random_removal(trained_cnn, test_set):
    x, y = test_set
    ds = fr.sweep(trained_cnn, x, y, A=4, filters=["gaussian", "random"], epsilon=0.1, progress=False)
    assert list(ds["filter"].values) == ["gaussian", "random"]
    noisy = ds.sel(filter="gaussian")
    assert (noisy["n_filtered"] == 0).all()
    np.testing.assert_array_equal(noisy["accuracy"].sel(alpha=0.0).values,
                                  np.broadcast_to(ds["base_accuracy"].values, (ds.sizes["layer"], 2)))
    np.testing.assert_allclose(noisy["threshold"].sel(layer="fc").values, np.arange(5) / 4)
    removed = ds["n_filtered"].sel(filter="random")
    sizes = {n: trained_cnn.get_submodule(n).weight.numel() for n in ds["layer"].values if n != "global"}
    for n, size in sizes.items():
        np.testing.assert_array_equal(removed.sel(layer=n).values, [removal_count(size, i / 4) for i in range(5)])
    np.testing.assert_array_equal(removed.sel(layer="global").values,
                                  [sum(removal_count(s, i / 4) for s in sizes.values()) for i in range(5)])
    # the baseline of noise is 1, so r_x is the area of β̄ − 1 (Eq. 14 with φ̄ = 1)
    scaled = noisy["accuracy"].sel(input="clean") / ds["base_accuracy"].sel(input="clean")
    np.testing.assert_allclose(fr.scores(ds, filter="gaussian")["r_x"].values, ((scaled - 1).sum("alpha") / 4).values)
    assert float(noisy["accuracy"].sel(alpha=1.0, layer="global", input="clean")) < float(ds["base_accuracy"][0])
    assert ds.attrs["stress_parameters"] == '{"gaussian": {"scale": 1.0, "seed": 0}, "random": {"draw": 0, ' \
                                            '"fractions": null, "seed": 0}}'


def test_stress_objects_with_parameters(trained_cnn, test_set):
    x, y = test_set
    options = dict(A=2, layers=["fc"], include_global=False, epsilon=0.1, progress=False)
    mild = fr.sweep(trained_cnn, x, y, filters=GaussianNoise(scale=0.01), **options)
    strong = fr.sweep(trained_cnn, x, y, filters=[GaussianNoise(scale=50.0)], **options)
    assert mild["threshold"].sel(alpha=1.0).item() == 0.01 and strong["threshold"].sel(alpha=1.0).item() == 50.0
    assert strong["accuracy"].sel(alpha=1.0, input="clean").item() < mild["accuracy"].sel(alpha=1.0,
                                                                                        input="clean").item()


@pytest.mark.parametrize("make, match", [
    (lambda: GaussianNoise(scale=-1.0), "scale must be"), (lambda: GaussianNoise(seed=1.5), "seed must be"),
    (lambda: RandomRemoval(draw=-1), "draw must be"), (lambda: RandomRemoval(fractions=(0.1, 1.2)), "p must be"),
    (lambda: as_stresses(["h1", "nope"]), "filters must be a non-empty list of distinct names"),
    (lambda: as_stresses(["h1", fr.stresses.H1()]), "filters must be a non-empty list of distinct names"),
    (lambda: as_stresses([]), "filters must be"),
    (lambda: register_stress("global"), "a stress's name"),
    (lambda: register_stress("h1")(type("H1", (Stress,), {})), "already registered"),
    (lambda: register_stress("mine")(nn.Linear), "decorates a Stress subclass"),
])
def test_bad_stress_arguments(make, match):
    with pytest.raises(FragilityError, match=match):
        make()


def test_registered_stresses():
    assert list(STRESSES)[:5] == ["h1", "h2", "h3", "random", "gaussian"]
    assert fr.FILTERS == ("h1", "h2", "h3") and fr.STRESSES is STRESSES
    assert [s.name for s in as_stresses("h2")] == ["h2"]
    assert [s.name for s in as_stresses([GaussianNoise(scale=2.0), "h1"])] == ["gaussian", "h1"]
