"""The study registry (fragility.studies): settings checked at profile load, the study store, a study's claim
decided per panel (`verdicts.decide_claim`), a full tiny run."""
import dataclasses
import re
import shutil

import numpy as np
import pytest
import torch
import xarray as xr
from test_pipeline import TINY, write_profile
from test_verdicts import results as store_sweeps
from test_verdicts import unit as sweep

import fragility as fr
from fragility import FragilityError, data, pipeline, profiles, store, studies, training, verdicts
from fragility import study as base
from fragility.studies import removal as removal_study

PROFILE = profiles.parse_profile(TINY)


def combined(units: dict) -> xr.Dataset:
    """Hand-made study units {(label, dataset, seed): Dataset}, keyed as `base.write` keys them (with their
    dataset's number of classes) and combined as `open_study` combines them."""
    return base.combine([ds.assign_coords(model=m, dataset=d, seed=np.int64(s)).assign(stored=((), True))
                         .assign_attrs(classes=data.info(d).classes) for (m, d, s), ds in units.items()])


def nested(accuracy, n: int) -> np.ndarray:
    """Per-image results whose mean is `accuracy` (any shape; NaN: not computed): the first round(accuracy · n) of n
    images correct, so that two cells' images are nested and their bootstrap replicates move together."""
    accuracy = np.asarray(accuracy, dtype=float)
    out = (np.arange(n) < np.round(np.nan_to_num(accuracy) * n)[..., None]).astype(float)
    out[np.isnan(accuracy)] = np.nan
    return out


def evidence(folder, study: str, units: dict, responses=(), samples: int = 200) -> verdicts.Evidence:
    """`verdicts.Evidence` of a results folder holding hand-made units {(label, dataset, seed): Dataset} of `study`,
    written as `fragility run` writes them, and a small sweep unit per (model, dataset) of `responses` (one, of
    another model, when none is named: the folder needs some responses to be a results folder)."""
    for key, ds in units.items():
        base.write(ds, studies.study_path(folder, study, *key), study, base.Unit(key, key[0]), PROFILE, {}, 0.5,
                   torch.device("cpu"))
    store_sweeps(folder, {(m, d, 0, 1): sweep({"conv1": 0.0, "fc": 0.0}, n=20)
                          for m, d in (responses or [("squeezenet1_1", "digits")])})
    return verdicts.Evidence(folder, samples=samples)


def decided(ev, study: str, claim: str, model: str, dataset: str, reading=None) -> verdicts.Decision:
    """The study's claim `claim` decided on the panel (model, dataset) under `reading` (None: the paper's)."""
    found = next(c for c in studies.REGISTRY[study].claims if c.id == claim)
    return verdicts.decision(found, ev, verdicts.Panel("x", model, dataset), reading)


def assert_interval(found: verdicts.Decision, low=None, high=None):
    """The decision's interval holds its value (and is [low, high] when given, to 1e-9)."""
    assert found.low - 1e-12 <= found.value <= found.high + 1e-12
    if low is not None:
        assert found.low == pytest.approx(low, abs=1e-9) and found.high == pytest.approx(high, abs=1e-9)


# settings, checked when the profile is read


def test_every_study_is_registered():
    # registered as each module is imported (alphabetically, from fragility.studies)
    assert sorted(studies.STUDIES) == ["batchnorm", "conventions", "depth", "neurons", "removal", "selective"]
    assert studies.STUDIES == tuple(studies.REGISTRY)
    for name, study in studies.REGISTRY.items():
        assert study.name == name and studies.study(name) is study
    with pytest.raises(FragilityError, match="unknown study 'nope'.*selective"):
        studies.study("nope")


def test_defaults_are_filled_in():
    profile = profiles.parse_profile({**TINY, "studies": {"removal": None, "selective": {"tol": 0.05}}})
    assert profile.studies["removal"]["draws"] == 3 and profile.studies["removal"]["p"][-1] == 1.0
    assert profile.studies["selective"]["tol"] == 0.05 and profile.studies["selective"]["levels"] == 11
    assert profile.studies["selective"]["readings"] == ["prose", "equation", "random"]
    assert profiles.parse_profile(TINY).studies == {}


