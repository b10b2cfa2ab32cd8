"""Your own network through the whole pipeline: models and data sets named by import path in a profile (the package
tests/ownpkg, outside fragility), networks trained elsewhere (checkpoints), layers chosen by type and name pattern —
run, status, verify, a Dask run, provenance — and the engine against the oracle on Conv1d and Embedding layers."""
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
import yaml

import fragility as fr
from fragility import imports, models, pipeline, profiles, store, training, verification
from fragility.errors import FragilityError
from fragility.layers import Layers, as_layers
from ownpkg import data as own_data
from ownpkg import models as own_models

ROOT = Path(__file__).resolve().parents[1]
MINE = ROOT / "tests" / "ownpkg" / "mine.yaml"
OWN = yaml.safe_load(MINE.read_text())
OLDER = "455c984"  # the integration commit whose built-in hashes the stored results carry

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def registries():
    """What this module's profiles register is unregistered after it."""
    before = (dict(models.MODELS), set(models.OWN_INIT), dict(fr.data.DATASETS), dict(imports._registered))
    yield
    for registry, saved in zip((models.MODELS, models.OWN_INIT, fr.data.DATASETS, imports._registered), before):
        registry.clear()
        registry.update(saved)
    models.NAMES, fr.data.NAMES = tuple(models.MODELS), tuple(fr.data.DATASETS)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def own(**changes) -> dict:
    """The profile of tests/ownpkg/mine.yaml with `changes`."""
    return {**OWN, **changes}


def trained_wave(width=4, seed=0):
    """A wave network trained on the waves' training set (well above chance on its test set), in eval mode."""
    train, test = own_data.waves()
    torch.manual_seed(seed)
    net = own_models.wave(width=width)
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(net(train.tensors[0]), train.tensors[1]).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The profile of mine.yaml, run in this process: (profile, results folder)."""
    torch.set_num_threads(1)
    profile = profiles.load_profile(MINE)
    results = tmp_path_factory.mktemp("own")
    pipeline.run(profile, results, progress=False)
    return profile, results


# Profiles: each bad case is one line naming the key.

BAD = [
    ({"models": {"wave": {"factory": "ownpkg.models.wave"}}}, "models.wave.factory must be an import path"),
    ({"models": {"wave": {"factory": "nosuchpackage.models:build"}}}, "cannot import 'nosuchpackage.models'"),
    ({"models": {"wave": {"factory": "ownpkg.models:nope"}}}, "models.wave.factory: 'ownpkg.models' has no attribute"),
    ({"models": {"wave": {"factory": "ownpkg.models:NOT_CALLABLE"}}}, "is a int, not a function"),
    ({"models": {"wave": {"factory": "ownpkg.models:not_a_network"}}}, "returned dict, not a torch.nn.Module"),
    ({"models": {"wave": {"factory": "ownpkg.models:broken"}}}, "models.wave: .* failed \\(ValueError: this factory"),
    ({"models": {"wave": {"factory": "ownpkg.models:wave", "kwargs": [4]}}}, "models.wave.kwargs must be a mapping"),
    ({"models": {"wave": {"kwargs": {"width": 4}}}}, "models.wave.kwargs is given without a factory"),
    ({"models": {"resnet18": {"factory": "ownpkg.models:wave"}}}, "models.resnet18: 'resnet18' is already a model"),
    ({"models": {"wave": {"factory": "ownpkg.models:wave", "kwargs": {"channels": 3}}}},
     "models.wave cannot take the inputs of waves"),
    ({"models": {"wave": {"factory": "ownpkg.models:wave", "kwargs": {"classes": 5}}}},
     r"models.wave gives \(2, 5\) .* shape \(batch, 3\)"),
    ({"models": {"wave": {"factory": "ownpkg.models:wave", "colour": "red"}}}, "models.wave has unknown key"),
    ({"datasets": {"waves": {"factory": "ownpkg.data:one_set", "classes": 3}}}, "must return a pair"),
    ({"datasets": {"waves": {"factory": "ownpkg.data:waves"}}}, "datasets.waves.classes must be"),
    ({"datasets": {"waves": {"factory": "ownpkg.data:unlabelled", "classes": 3}}}, "Dataset of \\(x, label\\) items"),
    ({"datasets": {"waves": {"factory": "ownpkg.data:waves", "classes": 2}}},
     r"models.wave gives \(2, 3\) for 2 inputs of waves: it must give class scores of shape \(batch, 2\)"),
    ({"datasets": {"waves": "ownpkg.data:waves"}}, "datasets.waves must be null .* or a mapping with factory"),
    ({"datasets": {"digits": {"factory": "ownpkg.data:waves", "classes": 3}}}, "'digits' is already a data set"),
    ({"layers": {"types": ["Conv1D"]}}, "layers.types: 'Conv1D' is neither a torch.nn module class"),
    ({"layers": {"types": "Conv1d", "include": "decoder.*"}}, "layers.include: 'decoder.\\*' matches no module"),
    ({"layers": {"exclude": "*.upsample.*"}}, "layers.exclude: '\\*.upsample.\\*' matches no module"),
    ({"layers": {"types": ["Conv2d"]}}, "layers \\(types Conv2d, include \\*\\) selects no layer of wave"),
    ({"layers": {"kinds": ["Conv1d"]}}, "layers has unknown key\\(s\\) kinds"),
    ({"layers": ["encoder.conv"]}, "layers must be a mapping of some of types"),
]


@pytest.mark.parametrize("changes, message", BAD, ids=[m for _, m in BAD])
def test_a_bad_profile_is_one_line_naming_the_key(changes, message):
    with pytest.raises(FragilityError, match=message) as err:
        profiles.parse_profile(own(**changes), "mine.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("mine.yaml: ")


def test_a_name_another_profile_registered_needs_its_factory():
    profiles.load_profile(MINE)
    with pytest.raises(FragilityError, match="models.wave is a model of one's own that another profile registered"):
        profiles.parse_profile(own(models=["wave"]), "mine.yaml")
    with pytest.raises(FragilityError, match="datasets.waves is a dataset of one's own that another profile"):
        profiles.parse_profile(own(datasets=["waves"]), "mine.yaml")


def bad_checkpoints(tmp_path):
    """(checkpoints value, message) for every way a model's checkpoints can be wrong."""
    good, wide, junk = tmp_path / "good.pt", tmp_path / "wide.pt", tmp_path / "junk.pt"
    torch.save(own_models.wave(width=4).state_dict(), good)
    torch.save(own_models.wave(width=8).state_dict(), wide)
    torch.save([1, 2, 3], junk)
    return [({2: str(tmp_path / "missing.pt")}, r"checkpoints\[2\]: no file .*missing.pt"),
            ({3: str(wide)}, r"checkpoints\[3\]: .*wide.pt does not fit the network \(Error"),
            ({3: str(junk)}, r"checkpoints\[3\]: .*junk.pt holds no state_dict"),
            ([str(good)], r"checkpoints lists 1 file\(s\) for the 2 epoch\(s\) \[2, 3\]"),
            ({0: str(good)}, "checkpoints must be a file, a list of files"),
            ({3: 7}, r"checkpoints\[3\] must be a file path")]


