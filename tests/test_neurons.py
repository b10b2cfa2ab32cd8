"""Nodal dropout after the BatchNorm, neuron ranking and the compress/amplify defense (seed 002); claims S2a, S2b
decided with their intervals on hand-made units."""
import copy

import numpy as np
import pytest
import torch
import xarray as xr
from test_studies import combined, decided, evidence, nested

import fragility as fr
from fragility import FragilityError, models, verdicts
from fragility.attacks import accuracy
from fragility.studies.neurons import (
    _neurons_rho,
    defend,
    defense_factors,
    nodal_dropout,
    rank_neurons,
    scale_channels,
    silencing_point,
    spearman,
)

EPS = 0.2

pytestmark = pytest.mark.usefixtures("one_thread")


def silenced(model, layer, c):
    """An independent copy of the model with neuron c of `layer` silenced: its following BatchNorm's γ_c = β_c = 0
    (the channel leaves the BatchNorm, and ReLU, as 0), or, with no BatchNorm, its weights and bias zero."""
    out = copy.deepcopy(model)
    module = out.get_submodule({"blocks.0.conv": "blocks.0.bn", "blocks.1.conv": "blocks.1.bn"}.get(layer, layer))
    with torch.no_grad():
        module.weight[c] = 0
        if module.bias is not None:
            module.bias[c] = 0
    return out


def recorder(module):
    """A list collecting `module`'s output at every call, and the hook's handle."""
    out = []
    return out, module.register_forward_hook(lambda m, i, o: out.append(o.detach().clone()))


def test_silencing_point_is_the_following_batchnorm(trained_cnn):
    x = torch.zeros(2, 1, 28, 28)
    assert silencing_point(trained_cnn, "blocks.0.conv", x) == ("blocks.0.bn", "blocks.0.relu")
    assert silencing_point(trained_cnn, "blocks.1.conv", x) == ("blocks.1.bn", "blocks.1.relu")
    assert silencing_point(trained_cnn, "fc", x) == ("fc", None)
    net = models.build("resnet18", 1, 10, seed=0).eval()
    x = torch.zeros(2, 1, 32, 32)
    assert silencing_point(net, "conv1", x) == ("bn1", "relu")
    assert silencing_point(net, "layer2.0.conv1", x) == ("layer2.0.bn1", "layer2.0.relu")
    assert silencing_point(net, "layer4.0.downsample.0", x) == ("layer4.0.downsample.1", None)
    with pytest.raises(FragilityError, match="unknown layer 'blocks.0.bn'"):
        silencing_point(trained_cnn, "blocks.0.bn", torch.zeros(2, 1, 28, 28))


def test_no_activation_follows_a_batchnorm_added_to_the_skip_path():
    """ResNet's bn2 output is added to the identity in place before the ReLU: that ReLU does not act on bn2's
    output, so the neurons of conv2 have no activation of their own."""
    net = models.build("resnet18", 1, 10, seed=0).eval()
    assert silencing_point(net, "layer1.0.conv2", torch.zeros(2, 1, 32, 32)) == ("layer1.0.bn2", None)


def test_nodal_dropout_silences_one_channel_after_batchnorm_and_relu(trained_cnn, test_set):
    x, y = test_set
    with torch.no_grad():
        clean, handle = recorder(trained_cnn.blocks[0].relu)
        trained_cnn(x)
        handle.remove()
    outputs, handle = recorder(trained_cnn.blocks[0].relu)
    try:
        ds = nodal_dropout(trained_cnn, x, y, epsilon=EPS, batch_size=len(y), progress=False)
    finally:
        handle.remove()
    width = trained_cnn.blocks[0].conv.out_channels
    assert ds.attrs["layer"] == "blocks.0.conv" and ds.attrs["point"] == "blocks.0.bn"
    assert ds["accuracy"].dims == ("neuron", "input") and ds["accuracy"].shape == (width, 2)
    # the last 2 · width passes: neuron c silenced, on clean then adversarial inputs
    for c in range(width):
        out = outputs[len(outputs) - 2 * width + 2 * c]
        assert torch.equal(out[:, c], torch.zeros_like(out[:, c]))
        others = [k for k in range(width) if k != c]
        assert torch.equal(out[:, others], clean[0][:, others])
    assert not trained_cnn.blocks[0].relu._forward_hooks and not trained_cnn.blocks[0].bn._forward_hooks


