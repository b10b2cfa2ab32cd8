"""Fully filtered layers and BatchNorm (Fig. 11, claim P7): the BatchNorm states, remove_layers, claim P7 decided
with its interval on hand-made units."""
import copy

import numpy as np
import pytest
import torch
import xarray as xr
from test_studies import combined, decided, evidence, nested
from torch import nn

from fragility import FragilityError, models, verdicts
from fragility.attacks import accuracy
from fragility.studies.batchnorm import STATES, following_batchnorm, remove_layers, removed, shares

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


def on_batches(model):
    """An independent copy of the model in eval mode with every BatchNorm in training mode: each batch normalized by
    its own statistics (the copy's running statistics are updated, which nothing reads)."""
    out = copy.deepcopy(model).eval()
    for m in out.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    return out


def manual(model, layer, bn, state, x_train, batch_size):
    """An independent copy of the model with `layer`'s weights removed and its BatchNorm `bn` in `state`."""
    out = copy.deepcopy(model).eval() if state != "batch statistics" else on_batches(model)
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
            expected = accuracy(manual(cnn, layer, bn, state, x_train, 32), x, y, batch_size=32)
            assert float(ds["accuracy"].sel(layer=layer, state=state)) == pytest.approx(expected, abs=1 / len(y))
        assert ds["accuracy"].sel(layer=layer, state="zeroed") != ds["intact_accuracy"]
    for state in ("trained", "batch statistics"):  # the states that need no following BatchNorm
        expected = accuracy(manual(cnn, "fc", None, state, x_train, 32), x, y, batch_size=32)
        assert float(ds["accuracy"].sel(layer="fc", state=state)) == pytest.approx(expected, abs=1 / len(y))
    assert np.isnan(ds["accuracy"].sel(layer="fc", state=list(STATES[1:4]))).all()  # no BatchNorm follows fc
    assert float(ds["intact_batch_accuracy"]) == pytest.approx(accuracy(on_batches(cnn), x, y, batch_size=32),
                                                               abs=1 / len(y))
    assert ds.attrs["n_train"] == len(x_train) and ds.attrs["n_test"] == len(y)
    # the per-image results average to the accuracies (NaN where a state needs a BatchNorm that fc lacks)
    assert ds["correct"].dims == ("layer", "state", "image") and ds.sizes["image"] == len(y)
    np.testing.assert_array_equal(ds["correct"].mean("image").values, ds["accuracy"].values)
    assert float(ds["intact_correct"].mean()) == float(ds["intact_accuracy"])
    np.testing.assert_array_equal(ds["intact_correct"].values, (cnn(x).argmax(1) == y).numpy())