def test_bad_checkpoints_are_one_line_naming_the_key(tmp_path):
    for value, message in bad_checkpoints(tmp_path):
        entry = {"factory": "ownpkg.models:wave", "kwargs": {"width": 4}, "checkpoints": value}
        with pytest.raises(FragilityError, match=message) as err:
            profiles.parse_profile(own(models={"wave": entry}), "mine.yaml")
        assert "\n" not in str(err.value) and "models.wave.checkpoints" in str(err.value)
    entry = {"factory": "ownpkg.models:wave", "checkpoints": str(tmp_path / "good.pt")}
    with pytest.raises(FragilityError, match=r"has seeds \[0, 1\]: give it its own seeds: \[0\]"):
        profiles.parse_profile(own(models={"wave": entry}, seeds=[0, 1]), "mine.yaml")
    with pytest.raises(FragilityError, match="continues training wave, whose networks were trained elsewhere"):
        profiles.parse_profile(own(models={"wave": entry}, studies={"selective": {}}), "mine.yaml")


def test_a_profile_names_its_own_model_and_data_by_import_path():
    profile = profiles.load_profile(MINE)
    assert profile.models == ("wave",) and profile.datasets == ("waves",)
    net = models.build("wave", 2, 3, seed=0)
    assert isinstance(net, own_models.Wave) and net.encoder.conv.out_channels == 4
    with torch.random.fork_rng():  # its own initialisation, drawn from the seed, not re-initialised
        torch.manual_seed(0)
        init = own_models.wave(width=4)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), init.state_dict().values()))
    train, test = own_data.waves()
    x, y = fr.data.load("waves", "test").tensors()
    assert torch.equal(x, test.tensors[0]) and torch.equal(y, test.tensors[1])
    assert fr.data.info("waves").n_train == len(train) and fr.data.info("waves").classes == 3


