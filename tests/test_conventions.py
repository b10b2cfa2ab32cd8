"""The authors' code conventions beside the paper's reading (fragility.studies.conventions)."""
import shutil

import numpy as np
import pytest
import torch
import xarray as xr
from test_pipeline import TINY

import fragility as fr
from fragility import data, pipeline, profiles, studies, training
from fragility.studies.conventions import agreement, readings

KEY = {"model": "smallcnn", "dataset": "digits"}
SCORES = ["r_x", "r_xe", "r_e"]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The tiny profile, one seed, with the conventions study: (profile, results folder)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    profile = profiles.parse_profile({**TINY, "seeds": [0], "studies": {"conventions": {}}})
    results = tmp_path_factory.mktemp("conventions")
    pipeline.run(profile, results, progress=False)
    torch.set_num_threads(threads)
    return profile, results


@pytest.fixture(scope="module")
def adaptive(ran):
    """Each checkpoint swept again here, independently, with the adaptive attack: {epoch: sweep}."""
    profile, results = ran
    x, y = data.test_subset(data.load("digits", "test"), profile.n_test, seed=0)
    responses = fr.open_results(results)
    out = {}
    for epoch in profile.epochs:
        net = training.load_checkpoint(training.checkpoint_path(results, "smallcnn", "digits", 0, epoch))[0]
        eps = float(responses["epsilon"].sel(**KEY, seed=0, epoch=epoch))
        out[epoch] = fr.sweep(net, x, y, A=profile.A, filters=("h1",), epsilon=eps, attack="adaptive",
                              batch_size=profile.batch_size, progress=False)
    return out


def test_the_study_stores_adaptive_sweeps(ran, adaptive):
    _, results = ran
    ds = fr.open_study(results, "conventions")
    assert ds.attrs["study"] == "conventions" and list(ds["epoch"].values) == [1, 2]
    for epoch, sweep in adaptive.items():
        unit = ds.sel(**KEY, seed=0, epoch=epoch).sel(layer=sweep["layer"].values)
        np.testing.assert_array_equal(unit["accuracy"].sel(filter="h1").transpose(*sweep["accuracy"].sel(
            filter="h1").dims).values, sweep["accuracy"].sel(filter="h1").values)
        assert float(unit["epsilon"]) == float(sweep["epsilon"])


def test_readings_are_the_paper_and_the_code_scores(ran, adaptive):
    _, results = ran
    responses = fr.open_results(results)
    r = readings(fr.open_study(results, "conventions"), responses, "smallcnn", "digits")
    assert list(r["reading"].values) == ["paper", "code"] and list(r["epoch"].values) == [1, 2]
    for epoch, sweep in adaptive.items():
        layers = [str(n) for n in sweep["layer"].values]
        paper = fr.scores(responses.sel(**KEY, seed=0, epoch=epoch).sel(layer=layers), "h1")
        code = fr.scores(sweep, "h1", rule="simpson", scaling="first")
        for name in SCORES:
            got = r[name].sel(epoch=epoch, layer=layers)
            np.testing.assert_allclose(got.sel(reading="paper").values, paper[name].values, rtol=1e-12)
            np.testing.assert_allclose(got.sel(reading="code").values, code[name].values, rtol=1e-12)
    assert not np.allclose(r["r_x"].sel(reading="paper"), r["r_x"].sel(reading="code"))  # the readings differ


def test_agreement_counts_shared_labels(ran):
    _, results = ran
    ds, responses = fr.open_study(results, "conventions"), fr.open_results(results)
    r = readings(ds, responses, "smallcnn", "digits").drop_sel(layer="global")
    text = agreement(ds, responses, "smallcnn", "digits")
    agree = total = 0
    for name in ("r_x", "r_xe"):
        labels = fr.characterize(r[name])
        same = int((labels.sel(reading="paper") == labels.sel(reading="code")).sum())
        assert f"{same}/{labels.sel(reading='paper').size} ({name})" in text
        agree, total = agree + same, total + labels.sel(reading="paper").size
    assert f"**the two readings agree on {agree} of {total} Fr/Ro/Af labels**" in text


def test_an_interrupted_unit_resumes_from_its_epochs(ran, tmp_path):
    profile, results = ran
    results = shutil.copytree(results, tmp_path / "results")
    path = studies.study_path(results, "conventions", "smallcnn", "digits", 0)
    before = xr.load_dataset(path, engine="h5netcdf")
    parts = sorted((results / "studies" / "conventions" / "runs").rglob("*.nc"))
    assert [p.name for p in parts] == ["epoch001.nc", "epoch002.nc"]
    times = {p: p.stat().st_mtime_ns for p in parts}
    path.unlink()
    pipeline.run(profile, results, progress=False)
    assert {p: p.stat().st_mtime_ns for p in parts} == times  # each epoch's sweep read back, not recomputed
    xr.testing.assert_equal(xr.load_dataset(path, engine="h5netcdf")["accuracy"], before["accuracy"])
