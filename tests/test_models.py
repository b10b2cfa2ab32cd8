"""Tests of the model registry: shapes, the 1-channel first convs of the paper (Sec. 4.3), Kaiming-uniform seeding."""

import math

import pytest
import torch
from torch import nn

from fragility.errors import FragilityError
from fragility.models import NAMES, build

TORCHVISION = [name for name in NAMES if name != "smallcnn"]
FIRST_CONV = {  # name: (attribute path, out_channels, kernel, stride, padding, has bias) for 1 channel (Sec. 4.3)
    "resnet18": ("conv1", 64, 7, 2, 3, False),
    "resnet34": ("conv1", 64, 7, 2, 3, False),
    "resnet50": ("conv1", 64, 7, 2, 3, False),
    "squeezenet1_1": ("features.0", 64, 3, 2, 0, True),
    "shufflenet_v2_x1_0": ("conv1.0", 24, 3, 2, 1, False),
    "shufflenet_v2_x0_5": ("conv1.0", 24, 3, 2, 1, False),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_shape(name, channels):
    for classes in (10, 200):
        model = build(name, channels, classes, seed=0).eval()
        with torch.no_grad():
            assert model(torch.randn(2, channels, 32, 32)).shape == (2, classes)


@pytest.mark.parametrize("name", TORCHVISION)
def test_first_conv(name):
    path, out, kernel, stride, padding, bias = FIRST_CONV[name]
    conv = build(name, 1).get_submodule(path)
    assert isinstance(conv, nn.Conv2d)
    assert (conv.in_channels, conv.out_channels) == (1, out)
    assert conv.kernel_size == (kernel, kernel) and conv.stride == (stride, stride)
    assert conv.padding == (padding, padding)
    assert (conv.bias is not None) == bias
    assert build(name, 3).get_submodule(path).in_channels == 3


def test_squeezenet_classifier_outputs_classes():
    assert build("squeezenet1_1", classes=200).classifier[1].out_channels == 200


@pytest.mark.parametrize("name", NAMES)
def test_kaiming_uniform(name):
    for module in build(name, seed=1).modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight.detach()
            fan_in = weight[0].numel()
            bound = math.sqrt(6 / fan_in)
            assert weight.abs().max() <= bound
            if weight.numel() >= 2000:  # a uniform on (−b, b) has std b/√3
                assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
            if module.bias is not None:
                assert torch.count_nonzero(module.bias) == 0


@pytest.mark.parametrize("name", ["smallcnn", "shufflenet_v2_x0_5"])
def test_seeding(name):
    state = torch.get_rng_state()
    a, b, c = build(name, seed=3).state_dict(), build(name, seed=3).state_dict(), build(name, seed=4).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("size", [16, 28, 64])
def test_smallcnn_depths(size):
    for depth in range(1, 7):
        model = build("smallcnn", 3, 10, depth=depth).eval()
        assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == depth
        with torch.no_grad():
            assert model(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_unknown_name_lists_names():
    with pytest.raises(FragilityError) as error:
        build("vgg16")
    assert all(name in str(error.value) for name in NAMES)


@pytest.mark.parametrize("bad", [{"channels": 0}, {"classes": -1}, {"depth": 0}, {"channels": 1.5}])
def test_bad_sizes(bad):
    with pytest.raises(FragilityError, match=next(iter(bad))):
        build("smallcnn", **bad)
