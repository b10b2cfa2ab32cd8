"""A downloadable archive of a results folder: one zip file with everything a reader needs to redraw every figure
and decide every claim without computing anything — never the training checkpoints.

What goes in, under one folder named after the results folder (``reference/…`` for ``results/reference``):

- ``responses/`` (the sweep units), ``epsilon/`` (the ε records), ``studies/`` (the study units, without the
  continued trainings' checkpoints under ``studies/<study>/runs/``) and ``weights/`` (shipped network weights);
- ``README.md`` (the data card) and ``profile.json`` (the owner record), where present;
- ``SHA256SUMS``: the SHA-256 of every file, to check a download with ``sha256sum -c SHA256SUMS``.

Never ``checkpoints/``, the lock, temporary files of interrupted writes, hidden files or symbolic links. Entries are
sorted and dated 1980-01-01, so that the same results give the same archive byte for byte. The zip's comment marks
it as written here: an existing file at the target is replaced only when it is such an archive.

Example:
    >>> fragility.archive.archive("results/reference", "reference.zip")
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from . import checks, files, ownership, store
from .errors import FragilityError

PARTS = ("responses", "epsilon", "studies", "weights")  # the folders archived
TOP = ("README.md", "profile.json")  # the files archived from the folder itself
COMMENT = b"fragility results archive"
SUMS = "SHA256SUMS"
EPOCH = (1980, 1, 1, 0, 0, 0)  # the date of every entry: the same results give the same archive
CHUNK = 1 << 20


def _kept(parts: tuple[str, ...]) -> bool:
    """Whether a file at these path parts (relative to the results folder) is archived."""
    if any(p.startswith(".") for p in parts):  # the lock, temporary files of interrupted writes, hidden files
        return False
    if len(parts) == 1:
        return parts[0] in TOP
    if parts[0] not in PARTS or "checkpoints" in parts:
        return False
    return not (parts[0] == "studies" and (len(parts) > 2 and parts[2] == "runs" or parts[-1].endswith(".pt")))


def members(results) -> list[str]:
    """The files of the results folder an archive holds, as sorted relative POSIX paths (see the module)."""
    folder = checks.folder(results, "results")
    found = [name for name in TOP if _plain(folder / name)]
    for part in PARTS:
        for root, dirs, names in os.walk(folder / part, followlinks=False):
            dirs.sort()
            for name in names:
                path = Path(root) / name
                relative = path.relative_to(folder).parts
                if _kept(relative) and _plain(path):
                    found.append("/".join(relative))
    return sorted(found)


def _plain(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _ours(path: Path) -> bool:
    """Whether `path` is an archive written here (its comment says so)."""
    try:
        with zipfile.ZipFile(path) as found:
            return found.comment.startswith(COMMENT)
    except (OSError, zipfile.BadZipFile):
        return False


def _writing(folder: Path) -> str | None:
    """Who holds the folder's lock, when a live run (or one on another host) does."""
    try:
        record = json.loads((folder / ownership.LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "an unreadable lock record"
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int) or not isinstance(record.get("host"),
                                                                                                 str):
        return "an unreadable lock record"
    return None if ownership.alive(record) is False else f"pid {record['pid']} on {record['host']}"


def archive(results, out, progress: bool = True) -> Path:
    """Write the zip archive of a results folder to `out`, atomically (see the module for what it holds).

    Args:
        results: a results folder written by `fragility run` (it must hold response units).
        out: the zip file to write (its name ends in ``.zip``), outside the results folder.
        progress: show a progress bar.

    Returns:
        The path written.

    Raises:
        FragilityError: no results there (or a damaged unit, named), a run writing the folder now, or an `out` that
            is not a ``.zip`` name, lies inside the results folder, or exists and was not written here.
    """
    folder = checks.folder(results, "results")
    out = checks.path(out, "out")
    progress = checks.flag(progress, "progress")
    if out.suffix.lower() != ".zip":
        raise FragilityError(f"out must name a .zip file; got {str(out)!r}.")
    if out.resolve().is_relative_to(folder.resolve()):
        raise FragilityError(f"out {out} lies inside the results folder {folder}: write the archive elsewhere.")
    if out.is_dir() or (os.path.lexists(out) and (out.is_symlink() or not _ours(out))):
        raise FragilityError(f"out {out} exists and is not an archive fragility wrote: choose another file name (or "
                             "move that file away).")
    checks.folder(out.parent, "the folder of out", create=True)
    if not store.scan(folder):
        raise FragilityError(f"{folder} holds no response units: pass a results folder `fragility run` wrote.")
    holder = _writing(folder)
    if holder:
        raise FragilityError(f"{folder} is being written by a fragility run ({holder}): archive it once the run "
                             "has ended.")
    names = members(folder)
    root = folder.resolve().name

    def write(tmp):
        sums = []
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as found:
            for name in tqdm(names, desc=f"archive {root}", unit="file", disable=not progress):
                digest = hashlib.sha256()
                entry = _entry(f"{root}/{name}")
                entry.file_size = (folder / name).stat().st_size  # Zip64 where a file needs it
                with open(folder / name, "rb") as src, found.open(entry, "w") as dst:
                    while block := src.read(CHUNK):
                        digest.update(block)
                        dst.write(block)
                sums.append(f"{digest.hexdigest()}  {name}\n")
            found.writestr(_entry(f"{root}/{SUMS}"), "".join(sums))
            found.comment = COMMENT + f" of {root}: {len(names)} files".encode()
    return files.atomic(out, write)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info
