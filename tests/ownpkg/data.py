"""A data set of one's own: noisy waves whose frequency is the class, as (train, test) torch Datasets of (C, L)
float sequences."""
import math

import torch
from torch.utils.data import TensorDataset


def waves(n_train: int = 120, n_test: int = 60, channels: int = 2, length: int = 16, classes: int = 3,
          seed: int = 0):
    """(train, test): class c is a sine of c + 1 periods over `length` steps with a random phase in channel 0, noise
    elsewhere."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    y = torch.arange(n) % classes
    t = torch.arange(length) / length
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    x = 0.3 * torch.randn(n, channels, length, generator=g)
    x[:, 0] += torch.sin(2 * math.pi * (y[:, None] + 1) * t + phase)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


def one_set():
    return waves()[0]


def unlabelled():
    return TensorDataset(torch.zeros(4, 2, 16)), TensorDataset(torch.zeros(4, 2, 16))