def skewed(model, seed=0):
    """A copy of the model whose running statistics are far from any batch's: every BatchNorm's running mean shifted
    and its running variance scaled up."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    for m in out.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.add_(2 + torch.rand(m.running_mean.shape, generator=gen))
            m.running_var.mul_(20)
    return out


def test_removed_batch_statistics_normalizes_each_batch_and_keeps_the_running_statistics(cnn, x_train):
    model = skewed(cnn)
    model.train()
    model.blocks[0].eval()  # a mixed mode, to be given back as it was
    before = snapshot(model)
    modes = {n: m.training for n, m in model.named_modules()}
    batch = x_train[:32]
    inputs, h1 = seen(model.blocks[1].bn)
    outputs, h2 = seen(model.blocks[1].bn, pre=False)
    silenced, h3 = seen(model.blocks[0].relu)
    with removed(model, "blocks.0.conv", "blocks.0.bn", "batch statistics") as inside, torch.no_grad():
        assert not any(m.training for m in inside.modules())  # eval mode, and yet batch statistics
        on_batch = inside(batch)
    with removed(model, "blocks.0.conv", "blocks.0.bn", "trained"), torch.no_grad():
        on_running = model(batch)
    for h in (h1, h2, h3):
        h.remove()
    bn = model.blocks[1].bn
    # blocks.1.bn normalized the batch by the batch's own mean and (biased) variance, not its running statistics
    expected = nn.functional.batch_norm(inputs[0], None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    torch.testing.assert_close(outputs[0], expected)
    flat = outputs[0].transpose(0, 1).flatten(1)
    torch.testing.assert_close(flat.mean(1), bn.bias.detach(), atol=1e-5, rtol=0)
    # the zeroed layer gives blocks.0.bn a batch of zeros: mean 0, variance 0, so it outputs β exactly
    torch.testing.assert_close(silenced[0], model.blocks[0].bn.bias.detach().view(1, -1, 1, 1).expand_as(silenced[0]))
    # the running statistics differ from the batch's, so the two states differ
    assert not torch.allclose(on_batch, on_running, atol=1e-3)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # running statistics and counters, bitwise
    assert {n: m.training for n, m in model.named_modules()} == modes


def test_remove_layers_batch_statistics_differ_from_running_ones_when_they_disagree(cnn, test_set, x_train):
    """On ResNet-18 (random running statistics, unlike any batch's) a fully filtered layer leaves the skip path, so
    the predictions still depend on the input: on the batch's statistics other images are classified correctly than
    on the running ones. The running statistics are left exactly as they were."""
    net = resnet()
    x = torch.randn(40, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = net(x).argmax(1)  # the intact network (running statistics) right on every image
    before = snapshot(net)
    ds = remove_layers(net, ["layer2.0.conv1"], x, y, x_train=x, batch_size=20)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert float(ds["intact_accuracy"]) == 1.0
    trained, batch = (ds["correct"].sel(layer="layer2.0.conv1", state=s).values for s in ("trained",
                                                                                          "batch statistics"))
    assert (trained != batch).any()
    assert float(ds["intact_batch_accuracy"]) == pytest.approx(accuracy(on_batches(net), x, y, batch_size=20))
    assert float(ds["intact_batch_accuracy"]) < 1.0
    # a small CNN whose running statistics are skewed far from any batch's: on the batch's own it keeps its accuracy
    x, y = test_set
    model = skewed(cnn)
    ds = remove_layers(model, ["fc"], x, y, x_train, batch_size=30)
    assert float(ds["intact_accuracy"]) == accuracy(model, x, y)
    assert float(ds["intact_batch_accuracy"]) > float(ds["intact_accuracy"])


N = 2000  # test images of the hand-made units: intervals narrow enough to decide what is far from the rule's edges


def unit(rows, intact=0.9, followers=None, n=N):
    """A batchnorm unit: `rows` maps a layer to its accuracy in the states trained, zeroed, following re-estimated,
    all re-estimated and (if given; else as trained) batch statistics — NaN where no BatchNorm follows — with
    per-image results of n images nested so that their bootstrap replicates move together."""
    layers = list(rows)
    followers = followers or [f"{n}.bn" for n in layers]
    acc = np.array([list(rows[n]) + ([] if len(rows[n]) == 5 else [rows[n][0]]) for n in layers], dtype=float)
    correct, intact_correct = nested(acc, n), nested(intact, n)
    return xr.Dataset({"accuracy": (("layer", "state"), np.where(np.isnan(acc), np.nan, np.round(acc * n) / n)),
                       "correct": (("layer", "state", "image"), correct),
                       "intact_accuracy": ((), intact_correct.mean()), "intact_correct": (("image",), intact_correct),
                       "intact_batch_accuracy": ((), intact)},
                      coords={"layer": layers, "state": list(STATES), "batchnorm": ("layer", followers),
                              "image": np.arange(n)})


NAN = float("nan")
BATCH = verdicts.Reading("batchnorm", "batch")


def p7(tmp_path, units, model="resnet18", dataset="cifar10", reading=None, responses=()):
    return decided(evidence(tmp_path, "batchnorm", units, responses), "batchnorm", "P7", model, dataset, reading)


def test_p7_differs_when_the_skip_connection_carries_it(tmp_path):
    found = p7(tmp_path, {("resnet18", "cifar10", s): unit({"layer2.0.conv1": [0.85, 0.84, 0.85, 0.86]})
                          for s in (0, 1)})
    assert found.verdict == "differs" and (found.value, found.low, found.high) == (0, 0, 0)
    assert "skip connection" in found.evidence and "Layers carried by their BatchNorm: 0 [0, 0] of 1" in found.evidence


def test_p7_holds_when_the_batchnorm_carries_it(tmp_path):
    found = p7(tmp_path, {("resnet18", "cifar10", s): unit({"layer2.0.conv1": [0.85, 0.11, 0.7, 0.8],
                                                            "layer3.0.conv1": [0.8, 0.8, 0.8, 0.8]}) for s in (0, 1)})
    assert found.verdict == "holds" and (found.value, found.low, found.high) == (1, 1, 1)
    assert "the BatchNorm carries it" in found.evidence and "1 [1, 1] of 2" in found.evidence
    # each layer's kept share with its interval: 0.85 of an intact 0.9 keeps (0.85 − 0.1) / 0.8 of the above-chance
    assert "`layer2.0.conv1` (followed by `layer2.0.conv1.bn`) keeps 94% [" in found.evidence


def test_p7_counts_survival_by_the_share_above_chance(tmp_path):
    # intact 0.9, chance 0.1: 0.45 keeps (0.45 − 0.1) / 0.8 < 50 %, so the layer does not survive
    found = p7(tmp_path / "a", {("smallcnn", "digits", 0): unit({"conv": [0.45, 0.1, 0.4, 0.4]})}, "smallcnn",
               "digits")
    assert found.verdict == "differs" and found.high == 0
    assert "does not survive" in found.evidence and "keeps 44% [" in found.evidence
    found = p7(tmp_path / "b", {("smallcnn", "digits", 0): unit({"fc": [0.85, NAN, NAN, NAN]}, followers=[""])},
               "smallcnn", "digits")
    assert found.verdict == "differs" and "no BatchNorm follows it" in found.evidence
    assert "followed by `no BatchNorm`" in found.evidence and "nan" not in found.evidence


def test_what_carries_a_layer_is_called_from_its_interval(tmp_path):
    # a downsample keeping (0.5 − 0.1) / 0.8 = 50 % of the above-chance accuracy as trained, of 100 images: its
    # interval straddles the 50 % threshold, so whether it survives is undecided, not "does not survive"; with the
    # BatchNorm's output zeroed it keeps 99 %, well above the trained share: the constant harms, it does not carry
    found = p7(tmp_path, {("resnet18", "cifar10", 0): unit({"layer4.0.downsample.0": [0.5, 0.89, 0.89, 0.89]},
                                                            n=100)})
    assert "whether it survives is undecided (its interval straddles the 50%" in found.evidence, found.evidence
    assert "does not survive" not in found.evidence
    assert "the constant it adds harms the filtered network rather than carrying it" in found.evidence
    found = p7(tmp_path / "b", {("resnet18", "cifar10", 0): unit({"layer4.0.downsample.0": [0.85, 0.84, 0.85, 0.86]})})
    assert "the residual branch carries it, not the BatchNorm" in found.evidence  # a downsample is the skip path
    assert "harms" not in found.evidence


def test_p7_is_inconclusive_when_the_seeds_disagree(tmp_path):
    # zeroed: 0.12 in one seed (carried), 0.9 in the other (not): the mean share (0.025 + 1) / 2 is not below half,
    # but a bootstrap replicate that draws the first seed twice finds the layer carried
    ev = evidence(tmp_path, "batchnorm", {("resnet18", "cifar10", 0): unit({"l": [0.85, 0.12, 0.8, 0.8]}),
                                          ("resnet18", "cifar10", 1): unit({"l": [0.85, 0.9, 0.8, 0.8]}),
                                          ("resnet18", "mnist", 0): unit({"l": [0.85, 0.11, 0.8, 0.8]})})
    found = decided(ev, "batchnorm", "P7", "resnet18", "cifar10")
    assert found.verdict == "inconclusive" and (found.value, found.low, found.high) == (0, 0, 1)
    assert decided(ev, "batchnorm", "P7", "resnet18", "mnist").verdict == "holds"


def test_p7_uses_each_datasets_chance(tmp_path):
    """Tiny ImageNet's chance is 1/200: 0.29 of an intact 0.5 keeps 58 % of the above-chance accuracy (survives; with
    a chance of 1/10 it would keep 48 %), 0.03 with the BatchNorm zeroed keeps 5 % (carried by it), also when a
    10-class dataset is in the study."""
    tiny = {("resnet18", "tiny-imagenet", 0): unit({"l": [0.29, 0.03, 0.2, 0.2]}, intact=0.5)}
    assert p7(tmp_path / "tiny", tiny, dataset="tiny-imagenet").verdict == "holds"
    both = {**tiny, ("resnet18", "cifar10", 0): unit({"l": [0.85, 0.11, 0.7, 0.8]})}
    ev = evidence(tmp_path / "both", "batchnorm", both)
    assert decided(ev, "batchnorm", "P7", "resnet18", "cifar10").verdict == "holds"
    assert decided(ev, "batchnorm", "P7", "resnet18", "tiny-imagenet").verdict == "holds"


def test_p7_names_the_follower_of_a_layer_only_another_seed_studied(tmp_path):
    found = p7(tmp_path, {("smallcnn", "digits", 0): unit({"a.conv": [0.85, 0.1, 0.8, 0.8]}),
                          ("smallcnn", "digits", 1): unit({"a.conv": [0.85, 0.1, 0.8, 0.8],
                                                           "b.conv": [0.2, 0.1, 0.2, 0.2]})}, "smallcnn", "digits")
    assert "`b.conv` (followed by `b.conv.bn`)" in found.evidence and "nan" not in found.evidence
    assert found.verdict == "holds" and "1 [1, 1] of 2" in found.evidence


@pytest.mark.parametrize("batch, paper, under_batch", [
    (0.85, "holds", "holds"),  # survives on the batch's statistics too
    (0.12, "holds", "differs"),  # carried by its running statistics, lost on the batch's own
])
def test_p7_under_the_batch_statistics_reading(tmp_path, batch, paper, under_batch):
    """The authors' notebook never calls eval(): under that reading a layer counts when it survives with every
    BatchNorm on the batch's own statistics."""
    units = {("resnet18", "cifar10", 0): unit({"l": [0.85, 0.11, 0.7, 0.8, batch]})}
    ev = evidence(tmp_path, "batchnorm", units)
    assert decided(ev, "batchnorm", "P7", "resnet18", "cifar10").verdict == paper
    found = decided(ev, "batchnorm", "P7", "resnet18", "cifar10", BATCH)
    assert found.verdict == under_batch and found.value == (1 if under_batch == "holds" else 0)