@pytest.mark.parametrize("layer, neurons", [(None, [0, 7, 15]), ("fc", [0, 3, 9])])
def test_nodal_dropout_equals_silenced_copies(trained_cnn, test_set, layer, neurons):
    x, y = test_set
    ds = nodal_dropout(trained_cnn, x, y, epsilon=EPS, layer=layer, batch_size=25, progress=False)
    name = layer or "blocks.0.conv"
    x_adv = fr.fgsm(trained_cnn, x, y, EPS)  # fixed: crafted once against the unperturbed network
    np.testing.assert_array_equal(ds["base_accuracy"].values, [accuracy(trained_cnn, x, y),
                                                                accuracy(trained_cnn, x_adv, y)])
    for c in neurons:
        model = silenced(trained_cnn, name, c)
        assert ds["accuracy"].sel(neuron=c, input="clean") == accuracy(model, x, y)
        assert ds["accuracy"].sel(neuron=c, input="adversarial") == accuracy(model, x_adv, y)
    assert float(ds["epsilon"]) == EPS and ds.attrs["n_test"] == len(y)
    assert (ds["accuracy"].sel(input="clean") != ds["base_accuracy"].sel(input="clean")).any()


def test_attack_effect_is_the_mean_change_after_the_activation(trained_cnn, test_set):
    x, y = test_set
    ds = nodal_dropout(trained_cnn, x, y, epsilon=EPS, batch_size=25, progress=False)
    x_adv = fr.fgsm(trained_cnn, x, y, EPS)
    outputs, handle = recorder(trained_cnn.blocks[0].relu)
    with torch.no_grad():
        trained_cnn(x), trained_cnn(x_adv)
    handle.remove()
    a, a_adv = outputs
    np.testing.assert_allclose(ds["attack_effect"].values, (a_adv - a).abs().mean((0, 2, 3)).numpy(), rtol=1e-5)
    np.testing.assert_allclose(ds["activation"].values, a.abs().mean((0, 2, 3)).numpy(), rtol=1e-5)
    assert (ds["attack_effect"] >= 0).all() and (ds["attack_effect"] > 0).any()


def test_nodal_dropout_refuses_unknown_layers(trained_cnn, test_set):
    with pytest.raises(FragilityError, match="unknown layer"):
        nodal_dropout(trained_cnn, *test_set, epsilon=EPS, layer="blocks.5.conv", progress=False)
    with pytest.raises(FragilityError, match="epsilon"):
        nodal_dropout(trained_cnn, *test_set, epsilon=-1.0, progress=False)


def synthetic():
    """Four neurons whose removal costs 0.3, 0.0, 0.1 and −0.05 clean accuracy (base 0.8)."""
    return xr.Dataset({
        "accuracy": (("neuron", "input"), [[0.5, 0.1], [0.8, 0.3], [0.7, 0.2], [0.85, 0.3]]),
        "base_accuracy": ("input", [0.8, 0.3]),
        "attack_effect": ("neuron", [4.0, 1.0, 2.0, 0.5]),
        "epsilon": ((), 0.1),
    }, coords={"neuron": [0, 1, 2, 3], "input": ["clean", "adversarial"]}, attrs={"layer": "conv", "point": "bn"})


