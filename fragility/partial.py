"""A sweep's finished units kept as it goes, so that a sweep stopped part-way resumes within itself.

One sweep of a large network is long on one core (ResNet-50 at A = 25: 34–38 min contiguous, ≈ 1.8 h channels-last):
stopped at 80 %, it would start again from nothing. With `fr.sweep(..., partial=path)` (the pipeline passes one for
every sweep task: `.<unit>.partial.npz` beside the unit file) each unit's (layer's, or `global`'s) per-example results
are written to one `.npz` file, atomically, as soon as the unit is finished; run again with the same arguments, the
sweep reads the finished units back and evaluates only the others. The results are identical to an uninterrupted
sweep's: each unit is computed alone from the same inputs (the adversarial ones crafted by the same deterministic
attack).

The file carries a key: a SHA-256 of everything the results depend on (the network's parameters and buffers, the
clean and adversarial inputs and labels, ε, the stresses and their parameters, A, the units, the attack, how it is
crafted, the BatchNorm reading, the metric, the precision, the
convolutions' layout). A file of another sweep (a retrained checkpoint, other
settings) is started afresh with a warning; a file at that path that fragility did not write is never overwritten
(one FragilityError). The caller deletes the file once the result is stored (`discard`).
"""
from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from . import files
from .errors import FragilityError

FORMAT = "fragility-partial-sweep/1"


def _update(digest, tensor: torch.Tensor | None) -> None:
    if tensor is None:
        digest.update(b"none")
        return
    t = tensor.detach().cpu().contiguous()
    digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def key(plan, memory_format: str = "channels_last") -> str:
    """SHA-256 of what a sweep's results depend on (see the module's docstring), the convolutions' layout
    included (the layouts round differently)."""
    digest = hashlib.sha256()
    settings = {
        "A": plan.A, "units": plan.units, "crafted": plan.crafted, "epsilon": float(plan.epsilon),
        "stresses": [[s.name, {k: repr(v) for k, v in s.parameters.items()}] for s in plan.stresses],
        "attack": [plan.attack.name, {k: repr(v) for k, v in plan.attack.parameters.items()}],
        "batchnorm": plan.batchnorm, "metric": plan.metric.name, "precision": plan.precision,
        "memory_format": memory_format, "image": None if plan.image is None else np.asarray(plan.image).tolist(),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, value in plan.model.state_dict().items():
        digest.update(name.encode())
        _update(digest, value)
    for tensor in (plan.x, plan.y, plan.x_adv):
        _update(digest, tensor)
    return digest.hexdigest()


def _read(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """The key and finished units of a partial sweep file; one FragilityError when fragility did not write it."""
    try:
        with np.load(path, allow_pickle=False) as found:
            header = json.loads(str(found["header"]))
            if header.get("format") != FORMAT:
                raise ValueError(header.get("format"))
            return header["key"], {unit: found[f"unit{k}"] for k, unit in enumerate(header["units"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile):
        raise FragilityError(f"partial={str(path)!r}: the file exists and is not a partial sweep fragility wrote, so "
                             "it is left as it is; pass another path, or move that file away.") from None


class Partial:
    """The finished units of one sweep in the file `path` (see the module's docstring)."""

    def __init__(self, path, sweep_key: str):
        self.path, self.key, self.done = Path(path), sweep_key, {}
        if self.path.exists():
            found, done = _read(self.path)
            if found == sweep_key:
                self.done = done
            else:
                warnings.warn(f"{self.path} holds the finished units of another sweep (another network, inputs or "
                              "settings): this sweep starts afresh and replaces it.", stacklevel=3)

    def get(self, unit: str) -> np.ndarray | None:
        """The unit's stored per-example results, or None when it is not finished."""
        return self.done.get(unit)

    def put(self, unit: str, result: np.ndarray) -> None:
        """Keep a finished unit (the whole file is rewritten atomically)."""
        self.done[unit] = np.asarray(result)
        units = list(self.done)
        header = json.dumps({"format": FORMAT, "key": self.key, "units": units})

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, header=np.array(header), **{f"unit{k}": self.done[u] for k, u in enumerate(units)})
        files.atomic(self.path, write)


def beside(output) -> Path:
    """Where the sweep that computes `output` keeps its finished units until `output` is written:
    `.<output's stem>.partial.npz` beside it (the pipeline's sweep tasks and the studies' sweep steps)."""
    output = Path(output)
    return output.with_name(f".{output.stem}.partial.npz")


def discard(path) -> None:
    """Delete a partial sweep file once its sweep's result is stored (only a file fragility wrote: else one
    FragilityError, and the file stays)."""
    path = Path(path)
    if path.exists():
        _read(path)
        path.unlink()


def check(partial) -> Path | None:
    """The `partial` argument as a Path (None: none), checked before anything is computed: a path, and, when the
    file exists, one fragility wrote."""
    if partial is None:
        return None
    if not isinstance(partial, (str, Path)) or not str(partial):
        raise FragilityError(f"partial={partial!r}: expected a file path (str or pathlib.Path) or None.")
    path = Path(partial)
    if path.is_dir():
        raise FragilityError(f"partial={str(path)!r} is a folder: expected a file path (a .npz file fragility writes).")
    if path.exists():
        _read(path)
    return path


def kept(path) -> int:
    """How many units a partial sweep file holds (0: none, or not a file fragility wrote); for `fragility status`."""
    path = Path(path)
    if not path.is_file():
        return 0
    try:
        return len(_read(path)[1])
    except FragilityError:
        return 0
