"""Nodal dropout, neuron ranking and the compress/amplify defense (seed 002, SPEC §10)."""
import copy

import numpy as np
import pytest
import torch
import xarray as xr

import fragility as fr
from fragility import FragilityError
from fragility.attacks import accuracy
from fragility.neurons import defend, defense_factors, nodal_dropout, rank_neurons, scale_channels

EPS = 0.2


pytestmark = pytest.mark.usefixtures("one_thread")



def zeroed(model, layer, c):
    """An independent copy of the model with output channel c of `layer` removed (weights and bias zero)."""
    out = copy.deepcopy(model)
    module = out.get_submodule(layer)
    with torch.no_grad():
        module.weight[c] = 0
        if module.bias is not None:
            module.bias[c] = 0
    return out


@pytest.mark.parametrize("layer", [None, "fc"])  # the first conv (no bias) by default; a Linear with a bias
def test_nodal_dropout_equals_a_zeroed_copy(trained_cnn, test_set, layer):
    x, y = test_set
    ds = nodal_dropout(trained_cnn, x, y, epsilon=EPS, layer=layer, batch_size=25, progress=False)
    name = layer or "blocks.0.conv"
    width = trained_cnn.get_submodule(name).weight.shape[0]
    assert ds.attrs["layer"] == name and ds["accuracy"].dims == ("neuron", "input")
    assert ds["accuracy"].shape == (width, 2) and list(ds["input"].values) == ["clean", "adversarial"]
    x_adv = fr.fgsm(trained_cnn, x, y, EPS)  # fixed against the unperturbed network
    np.testing.assert_array_equal(ds["base_accuracy"].values, [accuracy(trained_cnn, x, y),
                                                                accuracy(trained_cnn, x_adv, y)])
    for c in range(width):
        model = zeroed(trained_cnn, name, c)
        assert ds["accuracy"].sel(neuron=c, input="clean") == accuracy(model, x, y)
        assert ds["accuracy"].sel(neuron=c, input="adversarial") == accuracy(model, x_adv, y)
    assert float(ds["epsilon"]) == EPS


def test_attack_effect_is_the_mean_activation_change(trained_cnn, test_set):
    x, y = test_set
    ds = nodal_dropout(trained_cnn, x, y, epsilon=EPS, progress=False)
    x_adv, seen = fr.fgsm(trained_cnn, x, y, EPS), []
    hook = trained_cnn.blocks[0].conv.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    with torch.no_grad():
        trained_cnn(x), trained_cnn(x_adv)
    hook.remove()
    np.testing.assert_allclose(ds["attack_effect"].values, (seen[1] - seen[0]).abs().mean((0, 2, 3)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(ds["activation"].values, seen[0].abs().mean((0, 2, 3)).numpy(), rtol=1e-5)
    assert (ds["attack_effect"] > 0).all()


def test_nodal_dropout_refuses_unknown_layers(trained_cnn, test_set):
    with pytest.raises(FragilityError, match="unknown layer"):
        nodal_dropout(trained_cnn, *test_set, epsilon=EPS, layer="blocks.5.conv", progress=False)


def synthetic():
    """Four neurons whose removal costs 0.3, 0.0, 0.1 and −0.05 clean accuracy (base 0.8)."""
    return xr.Dataset({
        "accuracy": (("neuron", "input"), [[0.5, 0.1], [0.8, 0.3], [0.7, 0.2], [0.85, 0.3]]),
        "base_accuracy": ("input", [0.8, 0.3]),
        "attack_effect": ("neuron", [4.0, 1.0, 2.0, 0.5]),
        "epsilon": ((), 0.1),
    }, coords={"neuron": [0, 1, 2, 3], "input": ["clean", "adversarial"]}, attrs={"layer": "conv"})


def test_rank_neurons():
    r = rank_neurons(synthetic())
    np.testing.assert_allclose(r["fragility"].values, [0.3, 0.0, 0.1, -0.05])
    assert list(r["rank"].values) == [0, 2, 1, 3]
    assert list(r["label"].values) == ["Fr", "Ro", "Fr", "Af"]
    assert float(r["correlation"]) == pytest.approx(1.0)  # the attack hits hardest where removal hurts most
    by_adv = rank_neurons(synthetic(), by="adversarial")
    np.testing.assert_allclose(by_adv["fragility"].values, [0.2, 0.0, 0.1, 0.0], atol=1e-12)
    with pytest.raises(FragilityError, match="unknown input"):
        rank_neurons(synthetic(), by="noisy")


def test_defense_factors_are_proportional_to_rank():
    g = defense_factors(rank_neurons(synthetic())["fragility"], compress=0.4, amplify=1.6)
    np.testing.assert_allclose(g.values, [1.6, 0.8, 1.2, 0.4])  # most fragile ×1.6, most robust ×0.4, linear between
    tied = defense_factors(xr.DataArray([0.1, 0.1, 0.0], dims="neuron"), 0.5, 1.5)
    np.testing.assert_allclose(tied.values, [1.25, 1.25, 0.5])
    with pytest.raises(FragilityError, match="compress"):
        defense_factors(g, compress=1.2, amplify=1.5)


def test_scale_channels_scales_exactly_the_chosen_channels(trained_cnn):
    before = copy.deepcopy(trained_cnn.state_dict())
    factors = np.ones(10)
    factors[[2, 7]] = [0.5, 3.0]
    scaled = scale_channels(trained_cnn, "fc", factors)
    for name, value in trained_cnn.state_dict().items():
        assert torch.equal(value, before[name])  # the caller's model is untouched
    after = scaled.state_dict()
    f = torch.tensor(factors, dtype=torch.float32)
    assert torch.equal(after["fc.weight"], before["fc.weight"] * f[:, None])
    assert torch.equal(after["fc.bias"], before["fc.bias"] * f)
    assert torch.equal(after["fc.weight"][0], before["fc.weight"][0])
    for name in before:
        if not name.startswith("fc."):
            assert torch.equal(after[name], before[name])
    with pytest.raises(FragilityError, match="factors"):
        scale_channels(trained_cnn, "fc", np.ones(3))
    with pytest.raises(FragilityError, match="unknown layer"):
        scale_channels(trained_cnn, "blocks.0.bn", np.ones(16))


def test_defend(trained_cnn, test_set):
    x, y = test_set
    before = copy.deepcopy(trained_cnn.state_dict())
    dropout = nodal_dropout(trained_cnn, x, y, epsilon=EPS, progress=False)
    ds = defend(trained_cnn, x, y, dropout, compress=0.5, amplify=2.0)
    for name, value in trained_cnn.state_dict().items():
        assert torch.equal(value, before[name])
    assert ds["accuracy"].dims == ("network", "input") and ds["accuracy"].shape == (2, 3)
    x_adv = fr.fgsm(trained_cnn, x, y, EPS)
    np.testing.assert_array_equal(ds["accuracy"].sel(network="original").values,
                                  [accuracy(trained_cnn, x, y), accuracy(trained_cnn, x_adv, y),
                                   accuracy(trained_cnn, x_adv, y)])
    factors = defense_factors(rank_neurons(dropout)["fragility"], 0.5, 2.0)
    np.testing.assert_array_equal(ds["factor"].values, factors.values)
    defended = scale_channels(trained_cnn, "blocks.0.conv", factors.values)
    np.testing.assert_array_equal(ds["accuracy"].sel(network="defended").values,
                                  [accuracy(defended, x, y), accuracy(defended, fr.fgsm(defended, x, y, EPS), y),
                                   accuracy(defended, x_adv, y)])
    assert ds.attrs["layer"] == "blocks.0.conv" and ds.attrs["amplify"] == 2.0
