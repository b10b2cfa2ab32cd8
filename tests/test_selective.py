"""Selective backpropagation (Fig. 12): the readings' frozen layers, real freezing, regular training as the original
run continued exactly, ε_E, the gains and claim P8 decided with its interval on hand-made curves."""
import copy

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from test_studies import decided, evidence, nested
from torch.utils.data import TensorDataset

import fragility as fr
from fragility import FragilityError, largest_epsilon, verdicts
from fragility.attacks import accuracy, epsilon_curve
from fragility.studies.selective import (
    continue_training,
    curves,
    frozen_layers,
    gains,
    original_run,
    resampled,
    selective_backprop,
)
from fragility.training import TrainConfig, load_checkpoint, train

CLASSES = 4


def toy(n=120, size=16, seed=0):
    """A learnable problem: the class sets the mean brightness of a noisy image."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(CLASSES, (n,), generator=g)
    levels = torch.linspace(-2, 2, CLASSES)[labels].view(n, 1, 1, 1)
    return TensorDataset(levels + 0.5 * torch.randn(n, 1, size, size, generator=g), labels)


TRAIN, TEST = toy(), toy(n=40, seed=1)
LAYERS = ["blocks.0.conv", "blocks.1.conv", "fc"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """The epoch-1 checkpoint of a small smallcnn run on the toy problem (above chance; checkpoints every epoch)."""
    torch.set_num_threads(1)
    config = TrainConfig(model="smallcnn", dataset="toy", seed=3, epochs=1, every=1, batch_size=10, classes=CLASSES)
    return train(config, TRAIN, TEST, tmp_path_factory.mktemp("start"), progress=False)[-1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The same run as `start`'s, trained for 3 epochs: its checkpoints at epochs 1, 2, 3."""
    torch.set_num_threads(1)
    config = TrainConfig(model="smallcnn", dataset="toy", seed=3, epochs=3, every=1, batch_size=10, classes=CLASSES)
    return train(config, TRAIN, TEST, tmp_path_factory.mktemp("run"), progress=False)


def state(path):
    return load_checkpoint(path)[0].state_dict()


def table(values, names=None):
    """A per-layer score table with r_e `values` (and a `global` row that no reading may freeze)."""
    names = names or [f"l{i}" for i in range(len(values))]
    return xr.Dataset({"r_e": ("layer", list(values) + [-9.0]), "r_x": ("layer", [0.5] * len(values) + [9.0])},
                      coords={"layer": names + ["global"]})


# frozen_layers


def test_frozen_layers_readings_at_the_tolerance():
    t = table([-0.03, -0.02, 0.0, 0.02, 0.021, -0.5, 0.4], ["a", "b", "c", "d", "e", "f", "g"])
    assert frozen_layers(t, "prose") == ["e", "g"]  # r_e > +τ, strictly: exactly +τ is robust
    assert frozen_layers(t, "equation") == ["a", "f"]  # r_e < −τ, strictly: exactly −τ is robust; global never
    assert frozen_layers(t, "prose", tol=0.0) == ["d", "e", "g"]
    assert frozen_layers(t, "equation", tol=0.1) == ["f"]
    assert frozen_layers(t, "prose", score="r_x") == ["a", "b", "c", "d", "e", "f", "g"]
    with pytest.raises(FragilityError, match="reading"):
        frozen_layers(t, "fragile")


@settings(max_examples=80, deadline=None)
@given(values=st.lists(st.one_of(st.floats(-1, 1), st.sampled_from([-0.05, 0.05, 0.0])), min_size=1, max_size=8),
       tol=st.sampled_from([0.0, 0.02, 0.05, 0.3]))
