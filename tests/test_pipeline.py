"""Tests of profiles and of the experiment pipeline: train, sweep, store, resume without recomputing."""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from conftest import untimed

from fragility import data, pipeline, profiles, store, training, verification
from fragility.errors import FragilityError

TINY = {
    "name": "tiny", "description": "smallcnn on digits, just enough to exercise the pipeline",
    "models": ["smallcnn"], "datasets": ["digits"], "seeds": [0, 1], "epochs": [1, 2], "every": 1, "n_test": 100,
    "A": 4, "filters": ["h1", "h2", "h3"], "attack": "fixed", "epsilon": "auto", "ratio": 0.5, "batch_size": 500,
    "train_batch_size": 100, "lr": 0.001, "depth": 4,
}


def write_profile(folder, **changes):
    """A profile YAML file: TINY with `changes`."""
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The tiny profile, run once: (profile, results folder)."""
    torch.set_num_threads(1)
    profile = profiles.parse_profile(TINY)
    results = tmp_path_factory.mktemp("ran")
    pipeline.run(profile, results, progress=False)
    return profile, results


def copy(results, tmp_path):
    return shutil.copytree(results, tmp_path / "results")


def test_shipped_profiles():
    assert {"quick", "mnist", "cifar10", "tinyimagenet", "paper"} <= set(profiles.shipped())
    quick = profiles.load_profile("quick")
    assert quick.datasets == ("digits",) and len(quick.seeds) >= 2 and len(quick.epochs) >= 3 and quick.A >= 8
    paper = profiles.load_profile("paper")
    assert paper.models == ("resnet18", "resnet50", "squeezenet1_1", "shufflenet_v2_x1_0")
    assert paper.datasets == ("mnist", "cifar10", "tiny-imagenet") and paper.seeds == (0, 1, 2)
    assert paper.epochs == tuple(range(10, 101, 10)) and paper.A == 25 and paper.n_test is None
    for name, dataset in (("mnist", "mnist"), ("cifar10", "cifar10"), ("tinyimagenet", "tiny-imagenet")):
        one = profiles.load_profile(name)
        assert one.datasets == (dataset,) and one.models == paper.models and one.sweep_hash == paper.sweep_hash
    assert profiles.results_dir(quick) == Path("results/quick")


def test_profile_from_a_file(tmp_path):
    profile = profiles.load_profile(write_profile(tmp_path, epsilon=0.3))
    assert profile.name == "tiny" and profile.epsilon == 0.3 and profile.seeds == (0, 1)


def test_unknown_profile_lists_the_shipped_ones(tmp_path):
    with pytest.raises(FragilityError, match="unknown profile 'nope'.*quick"):
        profiles.load_profile("nope")
    with pytest.raises(FragilityError, match="no profile file"):
        profiles.load_profile(tmp_path / "absent.yaml")


@pytest.mark.parametrize("changes, message", [
    ({"A": 0}, "A must be the number of threshold intervals"),
    ({"models": ["vgg16"]}, "models must be a list of distinct models from resnet18"),
    ({"datasets": ["imagenet"]}, "datasets must be a list of distinct datasets from digits"),
    ({"n_test": 0}, "n_test must be"),
    ({"epsilon": "sometimes"}, "epsilon must be auto"),
    ({"seeds": 0}, "seeds must be a list"),
    ({"epochs": [2, 1]}, "epochs must be an increasing list"),
    ({"epochs": [3, 4], "every": 2}, r"epochs \[3\] are not checkpoints"),
    ({"lr": "1e-3"}, "lr must be Adam's learning rate"),
    ({"colour": "red"}, "unknown key.*colour"),
])
def test_bad_profiles_name_the_key(tmp_path, changes, message):
    with pytest.raises(FragilityError, match=message):
        profiles.load_profile(write_profile(tmp_path, **changes))


def test_a_diverging_training_is_one_line_and_stores_nothing(tmp_path):
    """A learning rate that passes the profile's check (0 < lr < 1) may still diverge: training says so."""
    config = training.TrainConfig("smallcnn", "digits", 0, epochs=2, every=1, lr=1e30, depth=1, batch_size=100)
    with pytest.raises(FragilityError, match=r"training smallcnn/digits/seed0 diverged in epoch 1 \(loss nan\): "
                                             r"nothing of that epoch is stored; lower lr \(1e\+30\)."):
        training.train(config, data.load("digits", "train"), data.load("digits", "test"), tmp_path, progress=False)
    assert not list(tmp_path.rglob("*.pt"))