def test_rank_neurons():
    r = rank_neurons(synthetic())
    np.testing.assert_allclose(r["fragility"].values, [0.3, 0.0, 0.1, -0.05], atol=1e-12)
    assert list(r["rank"].values) == [0, 2, 1, 3]
    assert list(r["label"].values) == ["Fr", "Ro", "Fr", "Af"]
    assert float(r["correlation"]) == pytest.approx(1.0)  # the attack hits hardest where removal hurts most
    by_adv = rank_neurons(synthetic(), by="adversarial")
    np.testing.assert_allclose(by_adv["fragility"].values, [0.2, 0.0, 0.1, 0.0], atol=1e-12)
    flat = synthetic().assign(attack_effect=("neuron", [1.0] * 4))
    assert np.isnan(float(rank_neurons(flat)["correlation"]))  # a constant effect correlates with nothing
    with pytest.raises(FragilityError, match="by must be one of"):
        rank_neurons(synthetic(), by="noisy")


def test_defense_factors_are_proportional_to_rank():
    g = defense_factors(rank_neurons(synthetic())["fragility"], compress=0.4, amplify=1.6)
    np.testing.assert_allclose(g.values, [1.6, 0.8, 1.2, 0.4])  # most fragile ×1.6, most robust ×0.4, linear between
    tied = defense_factors(xr.DataArray([0.1, 0.1, 0.0], dims="neuron"), 0.5, 1.5)
    np.testing.assert_allclose(tied.values, [1.25, 1.25, 0.5])
    np.testing.assert_allclose(defense_factors(xr.DataArray([0.3], dims="neuron")).values, [0.5])
    for compress, amplify in ((1.2, 1.5), (0.0, 1.5), (0.5, 0.9)):
        with pytest.raises(FragilityError, match="compress"):
            defense_factors(g, compress=compress, amplify=amplify)


def test_scale_channels_on_a_batchnorm_scales_its_output(trained_cnn, test_set):
    x = test_set[0][:8]
    before = copy.deepcopy(trained_cnn.state_dict())
    factors = np.ones(16)
    factors[[2, 7, 11]] = [0.5, 3.0, 0.0]
    scaled = scale_channels(trained_cnn, "blocks.0.bn", factors)
    assert all(torch.equal(v, before[k]) for k, v in trained_cnn.state_dict().items())  # the caller's model
    outs = {}
    for name, model in (("original", trained_cnn), ("scaled", scaled)):
        bn, h1 = recorder(model.blocks[0].bn)
        relu, h2 = recorder(model.blocks[0].relu)
        with torch.no_grad():
            model(x)
        h1.remove(), h2.remove()
        outs[name] = bn[0], relu[0]
    f = torch.tensor(factors, dtype=torch.float32).view(1, -1, 1, 1)
    for k in range(2):  # after the BatchNorm, and after the ReLU (the factors are ≥ 0)
        torch.testing.assert_close(outs["scaled"][k], outs["original"][k] * f, rtol=1e-5, atol=1e-6)
    assert torch.equal(outs["scaled"][1][:, 11], torch.zeros_like(outs["scaled"][1][:, 11]))
    after = scaled.state_dict()
    for name in before:
        if not name.startswith("blocks.0.bn.") or name.endswith(("running_mean", "running_var", "tracked")):
            assert torch.equal(after[name], before[name])


def test_scale_channels_on_a_linear_layer(trained_cnn):
    before = copy.deepcopy(trained_cnn.state_dict())
    factors = np.ones(10)
    factors[[2, 7]] = [0.5, 3.0]
    after = scale_channels(trained_cnn, "fc", factors).state_dict()
    f = torch.tensor(factors, dtype=torch.float32)
    assert torch.equal(after["fc.weight"], before["fc.weight"] * f[:, None])
    assert torch.equal(after["fc.bias"], before["fc.bias"] * f)
    with pytest.raises(FragilityError, match="factors"):
        scale_channels(trained_cnn, "fc", np.ones(3))
    with pytest.raises(FragilityError, match="factors"):
        scale_channels(trained_cnn, "fc", [np.nan] * 10)