def test_frozen_layers_partition_layers_by_sign(values, tol):
    t = table(values)
    prose, equation = frozen_layers(t, "prose", tol=tol), frozen_layers(t, "equation", tol=tol)
    names = [f"l{i}" for i in range(len(values))]
    assert prose == [n for n, v in zip(names, values) if v > tol]
    assert equation == [n for n, v in zip(names, values) if v < -tol]
    robust = [n for n, v in zip(names, values) if abs(v) <= tol]
    assert sorted(prose + equation + robust) == sorted(names)  # a partition: each layer in exactly one class
    assert "global" not in prose + equation


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 9), data=st.data(), seed=st.integers(0, 2**31))
def test_random_reading_draws_count_distinct_layers(n, data, seed):
    count = data.draw(st.integers(0, n))
    t = table(np.linspace(-1, 1, n))
    names = [f"l{i}" for i in range(n)]
    drawn = frozen_layers(t, "random", seed=seed, count=count)
    assert len(drawn) == count and len(set(drawn)) == count
    assert set(drawn) <= set(names)  # never `global`
    assert drawn == [name for name in names if name in drawn]  # in the table's order
    assert frozen_layers(t, "random", seed=seed, count=count) == drawn  # reproducible


def test_random_reading_depends_on_the_seed():
    t = table(np.zeros(12))
    draws = {tuple(frozen_layers(t, "random", seed=s, count=4)) for s in range(6)}
    assert len(draws) > 1


# continue_training


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


@pytest.mark.parametrize("every, names", [(None, ["epoch002.pt", "epoch003.pt", "epoch004.pt"]),
                                          (2, ["epoch002.pt", "epoch004.pt"]), (3, ["epoch003.pt", "epoch004.pt"])])
def test_continue_training_every_sets_the_checkpoints(tmp_path, start, every, names):
    paths = continue_training(start, TRAIN, TEST, tmp_path, 3, every=every, freeze=["fc"], progress=False)
    assert [p.name for p in paths] == names and all(p.is_file() for p in paths)
    assert sorted(p.name for p in paths[0].parent.glob("*.pt")) == names
    assert [torch.load(p, weights_only=True)["epoch"] for p in paths] == [int(n[5:8]) for n in names]


def test_continuing_with_nothing_frozen_repeats_the_original_run_bit_for_bit(tmp_path, run):
    again = continue_training(run[0], TRAIN, TEST, tmp_path, 2, progress=False)
    assert [p.name for p in again] == ["epoch002.pt", "epoch003.pt"]
    for continued, original in zip(again, run[1:]):
        a, b = state(continued), state(original)
        assert all(torch.equal(a[k], b[k]) for k in b)  # weights and BatchNorm statistics


def test_original_run_names_the_checkpoints_continued_training_would_write(tmp_path, run, start):
    assert original_run(run[0], 2) == run[1:]
    assert original_run(run[1], 1) == run[2:]
    assert original_run(run[0], 2, every=2) == run[1:]  # epoch 2 (a multiple of 2) and the last, 3
    assert original_run(run[0], 3) is None  # epoch 4 was never trained
    assert original_run(start, 1) is None  # a run trained for one epoch only has nothing to reuse
    assert original_run(run[0], 1, every=5) == [run[1]]  # the last epoch is always saved


# largest_epsilon and epsilon_curve


def test_largest_epsilon_is_the_edge_of_chance(trained_cnn, digits):
    pick = torch.cat([torch.nonzero(digits[3] == k)[:12, 0] for k in range(10)])  # 12 of each class: chance 1/10
    x, y = digits[2][pick], digits[3][pick]
    model = copy.deepcopy(trained_cnn).train()
    eps = largest_epsilon(model, x, y, batch_size=60)
    assert model.training  # the caller's mode is restored
    model.eval()
    classes = 10

    def above(e):
        return accuracy(model, fr.fgsm(model, x, y, e), y) * classes > 1

    assert 0 < eps < 4.0
    assert above(eps) and not above(eps + 1e-7)  # above chance at ε_E, at or below just past it
    assert all(above(f * eps) for f in (0.0, 0.3, 0.6, 0.9))  # and above chance all the way up to it
    with pytest.raises(FragilityError, match="max_epsilon"):
        largest_epsilon(model, x, y, max_epsilon=eps / 2)  # never reaches chance up to there


