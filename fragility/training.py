"""Training with resumable, reproducible checkpoints (the paper's Sec. 4.3) and real layer freezing (Sec. 5).

Protocol: Adam (lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay), cross-entropy, clean
data, no augmentation, shuffled by a ``torch.Generator`` seeded with the config's seed. The global
CPU RNG (used e.g. by SqueezeNet's dropout) is seeded too, inside ``fork_rng`` so the caller's RNG
state is restored afterwards. A checkpoint is written atomically after epochs every, 2·every, … and
after the last epoch; it holds everything needed to resume bit for bit: model and optimizer state,
the CPU, CUDA and shuffling RNG states.

Resuming: ``train`` continues from the latest existing checkpoint of the config. ``config_hash``
leaves ``epochs`` out, so asking for more epochs extends a finished run instead of refusing it.
Determinism: bitwise identical on the same machine with the same software on CPU; on GPU
``torch.use_deterministic_algorithms(True, warn_only=True)`` makes it so wherever CUDA allows.
"""

import functools
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fragility import checks, files
from fragility.errors import FragilityError
from fragility.models import build
from fragility.provenance import provenance, threads

FORMAT = "fragility-checkpoint/1"


@dataclass
class TrainConfig:
    """What determines a training run; `depth` only matters for smallcnn."""

    model: str
    dataset: str
    seed: int
    epochs: int
    every: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    channels: int = 1
    classes: int = 10
    depth: int = 2
    threads: int | None = None  # CPU threads to train with (None: torch's current setting, not recorded)
    origin: dict | None = None  # a model or data set of one's own, weights trained elsewhere (fragility.imports)

    def __post_init__(self):
        """Refuse non-positive counts and rates."""
        for name in ("epochs", "every", "batch_size", "channels", "classes", "depth") + (
                ("threads",) if self.threads is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FragilityError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise FragilityError(f"TrainConfig.lr must be positive, got {self.lr!r}")


def config_hash(config: TrainConfig | dict) -> str:
    """Short stable sha256 of the config's fields except `epochs` (so extending a run resumes it); `threads` and
    `origin` only when set."""
    values = asdict(config) if isinstance(config, TrainConfig) else dict(config)
    values.pop("epochs", None)
    for later in ("threads", "origin"):
        if values.get(later, None) is None:
            values.pop(later, None)
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def checkpoint_path(root, model: str, dataset: str, seed: int, epoch: int) -> Path:
    """root/checkpoints/<model>/<dataset>/seed<seed>/epoch<EEE>.pt (names that would leave `root` refused)"""
    return (checks.path(root, "results") / "checkpoints" / checks.part(model, "model")
            / checks.part(dataset, "dataset") / f"seed{int(seed)}" / f"epoch{int(epoch):03d}.pt")


def weights_path(root, model: str, dataset: str, seed: int, epoch: int) -> Path:
    """root/weights/<model>/<dataset>/seed<seed>/epoch<EEE>.pt: a checkpoint's network weights alone (what a results
    folder ships so that its units can be re-swept without retraining)."""
    return (checks.path(root, "results") / "weights" / checks.part(model, "model")
            / checks.part(dataset, "dataset") / f"seed{int(seed)}" / f"epoch{int(epoch):03d}.pt")


WEIGHTS = "fragility-weights/1"
KEPT = ("epoch", "seed", "train_loss", "train_accuracy", "test_accuracy", "seconds", "config", "config_hash",
        "freeze", "start_epoch", "provenance")  # what a weights file keeps of its checkpoint besides the network


def export_weights(checkpoint, out) -> Path:
    """Write the network weights and the metadata of the checkpoint at `checkpoint` to `out` (atomically), without
    the optimizer and random states: a few MB for SqueezeNet 1.1, enough to re-sweep the unit exactly."""
    data = read_checkpoint(checkpoint)
    state = {"format": WEIGHTS, "model": data["model"], **{k: data[k] for k in KEPT if k in data}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return files.atomic(out, functools.partial(torch.save, state))


def read_checkpoint(path, map_location="cpu") -> dict:
    """The checkpoint dict at `path` (model and optimizer states, random states, epoch, config, accuracies; a weights
    file has the model state and the metadata only), or a FragilityError saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise FragilityError(f"no checkpoint at {path}; run `fragility train` first to create it")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise FragilityError(f"{path} is not a readable checkpoint ({error.__class__.__name__}): move it away (or "
                             "delete it, if fragility wrote it) and train again.") from None
    if not isinstance(data, dict) or data.get("format") not in (FORMAT, WEIGHTS):
        raise FragilityError(f"{path} is not a fragility checkpoint: move it away or use another results folder.")
    return data


def load_checkpoint(path, map_location="cpu") -> tuple[nn.Module, dict]:
    """The network rebuilt from a checkpoint, in eval() mode, and the checkpoint's other entries."""
    data = read_checkpoint(path, map_location)
    config = data["config"]
    model = build(config["model"], config["channels"], config["classes"], depth=config["depth"])
    model.load_state_dict(data.pop("model"))
    return model.eval(), data


def _frozen_parameters(model: nn.Module, freeze: Sequence[str]) -> set:
    """Ids of the parameters of the modules named in `freeze`, which stop requiring gradients."""
    modules = dict(model.named_modules())
    unknown = [name for name in freeze if name not in modules or not name]
    if unknown:
        known = [name for name, module in modules.items() if name and list(module.parameters(recurse=False))]
        raise FragilityError(f"cannot freeze unknown module(s) {unknown}; use qualified names such as "
                             f"{', '.join(known[:6])}")
    frozen = set()
    for name in freeze:
        for parameter in modules[name].parameters():
            parameter.requires_grad_(False)
            frozen.add(id(parameter))
    return frozen


def _check_data(train_set, model: nn.Module, config: TrainConfig, device) -> None:
    """Refuse images the network cannot take, naming the expected channels."""
    image = train_set[0][0]
    expected = f"{config.channels}×H×W images (e.g. 1×28×28 for MNIST, 3×32×32 for CIFAR-10, 3×64×64 for Tiny ImageNet)"
    if not torch.is_tensor(image) or image.dim() < 1 or image.shape[0] != config.channels:  # C×H×W, C×L (one's own)
        shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise FragilityError(f"{config.model} was built for {expected} but the training data has {shape}; set "
                             "TrainConfig.channels to match the data")
    model.eval()
    try:
        with torch.no_grad():
            model(image[None].float().to(device))
    except RuntimeError as error:
        raise FragilityError(f"{config.model} cannot take training images of shape {tuple(image.shape)}: expected "
                             f"{expected}; {error}") from None
    model.train()


def _accuracy(model: nn.Module, dataset, batch_size: int, device) -> float:
    """Fraction of `dataset` classified correctly, in eval mode, without touching the global RNG."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size, generator=torch.Generator()):
            correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
    model.train()
    return correct / len(dataset)


def _epoch(model, loader, optimizer, config: TrainConfig, device, bar) -> tuple[float, float]:
    """One pass of Adam over `loader`; the epoch's mean training loss and accuracy."""
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    for x, y in tqdm(loader, desc=bar, leave=False, disable=bar is None):
        if y.min() < 0 or y.max() >= config.classes:
            raise FragilityError(f"training labels must lie in 0..{config.classes - 1}; set TrainConfig.classes to "
                                 "match the data")
        x, y = x.to(device), y.to(device)
        output = model(x)
        loss = nn.functional.cross_entropy(output, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (output.argmax(1) == y).sum()
    n = len(loader.dataset)
    return loss_sum.item() / n, correct.item() / n


def schedule(first: int, last: int, every: int) -> list[int]:
    """Checkpoint epochs in first..last: the multiples of `every` and `last`."""
    return [e for e in range(first, last + 1) if e % every == 0 or e == last]


def _latest(folder: Path, first: int, last: int) -> int | None:
    """The latest epoch in first..last with a checkpoint file in `folder`, if any."""
    epochs = [int(m[1]) for f in folder.glob("epoch*.pt") if (m := re.fullmatch(r"epoch(\d+)\.pt", f.name))]
    return max((e for e in epochs if first <= e <= last), default=None)


def train(config: TrainConfig, train_set, test_set, root, progress: bool = True, freeze: Sequence[str] = (),
          start=None, device: str | None = None) -> list[Path]:
    """Train (or resume) the run `config` under `root` and return the paths of its checkpoints.

    `freeze`: qualified module names whose parameters get requires_grad False, so they receive no gradient; Adam
    leaves a parameter without a gradient untouched, moments included: a real freeze (zeroing gradients would not
    be one). BatchNorm running statistics, being buffers, still update.
    `start`: a checkpoint (its path, or the dict `read_checkpoint` returns) to continue from: its
    model, optimizer and random states are all restored, so that continuing with nothing frozen repeats the
    original run exactly; epochs then count on from the checkpoint's epoch to config.epochs. The freeze list and
    start epoch are recorded and must match for a later call to resume the run.
    `device`: defaults to CUDA when available, else CPU. `config.threads`, when set, is the CPU thread count.
    """
    freeze = [freeze] if isinstance(freeze, str) else list(freeze)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if isinstance(start, (str, os.PathLike)):
        start = read_checkpoint(start, device)
    if start is not None and not (isinstance(start, dict) and {"model", "optimizer", "rng", "epoch"} <= set(start)):
        raise FragilityError("start must be a checkpoint to continue from: its path, or the dict of a "
                             "fragility.training checkpoint (with model, optimizer, rng and epoch)")
    first = 1 if start is None else start["epoch"] + 1
    if first > config.epochs:
        raise FragilityError(f"start epoch {start['epoch']} leaves nothing to train up to "
                             f"TrainConfig.epochs={config.epochs}; raise epochs")
    key = {"config_hash": config_hash(config), "freeze": freeze,
           "start_epoch": None if start is None else start["epoch"]}

    def path(epoch):
        return checkpoint_path(root, config.model, config.dataset, config.seed, epoch)

    saves = schedule(first, config.epochs, config.every)
    latest = _latest(path(first).parent, first, config.epochs)
    resume = start if latest is None else read_checkpoint(path(latest), device)
    if latest is not None and {k: resume.get(k) for k in key} != key:
        raise FragilityError(f"{path(latest).parent} holds checkpoints of a different run (config "
                             f"{resume.get('config')}, freeze {resume.get('freeze')}); use another results folder or "
                             "move that one away")
    if latest == config.epochs:
        return [path(e) for e in saves]
    with threads(config.threads):
        _fit(config, train_set, test_set, path, saves, key, resume, freeze, progress, device,
             first if latest is None else latest + 1)
    return [path(e) for e in saves]


def _fit(config: TrainConfig, train_set, test_set, path, saves, key, resume, freeze, progress, device, first):
    """Train epochs first..config.epochs from `resume` (a checkpoint dict, or None: from initialization), writing
    the checkpoints of `saves`."""
    model = build(config.model, config.channels, config.classes, seed=config.seed, depth=config.depth).to(device)
    frozen = _frozen_parameters(model, freeze)
    if len(frozen) == len(list(model.parameters())):
        raise FragilityError("every parameter is frozen, so there is nothing to train; freeze fewer modules")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    _check_data(train_set, model, config, device)
    cuda = device.type == "cuda"
    shuffle = torch.Generator()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        with torch.random.fork_rng(devices=[device] if cuda else []):
            torch.manual_seed(config.seed)
            shuffle.manual_seed(config.seed)
            if resume is not None:
                model.load_state_dict(resume["model"])
                optimizer.load_state_dict(resume["optimizer"])
                torch.set_rng_state(resume["rng"]["torch"].cpu())
                shuffle.set_state(resume["rng"]["shuffle"].cpu())
                if cuda and resume["rng"]["cuda"] is not None:
                    torch.cuda.set_rng_state(resume["rng"]["cuda"].cpu(), device)
            loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=shuffle)
            seconds = 0.0 if resume is None else resume.get("seconds", 0.0)
            run = f"{config.model}/{config.dataset}/seed{config.seed}"
            for epoch in tqdm(range(first, config.epochs + 1), desc=run, disable=not progress):
                clock = time.perf_counter()
                train_loss, train_accuracy = _epoch(model, loader, optimizer, config, device,
                                                    f"epoch {epoch}" if progress else None)
                if not math.isfinite(train_loss):
                    raise FragilityError(f"training {run} diverged in epoch {epoch} (loss {train_loss}): nothing of "
                                         f"that epoch is stored; lower lr ({config.lr}).")
                seconds += time.perf_counter() - clock
                if epoch in saves:
                    test_accuracy = _accuracy(model, test_set, config.batch_size, device)
                    state = {
                        "format": FORMAT,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(),
                                "cuda": torch.cuda.get_rng_state(device) if cuda else None},
                        "epoch": epoch,
                        "seed": config.seed,
                        "train_loss": train_loss,
                        "train_accuracy": train_accuracy,
                        "test_accuracy": test_accuracy,
                        "seconds": round(seconds, 2),
                        "config": asdict(config),
                        **key,
                        "provenance": provenance(),
                    }
                    files.atomic(path(epoch), functools.partial(torch.save, state))
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]
