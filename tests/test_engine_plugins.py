"""The engine against the oracle with any attack and any stress, on every supported architecture, and the models
that used to give the engine silent wrong answers or crashes: tied weights, the meta device, DataParallel, a model
that edits its input in place, DataLoaders of mixed image sizes."""
import copy

import numpy as np
import pytest
import torch
from test_engine import random_network
from test_engine_batched import BATCHED, CPU_LAYERS, assert_same_accuracy
from torch import nn

import fragility as fr
from fragility import FragilityError

pytestmark = pytest.mark.usefixtures("one_thread")

EVERY = ("h1", "h2", "h3", "random", "gaussian")
# on the torchvision networks h2 and h3 (masks like h1's, other thresholds) are checked against the oracle under
# FGSM by test_engine.py: here h1 stands for the three beside the plug-in stresses, under PGD
PLUGINS = ("h1", "random", "gaussian")


def check(model, x, y, **options):
    """The engine and the oracle give the same Dataset values; the engine's result."""
    fast, plain = fr.sweep(model, x, y, progress=False, **options), fr.sweep_naive(model, x, y, progress=False,
                                                                                    **options)
    for var in ("accuracy", "correct", "n_filtered", "n_params", "threshold", "base_accuracy", "epsilon"):
        np.testing.assert_array_equal(fast[var].values, plain[var].values, err_msg=var)
    return fast


def every_stress_and_pgd(name, crafted, filters=EVERY):
    size, layers = BATCHED[name]
    layers = CPU_LAYERS.get(name, layers)
    model, x, y = random_network(name, size)
    attack = fr.PGD(0.05, steps=2, random_start=True, seed=1)
    ds = check(model, x, y, A=2, layers=layers, filters=filters, attack=attack, crafted=crafted, batch_size=4)
    assert ds.attrs["attack_name"] == "pgd" and ds.attrs["crafted"] == crafted and "global" in ds["layer"].values
    assert ds["accuracy"].min() < ds["base_accuracy"].sel(input="clean")


@pytest.mark.parametrize("crafted", ["fixed", "adaptive"])
def test_every_stress_and_pgd_equal_the_oracle_on_the_small_cnn(crafted):
    every_stress_and_pgd("smallcnn", crafted)


@pytest.mark.slow
@pytest.mark.parametrize("crafted", ["fixed", "adaptive"])
@pytest.mark.parametrize("name", [n for n in BATCHED if n != "smallcnn"])
def test_every_stress_and_pgd_equal_the_oracle(name, crafted):
    """Residual branches, downsampling, concatenations, channel shuffles: PGD's later steps run the whole network."""
    every_stress_and_pgd(name, crafted, PLUGINS)


@pytest.mark.parametrize("k", [1, 3])
def test_pgd_with_many_masks_per_pass_equals_the_oracle(trained_cnn, test_set, k):
    x, y = test_set
    options = dict(A=3, filters=["h1", "gaussian"], attack=fr.PGD(0.1, steps=3), crafted="adaptive", batch_size=25)
    fast = fr.sweep(trained_cnn, x, y, masks_per_pass=k, progress=False, **options)
    np.testing.assert_array_equal(fast["accuracy"].values,
                                  fr.sweep_naive(trained_cnn, x, y, progress=False, **options)["accuracy"].values)
    assert fast.attrs["masks_per_pass"] == k


def test_the_old_spelling_of_the_attack_still_works(trained_cnn, test_set):
    x, y = test_set
    for crafted in ("fixed", "adaptive"):
        old = fr.sweep(trained_cnn, x, y, A=2, epsilon=0.1, attack=crafted, progress=False)
        new = fr.sweep(trained_cnn, x, y, A=2, attack=fr.FGSM(0.1), crafted=crafted, progress=False)
        assert old.attrs["attack"] == new.attrs["attack"] == crafted and old.attrs["attack_name"] == "fgsm"
        np.testing.assert_array_equal(old["correct"].values, new["correct"].values)
        np.testing.assert_array_equal(old["correct"].values, fr.sweep_naive(
            trained_cnn, x, y, A=2, epsilon=0.1, attack=crafted, progress=False)["correct"].values)
    assert fr.sweep(trained_cnn, x, y, A=1, epsilon=0.1, attack="pgd", progress=False).attrs["attack_parameters"] == \
        '{"clip": null, "random_start": false, "seed": 0, "step_size": null, "steps": 10}'


