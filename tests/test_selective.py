"""Selective backpropagation (SPEC §8, Fig. 12): fragile layers, real freezing, accuracy against ε."""
import numpy as np
import pytest
import torch
import xarray as xr
from torch.utils.data import TensorDataset

import fragility as fr
from fragility import FragilityError
from fragility.attacks import accuracy
from fragility.selective import continue_training, epsilon_curve, fragile_layers, selective_backprop
from fragility.training import TrainConfig, load_checkpoint, train


def toy(n=120, size=16, classes=10, seed=0):
    """A learnable problem: the class sets the mean brightness of a noisy image."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=g)
    levels = torch.linspace(-2, 2, classes)[labels].view(n, 1, 1, 1)
    return TensorDataset(levels + 0.5 * torch.randn(n, 1, size, size, generator=g), labels)


TRAIN, TEST = toy(), toy(n=40, seed=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def start(tmp_path):
    """The epoch-1 checkpoint of a small smallcnn run (checkpoints every epoch)."""
    config = TrainConfig(model="smallcnn", dataset="toy", seed=3, epochs=1, every=1, batch_size=40)
    return train(config, TRAIN, TEST, tmp_path / "base", progress=False)[-1]


def state(path):
    return load_checkpoint(path)[0].state_dict()


def test_fragile_layers_threshold_semantics():
    table = xr.Dataset({
        "r_e": ("layer", [-0.03, -0.02, 0.0, -0.5, 0.4, -1.0]),
        "r_x": ("layer", [0.0, 0.0, -0.1, 0.0, 0.0, 0.0]),
    }, coords={"layer": ["a", "b", "c", "d", "e", "global"]})
    assert fragile_layers(table) == ["a", "d"]  # strictly below −τ; exactly −τ is robust; global never
    assert fragile_layers(table, tol=0.0) == ["a", "b", "d"]
    assert fragile_layers(table, tol=0.1) == ["d"]
    assert fragile_layers(table, score="r_x") == ["c"]
    with pytest.raises(FragilityError, match="unknown score"):
        fragile_layers(table, score="r_q")
    with pytest.raises(FragilityError, match="tol"):
        fragile_layers(table, tol=-0.1)
    with pytest.raises(FragilityError, match="single dimension"):
        fragile_layers(table.expand_dims(seed=[0, 1]))


def test_continue_training_freezes_for_real(tmp_path, start):
    before = state(start)
    selective = continue_training(start, TRAIN, TEST, tmp_path / "selective", 2, freeze=["blocks.1.conv"],
                                  progress=False)
    regular = continue_training(start, TRAIN, TEST, tmp_path / "regular", 2, progress=False)
    assert [p.name for p in selective] == [p.name for p in regular] == ["epoch002.pt", "epoch003.pt"]
    for path in selective:
        after = state(path)
        assert torch.equal(after["blocks.1.conv.weight"], before["blocks.1.conv.weight"])
        for name in ("blocks.0.conv.weight", "blocks.1.bn.weight", "fc.weight", "fc.bias"):
            assert not torch.equal(after[name], before[name])
    assert not torch.equal(state(regular[-1])["blocks.1.conv.weight"], before["blocks.1.conv.weight"])
    meta = torch.load(selective[-1], weights_only=True)
    assert meta["start_epoch"] == 1 and meta["freeze"] == ["blocks.1.conv"] and meta["config"]["seed"] == 3
    with pytest.raises(FragilityError, match="epochs"):
        continue_training(start, TRAIN, TEST, tmp_path / "other", 0, progress=False)
    with pytest.raises(FragilityError, match="blocks.7.conv"):
        continue_training(start, TRAIN, TEST, tmp_path / "other", 1, freeze=["blocks.7.conv"], progress=False)


def test_epsilon_curve_against_fgsm(trained_cnn, digits):
    x, y = digits[2][:80], digits[3][:80]
    trained_cnn.train()
    curve = epsilon_curve(trained_cnn, x, y, epsilons=[0.0, 0.1, 0.25], batch_size=30)
    assert trained_cnn.training  # the caller's mode is restored
    trained_cnn.eval()
    assert curve.dims == ("epsilon",) and list(curve["epsilon"].values) == [0.0, 0.1, 0.25]
    assert curve.sel(epsilon=0.0) == accuracy(trained_cnn, x, y)
    for eps in (0.1, 0.25):
        assert curve.sel(epsilon=eps) == accuracy(trained_cnn, fr.fgsm(trained_cnn, x, y, eps), y)
    assert curve.sel(epsilon=0.25) < curve.sel(epsilon=0.0)
    with pytest.raises(FragilityError, match="epsilons"):
        epsilon_curve(trained_cnn, x, y, epsilons=[0.1, -0.1])


def test_selective_backprop_freezes_the_fragile_layers(tmp_path, start):
    x, y = TEST.tensors
    sweep_ds = fr.sweep(load_checkpoint(start)[0], x, y, A=3, filters=("h1",), include_global=False, epsilon=0.5,
                        progress=False)
    # make blocks.0.conv fragile (its adversarial response collapses) and every other layer robust (r_e = 0)
    ratio = sweep_ds["base_accuracy"].sel(input="adversarial") / sweep_ds["base_accuracy"].sel(input="clean")
    doctored = sweep_ds.copy(deep=True)
    clean = doctored["accuracy"].sel(input="clean")
    doctored["accuracy"].loc[{"input": "adversarial"}] = xr.where(clean["layer"] == "blocks.0.conv", 0.0, clean * ratio)
    ds = selective_backprop(start, TRAIN, TEST, tmp_path / "run", 2, x=x, y=y, sweep_ds=doctored, epsilons=3,
                            device="cpu", progress=False)
    assert ds.attrs["frozen_layers"] == "blocks.0.conv"
    assert list(ds["layer"].values) == ["blocks.0.conv", "blocks.1.conv", "fc"]
    assert list(ds["frozen"].values) == [True, False, False]
    assert ds["accuracy"].dims == ("training", "epoch", "epsilon")
    assert list(ds["training"].values) == ["selective", "regular"] and list(ds["epoch"].values) == [2, 3]
    np.testing.assert_allclose(ds["epsilon"].values, [0.0, 0.25, 0.5])
    before = state(start)
    for epoch in (2, 3):
        path = tmp_path / "run" / "selective" / "checkpoints/smallcnn/toy/seed3" / f"epoch{epoch:03d}.pt"
        assert torch.equal(state(path)["blocks.0.conv.weight"], before["blocks.0.conv.weight"])
        model = load_checkpoint(path)[0]
        assert ds["accuracy"].sel(training="selective", epoch=epoch, epsilon=0.0) == accuracy(model, x, y)
        assert ds["accuracy"].sel(training="selective", epoch=epoch, epsilon=0.5) == \
            accuracy(model, fr.fgsm(model, x, y, 0.5), y)
    regular = tmp_path / "run" / "regular" / "checkpoints/smallcnn/toy/seed3" / "epoch003.pt"
    assert not torch.equal(state(regular)["blocks.0.conv.weight"], before["blocks.0.conv.weight"])
    assert ds["start_accuracy"].sel(epsilon=0.0) == accuracy(load_checkpoint(start)[0], x, y)
    assert ds.attrs["start_epoch"] == 1 and ds.attrs["seed"] == 3 and "git_commit" in ds.attrs


def test_selective_backprop_runs_its_own_sweep(tmp_path, start):
    x, y = TEST.tensors
    ds = selective_backprop(start, TRAIN, TEST, tmp_path / "run", 1, A=2, epsilon=0.5, tol=0.0, epsilons=[0.0, 0.5],
                            device="cpu", progress=False)
    expected = fr.sweep(load_checkpoint(start)[0], x, y, A=2, filters=("h1",), include_global=False, epsilon=0.5,
                        progress=False)
    table = fr.scores(expected)
    np.testing.assert_array_equal(ds["score"].values, table["r_e"].values)
    assert ds.attrs["frozen_layers"].split(",") == (fragile_layers(table, tol=0.0) or [""])
    assert ds.attrs["A"] == 2 and ds.attrs["n_test"] == len(y)