def test_shares_resample_images_and_seeds():
    ds = combined({("smallcnn", "digits", s): unit({"l": [0.5 + 0.2 * s, 0.1, 0.3, 0.3]}, n=400) for s in (0, 1)})
    s = shares(ds, "smallcnn", "digits", samples=50)
    kept = s["kept"].sel(layer="l", state="trained")
    assert kept.dims == ("sample",) and kept.sizes["sample"] == 51
    # sample 0 as stored: the mean over seeds of (0.5 − 0.1) / 0.8 and (0.7 − 0.1) / 0.8
    assert float(kept.sel(sample=0)) == pytest.approx(0.625)
    assert float(kept.min()) < 0.6 and float(kept.max()) > 0.65  # the replicates spread around it
    np.testing.assert_allclose(s["accuracy"].sel(layer="l", state="trained"), 0.6)
    assert str(s["batchnorm"].sel(layer="l").values) == "l.bn"


def test_p7_reports_its_batch_statistics_reading_without_the_conventions_study(tmp_path):
    units = {("resnet18", "cifar10", 0): unit({"l": [0.85, 0.11, 0.7, 0.8, 0.12]})}
    ev = evidence(tmp_path, "batchnorm", units, responses=[("resnet18", "cifar10")])
    claim = next(c for c in verdicts.chapters.CHAPTERS["fig11_batchnorm"].claims if c.id == "P7")
    row = next(r for r in verdicts.decide_claim(claim, ev) if r["panel"] == "11 CIFAR10")
    assert row["verdict"] == "holds"
    assert "flips under BatchNorm batch statistics: differs" in row["readings"]