@pytest.mark.parametrize("changes, message", [
    ({"lr": 1}, "lr must be Adam's learning rate, a number between 0 and 1"),
    ({"lr": 1e3}, "lr must be Adam's learning rate"),
    ({"n_test": 1}, "n_test 1 is too small to search ε"),
    ({"n_test": 24, "epsilon": "per-checkpoint"}, "n_test 24 is too small to search ε"),
    ({"n_test": 10, "epsilon": 0.1, "studies": {"selective": {}}}, "n_test 10 is too small to search ε"),
    ({"batchnorm": "batch", "n_test": 101, "batch_size": 50}, "leaves a last batch of one image"),
])
def test_what_would_fail_after_training_is_refused_when_the_profile_is_read(changes, message):
    with pytest.raises(FragilityError, match=message):
        profiles.parse_profile({**TINY, **changes})
    assert profiles.parse_profile({**TINY, "n_test": 1, "epsilon": 0.1}).n_test == 1  # nothing searched: allowed
    assert profiles.parse_profile({**TINY, "n_test": 25}).n_test == 25


def test_missing_key_and_bad_yaml(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "ratio"}))
    with pytest.raises(FragilityError, match="missing key.*ratio"):
        profiles.load_profile(path)
    path.write_text("models: [smallcnn\n")
    with pytest.raises(FragilityError, match="not valid YAML"):
        profiles.load_profile(path)


def test_run_stores_every_unit(ran):
    profile, results = ran
    assert [s.swept and s.trained for s in pipeline.status(profile, results)] == [True] * 4
    record = json.loads((results / "epsilon" / "smallcnn__digits.json").read_text())
    assert record["seed"] == 0 and record["epoch"] == 2 and record["epsilon"] > 0
    ds = store.open_results(results)
    assert ds["accuracy"].dims == store.DIMS and ds.sizes["alpha"] == 5 and ds.sizes["seed"] == 2
    assert (ds["epsilon"] == record["epsilon"]).all()
    assert store.layer_order(ds, "smallcnn") == [f"blocks.{i}.conv" for i in range(4)] + ["fc", "global"]
    unit = store.read_unit(store.unit_path(results, "smallcnn", "digits", 1, 1))
    _, meta = training.load_checkpoint(training.checkpoint_path(results, "smallcnn", "digits", 1, 1))
    assert float(unit["test_accuracy"]) == meta["test_accuracy"]
    assert unit.attrs["profile"] == "tiny" and unit.attrs["config_hash"] == meta["config_hash"]
    assert unit.attrs["n_test"] == 100 and unit.attrs["A"] == 4
    assert {"git_commit", "torch_version", "fragility_version", "sweep_hash"} <= set(unit.attrs)


def test_rerun_recomputes_nothing(ran):
    profile, results = ran
    files = {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()}
    pipeline.run(profile, results, progress=False)
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file()} == files


def test_missing_unit_is_recomputed_identically(ran, tmp_path):
    profile, results = ran
    results = copy(results, tmp_path)
    path = store.unit_path(results, "smallcnn", "digits", 1, 2)
    before = store.read_unit(path)
    path.unlink()
    assert sum(s.swept for s in pipeline.status(profile, results)) == 3
    pipeline.sweep(profile, results, progress=False)
    xr.testing.assert_identical(untimed(store.read_unit(path)), untimed(before))


@pytest.mark.parametrize("content", ["random", "foreign"])
def test_corrupt_files_are_reported(ran, tmp_path, content):
    profile, results = ran
    results = copy(results, tmp_path)
    path = store.unit_path(results, "smallcnn", "digits", 0, 2)
    if content == "random":
        path.write_bytes(torch.randint(256, (2000,), dtype=torch.uint8).numpy().tobytes())
    else:
        path.unlink()
        xr.Dataset({"accuracy": ("x", [0.5])}).to_netcdf(path, engine="h5netcdf")
    calls = (lambda: pipeline.status(profile, results), lambda: pipeline.run(profile, results, progress=False),
             lambda: store.open_results(results))
    for call in calls:
        with pytest.raises(FragilityError, match=f"{path}.*delete it"):
            call()


