"""Datasets of the paper as uint8 image tensors with their normalization (the paper's Sec. 4.3).

``digits`` is scikit-learn's 8×8 digits made to look like MNIST (offline, always available);
``mnist`` and ``cifar10`` come through torchvision with their standard splits; ``tiny-imagenet``
is the official archive, split per class 80/20 from its training set with a seed. Each is registered
by name with `register_dataset` (its DataInfo and a loader), which other data sets can use too.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import re
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

from fragility import files, mnist
from fragility.errors import FragilityError
from fragility.folders import data_root

TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_SIZE = 248_100_043
TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TEST_FRACTION = 0.2  # Tiny ImageNet: 100 of each class's 500 training images go to the test split
DIGITS_TEST = 500  # digits: 1297 train / 500 test, stratified, split seed fixed at 0


@dataclass(frozen=True)
class DataInfo:
    """Shape, class count, per-channel normalization and split sizes of a dataset."""

    name: str
    channels: int
    size: int
    classes: int
    mean: tuple
    std: tuple
    n_train: int
    n_test: int


_MNIST_NORM = ((0.1307,), (0.3081,))
_HALF = ((0.5,) * 3, (0.5,) * 3)
DATASETS: dict[str, tuple[DataInfo, Callable, tuple[str, ...]]] = {}  # name: (info, loader, splits)
NAMES: tuple[str, ...] = ()  # the registered names, in registration order (kept up to date by `register_dataset`)


def register_dataset(name: str, info: DataInfo, splits: tuple[str, ...] = ("train", "test")):
    """Decorator: register a loader `(split, root, download, seed) -> (images, labels)` under `name` with its
    DataInfo: uint8 images (N, C, H, W) and int64 labels (or an ImageSet, or another Dataset of (x, label) with
    its `tensors(indices)`, as `fragility.imports` registers), for `load`, training and profiles.

    Example:
        >>> @register_dataset("fashion", DataInfo("fashion", 1, 28, 10, (0.286,), (0.353,), 60_000, 10_000))
        ... def fashion(split, root, download, seed): ...
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise FragilityError(f"a dataset's name must be letters, digits, '.', '-' or '_'; got {name!r}.")
    if not isinstance(info, DataInfo):
        raise FragilityError(f"register_dataset({name!r}) needs its DataInfo; got {type(info).__name__}.")

    def add(loader):
        global NAMES
        known = DATASETS.get(name)
        if known is not None and (known[1].__module__, known[1].__qualname__) != (loader.__module__,
                                                                                  loader.__qualname__):
            raise FragilityError(f"a dataset named {name!r} is already registered ({known[1].__module__}."
                                 f"{known[1].__qualname__}): choose another name.")
        DATASETS[name] = (replace(info, name=name), loader, tuple(splits))
        NAMES = tuple(DATASETS)
        return loader

    return add


def info(name: str) -> DataInfo:
    """The DataInfo of a dataset name."""
    if not isinstance(name, str) or name not in DATASETS:
        raise FragilityError(f"unknown dataset {name!r}: use one of {', '.join(NAMES)}")
    return DATASETS[name][0]


class ImageSet(torch.utils.data.Dataset):
    """uint8 images (N, C, H, W) and int64 labels, normalized on access like ToTensor + Normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DataInfo):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != info.channels:
            raise FragilityError(
                f"images must be uint8 (N, {info.channels}, H, W), got {images.dtype} {tuple(images.shape)}: "
                "convert them before building an ImageSet"
            )
        if labels.dtype != torch.int64 or labels.shape != (len(images),):
            raise FragilityError(
                f"labels must be int64 of shape ({len(images)},), got {labels.dtype} {tuple(labels.shape)}: "
                "give one int64 label per image"
            )
        self.images, self.labels, self.info = images, labels, info
        self._mean = torch.tensor(info.mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(info.std, dtype=torch.float32).view(-1, 1, 1)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255 - self._mean) / self._std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self._normalize(self.images[i]), int(self.labels[i])

    def tensors(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized float32 images (n, C, H, W) and int64 labels (n,), all or at ``indices``."""
        idx = slice(None) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        return self._normalize(self.images[idx]), self.labels[idx].clone()


