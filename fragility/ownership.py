"""Who may write a results folder: one live run at a time (its lock), and one profile for the folder's life.

The lock, `<results>/.fragility-lock`, holds the pid, host and start time of the run writing the folder: `run`,
`train`, `sweep` (and `verify`, on its scratch folder) take it and remove it when they end, however they end. A
second run into the folder while the first is alive is refused with one line naming the holder; a lock whose process
has ended on this host — a run that was killed — is taken over with a one-line notice, so that a killed run never
leaves its folder stuck. Commands that only read (`status`, `open_results`, `claims`, the book) take no lock and
work on read-only folders.

The owner record, `<results>/profile.json`, names the profile whose results the folder holds and its sweep
settings; the first run that writes the folder records it, atomically. A run of another profile into the folder is
refused (a folder written before owner records existed is judged by its stored units' `profile` attribute). A run of
the same profile whose settings changed is refused by the checks of the stored files themselves (response units, ε
records, checkpoints, study units), which name the file at fault — and a folder whose stale files were moved away
is recomputed, its record updated.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from . import files
from .errors import FragilityError

LOCK = ".fragility-lock"
OWNER = "profile.json"
SCHEMA = "fragility-owner/1"
_held: dict[str, int] = {}  # folders this process holds the lock of, and how many nested `lock`s hold it


def _process(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of process `pid` from /proc, or None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def _me() -> dict:
    found = _process(os.getpid())
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds"),
            "process_start": found[1] if found else None}


def _read(path: Path) -> dict | None:
    """The lock record at `path`; None when it is not one (empty or damaged). FileNotFoundError when it is gone."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        return None
    ok = (isinstance(record, dict) and isinstance(record.get("pid"), int) and not isinstance(record["pid"], bool)
          and record["pid"] > 0 and isinstance(record.get("host"), str))
    return record if ok else None


def _holder(path: Path) -> dict | None:
    """The lock record at `path`, waiting up to a second for one being written to be complete."""
    for _ in range(20):
        record = _read(path)
        if record is not None:
            return record
        time.sleep(0.05)
    return None


def alive(record: dict) -> bool | None:
    """Whether the run of a lock record is alive: True or False on this host, None on another (it cannot be told)."""
    if record["host"] != socket.gethostname() or os.name == "nt":  # Windows' os.kill would end the process
        return None
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except (OverflowError, ValueError):
        return False
    found = _process(record["pid"])
    if found is None:
        return True
    state, start = found
    return state not in ("Z", "X") and record.get("process_start") in (None, start)  # ended, or the pid reused


def _who(record: dict | None) -> str:
    if record is None:
        return "an unreadable lock record"
    return f"pid {record['pid']} on {record['host']}, started {record.get('started', 'at an unrecorded time')}"


def _notice(line: str) -> None:
    print(line, file=sys.stderr)


def _acquire(folder: Path, notice) -> None:
    path = folder / LOCK
    mine = json.dumps(_me())
    for _ in range(5):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = _holder(path)
            except FileNotFoundError:
                continue  # released meanwhile
            state = False if holder is None else alive(holder)
            if state is not False:
                gone = f"; if that run is gone, delete {path}" if state is None else ""
                raise FragilityError(f"{folder} is being written by another fragility run ({_who(holder)}; its lock "
                                     f"is {path}): wait for it to end, or write to another results folder"
                                     f"{gone}.") from None
            notice(f"fragility: taking over the lock of {folder} from a run that has ended ({_who(holder)}).")
            with contextlib.suppress(FileNotFoundError):
                if _read(path) == holder:
                    path.unlink()
            continue
        except OSError as err:
            raise files.failed(path, err) from None
        with os.fdopen(handle, "w") as f:
            f.write(mine)
            f.flush()
            os.fsync(f.fileno())
        return
    raise FragilityError(f"could not take the lock {path}: other runs keep taking it; run again when they end.")


def _release(folder: Path) -> None:
    path = folder / LOCK
    try:
        holder = _read(path)
    except FileNotFoundError:
        return
    if holder is not None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def lock(folder, notice=_notice):
    """Hold the lock of the results folder `folder` (created if missing, removed again if it is left empty) while
    inside; nested `lock`s of one folder in one process share it.

    Raises:
        FragilityError: another live run holds it (named), or the folder cannot be created or written.
    """
    folder = Path(folder)
    key = str(folder.resolve())
    if _held.get(key):
        _held[key] += 1
        try:
            yield folder
        finally:
            _held[key] -= 1
        return
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FragilityError(f"cannot create the results folder {folder} ({err.strerror}): choose a folder you can "
                             "write to.") from None
    key = str(folder.resolve())
    try:
        _acquire(folder, notice)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    _held[key] = 1
    try:
        yield folder
    finally:
        _held.pop(key, None)
        _release(folder)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when the run left it empty


def owner(folder) -> dict | None:
    """The owner record of the results folder `folder`, or None when it has none; a FragilityError naming a
    damaged one."""
    path = Path(folder) / OWNER
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA or not isinstance(record.get("profile"), str):
        raise FragilityError(f"{path} is not a readable record of the profile that owns {folder}: move it away (or "
                             "delete it, if fragility wrote it); the next run records its profile again.")
    return record


def check(profile, folder, stored: dict | None = None) -> None:
    """Refuse `profile` on a results folder holding another profile's results: as its owner record says, else (a
    folder written before owner records) as the `profile` attribute of a stored file says (`stored`: path →
    attributes)."""
    record = owner(folder)
    found = ([(Path(folder) / OWNER, record["profile"])] if record is not None else
             [(path, attrs.get("profile")) for path, attrs in (stored or {}).items()])
    for where, name in found:
        if name is not None and name != profile.name:
            raise FragilityError(f"{folder} holds the results of profile {name!r} ({where}), not of profile "
                                 f"{profile.name!r}, whose run would mix with them: write profile {profile.name!r} "
                                 "to another results folder (--results).")


def record(profile, folder) -> None:
    """Record `profile` as the owner of the results folder `folder` (atomically; nothing when it already is)."""
    mine = json.loads(json.dumps({"schema": SCHEMA, "profile": profile.name, "sweep_settings": profile.sweep_settings,
                                  "sweep_hash": profile.sweep_hash}))
    if owner(folder) != mine:
        files.write_json(mine, Path(folder) / OWNER)