def test_largest_epsilon_refuses_a_model_at_chance():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)
    x, y = torch.randn(50, 4), torch.arange(50) % 10  # every input classified 0: accuracy exactly 1/10
    with pytest.raises(FragilityError, match="chance"):
        largest_epsilon(model, x, y)


class Collapse(nn.Module):
    """Classifies one-hot inputs by their hot coordinate; FGSM of any ε > 0.01 pushes every input to class 5 (a
    detector of Σ|x| > 1 with zero gradient at clean inputs, so FGSM's direction comes from the classifier)."""

    def forward(self, x):
        x = x.flatten(1)
        logits = 5 * x
        detector = 100 * torch.relu(x.abs().sum(1) - 1)
        return logits + detector[:, None] * nn.functional.one_hot(torch.tensor(5), 10)


def test_largest_epsilon_when_fgsm_sends_everything_to_one_class():
    """FGSM that sends every input to one class has brought the network to chance, even when that class holds
    more than 1/K of the test labels (11 % here, as class 5 holds 11–13 % of the profiles' digits subsets)."""
    y = torch.tensor([5] * 11 + [k for k in range(10) if k != 5] * 9 + [0, 1, 2, 3, 4, 6, 7, 8])
    x = nn.functional.one_hot(y, 10).float()
    model = Collapse()
    assert accuracy(model, x, y) == 1.0
    assert all(accuracy(model, fr.fgsm(model, x, y, e), y) == 0.11 for e in (0.0625, 1.0, 4.0))  # all class 5
    eps = largest_epsilon(model, x, y)
    assert 0 < eps < 0.0625 and accuracy(model, fr.fgsm(model, x, y, eps), y) > 0.11


def test_epsilon_curve_against_fgsm(trained_cnn, digits):
    x, y = digits[2][:80], digits[3][:80]
    model = copy.deepcopy(trained_cnn).train()
    curve = epsilon_curve(model, x, y, epsilons=[0.0, 0.1, 0.25], batch_size=30)
    assert model.training  # the caller's mode is restored
    model.eval()
    assert curve.dims == ("epsilon",) and list(curve["epsilon"].values) == [0.0, 0.1, 0.25]
    assert curve.sel(epsilon=0.0) == accuracy(model, x, y)
    for eps in (0.1, 0.25):
        assert curve.sel(epsilon=eps) == accuracy(model, fr.fgsm(model, x, y, eps), y)
    assert curve.sel(epsilon=0.25) < curve.sel(epsilon=0.0)
    with pytest.raises(FragilityError, match="epsilons"):
        epsilon_curve(model, x, y, epsilons=[0.1, -0.1])


# selective_backprop


def doctored(start, x, y):
    """The start checkpoint's h1 sweep with responses rewritten so that r_e is +0.5 for blocks.0.conv (prose
    freezes it), −0.5 for blocks.1.conv (the equation freezes it) and 0 for fc (robust)."""
    ds = fr.sweep(load_checkpoint(start)[0], x, y, A=2, filters=("h1",), include_global=False, epsilon=0.5,
                  progress=False)
    base = xr.DataArray([0.8, 0.4], coords={"input": ["clean", "adversarial"]})
    shape = xr.DataArray([[[1, 0.5, 0.5], [1, 1, 1]], [[1, 1, 1], [1, 0.5, 0.5]], [[1, 0.5, 0.2], [1, 0.5, 0.2]]],
                         coords={"layer": LAYERS, "input": ["clean", "adversarial"], "alpha": ds["alpha"].values},
                         dims=("layer", "input", "alpha"))
    out = ds.copy(deep=True)
    out["base_accuracy"] = base
    out["accuracy"] = (shape * base).expand_dims(filter=["h1"]).transpose(*ds["accuracy"].dims)
    return out