def test_scale_channels_refuses_an_unknown_module(trained_cnn):
    for name in ("blocks.9.conv", "blocks.0.relu"):
        with pytest.raises(FragilityError, match=name.replace(".", r"\.")):
            scale_channels(trained_cnn, name, np.ones(16))


def test_defend(trained_cnn, test_set):
    x, y = test_set
    model = copy.deepcopy(trained_cnn).train()
    before = copy.deepcopy(model.state_dict())
    dropout = nodal_dropout(model, x, y, epsilon=EPS, progress=False)
    ds = defend(model, x, y, dropout, compress=0.5, amplify=2.0)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model.eval()
    assert ds["defense_accuracy"].dims == ("network", "defense_input") and ds["defense_accuracy"].shape == (2, 3)
    assert list(ds["defense_input"].values) == ["clean", "adversarial", "fixed"]
    x_adv = fr.fgsm(model, x, y, EPS)
    np.testing.assert_array_equal(ds["defense_accuracy"].sel(network="original").values,
                                  [accuracy(model, x, y), accuracy(model, x_adv, y), accuracy(model, x_adv, y)])
    factors = defense_factors(rank_neurons(dropout)["fragility"], 0.5, 2.0)
    np.testing.assert_array_equal(ds["factor"].values, factors.values)
    defended = scale_channels(model, "blocks.0.bn", factors.values)  # at the silencing point
    np.testing.assert_array_equal(ds["defense_accuracy"].sel(network="defended").values,
                                  [accuracy(defended, x, y), accuracy(defended, fr.fgsm(defended, x, y, EPS), y),
                                   accuracy(defended, x_adv, y)])
    assert ds.attrs["amplify"] == 2.0 and ds.attrs["compress"] == 0.5
    # per image: which test examples each network gets right on each input, averaging to the accuracies
    assert ds["defense_correct"].dims == ("network", "defense_input", "image")
    np.testing.assert_array_equal(ds["defense_correct"].mean("image").values, ds["defense_accuracy"].values)
    with torch.no_grad():
        np.testing.assert_array_equal(ds["defense_correct"].sel(network="defended", defense_input="fixed").values,
                                      (defended(x_adv).argmax(1) == y).numpy())
    with pytest.raises(FragilityError, match="nodal_dropout"):
        defend(model, x, y, synthetic().drop_vars("epsilon"))


def test_spearman_of_the_finite_pairs():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, np.nan, 4], [4, 3, 2, 100, 1]) == pytest.approx(-1.0)  # the NaN pair is left out
    assert np.isnan(spearman([1, 2], [1, 2]))  # fewer than three pairs
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3])) and np.isnan(spearman([1, 2, 3], [5, 5, 5]))  # constant


NEURONS = 40
N = 4000  # test images of the hand-made units


def unit(effect, defended, fixed=None, n=N):
    """A neurons unit: neuron k's clean accuracy drop is k / 400 (the higher the neuron, the more fragile), the
    attack's effect on it `effect[k]`; FGSM accuracy 0.3 before the defense and `defended` after (crafted against
    each network; `fixed`, crafted against the original, default `defended`); per-image results of n images."""
    drops = np.arange(NEURONS) / 400
    defense = np.array([[0.8, 0.3, 0.3], [0.78, defended, defended if fixed is None else fixed]])
    correct = nested(defense, n)
    return xr.Dataset({
        "accuracy": (("neuron", "input"), np.stack([0.8 - drops, 0.3 - drops / 2], 1)),
        "base_accuracy": ("input", [0.8, 0.3]),
        "attack_effect": ("neuron", np.asarray(effect, dtype=float)),
        "defense_accuracy": (("network", "defense_input"), correct.mean(-1)),
        "defense_correct": (("network", "defense_input", "image"), correct),
    }, coords={"neuron": np.arange(NEURONS), "input": ["clean", "adversarial"], "network": ["original", "defended"],
               "defense_input": ["clean", "adversarial", "fixed"], "image": np.arange(n)})


UP, DOWN = np.linspace(0.1, 4.0, NEURONS), np.linspace(4.0, 0.1, NEURONS)


