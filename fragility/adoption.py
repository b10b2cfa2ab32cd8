"""Networks trained elsewhere, swept like the ones fragility trains: a model's `checkpoints` in a profile.

    models:
      mynet:
        factory: "mypackage.models:build"
        checkpoints: {10: runs/mynet-10.pt, 20: runs/mynet-20.pt}

`checkpoints` is a mapping epoch → file, a list of files (one per epoch of the model's `epochs`, in order), or one
file (the model's last epoch); relative paths are relative to the profile file's folder. A file holds the network's
state_dict (`torch.save(model.state_dict(), path)`), or a mapping holding it under "state_dict" or "model" (a
fragility checkpoint too); it is read with `torch.load(weights_only=True)`. When the profile is read every file is
read, loaded into the network (strictly: every key, every shape) and hashed; a model with checkpoints has one seed
(the files are one run) and the profile one data set (the one the networks were trained on).

Instead of training, a run then adopts the files: each network is written as the run's checkpoint under
checkpoints/ with its accuracy on the whole test set and on the training set (both in eval mode), the file and its
sha256, so that everything after — ε, sweeps, studies, `--workers`, status, verify, the book — reads it as a trained
one. The files' sha256 enter the run's training hash: results computed from a file that has changed since are stale
(refused until moved away). An adopted network has no optimizer state: it cannot be trained on (`verify --retrain`,
the selective study).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from . import checks, data, files, imports, models, training
from .errors import FragilityError
from .provenance import provenance


@dataclass(frozen=True)
class Adopted:
    """One network trained elsewhere: the epoch it stands for, its file and the file's sha256."""

    epoch: int
    path: str
    sha256: str


def _files(raw, epochs: tuple, key: str) -> dict[int, object]:
    """{epoch: file} from a `checkpoints` value: a mapping, a list paired with `epochs`, or one file (the last)."""
    if isinstance(raw, (str, Path)):
        return {epochs[-1]: raw}
    if isinstance(raw, list):
        if len(raw) != len(epochs):
            raise FragilityError(f"{key} lists {len(raw)} file(s) for the {len(epochs)} epoch(s) {list(epochs)}: give "
                                 "one file per epoch, or a mapping epoch: file.")
        return dict(zip(epochs, raw))
    if isinstance(raw, dict) and raw and all(checks.is_whole(e) and e >= 1 for e in raw):
        return dict(sorted(raw.items()))
    raise FragilityError(f"{key} must be a file, a list of files (one per epoch of the model's epochs) or a mapping "
                         f"of epochs ≥ 1 to files; got {raw!r}.")


def read_state(path: Path, key: str) -> dict:
    """The state_dict a checkpoint file holds (itself, or under "state_dict" or "model"); one FragilityError."""
    try:
        found = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to read means it is not a file of weights torch can load safely
        raise FragilityError(f"{key}: {path} cannot be read as weights ({imports.said(err)}): save the network's "
                             "state_dict, torch.save(model.state_dict(), path).") from None
    for state in (found, *(found.get(k) for k in ("state_dict", "model") if isinstance(found, dict))):
        if isinstance(state, dict) and state and all(isinstance(k, str) and torch.is_tensor(v)
                                                     for k, v in state.items()):
            return state
    raise FragilityError(f"{key}: {path} holds no state_dict (a mapping of parameter names to tensors, itself or "
                         "under 'state_dict' or 'model'): save the network's state_dict.")


def load_into(model: torch.nn.Module, state: dict, key: str, path) -> torch.nn.Module:
    """`model` with `state` loaded strictly; one FragilityError saying what does not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        said = " ".join(str(err).split())
        raise FragilityError(f"{key}: {path} does not fit the network ({said[:300]}): save the state_dict of the "
                             "network the factory builds, with the same kwargs.") from None
    return model


def parse(model: str, raw, seeds: tuple, epochs: tuple, datasets: tuple, depth: int, where: str,
          folder: Path | None) -> tuple[Adopted, ...]:
    """A model's `checkpoints`, every file read, fitted to the network and hashed; one FragilityError naming the
    key (`where` prefixes it)."""
    key = f"{where}models.{model}.checkpoints"
    if len(seeds) != 1:
        raise FragilityError(f"{key}: checkpoints are the networks of one run, and {model} has seeds {list(seeds)}: "
                             f"give it its own seeds: [{seeds[0]}].")
    if len(datasets) != 1:
        raise FragilityError(f"{key}: checkpoints hold networks trained on one data set, and the profile has "
                             f"{len(datasets)} ({', '.join(datasets)}): use one data set per profile.")
    info = data.info(datasets[0])
    out = []
    for epoch, name in _files(raw, epochs, key).items():
        if not isinstance(name, (str, Path)) or not str(name).strip():
            raise FragilityError(f"{key}[{epoch}] must be a file path; got {name!r}.")
        path = Path(name).expanduser()
        path = path if path.is_absolute() or folder is None else folder / path
        if not path.is_file():
            raise FragilityError(f"{key}[{epoch}]: no file {path} (relative paths are relative to the profile "
                                 "file's folder).")
        with torch.random.fork_rng(devices=[]):
            net = models.build(model, info.channels, info.classes, depth=depth)
        load_into(net, read_state(path, f"{key}[{epoch}]"), f"{key}[{epoch}]", path)
        out.append(Adopted(int(epoch), str(path.resolve()), imports.file_sha256(path)))
    return tuple(out)


def _accuracy(net, dataset, batch_size: int, device) -> float:
    """The fraction of `dataset` the network classifies correctly, in eval mode."""
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size):
            correct += (net(x.to(device)).argmax(1).cpu() == y).sum().item()
    return correct / len(dataset)


def adopt(profile, results, run: tuple, data_dir=None, device=None, progress: bool = False) -> Path:
    """Write the run's checkpoints from its model's files (those not written yet); the last one's path."""
    model, dataset, seed = run
    device = checks.device(device)
    config = profile.train_config(model, dataset, seed)
    root = data.data_root(data_dir)
    sets = {}
    for adopted in dict(profile.adopted)[model]:
        out = training.checkpoint_path(results, model, dataset, seed, adopted.epoch)
        if out.is_file():
            continue
        path, key = Path(adopted.path), f"models.{model}.checkpoints[{adopted.epoch}]"
        if not path.is_file() or imports.file_sha256(path) != adopted.sha256:
            raise FragilityError(f"{key}: {path} is gone or has changed since the profile was read: read the "
                                 "profile again (run the command again).")
        net = load_into(models.build(model, config.channels, config.classes, depth=config.depth),
                        read_state(path, key), key, path).to(device).eval()
        sets = sets or {s: data.load(dataset, s, root) for s in ("train", "test")}
        state = {"format": training.WEIGHTS, "model": net.state_dict(), "epoch": adopted.epoch, "seed": seed,
                 "train_accuracy": _accuracy(net, sets["train"], profile.batch_size, device),
                 "test_accuracy": _accuracy(net, sets["test"], profile.batch_size, device),
                 "config": asdict(config), "config_hash": training.config_hash(config), "freeze": [],
                 "start_epoch": None, "adopted": True,
                 "provenance": {**provenance(), **imports.provenance(profile, model, dataset),
                                "checkpoint_file": str(path), "checkpoint_sha256": adopted.sha256}}
        files.atomic(out, functools.partial(torch.save, state))
    return training.checkpoint_path(results, model, dataset, seed, profile.grid(model).epochs[-1])