def test_the_factory_and_kwargs_enter_the_training_hash_of_own_models_only():
    wide = profiles.parse_profile(own(models={"wave": {"factory": "ownpkg.models:wave", "kwargs": {"width": 8}}}))
    narrow = profiles.load_profile(MINE)
    assert wide.config_hash("wave", "waves", 0) != narrow.config_hash("wave", "waves", 0)
    assert narrow.train_config("wave", "waves", 0).origin == {
        "model": {"factory": "ownpkg.models:wave", "kwargs": {"width": 4}},
        "dataset": {"factory": "ownpkg.data:waves", "kwargs": {}, "classes": 3}}
    quick = profiles.load_profile("quick")
    model, dataset, seed = quick.runs()[0]
    config = quick.train_config(model, dataset, seed)
    assert config.origin is None and quick.config_hash(model, dataset, seed) == training.config_hash(
        {k: v for k, v in vars(config).items() if k != "origin"})
    assert "layers" not in quick.sweep_settings and "layers" in narrow.sweep_settings


def test_the_latest_profile_read_registers_a_name_and_a_task_registers_its_own():
    narrow = profiles.load_profile(MINE)
    wide = profiles.parse_profile(own(models={"wave": {"factory": "ownpkg.models:wave", "kwargs": {"width": 8}}}))
    assert models.build("wave", 2, 3).encoder.conv.out_channels == 8
    imports.ensure(narrow)
    assert models.build("wave", 2, 3).encoder.conv.out_channels == 4
    assert models.layout("wave")["head"] is torch.nn.Linear
    imports.ensure(wide)
    assert models.build("wave", 2, 3).encoder.conv.out_channels == 8
    imports.ensure(narrow)


@pytest.mark.slow
def test_builtin_hashes_match_the_older_commit(tmp_path):
    """Every shipped profile's sweep hash and training hashes are what the commit that computed the stored results
    gives (its code extracted from git and run apart)."""
    found = subprocess.run(["git", "archive", OLDER, "fragility"], cwd=ROOT, capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"commit {OLDER} is not in this checkout")
    tarfile.open(fileobj=io.BytesIO(found.stdout)).extractall(tmp_path, filter="data")
    script = ("from fragility import profiles\nfor n in profiles.shipped():\n    p = profiles.load_profile(n)\n"
              "    print(n, p.sweep_hash, *[p.config_hash(*r) for r in p.runs()])")
    run = [sys.executable, "-c", script]
    old = subprocess.run(run, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True,
                         text=True, check=True).stdout
    new = subprocess.run(run, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, check=True).stdout
    assert old.splitlines() == new.splitlines() and len(old.splitlines()) == len(profiles.shipped())


# A whole run.

def test_a_run_stores_every_unit_and_status_and_verify_agree(ran, tmp_path):
    profile, results = ran
    rows = pipeline.status(profile, results)
    assert [(r.model, r.dataset, r.seed, r.epoch, r.trained, r.swept) for r in rows] == [
        ("wave", "waves", 0, 2, True, True), ("wave", "waves", 0, 3, True, True)]
    assert pipeline.plan(profile, results) == []
    found = verification.verify(profile, results=results, scratch=tmp_path / "scratch", progress=False)
    assert len(found) == 1 and found[0].identical and found[0].same_machine


def test_units_hold_the_layers_the_profile_selects_and_record_where_the_code_came_from(ran):
    profile, results = ran
    unit = store.read_unit(store.unit_path(results, "wave", "waves", 0, 3))
    # types Conv1d and Linear, the downsample branch excluded: by hand from ownpkg.models.Wave
    assert unit["layer"].values.tolist() == ["encoder.conv", "head", "global"]
    net = training.load_checkpoint(training.checkpoint_path(results, "wave", "waves", 0, 3))[0]
    assert int(unit["n_params"].sel(layer="global")) == net.encoder.conv.weight.numel() + net.head.weight.numel()
    assert unit.attrs["model_factory"] == "ownpkg.models:wave"
    assert unit.attrs["model_factory_sha256"] == sha256(own_models.__file__)
    assert unit.attrs["dataset_factory"] == "ownpkg.data:waves"
    assert unit.attrs["dataset_factory_sha256"] == sha256(own_data.__file__)
    assert unit["test_accuracy"] > 0.5  # three classes: well above chance


