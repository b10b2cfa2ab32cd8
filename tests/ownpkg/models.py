"""Small networks of one's own: a 1-D convolutional one, one with a learned positional embedding, one with a layer
class of its own, and factories that go wrong in the ways a profile must refuse."""
from collections import OrderedDict

import torch
from torch import nn


class Wave(nn.Module):
    """Conv1d encoder (with a strided `downsample` branch) → global average → Linear head, for (N, C, L) sequences."""

    def __init__(self, channels: int, width: int, classes: int):
        super().__init__()
        self.encoder = nn.Sequential(OrderedDict(
            conv=nn.Conv1d(channels, width, 3, padding=1),
            relu=nn.ReLU(),
            downsample=nn.Sequential(nn.Conv1d(width, width, 3, stride=2, padding=1)),
        ))
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.encoder(x).relu().mean(-1))


class Positions(nn.Module):
    """A per-step Linear projection plus a learned positional Embedding, a LayerNorm, then a Linear head over every
    step: an Embedding whose input (the positions) does not come from the samples."""

    def __init__(self, channels: int, width: int, classes: int, length: int):
        super().__init__()
        self.proj = nn.Linear(channels, width)
        self.pos = nn.Embedding(length, width)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width * length, classes)
        self.register_buffer("steps", torch.arange(length))

    def forward(self, x):
        h = self.proj(x.transpose(1, 2)) + self.pos(self.steps)
        return self.head(self.norm(h).relu().flatten(1))


class Gain(nn.Module):
    """A layer of one's own with a weight: a learned gain per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, channels))

    def forward(self, x):
        return x * self.weight[:, None]


def wave(width: int = 4, channels: int = 2, classes: int = 3) -> nn.Module:
    return Wave(channels, width, classes)


def positions(width: int = 4, channels: int = 2, classes: int = 3, length: int = 16) -> nn.Module:
    return Positions(channels, width, classes, length)


def gained(width: int = 4, channels: int = 2, classes: int = 3) -> nn.Module:
    """Conv1d → a Gain of one's own → ReLU → average → Linear."""
    return nn.Sequential(OrderedDict(conv=nn.Conv1d(channels, width, 3, padding=1), gain=Gain(width), relu=nn.ReLU(),
                                     pool=nn.AdaptiveAvgPool1d(1), flat=nn.Flatten(), head=nn.Linear(width, classes)))


def not_a_network(width: int = 4):
    return {"width": width}


def broken(**_):
    raise ValueError("this factory always fails")


NOT_CALLABLE = 3
