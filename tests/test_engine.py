"""The fast engine against the plain oracle, the Dataset schema, and bad input (SPEC §1–6)."""
import copy
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import fragility as fr
from fragility import FragilityError, models
from fragility.engine import filterable_layers
from ownpkg.metrics import NLL

# (model, input size, layers checked besides global): branches, downsampling, concatenations and channel shuffles
ARCHITECTURES = {
    "resnet18": (32, None),
    "resnet50": (32, ["conv1", "layer1.0.conv3", "layer1.0.downsample.0", "layer3.1.conv2", "fc"]),
    "squeezenet1_1": (48, ["features.0", "features.3.expand1x1", "features.3.expand3x3", "classifier.1"]),
    "shufflenet_v2_x1_0": (32, ["conv1.0", "stage2.0.branch1.0", "stage2.0.branch2.3", "stage3.1.branch2.5",
                                "conv5.0", "fc"]),
}


def random_network(name, size, n=6, seed=0):
    """A randomly initialised network with non-trivial BatchNorm statistics, and inputs and labels."""
    model = models.build(name, 1, 10, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    x = torch.randn(n, 1, size, size, generator=gen)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # labels the network gets right, so filtering has something to destroy
    y[::3] = (y[::3] + 1) % 10
    return model, x, y


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["fixed", "adaptive"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_engine_equals_oracle(name, attack):
    size, layers = ARCHITECTURES[name]
    model, x, y = random_network(name, size)
    options = dict(A=3, layers=layers, epsilon=0.05, attack=attack, batch_size=4, progress=False)
    fast = fr.sweep(model, x, y, **options)
    plain = fr.sweep_naive(model, x, y, **options)
    assert fast.attrs["engine"] == "graph" and plain.attrs["engine"] == "oracle"
    assert list(fast.layer.values) == list(plain.layer.values)
    assert "global" in fast.layer.values
    np.testing.assert_array_equal(fast.accuracy.values, plain.accuracy.values)
    for var in ("n_filtered", "n_params", "threshold", "base_accuracy", "epsilon"):
        np.testing.assert_array_equal(fast[var].values, plain[var].values)
    # the sweep is not trivial: filtering changes some accuracy
    assert fast.accuracy.min() < fast.base_accuracy.sel(input="clean")


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["fixed", "adaptive"])
@pytest.mark.parametrize("name", ["resnet18", "shufflenet_v2_x1_0"])
def test_engine_equals_oracle_under_other_metrics(name, attack):
    """Top-k exactly; a loss of one's own (float per-image values) up to rounding: the fixed attack sweeps a
    channels-last copy and the engine reuses the upstream part, whose convolutions round differently from the
    oracle's (measured on ResNet-18: relative differences up to 1e-4)."""
    size, layers = ARCHITECTURES[name]
    layers = layers or ["conv1", "layer2.0.downsample.0", "fc"]
    model, x, y = random_network(name, size)
    options = dict(A=3, layers=layers, epsilon=0.05, attack=attack, batch_size=4, progress=False)
    fast, plain = fr.sweep(model, x, y, metric="top3", **options), fr.sweep_naive(model, x, y, metric="top3", **options)
    np.testing.assert_array_equal(fast.top3_per_image.values, plain.top3_per_image.values)
    np.testing.assert_array_equal(fast.top3.values, plain.top3.values)
    assert fast.top3.min() < fast.base_top3.sel(input="clean")
    fast, plain = fr.sweep(model, x, y, metric=NLL, **options), fr.sweep_naive(model, x, y, metric=NLL, **options)
    for var in ("nll", "base_nll", "nll_per_image"):
        np.testing.assert_allclose(fast[var].values, plain[var].values, rtol=1e-3, atol=1e-4)
    assert fast.nll.max() > fast.base_nll.sel(input="clean")


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["fixed", "adaptive"])
def test_the_batch_statistics_reading_equals_a_plain_loop_in_training_mode(attack):
    """batchnorm="batch": the engine equals the oracle, and on clean inputs both equal the plainest loop — a copy of
    the network per threshold with h1's mask applied (Eq. 1, 7), its BatchNorm modules in training mode, evaluated
    batch by batch — while the model's own running statistics stay as they were."""
    model, x, y = random_network("resnet18", 32, n=8)
    layers, A = ["conv1", "layer2.0.downsample.0", "layer4.1.conv2", "fc"], 2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    options = dict(A=A, layers=layers, filters=("h1",), epsilon=0.05, attack=attack, batch_size=4, progress=False,
                   include_global=False)
    fast = fr.sweep(model, x, y, batchnorm="batch", **options)
    np.testing.assert_array_equal(fast["correct"].values,
                                  fr.sweep_naive(model, x, y, batchnorm="batch", **options)["correct"].values)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()) and not model.training
    for layer in layers:
        for i in range(A + 1):
            net = copy.deepcopy(model).eval()
            weight = dict(net.named_modules())[layer].weight
            with torch.no_grad():
                weight.mul_(fr.synaptic_mask(weight, "h1", i, A))
                for m in net.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.train()
                hits = torch.cat([net(xb).argmax(1) == yb for xb, yb in zip(x.split(4), y.split(4))])
            np.testing.assert_array_equal(
                fast["correct"].sel(layer=layer, filter="h1", input="clean").isel(alpha=i).values, hits.numpy(),
                err_msg=f"{layer} i={i}")
    running = fr.sweep(model, x, y, batchnorm="running", **options)  # the reading changes the answers here
    assert (running["correct"].values != fast["correct"].values).any()