@pytest.mark.parametrize("raw, match", [
    ({"pruning": {}}, "unknown study 'pruning'"),
    ([1, 2], "studies must be a mapping"),
    ({"removal": 3}, "studies.removal must be a mapping"),
    ({"removal": {"fraction": 0.5}}, r"study removal has unknown setting\(s\) fraction"),
    ({"removal": {"draws": -1}}, "studies.removal.draws must be a whole number ≥ 1; got -1"),
    ({"removal": {"draws": 2.5}}, "studies.removal.draws must be a whole number"),
    ({"removal": {"p": [0.5, 1.5]}}, "studies.removal.p must be a list of distinct fractions"),
    ({"selective": {"epoch": 3}}, "studies.selective.epoch 3 is not a checkpoint of smallcnn"),
    ({"selective": {"models": ["resnet18"]}}, "studies.selective.models: resnet18 is not a model of the profile"),
    ({"selective": {"readings": ["prose", "negative"]}}, "studies.selective.readings must be"),
    ({"selective": {"tol": "0.1"}}, "studies.selective.tol must be a finite number"),
    ({"selective": {"levels": 1}}, "studies.selective.levels must be a whole number ≥ 2"),
    ({"batchnorm": {"epoch": 5}}, "studies.batchnorm.epoch 5 is not a checkpoint of smallcnn"),
    ({"batchnorm": {"layers": "fc"}}, "studies.batchnorm.layers must be"),
    ({"neurons": {"compress": 1.5}}, "studies.neurons.compress must be"),
    ({"neurons": {"by": "noisy"}}, "studies.neurons.by must be one of"),
    ({"depth": {}}, "studies.depth compares nothing"),
    ({"depth": {"depths": [0]}}, "studies.depth.depths must be"),
    ({"depth": {"depths": [1], "seeds": [5]}}, r"studies.depth.seeds \[5\] are not the profile's seeds"),
    ({"depth": {"models": ["vgg"]}}, "studies.depth.models must be"),
    ({"conventions": {"epochs": [5]}}, r"study conventions has unknown setting\(s\) epochs"),
    ({"conventions": {"readings": {"adaptive": [5]}}}, r"studies.conventions.readings.adaptive must be null \(every "
                                                       r"checkpoint\), a number of checkpoints ≥ 1, or checkpoints of "
                                                       r"smallcnn \(\[1, 2\]\); got \[5\]"),
    ({"conventions": {"readings": {"batch": 0}}}, "studies.conventions.readings.batch must be null"),
    ({"conventions": {"readings": {"sideways": None}}}, r"studies.conventions.readings: unknown reading\(s\) sideways"),
    ({"conventions": {"readings": {}}}, "studies.conventions.readings must be a mapping of readings"),
    ({"conventions": {"seeds": [7]}}, r"studies.conventions.seeds \[7\] are not seeds of smallcnn"),
    ({"conventions": {"filters": ["h4"]}}, "studies.conventions.filters must be"),
    ({"batchnorm": {"layers": ["blocks.0.bn"]}}, "studies.batchnorm.layers: 'blocks.0.bn' is not a Conv2d or Linear "
                                                 "layer of smallcnn: choose from blocks.0.conv"),
    ({"neurons": {"layer": "conv1"}}, "studies.neurons.layer: 'conv1' is not a Conv2d or Linear layer of smallcnn"),
    ({"removal": {"layers": ["fc", "x", "y"]}}, "studies.removal.layers: 'x', 'y' are not Conv2d or Linear layers"),
])
def test_bad_study_settings_name_the_key(raw, match):
    with pytest.raises(FragilityError, match=match):
        profiles.parse_profile({**TINY, "studies": raw})