def test_selective_backprop_on_a_doctored_sweep(tmp_path, start):
    x, y = TEST.tensors
    sweep_ds = doctored(start, x, y)
    # a seed whose random draw of one layer is prose's, so the two must share one training
    seed = next(s for s in range(100) if frozen_layers(table([0, 0, 0], LAYERS), "random", seed=s, count=1)
                == ["blocks.0.conv"])
    ds = selective_backprop(start, TRAIN, TEST, tmp_path / "run", 2, x=x, y=y, sweep_ds=sweep_ds, levels=3, seed=seed,
                            batch_size=20, device="cpu", progress=False)
    assert ds["accuracy"].dims == ("training", "epoch", "level")
    assert list(ds["training"].values) == ["regular", "prose", "equation", "random"]
    assert list(ds["epoch"].values) == [2, 3] and list(ds["level"].values) == [0.0, 0.5, 1.0]
    assert list(ds["layer"].values) == LAYERS
    np.testing.assert_allclose(ds["score"].values, [0.5, -0.5, 0.0], atol=1e-12)
    frozen = {str(t): [str(n) for n in ds["layer"].values[ds["frozen"].sel(training=t).values]]
              for t in ds["training"].values}
    assert frozen == {"regular": [], "prose": ["blocks.0.conv"], "equation": ["blocks.1.conv"],
                      "random": ["blocks.0.conv"]}
    # the same frozen set: one training, one folder, identical curves
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["equation", "prose", "regular"]
    xr.testing.assert_identical(ds["accuracy"].sel(training="random", drop=True),
                                ds["accuracy"].sel(training="prose", drop=True))
    # ε grid: level · ε_E, ε_E the starting checkpoint's largest ε above chance
    start_model = load_checkpoint(start)[0]
    assert float(ds["epsilon_E"]) == largest_epsilon(start_model, x, y, batch_size=20)
    np.testing.assert_allclose(ds["epsilon"].values, ds["level"].values * float(ds["epsilon_E"]), rtol=1e-15)
    before = state(start)
    folder = "checkpoints/smallcnn/toy/seed3"
    for training, layer in (("regular", None), ("prose", "blocks.0.conv"), ("equation", "blocks.1.conv")):
        for epoch in (2, 3):
            path = tmp_path / "run" / training / folder / f"epoch{epoch:03d}.pt"
            for name in ("blocks.0.conv", "blocks.1.conv"):
                same = torch.equal(state(path)[f"{name}.weight"], before[f"{name}.weight"])
                assert same == (name == layer)  # frozen layers bitwise unchanged, the others trained
            model = load_checkpoint(path)[0]
            for level, eps in zip(ds["level"].values, ds["epsilon"].values):
                expected = accuracy(model, fr.fgsm(model, x, y, float(eps)), y)
                assert ds["accuracy"].sel(training=training, epoch=epoch, level=level) == expected
    for level, eps in zip(ds["level"].values, ds["epsilon"].values):
        assert ds["start_accuracy"].sel(level=level) == accuracy(start_model, fr.fgsm(start_model, x, y, float(eps)), y)
    assert ds["start_accuracy"].sel(level=0.0) > 1 / CLASSES
    assert ds.attrs["start_epoch"] == 1 and ds.attrs["epochs"] == 2 and ds.attrs["n_test"] == len(y)
    # the run has no checkpoint past epoch 1: regular training was trained again, not read
    assert not ds["reused"].any()
    # per image: each curve point is the mean of which test images the network gets right
    xr.testing.assert_equal(ds["correct"].mean("image"), ds["accuracy"])
    xr.testing.assert_equal(ds["start_correct"].mean("image"), ds["start_accuracy"])
    np.testing.assert_array_equal(ds["image"].values, np.arange(len(y)))


