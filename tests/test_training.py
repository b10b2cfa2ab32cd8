"""Tests of training: checkpoint schedule and contents, determinism, exact resume, atomic writes, real freezing."""

from dataclasses import asdict

import pytest
import torch
from torch.utils.data import TensorDataset

from fragility.errors import FragilityError
from fragility.models import build
from fragility.training import TrainConfig, checkpoint_path, config_hash, load_checkpoint, train


def toy(n=200, size=16, channels=1, classes=10, seed=0):
    """A learnable problem: the class sets the mean brightness of a noisy image."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=g)
    levels = torch.linspace(-2, 2, classes)[labels].view(n, 1, 1, 1)
    return TensorDataset(levels + 0.5 * torch.randn(n, channels, size, size, generator=g), labels)


TRAIN, TEST = toy(), toy(n=50, seed=1)


pytestmark = pytest.mark.usefixtures("one_thread")


def config(**changes):
    """A small smallcnn run: 4 batches per epoch."""
    return TrainConfig(**{"model": "smallcnn", "dataset": "toy", "seed": 0, "epochs": 4, "every": 1, "batch_size": 50,
                          **changes})


def run(root, **changes):
    """Train config(**changes) under root quietly."""
    return train(config(**changes), TRAIN, TEST, root, progress=False)


def raw(path):
    """The full checkpoint dict, but for the training time it records, which differs from run to run."""
    data = torch.load(path, weights_only=True)
    assert data.pop("seconds") >= 0
    return data


def assert_same(a, b):
    """Two nested structures of tensors and plain values are bitwise equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif torch.is_tensor(a):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_checkpoints_and_metadata(tmp_path, capsys):
    state = torch.get_rng_state()
    paths = run(tmp_path, epochs=5, every=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert capsys.readouterr().err == ""
    assert paths == [checkpoint_path(tmp_path, "smallcnn", "toy", 0, e) for e in (2, 4, 5)]
    assert paths[0] == tmp_path / "checkpoints/smallcnn/toy/seed0/epoch002.pt"
    assert sorted(p.name for p in paths[0].parent.iterdir()) == ["epoch002.pt", "epoch004.pt", "epoch005.pt"]
    model, meta = load_checkpoint(paths[-1])
    assert not model.training
    assert meta["epoch"] == 5 and meta["seed"] == 0
    assert meta["config"] == asdict(config(epochs=5, every=2))
    assert meta["config_hash"] == config_hash(config(epochs=5, every=2))
    assert 0 <= meta["train_accuracy"] <= 1 and 0 <= meta["test_accuracy"] <= 1 and meta["train_loss"] > 0
    assert set(meta["rng"]) == {"torch", "shuffle", "cuda"} and "optimizer" in meta
    assert {"fragility_version", "torch_version", "git_commit"} <= meta["provenance"].keys()
    assert_same(model.state_dict(), raw(paths[-1])["model"])


def test_deterministic(tmp_path):
    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    for x, y in zip(a, b):
        assert_same(raw(x), raw(y))
    start = build("smallcnn", seed=0).state_dict().values()
    assert any(not torch.equal(v, w) for v, w in zip(raw(a[-1])["model"].values(), start))


# squeezenet: its dropout draws from the global RNG
@pytest.mark.parametrize("model, size", [("smallcnn", 16), ("squeezenet1_1", 32)])
def test_resume_is_exact(tmp_path, model, size):
    data = toy(n=40, size=size)
    def go(root, epochs):
        return train(config(model=model, epochs=epochs, batch_size=20), data, data, root, progress=False)

    first = go(tmp_path / "resumed", 2)
    stamps = [p.stat().st_mtime_ns for p in first]
    resumed = go(tmp_path / "resumed", 4)
    assert [p.stat().st_mtime_ns for p in first] == stamps  # epochs 1–2 were not trained again
    straight = go(tmp_path / "straight", 4)
    assert resumed == [checkpoint_path(tmp_path / "resumed", model, "toy", 0, e) for e in (1, 2, 3, 4)]
    for x, y in zip(resumed, straight):
        a, b = raw(x), raw(y)
        # each records its own call
        assert a.pop("config") == {**b.pop("config"), "epochs": 2 if a["epoch"] <= 2 else 4}
        assert_same(a, b)
    assert go(tmp_path / "resumed", 3) == resumed[:3]  # nothing to do, nothing rewritten
    assert [p.stat().st_mtime_ns for p in first] == stamps


def test_config_hash():
    assert config_hash(config(epochs=2)) == config_hash(config(epochs=100))
    assert config_hash(config()) != config_hash(config(lr=1e-2))
    assert config_hash(config()) == config_hash(asdict(config()))
    assert len(config_hash(config())) == 12


def test_other_config_in_folder_is_refused(tmp_path):
    run(tmp_path, epochs=1)
    with pytest.raises(FragilityError, match="another results folder"):
        run(tmp_path, epochs=2, lr=1e-2)


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"every": -1}, {"batch_size": 0}, {"lr": 0.0}])
def test_bad_config(bad):
    with pytest.raises(FragilityError, match=next(iter(bad))):
        config(**bad)


