"""Input validation, in one place: every public function and command checks what it is given with these before it
computes or writes anything, and answers bad input with one FragilityError naming the argument, what it got and
what it accepts.

A rule is a predicate with the words that describe what it accepts; `require` applies one. Numbers accept numpy
scalars and refuse booleans, NaN and infinities.
"""
from __future__ import annotations

import numbers
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .errors import FragilityError


@dataclass(frozen=True)
class Rule:
    """What a value must be: `ok(value)` and the words for it, e.g. "a whole number ≥ 1"."""

    ok: Callable[[object], bool]
    what: str

    def __call__(self, value) -> bool:
        try:
            return bool(self.ok(value))
        except (TypeError, ValueError):
            return False


def _shown(value) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "…"


def require(value, rule: Rule, name: str):
    """`value` if `rule` accepts it, else FragilityError("<name> must be <what>; got <value>.")."""
    if not rule(value):
        raise FragilityError(f"{name} must be {rule.what}; got {_shown(value)}.")
    return value


def is_whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and bool(np.isfinite(float(value))))


def whole(low: int = 0, high: int | None = None) -> Rule:
    """A whole number in low..high."""
    span = f"≥ {low}" if high is None else f"in {low}..{high}"
    return Rule(lambda v: is_whole(v) and low <= v and (high is None or v <= high), f"a whole number {span}")


def real(low: float | None = None, high: float | None = None, open_low=False, open_high=False, what="") -> Rule:
    """A finite number in [low, high] (each end open if asked)."""
    def ok(v):
        v = float(v)
        return ((low is None or (v > low if open_low else v >= low))
                and (high is None or (v < high if open_high else v <= high)))
    bounds = [f"{'>' if open_low else '≥'} {low:g}" if low is not None else "",
              f"{'<' if open_high else '≤'} {high:g}" if high is not None else ""]
    return Rule(lambda v: is_real(v) and ok(v), what or " ".join(["a finite number", " and ".join(b for b in bounds
                                                                                          if b)]).strip())


def one_of(options) -> Rule:
    options = tuple(options)
    return Rule(lambda v: isinstance(v, str) and v in options, "one of " + ", ".join(map(repr, options)))


def items(rule: Rule, increasing: bool = False, what: str = "") -> Rule:
    """A non-empty list of distinct values each accepted by `rule` (in increasing order if asked)."""
    def ok(v):
        return (isinstance(v, (list, tuple)) and len(v) > 0 and all(rule(x) for x in v)
                and len(set(v)) == len(v) and (not increasing or list(v) == sorted(v)))
    return Rule(ok, what or f"a non-empty list of distinct values, each {rule.what}"
                + (", in increasing order" if increasing else ""))


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule(v), f"{rule.what}, or null")


def count(value, name: str, low: int = 1) -> int:
    """A whole number ≥ low (numpy integers accepted) as an int."""
    return int(require(value, whole(low), name))


def number(value, name: str, low=None, high=None, open_low=False, open_high=False) -> float:
    """A finite number within the bounds (numpy scalars accepted) as a float."""
    return float(require(value, real(low, high, open_low, open_high), name))


def names(value, name: str, options) -> tuple[str, ...]:
    """Distinct names from `options`: a list, or a single name for a list of one."""
    if isinstance(value, str):  # one name: the message shows it as given
        return (require(value, one_of(options), name),)
    return tuple(require(value, items(one_of(options), what=f"a non-empty list of distinct names from "
                                                          f"{', '.join(options)}"), name))


def device(value):
    """A torch.device that exists on this machine (None: CUDA when available, else the CPU)."""
    if value is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        found = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise FragilityError(f"device must be a torch device such as 'cpu' or 'cuda:0'; got {_shown(value)}.") \
            from None
    if found.type == "cuda":
        count_ = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count_ == 0:
            raise FragilityError(f"device {value!r} is not usable: this machine has no CUDA GPU; use device='cpu'.")
        if (found.index or 0) >= count_:
            raise FragilityError(f"device {value!r} is not usable: this machine has {count_} CUDA GPU(s), "
                                 f"cuda:0..cuda:{count_ - 1}.")
    elif found.type != "cpu":
        raise FragilityError(f"device {value!r} is not supported: use 'cpu' or 'cuda[:N]'.")
    return found