@pytest.mark.slow
def test_two_workers_give_the_in_process_results(ran, tmp_path):
    from test_cluster import assert_same_results

    profile, expected = ran
    results = tmp_path / "results"
    pipeline.run(profile, results, progress=False, workers=2)
    assert_same_results(results, expected)


# Networks trained elsewhere.

def test_checkpoints_instead_of_training(tmp_path):
    nets = {2: trained_wave(seed=1), 3: trained_wave(seed=2)}
    for epoch, net in nets.items():
        torch.save({"state_dict": net.state_dict()} if epoch == 3 else net.state_dict(), tmp_path / f"e{epoch}.pt")
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(own(models={"wave": {
        "factory": "ownpkg.models:wave", "kwargs": {"width": 4}, "checkpoints": {2: "e2.pt", 3: "e3.pt"}}},
        epsilon=0.1)))
    profile = profiles.load_profile(tmp_path / "mine.yaml")  # the files are found beside the profile
    results = tmp_path / "results"
    pipeline.run(profile, results, progress=False)
    x, y = own_data.waves()[1].tensors
    for epoch, net in nets.items():
        unit = store.read_unit(store.unit_path(results, "wave", "waves", 0, epoch))
        assert unit.attrs["checkpoint_sha256"] == sha256(tmp_path / f"e{epoch}.pt")
        assert unit.attrs["checkpoint_file"] == str((tmp_path / f"e{epoch}.pt").resolve())
        direct = fr.sweep(net, x, y, A=4, epsilon=0.1, layers=OWN["layers"], batch_size=60, progress=False)
        np.testing.assert_array_equal(unit["correct"].values, direct["correct"].values)
        assert float(unit["test_accuracy"]) == (net(x).argmax(1) == y).sum().item() / len(y)
    assert all(r.trained and r.swept for r in pipeline.status(profile, results))
    with pytest.raises(FragilityError, match="trained elsewhere .* cannot be retrained"):
        verification.verify(profile, results=results, retrain=True, progress=False)
    assert verification.verify(profile, results=results, progress=False)[0].identical
    torch.save(trained_wave(seed=3).state_dict(), tmp_path / "e2.pt")  # the file changes: its results are stale
    changed = profiles.load_profile(tmp_path / "mine.yaml")
    with pytest.raises(FragilityError, match="computed with other settings"):
        pipeline.run(changed, results, progress=False)


def test_one_checkpoint_file_or_a_list_stands_for_the_models_epochs(tmp_path):
    torch.save(own_models.wave().state_dict(), tmp_path / "a.pt")
    torch.save(own_models.wave().state_dict(), tmp_path / "b.pt")
    one = profiles.parse_profile(own(models={"wave": {"factory": "ownpkg.models:wave", "checkpoints": "a.pt"}}),
                                 folder=tmp_path)
    assert one.grid("wave").epochs == (3,) and [a.epoch for a in dict(one.adopted)["wave"]] == [3]
    listed = profiles.parse_profile(own(models={"wave": {"factory": "ownpkg.models:wave",
                                                         "checkpoints": ["a.pt", "b.pt"]}}), folder=tmp_path)
    assert [(a.epoch, Path(a.path).name, a.sha256) for a in dict(listed.adopted)["wave"]] == [
        (2, "a.pt", sha256(tmp_path / "a.pt")), (3, "b.pt", sha256(tmp_path / "b.pt"))]
    torch.save(models.build("smallcnn", 1, 10, seed=5).state_dict(), tmp_path / "cnn.pt")
    plain = {**own(models={"smallcnn": None}, datasets=["digits"]), "layers": None}
    builtin = profiles.parse_profile({**plain, "models": {"smallcnn": {"checkpoints": "cnn.pt"}}}, folder=tmp_path)
    assert builtin.origin("smallcnn", "digits") == {"checkpoints": {"3": sha256(tmp_path / "cnn.pt")}}
    assert profiles.parse_profile(plain).origin("smallcnn", "digits") is None


# Layers by type and name pattern.