def test_no_temp_files_even_when_saving_fails(tmp_path, monkeypatch):
    run(tmp_path, epochs=2)
    folder = checkpoint_path(tmp_path, "smallcnn", "toy", 0, 1).parent
    assert sorted(p.name for p in folder.iterdir()) == ["epoch001.pt", "epoch002.pt"]

    def broken(obj, f):
        open(f, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(FragilityError, match=r"epoch003.pt \(disk full; nothing partial was kept\)"):
        run(tmp_path, epochs=3)
    assert sorted(p.name for p in folder.iterdir()) == ["epoch001.pt", "epoch002.pt"]


def test_freeze_is_real(tmp_path):
    frozen = ("blocks.0.conv", "blocks.1.bn")
    paths = train(config(epochs=2), TRAIN, TEST, tmp_path, progress=False, freeze=frozen)
    before, after = build("smallcnn", seed=0).state_dict(), raw(paths[-1])["model"]
    for name in ("blocks.0.conv.weight", "blocks.1.bn.weight", "blocks.1.bn.bias"):
        assert torch.equal(before[name], after[name])
    for name in ("blocks.1.conv.weight", "blocks.0.bn.weight", "fc.weight", "fc.bias"):
        assert not torch.equal(before[name], after[name])
    assert raw(paths[-1])["freeze"] == list(frozen)
    with pytest.raises(FragilityError, match="another results folder"):
        run(tmp_path, epochs=3)  # the same config unfrozen is another run


def test_freeze_unknown_module(tmp_path):
    with pytest.raises(FragilityError, match="blocks.9.conv"):
        train(config(), TRAIN, TEST, tmp_path, progress=False, freeze=["blocks.9.conv"])


def test_start_from_checkpoint_continues_the_original_run_exactly(tmp_path):
    """Continuing from a checkpoint restores its optimizer and random states: with nothing frozen it repeats the
    original run bit for bit (a fresh Adam would not: its moments restart from zero)."""
    original = run(tmp_path / "base", epochs=4)
    paths = train(config(epochs=4), TRAIN, TEST, tmp_path / "continued", progress=False, start=original[1])
    assert [p.name for p in paths] == ["epoch003.pt", "epoch004.pt"]
    assert raw(paths[-1])["start_epoch"] == 2 and raw(paths[-1])["epoch"] == 4
    for mine, theirs in zip(paths, original[2:]):
        a, b = raw(mine), raw(theirs)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
        assert a["test_accuracy"] == b["test_accuracy"]
    fresh = load_checkpoint(original[1])[0]
    restarted = torch.optim.Adam(fresh.parameters())  # what the earlier code did: the moments restart from zero
    assert not restarted.state_dict()["state"] and raw(original[1])["optimizer"]["state"]
    with pytest.raises(FragilityError, match="nothing to train"):
        train(config(epochs=2), TRAIN, TEST, tmp_path / "other", progress=False, start=original[1])
    with pytest.raises(FragilityError, match="start must be a checkpoint"):
        train(config(epochs=4), TRAIN, TEST, tmp_path / "other", progress=False, start={"epoch": 2})


def test_loss_decreases(tmp_path):
    paths = run(tmp_path, epochs=6, batch_size=20)
    losses = [load_checkpoint(p)[1]["train_loss"] for p in paths]
    assert losses[-1] < 0.6 * losses[0]
    assert load_checkpoint(paths[-1])[1]["test_accuracy"] > 0.3  # chance is 0.1


def test_wrong_channels_refused(tmp_path):
    with pytest.raises(FragilityError, match="3×H×W"):
        run(tmp_path, channels=3)


def test_image_too_small_refused(tmp_path):
    data = toy(n=10, size=4)
    with pytest.raises(FragilityError, match="cannot take"):
        train(config(model="squeezenet1_1"), data, data, tmp_path, progress=False)


def test_labels_out_of_range_refused(tmp_path):
    with pytest.raises(FragilityError, match="classes"):
        run(tmp_path, classes=5)


def test_load_checkpoint_errors(tmp_path):
    missing = tmp_path / "epoch010.pt"
    with pytest.raises(FragilityError, match="fragility train") as error:
        load_checkpoint(missing)
    assert str(missing) in str(error.value)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(FragilityError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(FragilityError, match="foreign.pt"):
        load_checkpoint(foreign)


def test_progress_bars(tmp_path, capsys):
    train(config(epochs=1), TRAIN, TEST, tmp_path)
    assert "smallcnn/toy/seed0" in capsys.readouterr().err