def test_other_settings_are_refused(ran, tmp_path):
    profile, results = ran
    with pytest.raises(FragilityError, match="computed with other settings.*another results folder"):
        pipeline.sweep(profiles.parse_profile({**TINY, "A": 5}), results, progress=False)
    with pytest.raises(FragilityError, match="epoch001.nc was computed with other settings"):
        pipeline.status(profiles.parse_profile({**TINY, "lr": 0.002}), results)
    results = copy(results, tmp_path)
    shutil.rmtree(results / "responses")
    with pytest.raises(FragilityError, match="ε searched with other settings"):
        pipeline.sweep(profiles.parse_profile({**TINY, "lr": 0.002}), results, progress=False)
    with pytest.raises(FragilityError, match="epoch001.pt was trained with other settings"):
        pipeline.sweep(profiles.parse_profile({**TINY, "lr": 0.002, "epsilon": 0.1}), results, progress=False)


def test_epsilon_policies(ran, tmp_path):
    profile, results = ran
    results = copy(results, tmp_path)
    shutil.rmtree(results / "responses")
    fixed = profiles.parse_profile({**TINY, "epsilon": 0.125, "seeds": [1], "epochs": [2]})
    pipeline.sweep(fixed, results, progress=False)
    assert float(store.read_unit(store.unit_path(results, "smallcnn", "digits", 1, 2))["epsilon"]) == 0.125
    shutil.rmtree(results / "responses")
    each = profiles.parse_profile({**TINY, "epsilon": "per-checkpoint", "seeds": [0], "epochs": [1, 2]})
    pipeline.sweep(each, results, progress=False)
    eps = [float(store.read_unit(store.unit_path(results, "smallcnn", "digits", 0, e))["epsilon"]) for e in (1, 2)]
    assert eps[0] != eps[1]


def test_sweep_before_training_says_train_first(tmp_path):
    with pytest.raises(FragilityError, match="fragility train"):
        pipeline.sweep(profiles.parse_profile(TINY), tmp_path, progress=False)


def test_sweep_sweeps_the_trained_checkpoints_and_leaves_the_untrained(ran, tmp_path):
    """`fragility sweep` sweeps what is trained and has no unit yet; a unit whose checkpoint is missing is left for
    `fragility train`, not an error that stops the others."""
    profile, results = ran
    results = copy(results, tmp_path)
    trained, untrained = store.unit_path(results, "smallcnn", "digits", 0, 2), store.unit_path(results, "smallcnn",
                                                                                              "digits", 1, 2)
    before = store.read_unit(trained)
    trained.unlink()
    untrained.unlink()
    training.checkpoint_path(results, "smallcnn", "digits", 1, 2).unlink()
    pipeline.sweep(profile, results, progress=False)
    xr.testing.assert_identical(untimed(store.read_unit(trained)), untimed(before))
    assert not untrained.exists()


def test_a_model_may_have_its_own_seeds_and_epochs(tmp_path):
    profile = profiles.parse_profile({**TINY, "models": {"smallcnn": None, "resnet18": {"seeds": [0], "epochs": [3, 6],
                                                                                      "every": 3}}})
    assert profile.models == ("smallcnn", "resnet18")
    assert profile.grid("smallcnn") == profiles.Grid((0, 1), (1, 2), 1)
    assert profile.grid("resnet18") == profiles.Grid((0,), (3, 6), 3)
    assert list(profile.units()) == [("smallcnn", "digits", s, e) for s in (0, 1) for e in (1, 2)] + [
        ("resnet18", "digits", 0, 3), ("resnet18", "digits", 0, 6)]
    assert profile.train_config("resnet18", "digits", 0).every == 3
    assert profile.train_config("resnet18", "digits", 0).epochs == 6
    for models, message in (({"resnet18": {"lr": 1}}, r"models.resnet18 has unknown key\(s\) lr"),
                            ({"resnet18": {"epochs": [3, 5], "every": 2}}, r"models.resnet18: epochs \[3\]"),
                            ({"resnet18": {"seeds": []}}, "models.resnet18.seeds must be a list"),
                            ({"vgg": {}}, "models must be a list of distinct models")):
        with pytest.raises(FragilityError, match=message):
            profiles.parse_profile({**TINY, "models": models})


def test_run_trains_only_what_missing_results_need(ran, tmp_path):
    profile, results = ran
    results = copy(results, tmp_path)
    shutil.rmtree(results / "checkpoints")
    assert pipeline.needed_runs(profile, results) == []
    pipeline.run(profile, results, progress=False)  # everything is stored: nothing is trained
    assert not (results / "checkpoints").exists()
    store.unit_path(results, "smallcnn", "digits", 1, 1).unlink()
    assert pipeline.needed_runs(profile, results) == [("smallcnn", "digits", 1)]
    (results / "epsilon" / "smallcnn__digits.json").unlink()
    assert pipeline.needed_runs(profile, results) == [("smallcnn", "digits", 0), ("smallcnn", "digits", 1)]