@pytest.mark.parametrize("raw, match", [
    ({"removal": {"epoch": 3}}, "studies.removal.epoch"),  # epochs 1, 2 only: the unit would fail at run time
    ({"removal": {"models": ["resnet18"]}}, "studies.removal.models"),  # not a model of the profile: no unit
    ({"neurons": {"models": ["resnet18"]}}, "studies.neurons.models"),
])
def test_models_and_epochs_of_every_study_are_checked(raw, match):
    """Like selective and batchnorm, every study refuses models and epochs the profile does not have."""
    with pytest.raises(FragilityError, match=match):
        profiles.parse_profile({**TINY, "studies": raw})


def test_study_layers_of_the_profiles_models_are_accepted():
    profile = profiles.parse_profile({**TINY, "studies": {"batchnorm": {"layers": ["blocks.3.conv", "fc"]},
                                                          "neurons": {"layer": "blocks.0.conv"},
                                                          "removal": {"layers": ["fc"]}}})
    assert profile.studies["batchnorm"]["layers"] == ["blocks.3.conv", "fc"]
    resnet = profiles.parse_profile({**TINY, "models": ["resnet18"], "studies": {"batchnorm": {
        "layers": ["layer2.0.conv1", "layer4.0.downsample.0"]}}})
    assert resnet.studies["batchnorm"]["layers"][1] == "layer4.0.downsample.0"


def test_a_profile_file_names_itself_in_the_error(tmp_path):
    path = write_profile(tmp_path, studies={"removal": {"draws": -1}})
    with pytest.raises(FragilityError, match=re.escape(f"{path}: studies.removal.draws must be")):
        profiles.load_profile(path)


# the study store


def removal_unit():
    """A hand-made removal unit."""
    return xr.Dataset({"accuracy": (("layer", "p", "draw", "input"), np.full((2, 2, 1, 1), 0.5)),
                       "base_accuracy": ("input", [0.9]), "n_removed": (("layer", "p"), [[0, 5], [0, 3]]),
                       "n_params": ("layer", [10, 6])},
                      coords={"layer": ["conv", "fc"], "p": [0.0, 0.5], "draw": [0], "input": ["clean"]})


SEEDED = profiles.parse_profile({**TINY, "seeds": [0, 1, 2, 3, 4, 5, 7, 9], "studies": {"removal": {"draws": 1}}})


def store_unit(results, study="removal", key=("smallcnn", "digits", 0), folder="removal", ds=None, profile=SEEDED):
    """Write a unit as `fragility run` does, into studies/<folder>/ under the name of `key`."""
    path = results / "studies" / folder / "{}__{}__seed{}.nc".format(*key)
    unit = base.Unit(key, key[0], (key,))
    base.write(removal_unit() if ds is None else ds, path, study, unit, profile, profile.studies["removal"], 0.5,
               torch.device("cpu"))
    return path


def test_open_study_reads_what_was_written(tmp_path):
    store_unit(tmp_path)
    store_unit(tmp_path, key=("smallcnn", "digits", 1))
    ds = fr.open_study(tmp_path, "removal")
    assert ds.attrs["study"] == "removal" and ds.attrs["schema"] == base.SCHEMA and ds.attrs["profile"] == "tiny"
    assert set(ds["accuracy"].dims) == {"layer", "p", "draw", "input", "model", "dataset", "seed"}
    assert list(ds["seed"].values) == [0, 1] and bool(ds["stored"].all())
    np.testing.assert_array_equal(ds["n_params"].sel(model="smallcnn", dataset="digits", seed=1).values, [10, 6])


def test_open_study_errors(tmp_path):
    with pytest.raises(FragilityError, match="unknown study"):
        fr.open_study(tmp_path, "nope")
    with pytest.raises(FragilityError, match="no stored removal study"):
        fr.open_study(tmp_path, "removal")


def _renamed(results):
    path = store_unit(results)
    wrong = path.with_name("smallcnn__digits__seed7.nc")
    path.rename(wrong)
    return wrong, "does not match its file name"