def claims(tmp_path, effects, defended, fixed=None):
    """S2a and S2b decided on hand-made units, a seed per entry of `effects` and `defended`."""
    ev = evidence(tmp_path, "neurons", {("smallcnn", "digits", s): unit(e, d, fixed)
                                        for s, (e, d) in enumerate(zip(effects, defended))})
    return {c: decided(ev, "neurons", c, "smallcnn", "digits") for c in ("S2a", "S2b")}, ev


@pytest.mark.parametrize("effects, s2a, rho", [
    ([UP, UP], "holds", 1.0),  # the attack hits hardest where silencing hurts most, in both seeds
    ([DOWN, DOWN], "differs", -1.0),  # and least
])
def test_s2a_rule(tmp_path, effects, s2a, rho):
    found, _ = claims(tmp_path, effects, [0.35, 0.35])
    assert found["S2a"].verdict == s2a
    assert (found["S2a"].value, found["S2a"].low, found["S2a"].high) == pytest.approx((rho, rho, rho))
    assert f"per seed {rho:+.2f}, {rho:+.2f}; mean {rho:+.2f} [{rho:+.2f}, {rho:+.2f}]" in found["S2a"].evidence


def test_s2a_is_inconclusive_when_the_seeds_disagree(tmp_path):
    found, ev = claims(tmp_path, [UP, DOWN], [0.35, 0.35])
    assert found["S2a"].verdict == "inconclusive"
    assert found["S2a"].value == pytest.approx(0.0)  # mean of +1 and −1
    assert (found["S2a"].low, found["S2a"].high) == pytest.approx((-1.0, 1.0))  # a replicate may draw one seed twice


def test_neurons_rho_resamples_the_neurons():
    noisy = UP + np.random.default_rng(0).normal(0, 1.0, NEURONS)
    ds = combined({("smallcnn", "digits", 0): unit(noisy, 0.35, n=10)})
    rho = _neurons_rho(ds, "smallcnn", "digits", "clean", samples=60)
    assert rho.dims == ("sample",) and rho.sizes["sample"] == 61
    assert float(rho.sel(sample=0)) == pytest.approx(spearman(np.arange(NEURONS), noisy))  # as stored
    assert float(rho.std()) > 0.01  # neurons drawn with replacement


@pytest.mark.parametrize("defended, s2b, gain", [
    ([0.35, 0.33], "holds", 0.04),  # +0.04 mean gain
    ([0.305, 0.305], "differs", 0.005),  # +0.005 is within 0.01
    ([0.25, 0.25], "differs", -0.05),  # the defense costs accuracy
])
def test_s2b_rule(tmp_path, defended, s2b, gain):
    found, _ = claims(tmp_path, [UP, UP], defended)
    assert found["S2b"].verdict == s2b
    assert found["S2b"].value == pytest.approx(gain, abs=1e-6)
    assert found["S2b"].low <= found["S2b"].value <= found["S2b"].high
    assert f"gain {gain:+.3f} [" in found["S2b"].evidence


def test_s2b_under_the_reading_that_crafts_fgsm_against_the_original_network(tmp_path):
    _, ev = claims(tmp_path, [UP, UP], [0.35, 0.35], fixed=0.3)
    assert decided(ev, "neurons", "S2b", "smallcnn", "digits").verdict == "holds"
    found = decided(ev, "neurons", "S2b", "smallcnn", "digits", verdicts.Reading("defended", "original"))
    assert found.verdict == "differs" and found.value == pytest.approx(0.0)
    assert "crafted against the original network" in found.evidence


def test_s2_need_the_study_on_the_panel(tmp_path):
    _, ev = claims(tmp_path, [UP], [0.35])
    for claim in ("S2a", "S2b"):
        with pytest.raises(verdicts.Untestable, match="the neurons study on resnet18 and mnist"):
            decided(ev, "neurons", claim, "resnet18", "mnist")
