"""Fully filtered layers and BatchNorm (Fig. 11, claim P7): the BatchNorm states, remove_layers, the verdict."""
import copy

import numpy as np
import pytest
import torch
import xarray as xr
from test_studies import combined
from torch import nn

from fragility import FragilityError, models
from fragility.attacks import accuracy
from fragility.studies.batchnorm import STATES, following_batchnorm, remove_layers, removed, verdict

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cnn(trained_cnn):
    """A copy of the trained CNN that a test may put in any mode."""
    return copy.deepcopy(trained_cnn)


@pytest.fixture(scope="module")
def x_train(digits):
    return digits[0][:64]


def resnet(seed=0):
    """ResNet-18 with random BatchNorm statistics (as the engine tests build it), in eval mode."""
    model = models.build("resnet18", 1, 10, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.normal_(0, 0.1, generator=gen)
    return model.eval()


def seen(module, pre=True):
    """A list that collects the input (pre) or output of `module` at each call, and the hook's handle."""
    out = []
    if pre:
        handle = module.register_forward_pre_hook(lambda m, i: out.append(i[0].detach().clone()))
    else:
        handle = module.register_forward_hook(lambda m, i, o: out.append(o.detach().clone()))
    return out, handle


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_following_batchnorm(trained_cnn):
    x = torch.zeros(2, 1, 28, 28)
    assert following_batchnorm(trained_cnn, "blocks.0.conv", x) == "blocks.0.bn"
    assert following_batchnorm(trained_cnn, "blocks.1.conv", x) == "blocks.1.bn"
    assert following_batchnorm(trained_cnn, "fc", x) is None
    net = resnet()
    x = torch.zeros(2, 1, 32, 32)
    assert following_batchnorm(net, "conv1", x) == "bn1"
    assert following_batchnorm(net, "layer2.0.conv1", x) == "layer2.0.bn1"
    assert following_batchnorm(net, "layer4.0.downsample.0", x) == "layer4.0.downsample.1"
    assert following_batchnorm(net, "fc", x) is None
    with pytest.raises(FragilityError, match="blocks.9.conv"):
        following_batchnorm(trained_cnn, "blocks.9.conv", torch.zeros(2, 1, 28, 28))


@pytest.mark.parametrize("state", STATES)
def test_removed_restores_weights_statistics_and_modes(cnn, x_train, state):
    cnn.train()
    cnn.blocks[1].eval()  # a mixed mode, to be given back as it was
    cnn.blocks[0].bn.momentum = 0.3
    before = snapshot(cnn)
    modes = {n: m.training for n, m in cnn.named_modules()}
    with removed(cnn, "blocks.0.conv", "blocks.0.bn", state, x_train) as model:
        assert model is cnn and not any(m.training for m in cnn.modules())
        assert (cnn.blocks[0].conv.weight == 0).all()
        with torch.no_grad():
            model(x_train[:4])
    after = cnn.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # weights and running statistics, bitwise
    assert {n: m.training for n, m in cnn.named_modules()} == modes
    assert cnn.blocks[0].bn.momentum == 0.3 and cnn.blocks[1].bn.momentum == 0.1
    assert not cnn.blocks[0].bn._forward_hooks  # no hook left behind


def test_removed_trained_leaves_the_batchnorm_constant(cnn, x_train):
    bn = cnn.blocks[0].bn
    constant = (bn.bias - bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps)).detach()
    inputs, handle = seen(cnn.blocks[0].relu)
    with removed(cnn, "blocks.0.conv", "blocks.0.bn", "trained"), torch.no_grad():
        cnn(x_train[:5])
    handle.remove()
    torch.testing.assert_close(inputs[0], constant.view(1, -1, 1, 1).expand_as(inputs[0]))
    assert constant.abs().max() > 0.01  # the constant the paper credits is not zero


def test_removed_zeroed_zeroes_the_batchnorm_output(cnn, x_train):
    inputs, handle = seen(cnn.blocks[0].relu)
    with removed(cnn, "blocks.0.conv", "blocks.0.bn", "zeroed"), torch.no_grad():
        cnn(x_train[:5])
    handle.remove()
    assert inputs[0].shape[1] == 16 and torch.equal(inputs[0], torch.zeros_like(inputs[0]))
    with torch.no_grad():  # and the hook is gone afterwards
        outputs, handle = seen(cnn.blocks[0].bn, pre=False)
        cnn(x_train[:5])
        handle.remove()
    assert outputs[0].abs().max() > 0


