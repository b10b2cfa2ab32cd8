"""Shared fixtures: a small network trained on the real handwritten digits."""
import json

import pytest
import torch
import torch.nn.functional as F

from fragility import data, models


@pytest.fixture(scope="session")
def digits():
    """(x_train, y_train, x_test, y_test) of scikit-learn's digits, shaped like MNIST."""
    return (*data.load("digits", "train").tensors(), *data.load("digits", "test").tensors())


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A 2-block small CNN trained for a few epochs on digits (well above chance), in eval mode."""
    x, y = digits[0], digits[1]
    gen = torch.Generator().manual_seed(0)
    model = models.build("smallcnn", 1, 10, seed=0, depth=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture
def one_thread():
    """Small networks run fastest on one thread, and busy shared CPUs make multi-threaded runs crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def test_set(digits):
    """60 test digits (x, y)."""
    return digits[2][:60], digits[3][:60]


def untimed(ds):
    """`ds` without the attributes that time its computation, which differ from run to run."""
    return ds.drop_attrs(deep=False).assign_attrs({k: v for k, v in ds.attrs.items()
                                                   if k not in ("seconds", "train_seconds")})


TINY_RUN = {
    "name": "tiny", "description": "the smallest run that draws every figure and study",
    "models": {"smallcnn": None, "resnet18": {"seeds": [0], "epochs": [1, 2]}}, "datasets": ["digits"],
    "seeds": [0, 1], "epochs": [1, 2], "every": 1, "n_test": 100, "A": 4, "filters": ["h1", "h2", "h3"],
    "attack": "fixed", "epsilon": "auto", "ratio": 0.5, "batch_size": 200, "train_batch_size": 50, "lr": 0.003,
    "studies": {"selective": {"epoch": 2, "epochs": 2, "every": 1, "levels": 4}, "batchnorm": {"n_train": 200},
                "neurons": {}, "removal": {"p": [0.0, 0.5, 0.7, 1.0], "draws": 2},
                "depth": {"depths": [1, 2], "epochs": 6, "A": 2, "local": False, "magnitudes": [0.0, 0.2, 0.5]},
                "conventions": {}},
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(profile, results folder) of a tiny profile run once per session: smallcnn (2 seeds) and ResNet-18 on
    digits, two checkpoints each, and every study."""
    from fragility import pipeline, profiles

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        profile = profiles.parse_profile(TINY_RUN)
        results = tmp_path_factory.mktemp("tiny-run")
        pipeline.run(profile, results, progress=False)
    finally:
        torch.set_num_threads(threads)
    return profile, results


SMALL = {"name": "small", "description": "the smallest run with every kind of file", "models": ["smallcnn"],
         "datasets": ["digits"], "seeds": [0], "epochs": [1, 2], "every": 1, "n_test": 100, "A": 2,
         "filters": ["h1"], "attack": "fixed", "epsilon": "auto", "ratio": 0.5, "batch_size": 500,
         "train_batch_size": 50, "lr": 0.003, "depth": 2, "threads": 1}


def profile_file(folder, **changes) -> str:
    """The path of SMALL with `changes` as a profile file in `folder`."""
    path = folder / "small.yaml"
    path.write_text(json.dumps({**SMALL, **changes}))  # JSON is YAML
    return str(path)


@pytest.fixture(scope="session")
def small(tmp_path_factory):
    """(profile, results folder) of SMALL run once per session (a few seconds): checkpoints, an ε record, response
    units and the owner record."""
    from fragility import pipeline, profiles

    profile = profiles.parse_profile(SMALL)
    results = tmp_path_factory.mktemp("small") / "results"
    pipeline.run(profile, results, progress=False)
    return profile, results