def load(name: str, split: str, root=None, download: bool = True, seed: int = 0) -> torch.utils.data.Dataset:
    """Load a split ("train", "test"; also "val" for tiny-imagenet); ``seed`` picks Tiny ImageNet's split only."""
    meta = info(name)
    _, loader, splits = DATASETS[name]
    if split not in splits:
        raise FragilityError(f"unknown split {split!r} for {name}: use one of {', '.join(splits)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FragilityError(f"seed must be an int, got {seed!r}")
    found = loader(split, data_root(root), download, seed)
    return found if isinstance(found, torch.utils.data.Dataset) else ImageSet(*found, meta)


def subset_indices(size: int, n_test: int | None, seed: int = 0) -> torch.Tensor:
    """The indices, in increasing order, of a seeded random subset of ``n_test`` of ``size`` examples (None: all)."""
    if n_test is None:
        return torch.arange(size)
    if isinstance(n_test, bool) or not isinstance(n_test, int) or not 0 < n_test <= size:
        raise FragilityError(f"n_test must be an int in 1..{size} (the set's size) or None for all, got {n_test!r}")
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n_test].sort().values


def test_subset(ds: ImageSet, n_test: int | None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of ``n_test`` examples (None: all) as normalized tensors, in dataset order (the indices:
    `subset_indices`)."""
    return ds.tensors(subset_indices(len(ds), n_test, seed))


test_subset.__test__ = False  # not a pytest test, even when imported into a test module


@register_dataset("digits", DataInfo("digits", 1, 28, 10, *_MNIST_NORM, 1797 - DIGITS_TEST, DIGITS_TEST))
def _digits(split: str, root=None, download=True, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn digits as MNIST: 8×8 → 20×20 bilinear, 0..16 → 0..255, centred in 28×28; fixed split."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn (0.5 s to import) serves digits alone
    from sklearn.model_selection import train_test_split  # deferred, as above

    d = load_digits()
    x = F.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None], size=(20, 20), mode="bilinear")
    x = F.pad((x * (255 / 16)).round().clamp(0, 255).to(torch.uint8), (4, 4, 4, 4))
    train, test = train_test_split(np.arange(len(x)), test_size=DIGITS_TEST, stratify=d.target, random_state=0)
    idx = torch.from_numpy(np.sort(train if split == "train" else test))
    return x[idx], torch.from_numpy(d.target).long()[idx]


@register_dataset("mnist", DataInfo("mnist", 1, 28, 10, *_MNIST_NORM, 60_000, 10_000))
def _mnist(split: str, root: pathlib.Path, download: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return _torchvision("mnist", split, root, download)


@register_dataset("cifar10", DataInfo("cifar10", 3, 32, 10, *_HALF, 50_000, 10_000))
def _cifar10(split: str, root: pathlib.Path, download: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return _torchvision("cifar10", split, root, download)


def _torchvision(name: str, split: str, root: pathlib.Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST or CIFAR-10 through torchvision, as uint8 (N, C, H, W) and int64 labels."""
    raw = root / "MNIST" / "raw"
    try:
        if name == "mnist":
            if download and not all((raw / f).is_file() for f in mnist.NAMES):
                mnist.ensure(root)  # unpacks .gz files placed by hand, else fetches; torchvision's download is not used
            mnist.gunzip(raw)
            mnist.validate(raw)  # a corrupt file is named, rather than failing inside torchvision
            ds = torchvision.datasets.MNIST(str(root), train=split == "train", download=False)
            return ds.data[:, None].contiguous(), ds.targets.long()
        archive = root / "cifar-10-python.tar.gz"
        if archive.is_file() and not (root / "cifar-10-batches-py").is_dir():
            extract_archive(str(archive), str(root))
        ds = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=download)
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets, dtype=torch.long)
    except (RuntimeError, OSError) as e:
        why = " ".join(str(e).split())[:300] or type(e).__name__
        if name == "mnist":
            raise FragilityError(
                f"MNIST is not in {raw}/ and could not be fetched ({why}). Place train-images-idx3-ubyte.gz, "
                f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (or the "
                f"same files unpacked) in {raw}/, or load with download=True where the network is reachable"
            ) from e
        raise FragilityError(
            f"CIFAR-10 is not in {root}/ or is corrupted ({why}). Place the archive cifar-10-python.tar.gz in "
            f"{root}/, or its unpacked folder (data_batch_1 ... data_batch_5, test_batch, batches.meta) at "
            f"{root / 'cifar-10-batches-py'}/, or load with download=True where the network is reachable"
        ) from e


@register_dataset("tiny-imagenet", DataInfo("tiny-imagenet", 3, 64, 200, *_HALF, 80_000, 20_000),
                  ("train", "test", "val"))
def _tiny_set(split: str, root: pathlib.Path, download: bool, seed: int) -> ImageSet:
    images, labels, classes = _tiny(root, split, download, seed)
    return ImageSet(images, labels, replace(info("tiny-imagenet"), classes=classes))


def _tiny(root: pathlib.Path, split: str, download: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Tiny ImageNet: train/test drawn per class (80/20) from the official training set by ``seed``; val as given."""
    d = _tiny_dir(root, download)
    wnids = (d / "wnids.txt").read_text().split()
    images, labels = _tiny_decoded(d, "val" if split == "val" else "train", wnids)
    if split != "val":
        train, test = _per_class_split(labels, seed)
        idx = train if split == "train" else test
        images, labels = images[idx], labels[idx]
    return images, labels, len(wnids)


def _tiny_dir(root: pathlib.Path, download: bool) -> pathlib.Path:
    """The unpacked ``tiny-imagenet-200/`` folder, fetching, checking and unpacking the archive if needed."""
    d, z = root / "tiny-imagenet-200", root / "tiny-imagenet-200.zip"
    if (d / "wnids.txt").is_file():
        return d
    if d.exists():
        raise FragilityError(f"{d}/ exists but has no wnids.txt (an interrupted unpacking?): delete it and load again")
    if not z.is_file():
        why = "download=False"
        if download:
            try:
                download_url(TINY_URL, str(root), md5=TINY_MD5)
                why = ""
            except (RuntimeError, OSError) as e:
                why = " ".join(str(e).split())[:300] or type(e).__name__
        if why:
            raise FragilityError(
                f"Tiny ImageNet is not in {root}/ and could not be fetched ({why}). Place the official archive "
                f"tiny-imagenet-200.zip ({TINY_SIZE:,} bytes, md5 {TINY_MD5}, from {TINY_URL}) at {z}, or its "
                f"unpacked folder (with wnids.txt, train/, val/) at {d}/"
            )
    actual = calculate_md5(z)
    if actual != TINY_MD5:
        raise FragilityError(
            f"{z} has md5 {actual} ({z.stat().st_size:,} bytes), expected {TINY_MD5} ({TINY_SIZE:,} bytes): "
            f"it is incomplete or not the official archive; delete it and download it again from {TINY_URL}"
        )
    tmp = pathlib.Path(tempfile.mkdtemp(dir=root, prefix=".tiny-imagenet-"))
    try:
        with zipfile.ZipFile(z) as f:
            f.extractall(tmp)
        os.replace(tmp / "tiny-imagenet-200", d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return d


def _tiny_decoded(d: pathlib.Path, part: str, wnids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of ``part`` ("train" or "val") as uint8 (N, 3, 64, 64) + labels, cached once decoded."""
    cache = d / f"fragility-cache-{part}.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        return saved["images"], saved["labels"]
    if part == "train":
        groups = [sorted((d / "train" / w / "images").glob("*.JPEG")) for w in wnids]
        paths = [p for fs in groups for p in fs]
        labels = [k for k, fs in enumerate(groups) for _ in fs]
    else:
        rows = [line.split("\t") for line in (d / "val" / "val_annotations.txt").read_text().splitlines() if line]
        index = {w: k for k, w in enumerate(wnids)}
        unknown = sorted({r[1] for r in rows} - index.keys())
        if unknown:
            raise FragilityError(
                f"{d / 'val' / 'val_annotations.txt'} names wnids missing from wnids.txt ({', '.join(unknown[:3])}): "
                f"delete {d}/ and unpack the official archive again"
            )
        paths, labels = [d / "val" / "images" / r[0] for r in rows], [index[r[1]] for r in rows]
    if not paths:
        raise FragilityError(f"no {part} images found under {d}/: delete it and unpack the official archive again")
    images = np.empty((len(paths), 64, 64, 3), dtype=np.uint8)
    with ThreadPoolExecutor() as pool:
        for i, a in enumerate(pool.map(_read_rgb64, paths)):
            images[i] = a
    saved = {"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
             "labels": torch.tensor(labels, dtype=torch.long)}
    files.atomic(cache, lambda tmp: torch.save(saved, tmp))
    return saved["images"], saved["labels"]


def _read_rgb64(path: pathlib.Path) -> np.ndarray:
    """One 64×64 image as uint8 (64, 64, 3)."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    if a.shape != (64, 64, 3):
        raise FragilityError(
            f"{path} is {a.shape[1]}×{a.shape[0]}, expected 64×64: use the official Tiny ImageNet images"
        )
    return a


def _per_class_split(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, test): a seeded TEST_FRACTION of each class to test, the rest to train, both sorted."""
    g = torch.Generator().manual_seed(seed)
    test = []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        test.append(idx[torch.randperm(len(idx), generator=g)[: round(len(idx) * TEST_FRACTION)]])
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[torch.cat(test)] = True
    return (~is_test).nonzero().flatten(), is_test.nonzero().flatten()