def _other_study(results):
    return store_unit(results, study="neurons", key=("smallcnn", "digits", 3)), "written by the 'neurons' study"


def _lacking(results):
    return store_unit(results, ds=removal_unit().drop_vars("n_removed")), "it lacks n_removed"


def _foreign(results):
    path = results / "studies" / "removal" / "smallcnn__digits__seed4.nc"
    path.parent.mkdir(parents=True, exist_ok=True)
    xr.Dataset({"accuracy": ("x", [0.5])}).to_netcdf(path, engine="h5netcdf")
    return path, "schema"


def _random_bytes(results):
    path = results / "studies" / "removal" / "smallcnn__digits__seed5.nc"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(torch.randint(256, (2000,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    return path, "netCDF"


@pytest.mark.parametrize("make", [_renamed, _other_study, _lacking, _foreign, _random_bytes])
def test_open_study_refuses_a_damaged_or_foreign_unit(tmp_path, make):
    store_unit(tmp_path, key=("smallcnn", "digits", 9))  # a good unit beside it does not hide it
    path, problem = make(tmp_path)
    with pytest.raises(FragilityError) as error:
        fr.open_study(tmp_path, "removal")
    message = str(error.value)
    assert str(path) in message and problem in message
    assert store.MOVE in message


def test_open_study_refuses_to_combine_units_of_different_settings(tmp_path):
    kept = store_unit(tmp_path, key=("smallcnn", "digits", 0))
    other = profiles.parse_profile({**TINY, "seeds": [0, 1], "studies": {"removal": {"draws": 2}}})
    stale = store_unit(tmp_path, key=("smallcnn", "digits", 1), profile=other)
    for call in (fr.open_study, studies.find_study):
        with pytest.raises(FragilityError) as error:
            call(tmp_path, "removal")
        message = str(error.value)
        assert str(kept) in message and str(stale) in message and "different settings (study_draws)" in message
        assert "\n" not in message


def test_find_study_tells_a_study_not_stored_from_a_damaged_one(tmp_path):
    assert studies.find_study(tmp_path, "removal") is None
    (tmp_path / "studies" / "removal").mkdir(parents=True)
    assert studies.find_study(tmp_path, "removal") is None  # an empty folder stores nothing
    path = store_unit(tmp_path)
    found = studies.find_study(tmp_path, "removal")
    xr.testing.assert_identical(found, fr.open_study(tmp_path, "removal"))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(FragilityError, match=f"{path} is not a removal study unit"):
        studies.find_study(tmp_path, "removal")
    with pytest.raises(FragilityError, match="unknown study 'nope'"):
        studies.find_study(tmp_path, "nope")
    with pytest.raises(FragilityError, match="results must be the path of a folder"):
        studies.find_study(None, "removal")


def test_stored_study_units_must_match_the_profiles_settings(tmp_path):
    profile = profiles.parse_profile({**TINY, "studies": {"removal": {"draws": 1}}})
    path = store_unit(tmp_path, profile=profile)
    assert studies.stored(profile, tmp_path) == {("removal", ("smallcnn", "digits", 0))}
    assert [s.done for s in pipeline.study_status(profile, tmp_path)] == [True, False]
    changed = profiles.parse_profile({**TINY, "studies": {"removal": {"draws": 2}}})
    for call in (lambda: studies.stored(changed, tmp_path), lambda: pipeline.study_status(changed, tmp_path),
                 lambda: pipeline.plan(changed, tmp_path)):
        with pytest.raises(FragilityError, match=f"{path} was computed with other settings than profile tiny "
                                                 r"\(settings_hash \w+ ≠ \w+\); use another results folder"):
            call()
    threads = profiles.parse_profile({**TINY, "threads": 1, "studies": {"removal": {"draws": 1}}})
    with pytest.raises(FragilityError, match="computed with other settings"):
        studies.stored(threads, tmp_path)


def test_study_labels_cannot_leave_the_results_folder(tmp_path):
    for label in ("..", "../x", "a/b", ""):
        with pytest.raises(FragilityError, match="cannot name a file of a results folder"):
            studies.study_path(tmp_path, "removal", label, "digits", 0)


# a full tiny run of every study

STUDIES = {
    "selective": {"epochs": 1, "levels": 3},
    "batchnorm": {"n_train": 100},
    "neurons": {},
    "removal": {"p": [0.0, 0.5, 1.0], "draws": 2},
    "depth": {"depths": [3, 4], "epochs": 1, "A": 2, "magnitudes": [0.0, 0.2]},  # 1 epoch: 2 blocks stay at chance
    "conventions": {"readings": {"adaptive": [2], "batch": 1}},  # 1 checkpoint: the last
}


# Seed 1: FGSM against seed 0's checkpoints sends every test image to one class that holds > 1/10 of the test
# subset, so ε_E does not exist there (see test_largest_epsilon_when_fgsm_sends_everything_to_one_class).
SEED = 1
KEY = {"model": "smallcnn", "dataset": "digits", "seed": SEED}
RUN = ("smallcnn", "digits", SEED)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The tiny profile (one seed) with all six studies, run once: (profile, results folder)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    profile = profiles.parse_profile({**TINY, "seeds": [SEED], "studies": STUDIES})
    results = tmp_path_factory.mktemp("studies")
    pipeline.run(profile, results, progress=False)
    torch.set_num_threads(threads)
    return profile, results


def copy(results, tmp_path):
    return shutil.copytree(results, tmp_path / "results")


@pytest.mark.slow
def test_every_study_unit_is_stored(ran):
    profile, results = ran
    found = studies.units(profile)
    assert sorted({name for name, _ in found}) == sorted(STUDIES)
    assert {(n, u.key) for n, u in found if n == "depth"} == {("depth", ("smallcnn-d3", "digits", SEED)),
                                                              ("depth", ("smallcnn-d4", "digits", SEED))}
    for name, unit in found:
        assert studies.study_path(results, name, *unit.key).is_file()
    assert all(s.done for s in pipeline.study_status(profile, results))
    recorded = pipeline.recorded_seconds(profile, results)
    assert list(recorded) == ["training", "epsilon", "sweeps", "studies"] and min(recorded.values()) > 0
    name, unit = found[0]
    one = studies.study_path(results, name, *unit.key)
    moved = one.rename(one.with_suffix(".away"))
    try:  # a study unit that is not stored is not counted
        assert pipeline.recorded_seconds(profile, results)["studies"] < recorded["studies"]
    finally:
        moved.rename(one)


@pytest.mark.slow
def test_open_study_gives_every_study_its_dims(ran):
    profile, results = ran
    key = KEY
    opened = {name: fr.open_study(results, name) for name in STUDIES}
    assert all(ds.attrs["study"] == name for name, ds in opened.items())
    selective = opened["selective"]
    assert {"regular", "prose", "equation", "random"} <= set(selective["training"].values)
    assert set(selective["accuracy"].dims) == {"training", "epoch", "level", "model", "dataset", "seed"}
    assert set(selective["correct"].dims) == {"training", "epoch", "level", "image", "model", "dataset", "seed"}
    assert list(selective["epoch"].values) == [2] and selective.sizes["level"] == 3
    assert selective.sizes["image"] == profile.n_test
    assert set(selective["frozen"].dims) == {"training", "layer", "model", "dataset", "seed"}
    np.testing.assert_allclose(selective["epsilon"].sel(**key).values,
                               selective["level"].values * float(selective["epsilon_E"].sel(**key)))
    batchnorm = opened["batchnorm"]
    assert list(batchnorm["state"].values) == ["trained", "zeroed", "following re-estimated", "all re-estimated",
                                               "batch statistics"]
    assert batchnorm.sizes["layer"] == 3 and batchnorm.sizes["image"] == profile.n_test
    assert 0 < float(batchnorm["intact_batch_accuracy"].sel(**key)) <= 1
    neurons = opened["neurons"]
    first = fr.models.build("smallcnn", 1, 10, depth=profile.depth).blocks[0].conv
    assert neurons.sizes["neuron"] == first.out_channels
    assert set(neurons["defense_accuracy"].dims) == {"network", "defense_input", "model", "dataset", "seed"}
    assert set(neurons["defense_correct"].dims) == {"network", "defense_input", "image", "model", "dataset", "seed"}
    removal = opened["removal"]
    assert list(removal["p"].values) == [0.0, 0.5, 1.0] and removal.sizes["draw"] == 2
    # p = 0 is the unperturbed network: the sweep's own unperturbed accuracy on the same test subset
    sweep = fr.open_results(results).sel(**key, epoch=profile.epochs[-1])
    np.testing.assert_allclose(removal["accuracy"].sel(**key, p=0.0).isel(draw=0).values,
                               np.broadcast_to(sweep["base_accuracy"].values, (removal.sizes["layer"], 2)))
    depth = opened["depth"]
    assert sorted(depth["model"].values) == ["smallcnn-d3", "smallcnn-d4"]
    assert set(depth["accuracy"].dims) == {"perturbation", "magnitude", "model", "dataset", "seed"}
    assert set(depth["correct"].dims) == {"perturbation", "magnitude", "image", "model", "dataset", "seed"}
    np.testing.assert_array_equal(depth["n_layers"].sel(dataset="digits", seed=SEED).values, [4, 5])
    conventions = opened["conventions"]
    assert list(conventions["reading"].values) == ["adaptive", "batch"]  # only the readings the profile names
    assert list(conventions["epoch"].values) == [2] and "global" in conventions["layer"].values
    assert set(conventions["correct"].dims) == {"reading", "epoch", "layer", "filter", "alpha", "input", "image",
                                                "model", "dataset", "seed"}


def assert_mean_is(correct: xr.DataArray, accuracy: xr.DataArray):
    """The per-image results average to the stored accuracy in every cell (NaN where neither was computed)."""
    mean = correct.astype(float).mean("image")
    np.testing.assert_allclose(mean.transpose(*accuracy.dims).values, accuracy.values.astype(float), rtol=0,
                               atol=1e-12)
    assert int(accuracy.notnull().sum()) > 0


@pytest.mark.slow
def test_per_image_results_average_to_the_stored_accuracies(ran):
    _, results = ran
    opened = {name: fr.open_study(results, name).sel(**KEY) for name in STUDIES if name != "depth"}
    s = opened["selective"]
    assert_mean_is(s["correct"], s["accuracy"])
    assert_mean_is(s["start_correct"], s["start_accuracy"])
    b = opened["batchnorm"]
    assert_mean_is(b["correct"], b["accuracy"])  # NaN for the states no following BatchNorm allows
    assert_mean_is(b["intact_correct"], b["intact_accuracy"])
    n = opened["neurons"]
    assert_mean_is(n["defense_correct"], n["defense_accuracy"])
    c = opened["conventions"]
    assert_mean_is(c["correct"], c["accuracy"])
    assert_mean_is(c["base_correct"], c["base_accuracy"])
    depth = fr.open_study(results, "depth").sel(dataset="digits", seed=SEED)
    assert_mean_is(depth["correct"], depth["accuracy"])


@pytest.mark.slow
def test_selective_regular_training_is_the_original_run(ran):
    """Continued from epoch 1 for one epoch, regular training is the run's own epoch-2 checkpoint, read and not
    trained again: its curve at ε = 0 is, image by image, the clean unperturbed result of that checkpoint's sweep."""
    _, results = ran
    s = fr.open_study(results, "selective").sel(**KEY)
    assert bool(s["reused"].sel(training="regular"))
    runs = results / "studies" / "selective" / "runs" / f"smallcnn__digits__seed{SEED}"
    assert not (runs / "regular").exists()  # nothing was trained for it
    unit = store.read_unit(store.unit_path(results, *RUN, 2))
    regular = s["correct"].sel(training="regular", epoch=2, level=0.0)
    assert sorted(regular["image"].values) == sorted(unit["image"].values)  # the same test subset
    np.testing.assert_array_equal(regular.sel(image=unit["image"].values).values.astype(bool),
                                  unit["base_correct"].sel(input="clean").values.astype(bool))
    assert float(s["accuracy"].sel(training="regular", epoch=2, level=0.0)) == pytest.approx(
        float(unit["base_accuracy"].sel(input="clean")), abs=1e-12)
    for arm in ("prose", "equation", "random"):  # the readings that froze layers were trained
        if bool(s["frozen"].sel(training=arm).any()):
            assert not bool(s["reused"].sel(training=arm)), arm


@pytest.mark.slow
def test_resuming_recomputes_only_a_deleted_unit(ran, tmp_path):
    profile, results = ran
    results = copy(results, tmp_path)
    files = [f for f in results.rglob("*") if f.is_file()]
    before = {f: f.stat().st_mtime_ns for f in files}
    target = studies.study_path(results, "neurons", *RUN)
    old = fr.open_study(results, "neurons")
    target.unlink()
    assert pipeline.needed_runs(profile, results) == [RUN]
    assert [t.key for t in pipeline.plan(profile, results)] == [f"study/neurons/smallcnn/digits/{SEED}"]
    pipeline.run(profile, results, progress=False)
    assert target.is_file()
    assert {f: f.stat().st_mtime_ns for f in files if f != target} == {f: t for f, t in before.items()
                                                                       if f != target}
    xr.testing.assert_equal(fr.open_study(results, "neurons")["accuracy"], old["accuracy"])


@pytest.mark.slow
def test_needed_runs_include_what_a_missing_study_unit_needs(ran, tmp_path):
    profile, results = ran
    results = copy(results, tmp_path)
    shutil.rmtree(results / "checkpoints")
    assert pipeline.needed_runs(profile, results) == []  # every result is stored: nothing to train
    studies.study_path(results, "depth", "smallcnn-d3", "digits", SEED).unlink()
    assert pipeline.needed_runs(profile, results) == []  # the depth study trains its own smallcnn variants
    for name in ("selective", "batchnorm", "removal", "conventions"):
        path = studies.study_path(results, name, *RUN)
        saved = path.read_bytes()
        path.unlink()
        assert pipeline.needed_runs(profile, results) == [RUN], name
        path.write_bytes(saved)


@pytest.mark.slow
def test_a_study_starts_from_the_profiles_checkpoint(ran):
    """The selective study continues the run's own checkpoint: its start accuracy is that checkpoint's."""
    profile, results = ran
    c = fr.open_study(results, "selective").sel(**KEY)
    net = training.load_checkpoint(training.checkpoint_path(results, *RUN, 1))[0]
    x, y = data.test_subset(data.load("digits", "test"), profile.n_test, seed=0)
    assert float(c["epsilon_E"]) == fr.largest_epsilon(net, x, y, batch_size=profile.batch_size)
    assert float(c["start_accuracy"].sel(level=0.0)) == fr.attacks.accuracy(net, x, y)


# a study's claim, one row per panel

def removal_unit_at(top_loss: float, layers=("conv1", "mid", "fc"), base_acc=0.9) -> xr.Dataset:
    """A removal unit (clean inputs, two equal draws): with 70 % of its weights removed the first layer falls to
    chance (0.1) and the last two lose `top_loss` of the clean accuracy."""
    at = {layers[0]: 0.1, **dict.fromkeys(layers[1:], base_acc * (1 - top_loss))}
    acc = np.array([[[base_acc] * 2, [at[n]] * 2, [0.1] * 2] for n in layers])[..., None]
    return xr.Dataset({"accuracy": (("layer", "p", "draw", "input"), acc), "base_accuracy": ("input", [base_acc]),
                       "n_removed": (("layer", "p"), np.tile([0, 70, 100], (len(layers), 1))),
                       "n_params": ("layer", [100] * len(layers))},
                      coords={"layer": list(layers), "p": [0.0, 0.7, 1.0], "draw": [0, 1], "input": ["clean"]})


def test_decide_claim_gives_one_row_per_panel_and_names_what_would_decide_the_others(tmp_path):
    """S3a names ResNet-18 on MNIST and on CIFAR10: the panel the study holds is decided with its interval; a panel
    whose responses are stored but not the study needs the study; a panel with nothing stored needs its profile."""
    s3a = next(c for c in removal_study.CLAIMS if c.id == "S3a")
    assert [p.label for p in s3a.panels] == ["a MNIST", "a CIFAR10"]
    ev = evidence(tmp_path / "both", "removal", {("resnet18", "mnist", 0): removal_unit_at(0.1)},
                  responses=[("resnet18", "mnist"), ("resnet18", "cifar10")])
    rows = verdicts.decide_claim(s3a, ev)
    assert [(r["id"], r["panel"]) for r in rows] == [("S3a", "a MNIST"), ("S3a", "a CIFAR10")]
    mnist, cifar = rows
    assert mnist["verdict"] == "holds" and mnist["statistic"] == pytest.approx(0.1)
    assert mnist["interval"] == pytest.approx((0.1, 0.1)) and mnist["threshold"] == 0.3  # equal draws: no spread
    assert "`fc` 10.0% [10.0%, 10.0%]" in mnist["evidence"] and mnist["readings"] == "same under every reading"
    assert mnist["claim"] == s3a.quote and mnist["rule"] == s3a.rule and mnist["chapter"] == "study_removal"
    assert cifar["verdict"] == "untestable" and cifar["evidence"] == "needs the removal study on resnet18 and cifar10"
    assert np.isnan(cifar["statistic"]) and cifar["readings"] == ""
    ev = evidence(tmp_path / "one", "removal", {("resnet18", "mnist", 0): removal_unit_at(0.5)},
                  responses=[("resnet18", "mnist")])
    mnist, cifar = verdicts.decide_claim(s3a, ev)
    assert mnist["verdict"] == "differs" and mnist["statistic"] == pytest.approx(0.5)  # loses 50 % ≥ 30 %
    assert cifar["verdict"] == "untestable"
    assert cifar["evidence"] == "needs resnet18 on cifar10: the cifar10 profile (or paper)"
    with pytest.raises(verdicts.Untestable, match="the removal study on resnet18 and cifar10"):
        verdicts.decision(s3a, ev, s3a.panels[1])


def test_a_claim_without_panels_is_one_untestable_row(tmp_path):
    s3a = next(c for c in studies.REGISTRY["removal"].claims if c.id == "S3a")
    bare = dataclasses.replace(s3a, panels=(), needs="the removal study on AlexNet (a profile with it)")
    ev = evidence(tmp_path, "removal", {("resnet18", "mnist", 0): removal_unit_at(0.1)})
    [row] = verdicts.decide_claim(bare, ev)
    assert row["panel"] == "" and row["verdict"] == "untestable"
    assert row["evidence"] == "needs the removal study on AlexNet (a profile with it)"


def test_every_study_registers_its_claims_with_its_chapter():
    for name, found in studies.REGISTRY.items():
        chapter = [c for c in fr.chapters.CHAPTERS.values() if c.study == name]
        assert len(chapter) == 1 and chapter[0].claims == found.claims, name
        assert all(isinstance(c, verdicts.Claim) and c.chapter == chapter[0].name for c in found.claims), name
    ids = {name: [c.id for c in found.claims] for name, found in studies.REGISTRY.items()}
    assert ids == {"selective": ["P8", "P9"], "batchnorm": ["P7"], "neurons": ["S2a", "S2b"],
                   "removal": ["S3a", "S3b"], "depth": ["S4"], "conventions": []}