def test_selective_backprop_reuses_the_original_runs_checkpoints(tmp_path, run):
    """From epoch 1 of a run trained to epoch 3, regular training for 2 epochs is the run's own epochs 2 and 3 —
    read, not trained — and the curves of a frozen reading are trained."""
    x, y = TEST.tensors
    image = np.arange(100, 100 + len(y))
    ds = selective_backprop(run[0], TRAIN, TEST, tmp_path / "run", 2, x=x, y=y, sweep_ds=doctored(run[0], x, y),
                            readings="prose", levels=2, batch_size=20, device="cpu", image=image, progress=False)
    assert list(ds["training"].values) == ["regular", "prose"]
    assert ds["reused"].sel(training="regular") and not ds["reused"].sel(training="prose")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["prose"]  # nothing trained for regular
    np.testing.assert_array_equal(ds["image"].values, image)
    for epoch, path in zip((2, 3), run[1:]):
        net = load_checkpoint(path)[0]
        clean = ds["correct"].sel(training="regular", epoch=epoch, level=0.0)
        np.testing.assert_array_equal(clean.values, (net(x).argmax(1) == y).numpy())  # ε = 0: the clean inputs
        adversarial = ds["accuracy"].sel(training="regular", epoch=epoch, level=1.0)
        assert float(adversarial) == accuracy(net, fr.fgsm(net, x, y, float(ds["epsilon_E"])), y)


def test_selective_backprop_with_one_reading(tmp_path, start):
    x, y = TEST.tensors
    ds = selective_backprop(start, TRAIN, TEST, tmp_path / "run", 1, x=x, y=y, sweep_ds=doctored(start, x, y),
                            readings="equation", levels=2, batch_size=20, device="cpu", progress=False)
    assert list(ds["training"].values) == ["regular", "equation"] and list(ds["epoch"].values) == [2]
    assert list(ds["frozen"].sel(training="equation").values) == [False, True, False]
    with pytest.raises(FragilityError, match="readings"):
        selective_backprop(start, TRAIN, TEST, tmp_path / "bad", 1, x=x, y=y, sweep_ds=doctored(start, x, y),
                           readings=["negative"], progress=False)


# gains and claim P8 on hand-made curves

TRAININGS = ["regular", "prose", "equation", "random"]
N = 4000  # test images of the hand-made curves
LEVELS = [0.0, 0.5, 1.0]


def unit(prose_gain, frozen=True, level0=0.3, n=N, epoch_gain=0.0, start_epoch=1):
    """A hand-made selective unit: regular at 0.5 under attack; prose `prose_gain` above it (`epoch_gain` more at
    epoch 3); equation and random 0.02 below; at ε = 0 regular is at 0.9 and the others `level0` higher than under
    attack, which the gains must ignore. Per-image results of n images, nested so that replicates move together."""
    acc = np.full((4, 2, 3), 0.5)
    acc[1] += prose_gain
    acc[1, 1] += epoch_gain
    acc[2:] -= 0.02
    acc[1:, :, 0] += level0
    acc[0, :, 0] = 0.9
    correct = nested(acc, n)
    flags = np.zeros((4, 2), dtype=bool)
    flags[1, 0] = frozen
    flags[2:, 1] = True
    start = nested(np.array([0.9, 0.6, 0.3]), n)
    return xr.Dataset({"accuracy": (("training", "epoch", "level"), correct.mean(-1)),
                       "correct": (("training", "epoch", "level", "image"), correct),
                       "start_accuracy": ("level", start.mean(-1)), "start_correct": (("level", "image"), start),
                       "epsilon": ("level", np.array(LEVELS) * 0.2), "epsilon_E": ((), 0.2),
                       "frozen": (("training", "layer"), flags), "score": ("layer", [0.5, -0.5]),
                       "reused": ("training", [True, False, False, False])},
                      coords={"training": TRAININGS, "epoch": [2, 3], "level": LEVELS, "layer": ["a", "b"],
                              "image": np.arange(n)}, attrs={"start_epoch": start_epoch})