def test_a_resume_with_another_thread_count_is_refused(ran, tmp_path):
    """The thread count is part of what a result depends on: a folder computed with 2 is not resumed with 1."""
    profile, results = ran
    results = copy(results, tmp_path)
    store.unit_path(results, "smallcnn", "digits", 1, 2).unlink()
    before = sorted(p for p in results.rglob("*"))
    with pytest.raises(FragilityError, match="epoch001.nc was computed with other settings than profile tiny"):
        pipeline.run(profiles.parse_profile({**TINY, "threads": 1}), results, progress=False)
    assert sorted(p for p in results.rglob("*")) == before


def test_verify_recomputes_a_stored_unit_identically_and_names_a_changed_one(ran, tmp_path):
    profile, results = ran
    results = copy(results, tmp_path)
    unit = ("smallcnn", "digits", 1, 2)
    [same] = verification.verify(profile, [unit], results, tmp_path / "scratch", progress=False, retrain=True)
    assert same.unit == unit and same.identical and same.method == "retrained", same.differences
    assert same.stored_on == same.recomputed_on and same.same_machine and same.agrees
    path = store.unit_path(results, *unit)
    ds = store.read_unit(path).load()
    ds["accuracy"] = ds["accuracy"] - 0.25 * (ds["alpha"] == ds["alpha"][1])  # one threshold, a quarter lower
    path.unlink()
    store.write_unit(ds, path)
    [changed] = verification.verify(profile, [unit], results, tmp_path / "scratch2", progress=False)
    assert not changed.identical and changed.differences["accuracy"] == pytest.approx(0.25)
    assert changed.method == "re-swept" and not changed.agrees  # on the same machine kind: 0 is allowed


def test_verify_re_sweeps_shipped_weights_without_the_checkpoint(ran, tmp_path):
    """A results folder that ships weights/ and no checkpoints/ is re-swept exactly from the weights alone."""
    profile, results = ran
    results = copy(results, tmp_path)
    kept = pipeline.keep_weights(replace(profile, weights=("smallcnn",)), results)
    assert len(kept) == len(list(profile.units()))
    full = training.read_checkpoint(training.checkpoint_path(results, "smallcnn", "digits", 0, 1))
    light = training.read_checkpoint(training.weights_path(results, "smallcnn", "digits", 0, 1))
    assert "optimizer" not in light and "rng" not in light and light["config_hash"] == full["config_hash"]
    assert all(torch.equal(light["model"][k], v) for k, v in full["model"].items())
    shutil.rmtree(results / "checkpoints")
    [found] = verification.verify(profile, None, results, tmp_path / "scratch", progress=False)
    assert found.unit == ("smallcnn", "digits", 0, 1) and found.method == "re-swept"
    assert found.identical and found.agrees, found.differences
    training.weights_path(results, "smallcnn", "digits", 1, 2).unlink()
    with pytest.raises(FragilityError, match="neither the checkpoint nor the weights of smallcnn/digits/1/2"):
        verification.verify(profile, [("smallcnn", "digits", 1, 2)], results, tmp_path / "scratch2", progress=False)


def test_verify_re_sweeps_some_filters_only_and_compares_those(ran, tmp_path):
    """`filters` re-sweeps a unit under those filters alone and compares them with the same filters of the stored
    unit; a filter the unit was not swept with is refused, naming the argument, before anything is written."""
    profile, results = ran
    unit = ("smallcnn", "digits", 0, 1)
    [found] = verification.verify(profile, [unit], results, tmp_path / "scratch", progress=False, filters=["h2"])
    assert found.identical and found.agrees, found.differences
    again = store.read_unit(store.unit_path(tmp_path / "scratch", *unit))
    stored = store.read_unit(store.unit_path(results, *unit))
    assert list(again["filter"].values) == ["h2"]
    np.testing.assert_array_equal(again["accuracy"].values, stored["accuracy"].sel(filter=["h2"]).values)
    assert again.attrs["sweep_hash"] != stored.attrs["sweep_hash"]  # not to be taken for a whole unit
    for wrong in (["random"], [], "h1"):
        with pytest.raises(FragilityError, match="filters"):
            verification.verify(profile, [unit], results, tmp_path / "scratch2", progress=False, filters=wrong)
    assert not (tmp_path / "scratch2").exists()


