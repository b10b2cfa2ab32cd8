"""Atomic writes: a result is either wholly in place or not there at all.

Every file fragility writes (response and study units, ε records, checkpoints, decoded data caches) goes through
`atomic`: it is written to a temporary file beside its target, synced, then renamed over it; on any error the
temporary file is removed and the target is left as it was.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from collections.abc import Callable

TMP = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # read once, at import: os.umask can only be read by setting it, which other threads would see


def atomic(path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, sync it, then rename it onto `path` with the permissions
    a plain `open` would give it (the temporary file is private while it is written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP)
    os.close(handle)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json(record: dict, path) -> Path:
    """`record` as indented JSON at `path`, atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
    return atomic(path, write)


def clean(folder) -> None:
    """Delete the temporary files that interrupted writes left under `folder`."""
    for f in Path(folder).rglob(f".*{TMP}"):
        f.unlink(missing_ok=True)
