"""Extending fragility from outside the package: an attack, a stress, a model and a data set defined in a module of
their own, registered, and used through `fr.sweep`, the oracle, profiles and `fragility.pipeline.run`."""
import importlib.util
import sys

import numpy as np
import pytest
import torch
from torch import nn

import fragility as fr
from fragility import FragilityError, data, models, pipeline, profiles, store, training
from fragility.attacks import ATTACKS
from fragility.stresses import STRESSES, Weights

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = '''
"""A user's own attack and stress, each one class and one registration."""
from dataclasses import dataclass

from fragility.attacks import Attack, register_attack, sign_step
from fragility.stresses import Stress, register_stress


@register_attack("toy-steps")
@dataclass(frozen=True)
class HalfSteps(Attack):
    """Two sign steps of ε/2, without projection."""

    def perturb(self, gradient, x, index):
        half = sign_step(x, gradient(x), self.epsilon / 2)
        return sign_step(half, gradient(half), self.epsilon / 2)


@register_stress("toy-prune")
@dataclass(frozen=True)
class MagnitudePrune(Stress):
    """Removes the weights with |θ| ≤ α · max |θ| over the unit."""

    def keep(self, theta, i, A, lo, hi, layer):
        return theta.abs() > i / A * max(abs(lo), abs(hi))
'''