def test_layer_patterns_select_the_right_layers(trained_cnn):
    wave = own_models.wave()
    cases = [({"types": "Conv1d"}, ["encoder.conv", "encoder.downsample.0"]),
             ({"types": ["Conv1d", "Linear"], "exclude": "*.downsample.*"}, ["encoder.conv", "head"]),
             ({"types": ["Conv1d", "Linear"], "include": "encoder.*"}, ["encoder.conv", "encoder.downsample.0"]),
             ({"types": ["Linear"], "include": ["head", "encoder.*"]}, ["head"]),
             ({"include": "*"}, ["head"]),  # the default types: Conv2d and Linear
             ({"types": [torch.nn.Conv1d], "exclude": ["encoder.conv"]}, ["encoder.downsample.0"])]
    for spec, expected in cases:
        assert list(as_layers(spec).select(wave)) == expected, spec
    positions = own_models.positions()
    assert list(as_layers({"types": ["Embedding", "LayerNorm"]}).select(positions)) == ["pos", "norm"]
    assert list(as_layers({"types": ["Module"], "include": "p*"}).select(positions)) == ["proj", "pos"]
    assert list(as_layers({"types": ["Gain", "Linear"]}).select(own_models.gained())) == ["gain", "head"]
    assert Layers().select(wave) == {"head": wave.head}
    x, y = own_data.waves()[1].tensors
    found = fr.sweep(trained_wave(), x, y, A=2, epsilon=0.1, progress=False,
                     layers={"types": ["Conv1d"], "exclude": "*.downsample.*"})
    assert found["layer"].values.tolist() == ["encoder.conv", "global"]
    assert int(found["n_params"].sel(layer="global")) == 4 * 2 * 3  # the one Conv1d: 4 outputs × 2 inputs × 3 taps
    digits = fr.data.load("digits", "test").tensors(range(40))
    cnn = fr.sweep(trained_cnn, *digits, A=2, epsilon=0.1, progress=False, layers={"include": "blocks.*"})
    assert cnn["layer"].values.tolist() == ["blocks.0.conv", "blocks.1.conv", "global"]
    with pytest.raises(FragilityError, match="layers \\(types Embedding, include \\*\\) selects no module"):
        fr.sweep(wave, x, y, epsilon=0.1, progress=False, layers={"types": "Embedding"})
    with pytest.raises(FragilityError, match="'Conv1D' is neither"):
        fr.sweep(wave, x, y, epsilon=0.1, progress=False, layers={"types": "Conv1D"})
    positions.pos.max_norm = 1.0
    with pytest.raises(FragilityError, match="layers: pos renormalizes its weight in place"):
        fr.sweep(positions, x, y, epsilon=0.1, progress=False, layers={"types": "Embedding"})


@pytest.mark.parametrize("factory", [own_models.wave, own_models.positions, own_models.gained],
                         ids=["Conv1d", "Embedding", "own-layer"])
@pytest.mark.parametrize("crafted", ["fixed", "adaptive"])
def test_the_engine_equals_the_oracle_on_any_weighted_layer(factory, crafted):
    train, test = own_data.waves()
    torch.manual_seed(0)
    net = factory()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(net(train.tensors[0]), train.tensors[1]).backward()
        opt.step()
    x, y = test.tensors
    layers = {"types": ["Conv1d", "Linear", "Embedding", "LayerNorm", own_models.Gain]}
    options = dict(A=4, epsilon=0.1, layers=layers, progress=False, crafted=crafted, attack=fr.FGSM())
    oracle = fr.sweep_naive(net.eval(), x, y, **options)
    assert oracle["accuracy"].std() > 0  # the stresses change what the network gets right
    for k in (1, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every layer runs through the graph cut or its plain fallback, silently
            found = fr.sweep(net, x, y, masks_per_pass=k, **options)
        assert found.attrs["engine"] == "graph"
        xr.testing.assert_equal(found["correct"], oracle["correct"])
        xr.testing.assert_equal(found["n_filtered"], oracle["n_filtered"])


# The command line.

@pytest.mark.slow
def test_the_command_line_runs_a_profile_of_ones_own(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    results = tmp_path / "results"
    for command in (["run", "--quiet"], ["status"]):
        done = subprocess.run([sys.executable, "-m", "fragility.cli", *command, "--profile", str(MINE),
                               "--results", str(results)], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert "2 units: 2 trained, 2 swept" in done.stdout
    assert sorted(p.name for p in (results / "responses" / "wave" / "waves" / "seed0").iterdir()) == [
        "epoch002.nc", "epoch003.nc"]
    bare = {**env, "PYTHONPATH": str(ROOT)}  # without the package's folder: one line saying how to fix it
    done = subprocess.run([sys.executable, "-m", "fragility.cli", "status", "--profile", str(MINE)], cwd=tmp_path,
                          env=bare, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "models.wave.factory: cannot import 'ownpkg.models'" in done.stderr and "PYTHONPATH" in done.stderr
    shutil.rmtree(results)