def test_removed_following_re_estimated(cnn, x_train):
    other = {k: v.clone() for k, v in cnn.blocks[1].bn.state_dict().items()}
    inputs, handle = seen(cnn.blocks[0].relu)
    with removed(cnn, "blocks.0.conv", "blocks.0.bn", "following re-estimated", x_train, batch_size=20):
        bn = cnn.blocks[0].bn
        # a zeroed layer gives the BatchNorm zeros: mean 0 and variance 0, so it outputs β exactly
        assert torch.equal(bn.running_mean, torch.zeros(16)) and torch.equal(bn.running_var, torch.zeros(16))
        assert all(torch.equal(v, other[k]) for k, v in cnn.blocks[1].bn.state_dict().items())
        with torch.no_grad():
            cnn(x_train[:3])
    handle.remove()
    torch.testing.assert_close(inputs[0], cnn.blocks[0].bn.bias.detach().view(1, -1, 1, 1).expand_as(inputs[0]))


def test_removed_all_re_estimated(cnn, x_train):
    with removed(cnn, "blocks.0.conv", "blocks.0.bn", "all re-estimated", x_train, batch_size=len(x_train)):
        stats = (cnn.blocks[1].bn.running_mean.clone(), cnn.blocks[1].bn.running_var.clone())
        inputs, handle = seen(cnn.blocks[1].bn)  # what blocks.1.bn sees from the training images
        with torch.no_grad():
            cnn(x_train)
        handle.remove()
    flat = inputs[0].transpose(0, 1).flatten(1)
    torch.testing.assert_close(stats[0], flat.mean(1))
    torch.testing.assert_close(stats[1], flat.var(1, unbiased=True))


def test_removed_refuses_bad_states(cnn, x_train):
    for args, match in (((cnn, "blocks.0.conv", "blocks.0.bn", "frozen"), "state"),
                        ((cnn, "fc", None, "zeroed"), "needs the BatchNorm"),
                        ((cnn, "blocks.0.conv", "blocks.0.bn", "all re-estimated"), "x_train")):
        with pytest.raises(FragilityError, match=match), removed(*args):
            pass


def manual(model, layer, bn, state, x_train, batch_size):
    """An independent copy of the model with `layer`'s weights removed and its BatchNorm `bn` in `state`."""
    out = copy.deepcopy(model).eval()
    modules = dict(out.named_modules())
    with torch.no_grad():
        modules[layer].weight.zero_()
        if state == "zeroed":  # γ = β = 0: the BatchNorm outputs 0
            modules[bn].weight.zero_()
            modules[bn].bias.zero_()
        elif state == "following re-estimated":  # statistics of zeros
            modules[bn].running_mean.zero_()
            modules[bn].running_var.zero_()
        elif state == "all re-estimated":
            for m in out.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()
                    m.momentum = None
                    m.train()
            for xb in x_train.split(batch_size):
                out(xb)
            out.eval()
    return out


def test_remove_layers_against_manual_copies(cnn, test_set, x_train):
    x, y = test_set
    before = snapshot(cnn)
    ds = remove_layers(cnn, ["blocks.0.conv", "blocks.1.conv", "fc"], x, y, x_train, batch_size=32)
    assert all(torch.equal(cnn.state_dict()[k], v) for k, v in before.items())
    assert ds["accuracy"].dims == ("layer", "state") and list(ds["state"].values) == list(STATES)
    assert list(ds["batchnorm"].values) == ["blocks.0.bn", "blocks.1.bn", ""]
    assert float(ds["intact_accuracy"]) == accuracy(cnn, x, y)
    for layer, bn in (("blocks.0.conv", "blocks.0.bn"), ("blocks.1.conv", "blocks.1.bn")):
        for state in STATES:
            expected = accuracy(manual(cnn, layer, bn, state, x_train, 32), x, y)
            assert float(ds["accuracy"].sel(layer=layer, state=state)) == pytest.approx(expected, abs=1 / len(y))
        assert ds["accuracy"].sel(layer=layer, state="zeroed") != ds["intact_accuracy"]
    assert float(ds["accuracy"].sel(layer="fc", state="trained")) == accuracy(manual(cnn, "fc", None, "trained",
                                                                                     x_train, 32), x, y)
    assert np.isnan(ds["accuracy"].sel(layer="fc", state=list(STATES[1:]))).all()  # no BatchNorm follows fc
    assert ds.attrs["n_train"] == len(x_train) and ds.attrs["n_test"] == len(y)


def test_zeroed_layer_keeps_the_residual_path_of_resnet18():
    net = resnet()
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    block = net.layer2[0]
    with removed(net, "layer2.0.conv1", "layer2.0.bn1", "zeroed"), torch.no_grad():
        ins, h1 = seen(block)
        outs, h2 = seen(block, pre=False)
        logits = net(x)
        h1.remove()
        # the residual branch is now the constant bn2(0); the skip (downsample) path still carries the input
        expected = torch.relu(block.bn2(torch.zeros_like(block.downsample(ins[0]))) + block.downsample(ins[0]))
        torch.testing.assert_close(outs[0], expected)
        cut = block.register_forward_pre_hook(lambda m, i: (torch.zeros_like(i[0]),))
        without_input = net(x)
        cut.remove()
        h2.remove()
        assert not torch.allclose(outs[0], outs[-1])  # the block's output depends on its input: not a constant
    assert not torch.allclose(logits, without_input)
    assert not torch.allclose(logits[0], logits[1])