def p8(tmp_path, gains_by_seed, reading=None, **kw):
    units = {("smallcnn", "digits", s): unit(g, **kw) for s, g in enumerate(gains_by_seed)}
    ev = evidence(tmp_path, "selective", units)
    return decided(ev, "selective", "P8", "smallcnn", "digits", reading)


def test_gains_per_level_mean_over_the_checkpoints():
    # prose 0.1 above regular under attack, 0.2 more at epoch 3: the mean over checkpoints is 0.2 above; at ε = 0
    # prose is at 0.7 and 0.9 against regular's 0.9
    ds = unit(0.1, epoch_gain=0.2, level0=0.1, n=1000)
    g = gains(ds["accuracy"])
    assert g.dims == ("level",)
    np.testing.assert_allclose(g.values, [-0.1, 0.2, 0.2], atol=1e-12)
    np.testing.assert_allclose(gains(ds["accuracy"], "random").sel(level=[0.5, 1.0]).values, -0.02, atol=1e-12)
    np.testing.assert_allclose(gains(ds["accuracy"], "prose", "random").sel(level=1.0), 0.22, atol=1e-12)
    # relative: each arm divided by its own accuracy at ε = 0 first, then the mean over checkpoints
    relative = gains(ds["accuracy"], "prose", relative=True)
    np.testing.assert_allclose(float(relative.sel(level=1.0)), (0.6 / 0.7 + 0.8 / 0.9) / 2 - 0.5 / 0.9, atol=1e-12)
    np.testing.assert_allclose(float(relative.sel(level=0.0)), 0.0, atol=1e-12)


def test_resampled_curves_keep_sample_zero_as_stored(tmp_path):
    ev = evidence(tmp_path, "selective", {("smallcnn", "digits", s): unit(0.05, n=500) for s in (0, 1)})
    c = curves(ev.study("selective"), "smallcnn", "digits")
    rs = resampled(c, samples=30)
    assert set(rs["accuracy"].dims) == {"sample", "seed", "training", "epoch", "level"}
    xr.testing.assert_allclose(rs["accuracy"].sel(sample=0, drop=True).transpose(*c["accuracy"].dims),
                               c["accuracy"].astype(float))
    assert float(rs["accuracy"].sel(sample=slice(1, None)).std("sample").max()) > 0
    np.testing.assert_array_equal(rs["seed_weight"].sel(sample=0).values, [1, 1])


@pytest.mark.parametrize("prose_gain, expected", [
    ([0.05, 0.05, 0.05], "holds"),
    ([0.005, 0.005, 0.005], "differs"),  # positive everywhere but within the ±0.01 margin
    ([0.1, -0.01, -0.01], "inconclusive"),  # mean gain 0.027 > 0.01, but a replicate may draw the losing seeds only
    ([-0.05, -0.05, -0.05], "differs"),
])
def test_p8_rule(tmp_path, prose_gain, expected):
    found = p8(tmp_path, prose_gain)
    assert found.verdict == expected
    assert found.value == pytest.approx(np.mean(prose_gain), abs=1e-6)  # the ε = 0 level is left out
    assert found.low <= found.value <= found.high
    assert "3 seed(s), continued from epoch 1 for 2 checkpoint(s)" in found.evidence
    assert "layers frozen of 2 — prose 1, equation 1, random 1" in found.evidence
    assert f"mean over (0, 1]: {found.value:+.3f} [" in found.evidence


def test_p8_is_inconclusive_when_nothing_is_frozen(tmp_path):
    found = p8(tmp_path, [0.05, 0.05], frozen=False)
    assert found.verdict == "inconclusive" and np.isnan(found.value)
    assert "froze no layer" in found.evidence