def flag(value, name: str) -> bool:
    """True or False (numpy booleans accepted) as a bool; anything else, 0 and 1 included, is refused."""
    return bool(require(value, Rule(lambda v: isinstance(v, (bool, np.bool_)), "True or False"), name))


def model(value, name: str = "model"):
    """`value`, a torch.nn.Module whose parameters and buffers hold values on one device; a DataParallel or
    DistributedDataParallel wrapper is unwrapped to the network it holds (its layers keep their own names)."""
    if not isinstance(value, nn.Module):
        raise FragilityError(f"{name} must be a torch.nn.Module; got {type(value).__name__}.")
    while isinstance(value, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        value = value.module
    devices = {t.device for t in (*value.parameters(), *value.buffers())}
    if any(d.type == "meta" for d in devices):
        raise FragilityError(f"{name} has parameters on the meta device (shapes without values): load its weights "
                             "first, e.g. model.to_empty(device='cpu') and then model.load_state_dict(…).")
    if len(devices) > 1:
        raise FragilityError(f"{name} has parameters on several devices ({', '.join(sorted(map(str, devices)))}): "
                             "move it to one device (pass `device` to compute elsewhere; the model is copied there).")
    return value


def path(value, name: str) -> Path:
    """`value` as a Path: a non-empty text or os.PathLike naming a file or folder."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise FragilityError(f"{name} must be the path of a folder or file (text or a pathlib.Path); got "
                             f"{_shown(value)}.")
    return Path(text)


def folder(path_, name: str, create: bool = False, write: bool | None = None) -> Path:
    """A folder that exists (or that can be created when `create`) as a Path; one that can be written to when
    `write` (default: `create`). A folder only read is never written to, so that it may be read-only."""
    path_ = path(path_, name)
    write = create if write is None else write
    if path_.exists() and not path_.is_dir():
        raise FragilityError(f"{name} {path_} is a file, not a folder: name a folder.")
    if not create and not path_.is_dir():
        raise FragilityError(f"{name} {path_} does not exist.")
    if not write:
        return path_
    probe = path_
    while not probe.exists():
        probe = probe.parent
    try:  # a real write: permissions, read-only file systems and full quotas all show here
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise FragilityError(f"{name} {path_} cannot be written to ({err.strerror} in {probe}): choose a folder you "
                             "can write to.") from None
    return path_


def part(value, what: str) -> str:
    """`value` if it can name a file or folder of a results folder: letters, digits, '.', '-' or '_', not only
    dots (so that no path built from it leaves the results folder)."""
    if not isinstance(value, str) or re.fullmatch(r"[\w.-]+", value) is None or not value.strip("."):
        raise FragilityError(f"{what} {_shown(value)} cannot name a file of a results folder: use letters, digits, "
                             "'.', '-' or '_', not only dots.")
    return value


WORKER_MEMORY = 2**30  # bytes of memory each local Dask worker process is counted to need, at least


def cores() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_memory() -> int | None:
    """Bytes of memory available to new processes (Linux's MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            found = re.search(r"^MemAvailable:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(found[1]) * 1024 if found else None


def workers(value, name: str = "workers") -> int:
    """A number of local worker processes this machine can hold: ≥ 1, at most one per CPU core and one per
    `WORKER_MEMORY` of available memory."""
    value = count(value, name)
    limit, memory = cores(), free_memory()
    if memory is not None:
        limit = max(1, min(limit, memory // WORKER_MEMORY))
    if value > limit:
        room = f"{cores()} CPU cores" + (f" and {memory / 2**30:.1f} GiB of memory available (at least "
                                          f"{WORKER_MEMORY / 2**30:g} GiB per worker)" if memory is not None else "")
        raise FragilityError(f"{name} {value} is more than this machine can run at once: at most {limit} ({room}); "
                             "for more, start a Dask cluster across machines and pass its scheduler's address.")
    return value


def inputs(x, name: str = "x"):
    """`x`, a batch (n, …), n ≥ 1, of finite floating-point inputs."""
    if not isinstance(x, torch.Tensor):
        raise FragilityError(f"{name} must be a tensor of inputs; got {type(x).__name__}.")
    if x.dim() < 2 or len(x) == 0:
        raise FragilityError(f"{name} must hold a batch of examples, shape (n, …) with n ≥ 1; got shape "
                             f"{tuple(x.shape)}.")
    if not x.dtype.is_floating_point:
        raise FragilityError(f"{name} must hold floating-point inputs (normalized images); got dtype {x.dtype}.")
    if not bool(torch.isfinite(x).all()):
        raise FragilityError(f"{name} holds {int((~torch.isfinite(x)).sum())} NaN or infinite value(s): clean the "
                             "inputs first; a sweep of them would be meaningless.")
    return x


def examples(x, y=None, classes: int | None = None):
    """(x, y) as tensors: x (n, …) of finite floats, y (n,) of integer labels in 0..classes−1, from tensors or from
    an iterable of (x, y) batches such as a DataLoader."""
    if not isinstance(x, torch.Tensor):
        if isinstance(x, (str, bytes, dict)) or not hasattr(x, "__iter__"):
            raise FragilityError(f"x must be a tensor of inputs or an iterable of (x, y) batches such as a "
                                 f"DataLoader; got {type(x).__name__}.")
        if y is not None:
            raise FragilityError("y is given with a DataLoader of batches: pass the DataLoader alone, or tensors x "
                                 "and y.")
        xs, ys = [], []
        for batch in _batches(x):
            if isinstance(batch, dict) or not isinstance(batch, (list, tuple)) or len(batch) < 2:
                raise FragilityError(f"each batch must be an (x, y) pair of tensors; got {type(batch).__name__}"
                                     + (f" with keys {', '.join(map(str, batch))}" if isinstance(batch, dict) else "")
                                     + ": give the DataLoader a collate_fn that returns (x, y), or pass tensors.")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
        if not xs:
            raise FragilityError("the DataLoader yields no batches: it must hold at least one example.")
        try:
            x, y = torch.cat(xs), torch.cat(ys)
        except RuntimeError:
            shapes = ", ".join(map(str, sorted({tuple(b.shape[1:]) for b in xs})[:4]))
            raise FragilityError(f"the DataLoader's batches hold examples of different shapes ({shapes}): every "
                                 "example must have one shape (resize the images to one size).") from None
    if y is None:
        raise FragilityError("labels y are missing: pass y with a tensor x, or pass a DataLoader of (x, y).")
    try:
        y = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError):
        raise FragilityError(f"y must be a 1-D tensor of {len(x)} integer class labels; got {_shown(y)}.") from None
    x = inputs(x)
    if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool or len(y) != len(x):
        raise FragilityError(f"y must be a 1-D tensor of {len(x)} integer class labels (one per input); got dtype "
                             f"{y.dtype}, shape {tuple(y.shape)}.")
    if classes is not None and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise FragilityError(f"labels must lie in 0..{classes - 1} for this {classes}-class model; got "
                             f"{int(y.min())}..{int(y.max())}.")
    return x, y.long()


def _batches(loader):
    """The batches of an iterable such as a DataLoader; one that fails to form a batch (examples of several shapes in
    one batch…) gives one FragilityError."""
    try:
        yield from loader
    except RuntimeError as err:
        raise FragilityError(f"the DataLoader could not form a batch ({str(err).splitlines()[0][:160]}): every "
                             "example must have one shape (resize the images to one size).") from None