def test_verify_allows_what_the_machine_kind_allows():
    """Like with like: 0 on the machine kind and thread count that computed the unit; elsewhere the measured re-sweep
    tolerance, or the stored seeds' spread for a retrained unit."""
    here, there = "cpu: Intel(R) Xeon(R) 8488C [AVX512], 1 threads", "cpu: AMD EPYC 7R13 [AVX2], 1 threads"
    gap = {"accuracy": 0.004, "n_filtered": 0.0}
    same = verification.Verified(("m", "d", 0, 1), gap, here, here, "re-swept")
    assert same.same_machine and not same.agrees and "identical" in same.expected
    other = verification.Verified(("m", "d", 0, 1), gap, there, here, "re-swept")
    assert not other.same_machine and other.agrees  # 0.004 ≤ the measured tolerance
    assert not verification.Verified(("m", "d", 0, 1), {"accuracy": 0.2}, there, here, "re-swept").agrees
    retrained = verification.Verified(("m", "d", 0, 1), gap, there, here, "retrained", {"accuracy": 0.003})
    assert not retrained.agrees and retrained.allowed == {"accuracy": 0.003, "n_filtered": 0.0}
    assert verification.Verified(("m", "d", 0, 1), gap, there, here, "retrained", {"accuracy": 0.01}).agrees
    threads = verification.Verified(("m", "d", 0, 1), gap, here.replace("1 threads", "2 threads"), here)
    assert not threads.same_machine  # another thread count sums in another order
    kernels = verification.Verified(("m", "d", 0, 1), gap, here.replace("AVX512", "AVX2"), here)
    assert not kernels.same_machine  # one model name, other kernels
    older = "cpu: Intel(R) Xeon(R) 8488C, 1 threads"  # a record that does not name its kernels
    assert not verification.Verified(("m", "d", 0, 1), gap, older, older).same_machine


def test_a_profile_keeps_the_weights_of_its_own_models_only():
    with pytest.raises(FragilityError, match="weights names resnet18, not a model of the profile"):
        profiles.parse_profile({**TINY, "weights": ["resnet18"]})
    with pytest.raises(FragilityError, match="weights must be a list of distinct models"):
        profiles.parse_profile({**TINY, "weights": "smallcnn"})
    kept = profiles.parse_profile({**TINY, "weights": ["smallcnn"]})
    assert kept.weights == ("smallcnn",) and kept.sweep_hash == profiles.parse_profile(TINY).sweep_hash


REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"


def pending(card: str) -> list[str]:
    """The tasks a data card lists as not yet computed: the lines of the fenced block in its section "## Not yet
    computed" (none when the section has no such block)."""
    section = card.split("## Not yet computed", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")
    return [line.strip() for line in blocks[1].splitlines() if line.strip()] if len(blocks) > 1 else []


def test_the_shipped_reference_is_what_its_data_card_says():
    """What `make book` reads is valid, and what it lacks is exactly what the data card lists as not yet computed (the
    book computes nothing for the shipped reference: `fragility run --profile reference` would compute those)."""
    profile = profiles.load_profile("reference")
    pipeline.status(profile, REFERENCE)  # every shipped unit and ε record validated against the profile
    missing = [task.key for task in pipeline.plan(profile, REFERENCE)]
    listed = pending((REFERENCE / "README.md").read_text())
    assert listed == missing, "the data card's list of tasks not yet computed is not the plan's"
    for unit in profile.units():  # every swept SqueezeNet unit ships its weights, to be re-swept without retraining
        if unit[0] in profile.weights and store.unit_path(REFERENCE, *unit).is_file():
            assert training.weights_path(REFERENCE, *unit).is_file(), unit


@pytest.mark.slow
def test_a_shipped_reference_unit_is_re_swept_as_its_machine_kind_allows(tmp_path):
    """The earliest shipped SqueezeNet checkpoint, re-swept from its weights alone: identical on the CPU kind and thread
    count that computed it; elsewhere within the measured re-sweep tolerance (like is compared with like)."""
    profile = profiles.load_profile("reference")
    shipped = [u for u in profile.units() if training.weights_path(REFERENCE, *u).is_file()
               and store.unit_path(REFERENCE, *u).is_file()]
    assert shipped, f"no shipped weights under {REFERENCE}/weights: run `fragility run --profile reference`"
    [verified] = verification.verify(profile, shipped[:1], REFERENCE, tmp_path / "scratch", progress=False,
                                     filters=["h1"])  # h2 and h3 run the same engine: test_engine's oracle checks
    assert verified.method == "re-swept" and verified.recomputed_on.startswith("cpu: ")
    assert verified.agrees, (verified.expected, verified.differences)
    assert verified.identical or not verified.same_machine, verified.differences
