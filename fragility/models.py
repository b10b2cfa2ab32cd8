"""The networks of the study (the paper's Sec. 4.3): torchvision architectures adapted to the input, and a small CNN.

Initialisation: every Conv2d and Linear weight is drawn with
``nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu")``, i.e. U(−b, b) with
b = sqrt(6 / fan_in) (the same bound as PyTorch's default ``a=0`` call); their biases are set to
zero; BatchNorm layers keep weight 1 and bias 0. With ``seed`` the whole construction runs under a
forked CPU RNG seeded by it, so the weights depend on the seed alone and the caller's global RNG
state is left untouched.
"""

import functools
from collections import OrderedDict

import torch
from torch import nn
from torchvision import models as tv

from fragility.errors import FragilityError

NAMES = ("resnet18", "resnet34", "resnet50", "squeezenet1_1", "shufflenet_v2_x1_0", "shufflenet_v2_x0_5", "smallcnn")


class SmallCNN(nn.Sequential):
    """`depth` blocks conv3×3 → BatchNorm → ReLU → MaxPool(2, ceil_mode; a no-op on 1×1 maps), widths 16, 32, 64…
    capped at 256, then global average pool and a linear layer."""

    def __init__(self, channels: int, classes: int, depth: int):
        widths = [min(16 * 2**i, 256) for i in range(depth)]
        blocks = [
            nn.Sequential(OrderedDict(
                conv=nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                bn=nn.BatchNorm2d(cout),
                relu=nn.ReLU(inplace=True),
                pool=nn.MaxPool2d(2, ceil_mode=True),
            ))
            for cin, cout in zip([channels] + widths, widths)
        ]
        super().__init__(OrderedDict(
            blocks=nn.Sequential(*blocks),
            gap=nn.AdaptiveAvgPool2d(1),
            flatten=nn.Flatten(),
            fc=nn.Linear(widths[-1], classes),
        ))


def _torchvision(name: str, channels: int, classes: int) -> nn.Module:
    """A torchvision architecture with `classes` outputs and its first conv taking `channels` inputs (Sec. 4.3)."""
    model = getattr(tv, name)(weights=None, num_classes=classes)
    if channels != 3:
        if name.startswith("resnet"):
            model.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        elif name.startswith("squeezenet"):
            model.features[0] = nn.Conv2d(channels, 64, 3, 2)
        else:
            model.conv1[0] = nn.Conv2d(channels, 24, 3, 2, 1, bias=False)
    return model


def _init(model: nn.Module) -> None:
    """Kaiming-uniform (fan_in, relu) weights and zero biases for every Conv2d and Linear."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _construct(name: str, channels: int, classes: int, depth: int) -> nn.Module:
    """The initialised network, drawing from the current global RNG."""
    model = SmallCNN(channels, classes, depth) if name == "smallcnn" else _torchvision(name, channels, classes)
    _init(model)
    return model


def build(name: str, channels: int = 1, classes: int = 10, seed: int | None = None, depth: int = 2) -> nn.Module:
    """The network `name` for `channels`-channel images and `classes` classes, Kaiming-uniform initialised from
    `seed` (`depth` is for smallcnn only)."""
    if name not in NAMES:
        raise FragilityError(f"unknown model {name!r}; choose one of {', '.join(NAMES)}")
    for label, value in (("channels", channels), ("classes", classes), ("depth", depth)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise FragilityError(f"{label} must be a positive integer, got {value!r}")
    if seed is None:
        return _construct(name, channels, classes, depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _construct(name, channels, classes, depth)


def layout(name: str, channels: int = 1, classes: int = 10, depth: int = 2) -> dict[str, type]:
    """The qualified name and class of every module of the network `name`, built without weights (on the meta
    device): what a profile's settings are checked against when it is read."""
    if name not in NAMES:
        raise FragilityError(f"unknown model {name!r}; choose one of {', '.join(NAMES)}")
    return dict(_layout(name, channels, classes, depth))


@functools.lru_cache(maxsize=64)
def _layout(name: str, channels: int, classes: int, depth: int) -> tuple[tuple[str, type], ...]:
    with torch.device("meta"):
        model = SmallCNN(channels, classes, depth) if name == "smallcnn" else _torchvision(name, channels, classes)
    return tuple((n, type(m)) for n, m in model.named_modules() if n)