def test_engine_equals_oracle_on_a_trained_network(trained_cnn, digits):
    x, y = digits[2][:60], digits[3][:60]
    for attack in ("fixed", "adaptive"):
        options = dict(A=4, epsilon=0.2, attack=attack, batch_size=30, progress=False)
        fast, plain = fr.sweep(trained_cnn, x, y, **options), fr.sweep_naive(trained_cnn, x, y, **options)
        np.testing.assert_array_equal(fast.accuracy.values, plain.accuracy.values)
        assert float(fast.accuracy.sel(input="adversarial").mean()) < float(fast.accuracy.sel(input="clean").mean())


class Shared(nn.Module):
    """One Linear called twice: filtering it must change both calls."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.mix = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        h = self.conv(x).mean((2, 3))
        return self.out(self.mix(torch.relu(self.mix(h))) + h)


class Untraceable(Shared):
    """Data-dependent control flow: FX cannot trace it, so the engine must fall back to the plain way."""

    def forward(self, x):
        h = self.conv(x).mean((2, 3))
        if h.sum() > -1e9:
            h = torch.relu(self.mix(h))
        return self.out(h)


@pytest.mark.parametrize("k", ["auto", 4])
@pytest.mark.parametrize("cls", [Shared, Untraceable])
@pytest.mark.parametrize("attack", ["fixed", "adaptive"])
def test_unusual_models_equal_oracle(cls, attack, k):
    """A layer called twice gets the K weights at both calls; an untraceable model runs the plain way, one mask per
    pass."""
    torch.manual_seed(1)
    model, x = cls(), torch.randn(20, 1, 6, 6)
    y = torch.randint(0, 3, (20,))
    options = dict(A=5, epsilon=0.3, attack=attack, progress=False)
    if cls is Untraceable:
        with pytest.warns(UserWarning, match="cannot be traced"):
            fast = fr.sweep(model, x, y, masks_per_pass=k, **options)
        assert fast.attrs["engine"] == "plain" and fast.attrs["masks_per_pass"] == 1
    else:
        fast = fr.sweep(model, x, y, masks_per_pass=k, **options)
        assert fast.attrs["masks_per_pass"] == (1 if k == "auto" else k)
    np.testing.assert_array_equal(fast.accuracy.values, fr.sweep_naive(model, x, y, **options).accuracy.values)


@pytest.mark.parametrize("cls", [Shared, Untraceable])
@pytest.mark.parametrize("attack", ["fixed", "adaptive"])
def test_unusual_models_equal_oracle_under_other_metrics(cls, attack):
    """Top-2 of 3 classes and a loss of one's own, K = 4 masks per pass where the model allows it."""
    torch.manual_seed(1)
    model, x = cls(), torch.randn(20, 1, 6, 6)
    y = torch.randint(0, 3, (20,))
    options = dict(A=5, epsilon=0.3, attack=attack, progress=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "the model cannot be traced", UserWarning)
        for metric in ("top2", NLL):
            name = fr.as_metric(metric).name
            fast = fr.sweep(model, x, y, masks_per_pass=4, metric=metric, **options)
            plain = fr.sweep_naive(model, x, y, metric=metric, **options)
            np.testing.assert_allclose(fast[name].values, plain[name].values, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(fast[f"base_{name}"].values, plain[f"base_{name}"].values, rtol=1e-5)
            if name == "top2":
                np.testing.assert_array_equal(fast.top2_per_image.values, plain.top2_per_image.values)


def test_dataset_schema_and_round_trip(trained_cnn, digits, tmp_path):
    x, y = digits[2][:60], digits[3][:60]
    ds = fr.sweep(trained_cnn, x, y, A=4, epsilon=0.1, progress=False)
    layers = filterable_layers(trained_cnn, x[:2])
    assert layers == ["blocks.0.conv", "blocks.1.conv", "fc"]
    assert list(ds.layer.values) == layers + ["global"]
    assert list(ds.filter.values) == ["h1", "h2", "h3"]
    np.testing.assert_allclose(ds.alpha.values, np.arange(5) / 4)
    assert list(ds.input.values) == ["clean", "adversarial"]
    assert ds.accuracy.dims == ("layer", "filter", "alpha", "input")
    assert ds.n_filtered.dims == ds.threshold.dims == ("layer", "filter", "alpha")
    assert ds.n_params.dims == ("layer",) and ds.base_accuracy.dims == ("input",) and ds.epsilon.dims == ()
    assert ds.n_filtered.dtype == np.int64 and ds.accuracy.dtype == np.float64
    weights = [dict(trained_cnn.named_modules())[n].weight for n in layers]
    assert list(ds.n_params.values) == [w.numel() for w in weights] + [sum(w.numel() for w in weights)]
    # h1/h2 remove everything at α = 1; the h3 windows together remove every weight exactly once
    assert (ds.n_filtered.sel(filter=["h1", "h2"], alpha=1.0) == ds.n_params).all()
    assert (ds.n_filtered.sel(filter="h3").sum("alpha") == ds.n_params).all()
    lowest = min(float(w.detach().min()) for w in weights)
    assert float(ds.threshold.sel(layer="global", filter="h1", alpha=0.0)) == lowest
    for key in ("A", "attack", "ratio", "n_test", "precision", "masks_per_pass", "fragility_version",
                "torch_version", "torchvision_version", "git_commit"):
        assert key in ds.attrs
    assert ds.attrs["A"] == 4 and ds.attrs["n_test"] == 60 and ds.attrs["attack"] == "fixed"
    assert ds.attrs["precision"] == "float32" and ds.attrs["masks_per_pass"] >= 1
    path = tmp_path / "sweep.nc"
    ds.to_netcdf(path, engine="h5netcdf")
    back = xr.open_dataset(path, engine="h5netcdf").load()
    xr.testing.assert_identical(back, ds)


def test_layers_selection_and_auto_epsilon(trained_cnn, digits):
    x, y = digits[2][:200], digits[3][:200]
    ds = fr.sweep(trained_cnn, x, y, A=2, layers=["fc"], include_global=False, filters=["h2"], progress=False)
    assert list(ds.layer.values) == ["fc"] and list(ds.filter.values) == ["h2"]
    ratio = float(ds.base_accuracy.sel(input="adversarial") / ds.base_accuracy.sel(input="clean"))
    assert abs(ratio - 0.5) <= 0.02 and float(ds.epsilon) > 0


def test_dataloader_input_equals_tensor_input(trained_cnn, digits):
    x, y = digits[2][:40], digits[3][:40]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    a = fr.sweep(trained_cnn, x, y, A=2, epsilon=0.1, progress=False)
    b = fr.sweep(trained_cnn, loader, A=2, epsilon=0.1, progress=False)
    np.testing.assert_array_equal(a.accuracy.values, b.accuracy.values)


def test_sweep_leaves_the_model_untouched(trained_cnn, digits):
    before = {k: v.clone() for k, v in trained_cnn.state_dict().items()}
    trained_cnn.train()
    fr.sweep(trained_cnn, digits[2][:20], digits[3][:20], A=2, epsilon=0.1, attack="adaptive", progress=False)
    assert trained_cnn.training
    trained_cnn.eval()
    after = trained_cnn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bfloat16_precision_is_close(trained_cnn, digits):
    x, y = digits[2][:100], digits[3][:100]
    exact = fr.sweep(trained_cnn, x, y, A=4, epsilon=0.1, progress=False)
    low = fr.sweep(trained_cnn, x, y, A=4, epsilon=0.1, precision="bfloat16", progress=False)
    assert low.attrs["precision"] == "bfloat16"
    assert float(abs(low.accuracy - exact.accuracy).max()) <= 0.1


def nan_model():
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        m[1].weight[0, 0] = float("nan")
    return m


def zero_model():
    m = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    nn.init.zeros_(m[1].weight)
    return m


X4, Y4 = torch.randn(8, 4), torch.arange(8) % 3


@pytest.mark.parametrize("model, x, y, kwargs, match", [
    (nn.Sequential(nn.Flatten(), nn.ReLU()), X4, Y4, {}, "no Conv2d or Linear"),
    (zero_model(), X4, Y4, {}, "all zero"),
    (nan_model(), X4, Y4, {}, "NaN or Inf"),
    (nn.Linear(4, 3), X4, Y4, {"A": 0}, "A must be"),
    (nn.Linear(4, 3), torch.randn(8, 5), Y4, {}, "rejects inputs of shape"),
    (nn.Linear(4, 3), X4, Y4 + 3, {}, "labels must lie in 0..2"),
    (nn.Linear(4, 3), X4, Y4, {"filters": ["h1", "lowpass"]}, "filters must be a non-empty list of distinct names"),
    (nn.Linear(4, 3), X4, Y4, {"filters": ["h1", "h1"]}, "filters must be a non-empty list of distinct names"),
    (nn.Linear(4, 3), X4, Y4, {"layers": ["fc9"]}, "unknown layer"),
    (nn.Linear(4, 3), X4, Y4, {"attack": "bim"}, "attack must be an attack"),
    (nn.Linear(4, 3), X4, Y4, {"attack": "adaptive", "crafted": "fixed"}, "contradicts crafted"),
    (nn.Linear(4, 3), X4, Y4, {"crafted": "later"}, "crafted must be one of"),
    (nn.Linear(4, 3), X4, Y4, {"attack": fr.PGD(0.2), "epsilon": 0.1}, "contradicts the attack's own"),
    (nn.Linear(4, 3), X4, Y4, {"include_global": "no"}, "include_global must be True or False"),
    (nn.Linear(4, 3), X4, Y4, {"progress": 1}, "progress must be True or False"),
    (nn.Linear(4, 3), X4, Y4, {"precision": "float16"}, "precision must be one of 'float32', 'tf32', 'bfloat16'"),
    (nn.Linear(4, 3), X4, Y4, {"masks_per_pass": 0}, "masks_per_pass must be"),
    (nn.Linear(4, 3), X4, Y4, {"epsilon": -1.0}, "epsilon must be"),
    (nn.Linear(4, 3), X4, Y4[:5], {}, "y must be a 1-D tensor of 8 integer class labels"),
    (nn.Linear(4, 3), X4, None, {}, "labels y are missing"),
])
def test_bad_input_raises_one_clear_error(model, x, y, kwargs, match):
    with pytest.raises(FragilityError, match=match):
        fr.sweep(model, x, y, **{"epsilon": 0.1, "progress": False, **kwargs})
