"""Many masks per pass (fragility.passes): the batched engine against the oracle, on CPU and on CUDA when present."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fragility as fr
from fragility import FragilityError
from fragility.engine import prepare, tf32, tf32_flags
from fragility.filters import synaptic_mask
from fragility.passes import CPU_MASKS_PER_PASS, _trace, count_correct
from test_engine import ARCHITECTURES, random_network

# every supported architecture: ARCHITECTURES' sizes and layers, ShuffleNet ×0.5 and the small CNN besides
BATCHED = {**ARCHITECTURES,
           "shufflenet_v2_x0_5": (32, ["conv1.0", "stage2.0.branch1.0", "stage2.0.branch2.3", "stage4.0.branch1.2",
                                       "fc"]),
           "smallcnn": (16, None)}
# ResNet-18's layers on the CPU (all of them on CUDA): the stem, a layer inside a residual block, a downsampling
# shortcut, a block's last convolution and the head — test_engine.py checks every layer of it; the global sweep, every
# layer at once, runs here too
CPU_LAYERS = {"resnet18": ["conv1", "layer1.0.conv2", "layer2.0.downsample.0", "layer3.1.conv2", "fc"]}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def flags():
    """The TF32 flags of CUDA matmuls and cuDNN convolutions now."""
    return tuple(getattr(owner, name) for owner, name in tf32_flags())


def filtered_copy(plan, unit, kind, i):
    """The model with unit's weights stressed by (kind, i), as the oracle builds it."""
    net = copy.deepcopy(plan.model)
    modules = dict(net.named_modules())
    stress = plan.stresses[plan.filters.index(kind)]
    with torch.no_grad():
        for name, w in stress.weights(plan.unit(unit), i, plan.A).items():
            modules[name].weight.copy_(w)
    return net


def assert_same_accuracy(fast, plain, model, x, y, options, tol=1e-4):
    """Equal accuracies, or each differing cell explained by near-ties (a batched convolution may round otherwise).

    Per differing (layer, filter, α, input): the float32 network's logits lie within tol (relative to the largest
    logit) of float64's, and the counts differ by at most the number of predictions whose float64 top-2 margin is
    below tol, or, adaptive attack, whose float64 input gradient has a component within tol of 0 (its sign may flip).
    """
    differ = np.argwhere(fast.accuracy.values != plain.accuracy.values)
    if len(differ) == 0:
        return
    stress = prepare(model, x, y, **options)
    for u, f, i, inp in differ:
        net = filtered_copy(stress, stress.units[u], stress.filters[f], int(i))
        net64, xs = copy.deepcopy(net).double(), stress.x.double()
        fragile = torch.zeros(len(xs), dtype=torch.bool, device=xs.device)
        if inp == 1 and stress.x_adv is not None:
            xs = stress.x_adv.double()
        elif inp == 1:
            xs.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(net64(xs), stress.y, reduction="sum"), xs)
            fragile |= (grad.abs() < tol).flatten(1).any(1)
            xs = (xs + stress.epsilon * grad.sign()).detach()
        with torch.no_grad():
            logits64, logits32 = net64(xs), net(xs.float()).double()
        scale = tol * max(1.0, float(logits64.abs().max()))
        assert float((logits32 - logits64).abs().max()) <= scale, "float32 logits far from float64's"
        top2 = logits64.topk(2, dim=1).values
        fragile |= (top2[:, 0] - top2[:, 1]) < scale
        changed = round(abs(float(fast.accuracy.values[u, f, i, inp] - plain.accuracy.values[u, f, i, inp])) * len(y))
        assert changed <= int(fragile.sum()), f"cell {(u, f, i, inp)}: {changed} predictions differ, not near-ties"


def check_batched(name, attack, device, k=3):
    size, layers = BATCHED[name]
    layers = CPU_LAYERS.get(name, layers) if device == "cpu" else layers
    model, x, y = random_network(name, size)
    options = dict(A=2, layers=layers, epsilon=0.05, attack=attack, batch_size=4, progress=False, device=device)
    before = flags()
    fast = fr.sweep(model, x, y, masks_per_pass=k, **options)
    plain = fr.sweep_naive(model, x, y, **options)
    assert flags() == before
    assert fast.attrs["engine"] == "graph" and fast.attrs["masks_per_pass"] == k and plain.attrs["masks_per_pass"] == 1
    assert fast.attrs["precision"] == "float32" and "global" in fast.layer.values
    assert_same_accuracy(fast, plain, model, x, y, options)
    for var in ("n_filtered", "n_params", "threshold", "base_accuracy", "epsilon"):
        np.testing.assert_array_equal(fast[var].values, plain[var].values)
    assert fast.accuracy.min() < fast.base_accuracy.sel(input="clean")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("attack", ["fixed", "adaptive"])
def test_batched_small_cnn_equals_oracle(attack, device):
    check_batched("smallcnn", attack, device)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("attack", ["fixed", "adaptive"])
@pytest.mark.parametrize("name", [n for n in BATCHED if n != "smallcnn"])
def test_batched_equals_oracle(name, attack, device):
    """Local and global units, K = 3 so that chunks are uneven, every architecture (branches, grouped convolutions)."""
    check_batched(name, attack, device)