@pytest.fixture
def toy(tmp_path):
    """The module above, written under tmp_path and imported; what it registered is unregistered after."""
    path = tmp_path / "my_extensions.py"
    path.write_text(TOY)
    spec = importlib.util.spec_from_file_location("my_extensions", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["my_extensions"] = module
    spec.loader.exec_module(module)
    yield module
    ATTACKS.pop("toy-steps", None)
    STRESSES.pop("toy-prune", None)
    sys.modules.pop("my_extensions", None)


def test_a_toy_attack_and_stress_sweep_like_the_shipped_ones(toy, trained_cnn, test_set):
    x, y = test_set
    assert ATTACKS["toy-steps"] is toy.HalfSteps and STRESSES["toy-prune"] is toy.MagnitudePrune
    swept = {}
    for crafted in ("fixed", "adaptive"):
        options = dict(A=3, filters=["h1", "toy-prune"], attack=toy.HalfSteps(0.2), crafted=crafted, batch_size=25,
                       progress=False)
        fast, plain = fr.sweep(trained_cnn, x, y, **options), fr.sweep_naive(trained_cnn, x, y, **options)
        np.testing.assert_array_equal(fast["accuracy"].values, plain["accuracy"].values)
        np.testing.assert_array_equal(fast["n_filtered"].values, plain["n_filtered"].values)
        assert fast.attrs["attack_name"] == "toy-steps" and fast.attrs["crafted"] == fast.attrs["attack"] == crafted
        swept[crafted] = fast
    assert list(fast["filter"].values) == ["h1", "toy-prune"]
    # the stress removes what it says: |θ| ≤ α · max |θ| of the layer
    w = trained_cnn.get_submodule("fc").weight.detach()
    expected = [int((w.abs() <= i / 3 * float(w.abs().max())).sum()) for i in range(4)]
    np.testing.assert_array_equal(fast["n_filtered"].sel(layer="fc", filter="toy-prune").values, expected)
    # the attack is what it says: two half steps, and it is not FGSM
    adv = toy.HalfSteps(0.2)(trained_cnn, x, y)
    half = fr.FGSM(0.1)(trained_cnn, x, y)
    assert torch.equal(adv, fr.FGSM(0.1)(trained_cnn, half, y)) and not torch.equal(adv, fr.FGSM(0.2)(trained_cnn, x,
                                                                                                        y))
    # by name, with the sweep's ε
    by_name = fr.sweep(trained_cnn, x, y, A=3, filters="toy-prune", attack="toy-steps", epsilon=0.2, batch_size=25,
                       progress=False)
    np.testing.assert_array_equal(by_name["accuracy"].values,
                                  swept["fixed"].sel(filter=["toy-prune"])["accuracy"].values)


def test_a_toy_attack_and_stress_through_a_profile_and_the_pipeline(toy, tmp_path):
    raw = {"name": "toy", "description": "a registered attack and stress", "models": ["smallcnn"],
           "datasets": ["digits"], "seeds": [0], "epochs": [1], "every": 1, "n_test": 60, "A": 2,
           "filters": ["h1", "toy-prune"], "attack": {"name": "toy-steps"}, "crafted": "adaptive", "epsilon": 0.2,
           "ratio": 0.5, "batch_size": 30, "train_batch_size": 100, "lr": 0.003, "threads": 1}
    profile = profiles.parse_profile(raw)
    assert profile.method == (("name", "toy-steps"),) and profile.attack == "adaptive"
    assert profile.sweep_settings["method"] == {"name": "toy-steps"}
    results = tmp_path / "results"
    pipeline.run(profile, results, progress=False)
    unit = store.read_unit(store.unit_path(results, "smallcnn", "digits", 0, 1))
    assert list(unit["filter"].values) == ["h1", "toy-prune"] and unit.attrs["attack_name"] == "toy-steps"
    net = training.load_checkpoint(training.checkpoint_path(results, "smallcnn", "digits", 0, 1), "cpu")[0]
    test = data.load("digits", "test")
    x, y = data.test_subset(test, 60)
    again = fr.sweep(net, x, y, A=2, filters=["h1", "toy-prune"], attack=toy.HalfSteps(), crafted="adaptive",
                     epsilon=0.2, batch_size=30, progress=False)
    np.testing.assert_array_equal(unit["accuracy"].values, again["accuracy"].values)


def test_profiles_take_attacks_with_parameters_and_every_stress():
    base = {"name": "p", "description": "", "models": ["smallcnn"], "datasets": ["digits"], "seeds": [0],
            "epochs": [1], "every": 1, "n_test": 60, "A": 2, "filters": ["h1", "h2", "h3", "gaussian", "random"],
            "attack": "fgsm", "epsilon": 0.1, "ratio": 0.5, "batch_size": 30, "train_batch_size": 100, "lr": 0.003}
    fgsm = profiles.parse_profile(base)
    assert fgsm.method == (("name", "fgsm"),) and "method" not in fgsm.sweep_settings
    assert fgsm.sweep_settings["filters"] == ("h1", "h2", "h3", "gaussian", "random")
    assert profiles.parse_profile({**base, "attack": {"name": "fgsm", "clip": None}}).sweep_hash == fgsm.sweep_hash
    pgd = profiles.parse_profile({**base, "attack": {"name": "pgd", "steps": 5, "random_start": True}})
    assert pgd.sweep_settings["method"] == {"name": "pgd", "random_start": True, "steps": 5}
    assert pgd.adversary() == fr.PGD(steps=5, random_start=True) and pgd.attack == "fixed"
    default = profiles.parse_profile({**base, "attack": {"name": "pgd", "steps": 10}})  # 10 is PGD's default
    assert default.method == (("name", "pgd"),) and default.sweep_hash == profiles.parse_profile(
        {**base, "attack": "pgd"}).sweep_hash != fgsm.sweep_hash
    for attack, match in [({"name": "pgd", "steps": 0}, "attack.steps must be"),
                          ({"name": "pgd", "stride": 2}, "unknown parameter"),
                          ({"name": "fgsm", "epsilon": 0.1}, "its ε is the profile's `epsilon`"),
                          ({"name": "bim"}, "attack must be"), ("bim", "attack must be")]:
        with pytest.raises(FragilityError, match=match):
            profiles.parse_profile({**base, "attack": attack})
    with pytest.raises(FragilityError, match="filters must be"):
        profiles.parse_profile({**base, "filters": ["h1", "lowpass"]})


@pytest.fixture
def registered():
    """Unregisters the toy model and data set after the test."""
    yield
    for table, names in ((models.MODELS, ("toy-mlp",)), (data.DATASETS, ("toy-digits",))):
        for name in names:
            table.pop(name, None)
    models.NAMES, data.NAMES = tuple(models.MODELS), tuple(data.DATASETS)


def test_models_and_data_sets_register_from_outside(registered):
    @models.register_model("toy-mlp")
    def toy_mlp(channels, classes, **kwargs):
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * 28 * 28, 16), nn.ReLU(), nn.Linear(16, classes))

    info = data.DataInfo("anything", 1, 28, 10, (0.1307,), (0.3081,), 100, 50)

    @data.register_dataset("toy-digits", info)
    def toy_digits(split, root, download, seed):
        full = data.load("digits", split)
        keep = slice(0, 100 if split == "train" else 50)
        return full.images[keep], full.labels[keep]

    assert "toy-mlp" in models.NAMES and "toy-digits" in data.NAMES
    a, b = models.build("toy-mlp", 1, 10, seed=3), models.build("toy-mlp", 1, 10, seed=3)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    test = data.load("toy-digits", "test")
    assert len(test) == 50 and test.info.name == "toy-digits" and data.info("toy-digits").n_test == 50
    profile = profiles.parse_profile({"name": "p", "description": "", "models": ["toy-mlp"], "datasets": ["toy-digits"],
                                      "seeds": [0], "epochs": [1], "every": 1, "n_test": 50, "A": 2,
                                      "filters": ["h1"], "attack": "fixed", "epsilon": 0.1, "ratio": 0.5,
                                      "batch_size": 50, "train_batch_size": 50, "lr": 0.003})
    assert profile.train_config("toy-mlp", "toy-digits", 0).classes == 10
    with pytest.raises(FragilityError, match="already registered"):
        models.register_model("smallcnn")(toy_mlp)
    with pytest.raises(FragilityError, match="needs its DataInfo"):
        data.register_dataset("other", {"channels": 1})
    with pytest.raises(FragilityError, match="unknown model"):
        models.build("vgg16")


def test_stress_weights_reach_every_layer_of_the_unit(toy):
    theta = {"a": torch.tensor([0.1, -2.0, 0.5]), "b": torch.tensor([4.0, -0.2])}
    unit = Weights.of(theta)
    out = toy.MagnitudePrune().weights(unit, 1, 4)  # removes |θ| ≤ 1
    assert torch.equal(out["a"], torch.tensor([0.0, -2.0, 0.0])) and torch.equal(out["b"], torch.tensor([4.0, 0.0]))
    assert toy.MagnitudePrune().effect(unit, 1, 4)[0] == 3
