"""The study registry (fragility.studies): settings checked at profile load, the study store, a full tiny run."""
import re
import shutil

import numpy as np
import pytest
import torch
import xarray as xr
from test_pipeline import TINY, write_profile

import fragility as fr
from fragility import FragilityError, data, pipeline, profiles, store, studies, training
from fragility.studies import base


def combined(units: dict) -> xr.Dataset:
    """Hand-made study units {(label, dataset, seed): Dataset}, keyed as `base.write` keys them (with their
    dataset's number of classes) and combined as `open_study` combines them."""
    return base.combine([ds.assign_coords(model=m, dataset=d, seed=np.int64(s)).assign(stored=((), True))
                         .assign_attrs(classes=data.info(d).classes) for (m, d, s), ds in units.items()])


# settings, checked when the profile is read


def test_every_study_is_registered():
    assert studies.STUDIES == ("selective", "batchnorm", "neurons", "removal", "depth", "conventions")
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
    ({"conventions": {"epochs": [5]}}, r"studies.conventions.epochs \[5\] are not epochs of smallcnn"),
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


PROFILE = profiles.parse_profile({**TINY, "seeds": [0, 1, 2, 3, 4, 5, 7, 9], "studies": {"removal": {"draws": 1}}})


def store_unit(results, study="removal", key=("smallcnn", "digits", 0), folder="removal", ds=None, profile=PROFILE):
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
    "conventions": {"epochs": [2]},
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
    assert list(selective["epoch"].values) == [2] and selective.sizes["level"] == 3
    assert set(selective["frozen"].dims) == {"training", "layer", "model", "dataset", "seed"}
    np.testing.assert_allclose(selective["epsilon"].sel(**key).values,
                               selective["level"].values * float(selective["epsilon_E"].sel(**key)))
    batchnorm = opened["batchnorm"]
    assert list(batchnorm["state"].values) == ["trained", "zeroed", "following re-estimated", "all re-estimated"]
    assert batchnorm.sizes["layer"] == 3
    neurons = opened["neurons"]
    first = fr.models.build("smallcnn", 1, 10, depth=profile.depth).blocks[0].conv
    assert neurons.sizes["neuron"] == first.out_channels
    assert set(neurons["defense_accuracy"].dims) == {"network", "defense_input", "model", "dataset", "seed"}
    removal = opened["removal"]
    assert list(removal["p"].values) == [0.0, 0.5, 1.0] and removal.sizes["draw"] == 2
    # p = 0 is the unperturbed network: the sweep's own unperturbed accuracy on the same test subset
    sweep = fr.open_results(results).sel(**key, epoch=profile.epochs[-1])
    np.testing.assert_allclose(removal["accuracy"].sel(**key, p=0.0).isel(draw=0).values,
                               np.broadcast_to(sweep["base_accuracy"].values, (removal.sizes["layer"], 2)))
    depth = opened["depth"]
    assert sorted(depth["model"].values) == ["smallcnn-d3", "smallcnn-d4"]
    assert set(depth["accuracy"].dims) == {"perturbation", "magnitude", "model", "dataset", "seed"}
    np.testing.assert_array_equal(depth["n_layers"].sel(dataset="digits", seed=SEED).values, [4, 5])
    conventions = opened["conventions"]
    assert list(conventions["epoch"].values) == [2] and "global" in conventions["layer"].values


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


def test_pair_claims_hold_only_when_every_pair_holds():
    from fragility.studies import base

    ds = xr.Dataset({"stored": (("model", "dataset", "seed"), [[[True], [True]]])},
                    coords={"model": ["m"], "dataset": ["digits", "mnist"], "seed": [0]})
    texts, rules = {"X": "the claim"}, {"X": "the rule"}

    def verdicts(outcome):
        return lambda ds, model, dataset: {"X": (outcome(dataset), f"{model}/{dataset}")}

    both = base.pair_claims(ds, verdicts(lambda d: "holds"), texts, rules, "chapter")
    assert [(r["id"], r["verdict"], r["evidence"]) for r in both] == [("X", "holds", "m/digits; m/mnist")]
    one = base.pair_claims(ds, verdicts(lambda d: "holds" if d == "digits" else "differs"), texts, rules, "chapter")
    assert one[0]["verdict"] == "differs"