@pytest.mark.parametrize("k", [1, 1000])
def test_one_and_more_masks_per_pass_than_masks(trained_cnn, digits, k):
    x, y = digits[2][:40], digits[3][:40]
    options = dict(A=3, epsilon=0.2, batch_size=16, progress=False)
    for attack in ("fixed", "adaptive"):
        fast = fr.sweep(trained_cnn, x, y, attack=attack, masks_per_pass=k, **options)
        np.testing.assert_array_equal(fast.accuracy.values,
                                      fr.sweep_naive(trained_cnn, x, y, attack=attack, **options).accuracy.values)
        assert fast.attrs["masks_per_pass"] == k


def test_batched_equals_one_mask_per_pass(trained_cnn, digits):
    x, y = digits[2][:40], digits[3][:40]
    options = dict(A=4, epsilon=0.2, batch_size=16, progress=False, attack="adaptive")
    np.testing.assert_array_equal(fr.sweep(trained_cnn, x, y, masks_per_pass=4, **options).accuracy.values,
                                  fr.sweep(trained_cnn, x, y, masks_per_pass=1, **options).accuracy.values)


@pytest.mark.parametrize("k", [None, 1, 3])
def test_count_correct_for_its_callers(trained_cnn, digits, k):
    """The study code's entry point: clean-only and fixed-attack counts per weight set, whatever masks per pass."""
    x, y = digits[2][:30], digits[3][:30]
    stress = prepare(trained_cnn, x, y, layers=["blocks.1.conv"], include_global=False, epsilon=0.2, batch_size=16,
                     progress=False)
    w = stress.weights["blocks.1.conv"]
    masks = [synaptic_mask(w, kind, i, 4) for kind in ("h1", "h3") for i in (1, 2, 3)]
    sets = [lambda m=m: {"blocks.1.conv": w * m} for m in masks]
    graph = _trace(stress.model)
    for clean_only in (True, False):
        found = count_correct(stress, graph, "blocks.1.conv", sets, clean_only=clean_only, masks_per_pass=k)
        assert found.shape == (len(masks), 1 if clean_only else 2)
        for m, row in zip(masks, found):
            net = copy.deepcopy(trained_cnn)
            with torch.no_grad():
                net.blocks[1].conv.weight.mul_(m)
                expected = [int((net(inp).argmax(1) == y).sum()) for inp in (x, stress.x_adv)]
            assert row.tolist() == expected[:len(row)]


def test_auto_masks_per_pass_and_bad_values(trained_cnn, digits):
    x, y = digits[2][:20], digits[3][:20]
    ds = fr.sweep(trained_cnn, x, y, A=2, epsilon=0.1, progress=False)
    assert ds.attrs["masks_per_pass"] == CPU_MASKS_PER_PASS
    for bad in (0, -2, 2.5, True, "many"):
        with pytest.raises(FragilityError, match="masks_per_pass must be"):
            fr.sweep(trained_cnn, x, y, A=2, epsilon=0.1, progress=False, masks_per_pass=bad)


@pytest.mark.parametrize("precision", ["float32", "tf32", "bfloat16"])
def test_precision_sets_tf32_during_the_sweep_only(trained_cnn, digits, precision):
    """TF32 is explicitly off during a sweep unless precision="tf32" asks for it; the caller's flags come back."""
    x, y = digits[2][:20], digits[3][:20]
    seen = set()
    hook = trained_cnn.register_forward_hook(lambda *_: seen.add(flags()))
    before = flags()
    with tf32(precision != "tf32"):  # the caller's flags: the opposite of what the sweep sets
        outside = flags()
        try:
            ds = fr.sweep(trained_cnn, x, y, A=2, epsilon=0.1, precision=precision, masks_per_pass=2, progress=False)
            assert flags() == outside
        finally:
            hook.remove()
        with tf32(precision == "tf32"):
            assert seen == {flags()} and ds.attrs["precision"] == precision
    assert flags() == before


def test_bfloat16_with_many_masks_per_pass_is_close(trained_cnn, digits):
    x, y = digits[2][:60], digits[3][:60]
    options = dict(A=4, epsilon=0.1, precision="bfloat16", progress=False)
    one = fr.sweep(trained_cnn, x, y, masks_per_pass=1, **options)
    many = fr.sweep(trained_cnn, x, y, masks_per_pass=5, **options)
    assert float(abs(one.accuracy - many.accuracy).max()) <= 0.1


def test_near_tie_check_rejects_a_real_difference():
    model, x, y = random_network("smallcnn", 16)
    options = dict(A=2, epsilon=0.05, progress=False)
    plain = fr.sweep_naive(model, x, y, **options)
    moved = plain.copy(deep=True)
    moved.accuracy[0, 0, 1, 0] += 1 / len(y)
    with pytest.raises(AssertionError, match="not near-ties"):
        assert_same_accuracy(moved, plain, model, x, y, options)


@CUDA
def test_auto_masks_per_pass_on_cuda():
    """On CUDA, "auto" fits K to free memory; TF32 stays off, and the result is the oracle's."""
    model, x, y = random_network("resnet18", 32, n=8)
    options = dict(A=2, layers=["conv1", "layer2.0.conv1", "fc"], epsilon=0.05, batch_size=4, progress=False,
                   device="cuda")
    fast = fr.sweep(model, x, y, **options)
    assert fast.attrs["masks_per_pass"] >= 1
    assert_same_accuracy(fast, fr.sweep_naive(model, x, y, **options), model, x, y, options)
