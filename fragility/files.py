"""Atomic writes: a result is either wholly in place or not there at all.

Every file fragility writes (response and study units, ε records, checkpoints, decoded data caches) goes through
`atomic`: it is written to a temporary file beside its target, `.<target name>.fragility-<random>.tmp`, synced,
then renamed over it; on any error the temporary file is removed and the target is left as it was. A write that
fails for the machine's reasons (a full disk, a folder that became read-only) is one FragilityError naming the file,
and no write is started on a file system that has no space left.

`clean` deletes what a killed run left: only temporary files of that exact pattern, only in the folders fragility
writes under a results folder, and only by the run that holds the folder's lock (fragility.ownership), so that no
live run's file and no file of the user's is ever touched.
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from pathlib import Path
from collections.abc import Callable

from .errors import FragilityError

MARK = ".fragility-"  # in the name of every temporary file `atomic` writes
TMP = ".tmp"
PATTERN = re.compile(r"\..+" + re.escape(MARK) + r"[a-z0-9_]{8}" + re.escape(TMP))  # mkstemp: 8 of [a-z0-9_]
FOLDERS = ("responses", "epsilon", "checkpoints", "studies")  # what fragility writes under a results folder
FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # read once, at import: os.umask can only be read by setting it, which other threads would see


def no_space(folder) -> bool:
    """Whether the file system of `folder` (or of its nearest existing parent) has no block left for this user."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        found = os.statvfs(folder)
    except OSError:
        return False
    return found.f_blocks > 0 and found.f_bavail == 0  # some virtual file systems report no blocks at all


def failed(path: Path, err: OSError) -> FragilityError:
    """The one-line error of a write to `path` that failed with `err`."""
    if err.errno in FULL:
        return FragilityError(f"no space left on the device of {path.parent} to write {path.name} (nothing partial "
                              "was kept): free some space, then run the same command again to resume.")
    return FragilityError(f"cannot write {path} ({err.strerror or err}; nothing partial was kept): check the "
                          "folder's permissions and free space, then run the same command again to resume.")


def atomic(path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, sync it, then rename it onto `path` with the permissions
    a plain `open` would give it (the temporary file is private while it is written).

    Raises:
        FragilityError: the file system is full, or refuses the write (named); `path` is left as it was.
    """
    path = Path(path)
    if no_space(path.parent):
        raise failed(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{MARK}", suffix=TMP)
        os.close(handle)
    except OSError as err:
        raise failed(path, err) from None
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except OSError as err:
        raise failed(path, err) from None
    except Exception:
        if no_space(path.parent):  # writers that wrap the OSError of a full disk (torch.save, HDF5)
            raise failed(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from None
        raise
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


def temporary(path) -> bool:
    """Whether `path` is named as `atomic`'s temporary files are."""
    return PATTERN.fullmatch(Path(path).name) is not None


def clean(results) -> list[Path]:
    """Delete the temporary files that interrupted writes left in the folders fragility writes under the results
    folder `results` (responses/, epsilon/, checkpoints/, studies/) and return their paths: only files named as
    `atomic` names them. The caller must hold the folder's lock (fragility.ownership.lock), so that no live run is
    writing them."""
    removed = []
    for folder in FOLDERS:
        for found in sorted((Path(results) / folder).rglob(f"*{MARK}*{TMP}")):
            if temporary(found) and found.is_file() and not found.is_symlink():
                found.unlink(missing_ok=True)
                removed.append(found)
    return removed