@pytest.mark.parametrize("reading, expected, value", [
    (("freeze", "equation"), "differs", -0.02),  # the equation's layers: 0.02 below regular training
    (("freeze", "random"), "differs", -0.02),
    (("against", "random"), "holds", 0.07),  # prose against the random control
    (("gain", "relative"), "holds", None),
])
def test_p8_under_its_readings(tmp_path, reading, expected, value):
    found = p8(tmp_path, [0.05, 0.05], verdicts.Reading(*reading))
    assert found.verdict == expected
    if value is not None:
        assert found.value == pytest.approx(value, abs=1e-6)
    else:  # prose (0.55 under attack of 0.85 clean) against regular (0.5 of 0.9), each relative to its own clean
        assert found.value == pytest.approx(0.55 / 0.85 - 0.5 / 0.9, abs=1e-6)


@pytest.mark.parametrize("gain, expected", [((0.10, 0.03), "holds"), ((0.03, 0.10), "differs")])
def test_p9_compares_p8_on_the_panels_data_set_with_mnist(tmp_path, gain, expected):
    """P9: P8's statistic on the panel's data set minus the same on MNIST (Fig. 12a), above 0."""
    p9 = next(c for c in fr.studies.REGISTRY["selective"].claims if c.id == "P9")
    assert [p.label for p in p9.panels] == ["12b CIFAR10 vs MNIST", "12c ImageNet Tiny vs MNIST"]
    units = {("smallcnn", d, s): unit(g) for d, g in zip(("cifar10", "mnist"), gain) for s in (0, 1)}
    ev = evidence(tmp_path, "selective", units)
    found = verdicts.decision(p9, ev, verdicts.Panel("12b", "smallcnn", "cifar10", versus="mnist"))
    assert found.verdict == expected and found.value == pytest.approx(gain[0] - gain[1], abs=1e-6)
    assert found.low <= found.value <= found.high
    assert f"the P8 statistic on cifar10: {gain[0]:+.3f} [" in found.evidence
    with pytest.raises(verdicts.Untestable, match="the selective study on smallcnn and tiny-imagenet"):
        verdicts.decision(p9, ev, verdicts.Panel("12c", "smallcnn", "tiny-imagenet", versus="mnist"))


def test_p8_needs_the_study_on_the_panel(tmp_path):
    ev = evidence(tmp_path, "selective", {("smallcnn", "digits", 0): unit(0.05)})
    with pytest.raises(verdicts.Untestable, match="the selective study on resnet18 and mnist"):
        decided(ev, "selective", "P8", "resnet18", "mnist")


def test_the_summary_gives_the_prose_gain_by_level_over_regular_and_over_the_random_control(tmp_path):
    from fragility.studies.selective import summary

    ev = evidence(tmp_path, "selective", {("smallcnn", "digits", s): unit(0.05) for s in (0, 1)})
    line = next(row for row in summary(ev.study("selective")).splitlines()
                if row.startswith("- prose's raw gain by ε/ε_E, over regular | over the random control: "))
    assert "1.0: +0.050 [" in line and "| +0.070 [" in line, line  # random sits 0.02 below regular


def test_the_nearly_everything_frozen_note_counts_what_one_run_froze(tmp_path):
    """The note on a reading that freezes nearly every layer counts per seed: two seeds freezing a different one of
    two layers each froze half of them (the union over seeds, all of them, is what no run froze)."""
    from fragility.studies.selective import summary

    note = "leaves only a few to train"
    apart = {}
    for seed, layer in ((0, "a"), (1, "b")):
        ds = unit(0.05)
        ds["frozen"].loc[dict(training="prose")] = [layer == "a", layer == "b"]
        apart[("smallcnn", "digits", seed)] = ds
    assert note not in summary(evidence(tmp_path / "apart", "selective", apart).study("selective"))
    both = unit(0.05)
    both["frozen"].loc[dict(training="prose")] = [True, True]
    text = summary(evidence(tmp_path / "both", "selective", {("smallcnn", "digits", 0): both}).study("selective"))
    assert f"A reading that freezes 100% of the layers {note}" in text