class Tied(nn.Module):
    """Two Linear layers sharing one weight tensor (`b.weight = a.weight`)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        h = self.conv(x).mean((2, 3))
        return self.out(self.b(torch.relu(self.a(h))) + h)


class UntraceableTied(Tied):
    def forward(self, x):
        h = self.conv(x).mean((2, 3))
        if h.sum() > -1e9:  # data-dependent control flow: the plain way
            h = self.b(torch.relu(self.a(h))) + h
        return self.out(h)


@pytest.mark.parametrize("cls", [Tied, UntraceableTied])
@pytest.mark.parametrize("crafted", ["fixed", "adaptive"])
def test_tied_weights_are_one_parameter(cls, crafted):
    torch.manual_seed(2)
    model, x = cls(), torch.randn(24, 1, 6, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    options = dict(A=4, filters=EVERY, epsilon=0.2, attack=crafted, masks_per_pass=2)
    if cls is UntraceableTied:
        with pytest.warns(UserWarning, match="cannot be traced"):
            ds = check(model, x, y, **options)
    else:
        ds = check(model, x, y, **options)
    assert list(ds["layer"].values) == ["conv", "a", "b", "out", "global"]
    sizes = {"conv": 36, "a": 16, "b": 16, "out": 12}
    np.testing.assert_array_equal(ds["n_params"].values, [36, 16, 16, 12, 36 + 16 + 12])  # the shared matrix once
    np.testing.assert_array_equal(ds["correct"].sel(layer="a").values, ds["correct"].sel(layer="b").values)
    assert (ds["n_filtered"].sel(filter=["h1", "h2"], alpha=1.0) == ds["n_params"]).all()
    weights = [model.conv.weight.detach(), model.a.weight.detach(), model.out.weight.detach()]
    lo, hi = min(float(w.min()) for w in weights), max(float(w.max()) for w in weights)
    assert float(ds["threshold"].sel(layer="global", filter="h1", alpha=0.0)) == lo
    assert float(ds["threshold"].sel(layer="global", filter="h2", alpha=0.0)) == hi
    # the local unit of `a` masks the one tensor both layers use, as a copy of the model with it masked does
    for i in range(5):
        net = copy.deepcopy(model)
        with torch.no_grad():
            net.a.weight.mul_(fr.synaptic_mask(model.a.weight, "h1", i, 4))
            assert net.b.weight is net.a.weight
            expected = int((net(x).argmax(1) == y).sum()) / len(y)
        assert float(ds["accuracy"].sel(layer="b", filter="h1", alpha=i / 4, input="clean")) == expected
    assert sum(sizes.values()) > int(ds["n_params"].sel(layer="global"))


def test_a_tied_layer_alone_is_its_parameter():
    torch.manual_seed(3)
    model, x = Tied(), torch.randn(16, 1, 6, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    ds = check(model, x, y, A=3, layers=["b"], include_global=False, epsilon=0.1)
    assert list(ds["layer"].values) == ["b"] and int(ds["n_params"].sel(layer="b")) == 16


def test_a_model_on_the_meta_device_is_refused():
    with torch.device("meta"):
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    for call in (lambda: fr.sweep(model, torch.randn(6, 4), torch.arange(6) % 3, epsilon=0.1, progress=False),
                 lambda: fr.fgsm(model, torch.randn(6, 4), torch.arange(6) % 3, 0.1)):
        with pytest.raises(FragilityError, match="meta device"):
            call()


def test_data_parallel_is_swept_as_the_network_it_holds(trained_cnn, test_set):
    x, y = test_set
    wrapped = nn.DataParallel(trained_cnn)
    for crafted in ("fixed", "adaptive"):
        ds = fr.sweep(wrapped, x, y, A=2, epsilon=0.1, attack=crafted, progress=False)
        plain = fr.sweep(trained_cnn, x, y, A=2, epsilon=0.1, attack=crafted, progress=False)
        assert list(ds["layer"].values) == ["blocks.0.conv", "blocks.1.conv", "fc", "global"]
        np.testing.assert_array_equal(ds["correct"].values, plain["correct"].values)
    assert torch.equal(fr.fgsm(wrapped, x, y, 0.1), fr.fgsm(trained_cnn, x, y, 0.1))
    assert fr.search_epsilon(wrapped, x, y) == fr.search_epsilon(trained_cnn, x, y)


class EditsItsInput(nn.Module):
    """Doubles its input in place before using it (as `x.mul_` or an in-place activation on the input would)."""

    def __init__(self, in_place=True):
        super().__init__()
        torch.manual_seed(4)
        self.conv, self.fc, self.in_place = nn.Conv2d(1, 3, 3), nn.Linear(3 * 4 * 4, 3), in_place

    def forward(self, x):
        x = x.mul_(2) if self.in_place else x * 2
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("crafted", ["fixed", "adaptive"])
def test_a_model_that_edits_its_input_never_changes_the_callers_tensor(crafted):
    x = torch.randn(20, 1, 6, 6, generator=torch.Generator().manual_seed(5))
    before = x.clone()
    y = EditsItsInput(False)(x).argmax(1)
    ds = check(EditsItsInput(), x, y, A=3, filters=EVERY, epsilon=0.1, attack=crafted)
    assert torch.equal(x, before)
    same = fr.sweep(EditsItsInput(False), x, y, A=3, filters=EVERY, epsilon=0.1, attack=crafted, progress=False)
    np.testing.assert_array_equal(ds["correct"].values, same["correct"].values)
    assert torch.equal(fr.fgsm(EditsItsInput(), x, y, 0.1), fr.fgsm(EditsItsInput(False), x, y, 0.1))
    assert torch.equal(x, before)


def test_mixed_image_sizes_are_refused_in_one_line(trained_cnn):
    images = [torch.randn(1, 28, 28), torch.randn(1, 32, 32)]
    one_by_one = torch.utils.data.DataLoader(list(zip(images, [0, 1])), batch_size=1)
    together = torch.utils.data.DataLoader(list(zip(images, [0, 1])), batch_size=2)
    for loader, match in ((one_by_one, "batches hold examples of different shapes"),
                          (together, "could not form a batch")):
        with pytest.raises(FragilityError, match=match) as err:
            fr.sweep(trained_cnn, loader, epsilon=0.1, progress=False)
        assert "\n" not in str(err.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_every_stress_with_many_masks_per_pass_on_cuda(name):
    """K masks per pass on CUDA, PGD's inputs crafted once: the oracle's accuracies, up to near-ties."""
    size, layers = BATCHED[name]
    model, x, y = random_network(name, size)
    options = dict(A=2, layers=layers, filters=EVERY, attack=fr.PGD(0.05, steps=2), batch_size=4, progress=False,
                   device="cuda")
    fast = fr.sweep(model, x, y, masks_per_pass=3, **options)
    assert fast.attrs["masks_per_pass"] == 3
    assert_same_accuracy(fast, fr.sweep_naive(model, x, y, **options), model, x, y, options)