def unit(rows, intact=0.9, followers=None):
    """A batchnorm unit: `rows` maps a layer to its accuracy in the four states (NaN: no BatchNorm follows)."""
    layers = list(rows)
    followers = followers or [f"{n}.bn" for n in layers]
    return xr.Dataset({"accuracy": (("layer", "state"), [rows[n] for n in layers]), "intact_accuracy": ((), intact)},
                      coords={"layer": layers, "state": list(STATES), "batchnorm": ("layer", followers)})


NAN = float("nan")


def test_verdict_skip_connection_carries_it():
    ds = combined({("resnet18", "cifar10", s): unit({"layer2.0.conv1": [0.85, 0.84, 0.85, 0.86]}) for s in (0, 1)})
    result, evidence = verdict(ds, "resnet18", "cifar10")
    assert result == "differs" and "skip connection" in evidence and "(1 survive, 0 by BatchNorm)" in evidence


def test_verdict_batchnorm_carries_it():
    ds = combined({("resnet18", "cifar10", s): unit({"layer2.0.conv1": [0.85, 0.11, 0.7, 0.8],
                                                     "layer3.0.conv1": [0.8, 0.8, 0.8, 0.8]}) for s in (0, 1)})
    result, evidence = verdict(ds, "resnet18", "cifar10")
    assert result == "holds" and "the BatchNorm carries it" in evidence
    assert "(2 survive, 1 by BatchNorm)" in evidence


def test_verdict_counts_survival_by_the_share_above_chance():
    # intact 0.9, chance 0.1: 0.45 keeps (0.45 − 0.1) / 0.8 < 50 %, so the layer does not survive
    ds = combined({("smallcnn", "digits", 0): unit({"conv": [0.45, 0.1, 0.4, 0.4]})})
    result, evidence = verdict(ds, "smallcnn", "digits")
    assert result == "differs" and "does not survive" in evidence and "(0 survive, 0 by BatchNorm)" in evidence
    ds = combined({("smallcnn", "digits", 0): unit({"fc": [0.85, NAN, NAN, NAN]}, followers=[""])})
    result, evidence = verdict(ds, "smallcnn", "digits")
    assert result == "differs" and "no BatchNorm follows it" in evidence


def test_verdict_averages_the_seeds():
    # zeroed: 0.12 in one seed, 0.9 in the other, mean share (0.025 + 1) / 2 > 0.5: not below half
    ds = combined({("resnet18", "cifar10", 0): unit({"l": [0.85, 0.12, 0.8, 0.8]}),
                   ("resnet18", "cifar10", 1): unit({"l": [0.85, 0.9, 0.8, 0.8]}),
                   ("resnet18", "mnist", 0): unit({"l": [0.85, 0.11, 0.8, 0.8]})})
    assert verdict(ds, "resnet18", "cifar10")[0] == "differs"
    assert verdict(ds, "resnet18", "mnist")[0] == "holds"


def test_verdict_uses_each_datasets_chance():
    """Tiny ImageNet's chance is 1/200: 0.28 of an intact 0.5 keeps 56 % of the above-chance accuracy (survives),
    0.03 with the BatchNorm zeroed keeps 5 % (carried by it), also when a 10-class dataset is in the study."""
    tiny = {("resnet18", "tiny-imagenet", 0): unit({"l": [0.28, 0.03, 0.2, 0.2]}, intact=0.5)}
    assert verdict(combined(tiny), "resnet18", "tiny-imagenet")[0] == "holds"
    both = {**tiny, ("resnet18", "cifar10", 0): unit({"l": [0.85, 0.11, 0.7, 0.8]})}
    assert verdict(combined(both), "resnet18", "cifar10")[0] == "holds"
    assert verdict(combined(both), "resnet18", "tiny-imagenet")[0] == "holds"


def test_verdict_names_the_follower_of_a_layer_only_another_seed_studied():
    ds = combined({("smallcnn", "digits", 0): unit({"a.conv": [0.85, 0.1, 0.8, 0.8]}),
                   ("smallcnn", "digits", 1): unit({"a.conv": [0.85, 0.1, 0.8, 0.8], "b.conv": [0.2, 0.1, 0.2, 0.2]})})
    evidence = verdict(ds, "smallcnn", "digits")[1]
    assert "with `b.conv.bn` zeroed" in evidence and "nan" not in evidence
