"""A step beyond the paper's Fig. 11: is it the BatchNorm's stored statistics that keep a fully filtered layer alive?

With every weight of a layer removed, the BatchNorm that follows it turns the zero map into the constant
γ·(0 − μ)/√(σ² + ε) + β, where μ, σ² are running statistics of the *training* activations (Eq. 17). Here the
running statistics are re-estimated on training inputs with the layer's weights zeroed, either for that BatchNorm
alone or for every BatchNorm of the network, and the network is evaluated again. The model is restored afterwards.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import xarray as xr
from torch import nn

from .attacks import accuracy
from .errors import FragilityError

STATISTICS = ("trained", "following re-estimated", "all re-estimated")
_BN = nn.modules.batchnorm._BatchNorm


@contextlib.contextmanager
def _preserved(model: nn.Module, weights: bool = True):
    """Restore on exit the model's train/eval modes, BatchNorm momenta and (with `weights`) its state_dict."""
    state = {k: v.clone() for k, v in model.state_dict().items()} if weights else None
    modes = {m: (m.training, getattr(m, "momentum", None)) for m in model.modules()}
    try:
        yield
    finally:
        if state is not None:
            model.load_state_dict(state)
        for m, (training, momentum) in modes.items():
            m.training = training
            if isinstance(m, _BN):
                m.momentum = momentum


def following_batchnorm(model: nn.Module, layer: str, sample: torch.Tensor) -> str | None:
    """The name of the BatchNorm module that takes `layer`'s output as its input, or None."""
    modules = dict(model.named_modules())
    if layer not in modules:
        raise FragilityError(f"the model has no layer {layer!r}.")
    names = {m: n for n, m in modules.items() if isinstance(m, _BN)}
    out, found = [], []
    hooks = [modules[layer].register_forward_hook(lambda m, i, o: out.append(o))]
    hooks += [m.register_forward_pre_hook(lambda m, i: found.extend([names[m]] if out and i[0] is out[-1] else []))
              for m in names]
    try:
        with _preserved(model, weights=False), torch.no_grad():
            model.eval()(sample[:2])
    finally:
        for h in hooks:
            h.remove()
    return found[0] if found else None


@contextlib.contextmanager
def removed(model: nn.Module, layer: str, x_train: torch.Tensor | None = None, scope: str = "following",
            batch_size: int = 256):
    """The model in eval() mode with every weight of `layer` set to 0; given `x_train`, the running statistics of
    the BatchNorm following the layer (scope "following") or of every BatchNorm ("all") re-estimated on it.
    Weights, statistics, momenta and train/eval modes are restored on exit. Yields the re-estimated modules' names."""
    if scope not in ("following", "all"):
        raise FragilityError(f"unknown scope {scope!r}: choose 'following' or 'all'.")
    modules = dict(model.named_modules())
    if x_train is None:
        names = []
    elif scope == "following":
        names = [n for n in [following_batchnorm(model, layer, x_train)] if n]
    else:
        names = [n for n, m in modules.items() if isinstance(m, _BN)]
    with _preserved(model):
        model.eval()
        with torch.no_grad():
            modules[layer].weight.zero_()
            for n in names:
                modules[n].reset_running_stats()
                modules[n].momentum = None  # a cumulative average over every batch
                modules[n].train()
            for xb in x_train.split(batch_size) if names else ():
                model(xb)
        model.eval()
        yield names


def remove_layers(model: nn.Module, layers, x: torch.Tensor, y: torch.Tensor, x_train: torch.Tensor,
                  batch_size: int = 256) -> xr.Dataset:
    """Clean accuracy with each layer's weights all removed, under the trained BatchNorm statistics and with the
    following / every BatchNorm's statistics re-estimated on `x_train`, and of the intact network; coordinate
    `batchnorm` names the follower (accuracy is NaN for "following re-estimated" when no BatchNorm follows)."""
    layers = [layers] if isinstance(layers, str) else list(layers)
    values, followers = np.full((len(layers), len(STATISTICS)), np.nan), []
    for i, layer in enumerate(layers):
        followers.append(following_batchnorm(model, layer, x) or "")
        for j, (data, scope) in enumerate(((None, "following"), (x_train, "following"), (x_train, "all"))):
            with removed(model, layer, data, scope, batch_size) as names:
                if data is None or names:
                    values[i, j] = accuracy(model, x, y, batch_size)
    return xr.Dataset({"accuracy": (("layer", "statistics"), values),
                       "intact_accuracy": ((), accuracy(model.eval(), x, y, batch_size))},
                      coords={"layer": layers, "statistics": list(STATISTICS), "batchnorm": ("layer", followers)},
                      attrs={"n_train": len(x_train), "n_test": len(y)})
