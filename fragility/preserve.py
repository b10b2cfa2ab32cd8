"""The user's model comes back exactly as it was: `preserved(model)` restores, on exit and also when the call
fails, each submodule's train/eval mode, every parameter's gradient and requires_grad flag, the module hooks, and
(with `values=True`, for code that edits weights or statistics in place) every parameter and buffer value and the
BatchNorm momenta. fragility never moves a caller's model: work on another device or layout happens on a copy, and
`inputs_copied` keeps a model that edits its input in place from changing the caller's tensors.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
          "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


@contextlib.contextmanager
def preserved(model: nn.Module, values: bool = False):
    """Yield `model`; on exit restore its modes, gradients, requires_grad flags, hooks (and values)."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    momenta = [getattr(m, "momentum", None) for m in modules]
    hooks = [{name: dict(getattr(m, name)) for name in _HOOKS if hasattr(m, name)} for m in modules]
    parameters = list(model.parameters())
    grads = [p.grad for p in parameters]
    flags = [p.requires_grad for p in parameters]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()} if values else None
    try:
        yield model
    finally:
        if state is not None:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    v.copy_(state[k])
        for m, mode, momentum, saved in zip(modules, modes, momenta, hooks):
            m.training = mode
            if values and isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = momentum
            for name, entries in saved.items():
                current = getattr(m, name)
                current.clear()
                current.update(entries)
        for p, grad, flag in zip(parameters, grads, flags):
            p.grad = grad
            p.requires_grad_(flag)


def copy_inputs(module: nn.Module, args: tuple) -> tuple:
    """A forward pre-hook: the module's tensor arguments replaced by copies."""
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


@contextlib.contextmanager
def inputs_copied(model: nn.Module):
    """While inside, every call of `model` gets copies of its tensor inputs, so that a model that edits its input in
    place never changes the caller's tensors, nor inputs that fragility reuses."""
    handle = model.register_forward_pre_hook(copy_inputs)
    try:
        yield model
    finally:
        handle.remove()
