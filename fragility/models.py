"""The networks of the study (the paper's Sec. 4.3): torchvision architectures adapted to the input, and a small CNN,
each registered by name with `register_model` (a builder `(channels, classes, **kwargs) -> nn.Module`).

Initialisation: every Conv2d and Linear weight is drawn with
``nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu")``, i.e. U(−b, b) with
b = sqrt(6 / fan_in) (the same bound as PyTorch's default ``a=0`` call); their biases are set to
zero; BatchNorm layers keep weight 1 and bias 0. With ``seed`` the whole construction runs under a
forked CPU RNG seeded by it, so the weights depend on the seed alone and the caller's global RNG
state is left untouched.
"""

import functools
import re
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn
from torchvision import models as tv

from fragility.errors import FragilityError

MODELS: dict[str, Callable[..., nn.Module]] = {}
NAMES: tuple[str, ...] = ()  # the registered names, in registration order (kept up to date by `register_model`)
OWN_INIT: set[str] = set()  # models that keep the initialisation their builder gives them (`init=False`)


def register_model(name: str, init: bool = True):
    """Decorator: register a builder `(channels, classes, **kwargs) -> nn.Module` under `name`, for `build`,
    training and profiles. The keyword arguments hold `depth` (smallcnn's number of blocks); others ignore it.
    `init`: re-initialise the network's Conv2d and Linear weights as the paper does (Kaiming uniform, zero biases);
    False keeps the builder's own initialisation (still drawn from the seed `build` is given).

    Example:
        >>> @register_model("mlp")
        ... def mlp(channels, classes, **kwargs):
        ...     return nn.Sequential(nn.Flatten(), nn.LazyLinear(classes))
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise FragilityError(f"a model's name must be letters, digits, '.', '-' or '_'; got {name!r}.")

    def add(builder):
        global NAMES
        if not callable(builder):
            raise FragilityError(f"register_model({name!r}) decorates a builder function; got {builder!r}.")
        known = MODELS.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (builder.__module__,
                                                                            builder.__qualname__):
            raise FragilityError(f"a model named {name!r} is already registered ({known.__module__}."
                                 f"{known.__qualname__}): choose another name.")
        MODELS[name] = builder
        NAMES = tuple(MODELS)
        (OWN_INIT.discard if init else OWN_INIT.add)(name)
        return builder

    return add


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


def _resnet(name: str, channels: int, classes: int) -> nn.Module:
    """A torchvision ResNet whose first conv takes `channels` inputs (Sec. 4.3)."""
    model = getattr(tv, name)(weights=None, num_classes=classes)
    if channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return model


@register_model("resnet18")
def resnet18(channels: int, classes: int, **_) -> nn.Module:
    return _resnet("resnet18", channels, classes)


@register_model("resnet34")
def resnet34(channels: int, classes: int, **_) -> nn.Module:
    return _resnet("resnet34", channels, classes)


@register_model("resnet50")
def resnet50(channels: int, classes: int, **_) -> nn.Module:
    return _resnet("resnet50", channels, classes)


@register_model("squeezenet1_1")
def squeezenet1_1(channels: int, classes: int, **_) -> nn.Module:
    model = tv.squeezenet1_1(weights=None, num_classes=classes)
    if channels != 3:
        model.features[0] = nn.Conv2d(channels, 64, 3, 2)
    return model


def _shufflenet(name: str, channels: int, classes: int) -> nn.Module:
    model = getattr(tv, name)(weights=None, num_classes=classes)
    if channels != 3:
        model.conv1[0] = nn.Conv2d(channels, 24, 3, 2, 1, bias=False)
    return model


@register_model("shufflenet_v2_x1_0")
def shufflenet_v2_x1_0(channels: int, classes: int, **_) -> nn.Module:
    return _shufflenet("shufflenet_v2_x1_0", channels, classes)


@register_model("shufflenet_v2_x0_5")
def shufflenet_v2_x0_5(channels: int, classes: int, **_) -> nn.Module:
    return _shufflenet("shufflenet_v2_x0_5", channels, classes)


@register_model("smallcnn")
def smallcnn(channels: int, classes: int, depth: int = 2, **_) -> nn.Module:
    return SmallCNN(channels, classes, depth)


def _init(model: nn.Module) -> None:
    """Kaiming-uniform (fan_in, relu) weights and zero biases for every Conv2d and Linear."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _construct(name: str, channels: int, classes: int, depth: int) -> nn.Module:
    """The initialised network, drawing from the current global RNG."""
    model = MODELS[name](channels, classes, depth=depth)
    if not isinstance(model, nn.Module):
        raise FragilityError(f"the builder of model {name!r} returned {type(model).__name__}, not a torch.nn.Module.")
    if name not in OWN_INIT:
        _init(model)
    return model


def build(name: str, channels: int = 1, classes: int = 10, seed: int | None = None, depth: int = 2) -> nn.Module:
    """The network `name` for `channels`-channel images and `classes` classes, Kaiming-uniform initialised from
    `seed` (`depth` is for smallcnn only)."""
    if not isinstance(name, str) or name not in MODELS:
        raise FragilityError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
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
    return dict(_layout(MODELS[name], channels, classes, depth))


@functools.lru_cache(maxsize=64)
def _layout(builder, channels: int, classes: int, depth: int) -> tuple[tuple[str, type], ...]:
    """(keyed by the builder itself, so that a name registered again is not answered from the cache)"""
    with torch.device("meta"):
        model = builder(channels, classes, depth=depth)
    return tuple((n, type(m)) for n, m in model.named_modules() if n)
