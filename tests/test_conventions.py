"""The authors' code conventions and the other readings beside the paper's (fragility.studies.conventions): one sweep
per reading and checkpoint — the adaptive attack, BatchNorm on batch statistics, ε searched per checkpoint."""
import shutil

import numpy as np
import pytest
import torch
import xarray as xr
from test_pipeline import TINY

import fragility as fr
from fragility import data, pipeline, profiles, store, studies, training, uncertainty, verdicts
from fragility.studies.conventions import (NAMES, agreement, as_responses, chosen, drift, one_at_a_time, readings,
                                          summary)

KEY = {"model": "smallcnn", "dataset": "digits"}
SCORES = ["r_x", "r_xe", "r_e"]


def test_chosen_checkpoints():
    assert chosen(None, (2, 4, 6, 8)) == [2, 4, 6, 8]  # null: every checkpoint
    assert chosen(1, (2, 4, 6, 8)) == [8]  # a number: spread evenly, the last always included
    assert chosen(2, (2, 4, 6, 8)) == [2, 8]
    assert chosen(3, (2, 4, 6, 8, 10)) == [2, 6, 10]
    assert chosen(9, (2, 4)) == [2, 4]  # no more than there are
    assert chosen([4, 6], (2, 4, 6, 8)) == [4, 6]  # a list: those checkpoints


def test_drift_reports_the_ratio_per_epoch():
    base = np.array([[[0.9, 0.45], [0.8, 0.6]], [[0.7, 0.35], [0.6, 0.3]]])  # (seed, epoch, input)
    ds = xr.Dataset({"base_accuracy": (("model", "dataset", "seed", "epoch", "input"), base[None, None])},
                    coords={"model": ["m"], "dataset": ["digits"], "seed": [0, 1], "epoch": [1, 2],
                            "input": ["clean", "adversarial"], "layer": ["fc", "global"]})
    ds["layer_index"] = ("layer", [0, 1])
    text = drift(ds, ratio=0.5)
    # epoch 1: 0.5 in both seeds; epoch 2: 0.75 and 0.5, mean 0.625
    assert text == "- m: acc(f(x_ε)) / acc(f(x)) by epoch 1: 0.50, 2: 0.62 (ρ = 0.5; range 0.50–0.62)"


pytestmark = pytest.mark.usefixtures("one_thread")
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The tiny profile, one seed, with the conventions study sweeping every reading at every checkpoint:
    (profile, results folder)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    profile = profiles.parse_profile({**TINY, "seeds": [0], "studies": {"conventions": {}}})
    results = tmp_path_factory.mktemp("conventions")
    pipeline.run(profile, results, progress=False)
    torch.set_num_threads(threads)
    return profile, results


@pytest.fixture(scope="module")
def network(ran):
    """{epoch: checkpoint} of the run and its test subset (x, y, image indices)."""
    profile, results = ran
    test = data.load("digits", "test")
    x, y = data.test_subset(test, profile.n_test, seed=0)
    image = data.subset_indices(len(test), profile.n_test, seed=0).numpy()
    nets = {e: training.load_checkpoint(training.checkpoint_path(results, "smallcnn", "digits", 0, e))[0]
            for e in profile.epochs}
    return nets, x, y, image


@pytest.fixture(scope="module")
def adaptive(ran, network):
    """Each checkpoint swept again here, independently, with the adaptive attack: {epoch: sweep}."""
    profile, results = ran
    nets, x, y, image = network
    responses = fr.open_results(results)
    out = {}
    for epoch, net in nets.items():
        eps = float(responses["epsilon"].sel(**KEY, seed=0, epoch=epoch))
        out[epoch] = fr.sweep(net, x, y, A=profile.A, filters=("h1",), epsilon=eps, attack="adaptive",
                              batch_size=profile.batch_size, image=image, progress=False)
    return out


def assert_same_sweep(unit: xr.Dataset, sweep: xr.Dataset):
    """A stored reading's sweep holds what `sweep` computed: accuracies, per-image results and ε."""
    unit = unit.sel(layer=sweep["layer"].values)
    for name in ("accuracy", "correct"):
        np.testing.assert_array_equal(unit[name].sel(filter="h1").transpose(*sweep[name].sel(filter="h1").dims)
                                      .values.astype(float), sweep[name].sel(filter="h1").values.astype(float))
    np.testing.assert_array_equal(unit["base_correct"].values.astype(float), sweep["base_correct"].values)
    assert float(unit["epsilon"]) == float(sweep["epsilon"])


@slow
def test_the_study_stores_one_sweep_per_reading_and_checkpoint(ran):
    profile, results = ran
    ds = fr.open_study(results, "conventions")
    assert ds.attrs["study"] == "conventions" and list(ds["epoch"].values) == [1, 2]
    assert list(ds["reading"].values) == ["adaptive", "batch", "epsilon"]
    for reading in ("adaptive", "batch"):
        assert bool(ds["accuracy"].sel(**KEY, seed=0, reading=reading).notnull().any(
            ["layer", "filter", "alpha", "input"]).all()), reading  # every checkpoint
    skipped = ds.attrs["epsilon_skipped"]
    swept = [e for e in profile.epochs if f"epoch {e}:" not in skipped]
    assert profile.epochs[-1] in swept  # where the profile's ε was searched, one exists
    found = ds["accuracy"].sel(**KEY, seed=0, reading="epsilon").notnull().any(["layer", "filter", "alpha", "input"])
    assert [int(e) for e, ok in zip(ds["epoch"].values, found.values) if ok] == swept


@slow
def test_the_adaptive_reading_is_the_adaptive_sweep(ran, adaptive):
    _, results = ran
    ds = fr.open_study(results, "conventions")
    for epoch, sweep in adaptive.items():
        assert_same_sweep(ds.sel(**KEY, seed=0, epoch=epoch, reading="adaptive"), sweep)


@slow
def test_the_batch_reading_normalizes_by_batch_statistics_with_the_stored_epsilon(ran, network):
    profile, results = ran
    nets, x, y, image = network
    ds, responses = fr.open_study(results, "conventions"), fr.open_results(results)
    for epoch, net in nets.items():
        eps = float(responses["epsilon"].sel(**KEY, seed=0, epoch=epoch))
        sweep = fr.sweep(net, x, y, A=profile.A, filters=("h1",), epsilon=eps, batchnorm="batch",
                         batch_size=profile.batch_size, image=image, progress=False)
        assert_same_sweep(ds.sel(**KEY, seed=0, epoch=epoch, reading="batch"), sweep)
    # the batch statistics are not the running ones: the readings differ from the stored responses somewhere
    stored = responses.sel(**KEY, seed=0, filter="h1").load()
    batch = as_responses(ds, "batch").sel(**KEY, seed=0, filter="h1")
    layers = list(batch.dropna("layer", how="all", subset=["n_params"])["layer"].values)
    assert not np.array_equal(stored["accuracy"].sel(layer=layers).transpose(*batch["accuracy"].sel(
        layer=layers).dims).values, batch["accuracy"].sel(layer=layers).values)


@slow
def test_the_epsilon_reading_repeats_the_stored_sweep_where_the_profile_searched_epsilon(ran):
    """ε is searched once per network on the last checkpoint of the first seed: searched again there, it is the same
    ε, and the sweep is the stored one."""
    profile, results = ran
    last = profile.epochs[-1]
    unit = fr.open_study(results, "conventions").sel(**KEY, seed=0, epoch=last, reading="epsilon")
    stored = store.read_unit(store.unit_path(results, "smallcnn", "digits", 0, last))
    assert float(unit["epsilon"]) == float(stored["epsilon"])
    assert_same_sweep(unit, stored.sel(filter=["h1"]))


@slow
def test_as_responses_gives_one_readings_sweeps_as_responses(ran):
    _, results = ran
    ds = fr.open_study(results, "conventions")
    batch = as_responses(ds, "batch")
    assert "reading" not in batch.dims and "stored" not in batch and list(batch["epoch"].values) == [1, 2]
    xr.testing.assert_equal(batch["accuracy"], ds["accuracy"].sel(reading="batch", drop=True))
    r = fr.scores(batch.sel(**KEY, seed=0), "h1")  # scores as on the stored responses
    assert set(SCORES) <= set(r.data_vars) and bool(np.isfinite(r["r_x"].sel(layer="global")).all())


@slow
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


@slow
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


@slow
def test_each_reading_is_compared_with_the_papers_one_change_at_a_time(ran):
    """Per reading: the labels it shares with the paper's reading when both are scored as the paper scores, and the
    unperturbed network's accuracies under each — counted here from the stored sweeps."""
    _, results = ran
    ds, responses = fr.open_study(results, "conventions"), fr.open_results(results)
    text = one_at_a_time(ds, responses, "smallcnn", "digits")
    assert text in summary(ds, responses, "smallcnn", "digits")
    for reading in ("adaptive", "batch", "epsilon"):
        alt = as_responses(ds, reading).sel(**KEY, seed=[0]).dropna("epoch", how="all", subset=["accuracy"])
        paper = responses.sel(**KEY, seed=[0], epoch=alt["epoch"].values)
        shared = []
        for name in ("r_x", "r_xe"):
            labels = [fr.characterize(fr.scores(x, "h1", rule="rectangle", scaling="unperturbed")[name]
                                      .mean("seed").drop_sel(layer="global")) for x in (paper, alt)]
            shared.append(f"{int((labels[0] == labels[1]).sum())}/{labels[0].size} {name}")
        line = next(row for row in text.splitlines() if row.startswith(f"- **{NAMES[reading]}**"))
        assert f"({shared[0]}, {shared[1]})" in line, line
        adversarial = float(alt["base_accuracy"].sel(input="adversarial").isel(epoch=-1).mean())
        assert f"adversarial {float(paper['base_accuracy'].sel(input='adversarial').isel(epoch=-1).mean()):.3f} → " \
               f"{adversarial:.3f}" in line.split(";")[-1], line


@slow
def test_the_claims_read_the_swept_readings_with_the_stored_image_draws(ran):
    """A claim decided under a swept reading reads the study's sweeps: sample 0 is the sweep as stored, and every
    replicate draws the same images as the stored responses' replicates (the unfiltered network under the adaptive
    attack is the stored one, so its replicates are the stored ones)."""
    _, results = ran
    ev = verdicts.Evidence(results, samples=20)
    stored = ev.replicates("smallcnn", "digits")
    for reading in (verdicts.Reading("batchnorm", "batch"), verdicts.Reading("attack", "adaptive")):
        swept = ev.replicates("smallcnn", "digits", reading)
        study = fr.open_study(results, "conventions").sel(**KEY, seed=0, reading=verdicts.SWEPT[reading.name])
        first = swept["accuracy"].sel(sample=0, seed=0)
        np.testing.assert_allclose(first.values, study["accuracy"].sel(layer=first["layer"].values).transpose(
            *first.dims).values, atol=1e-6)
    base = swept["base_accuracy"]  # the adaptive reading's
    np.testing.assert_allclose(base.values, stored["base_accuracy"].sel(epoch=base["epoch"].values).transpose(
        *base.dims).values, atol=1e-6)
    assert float(base.std("sample").max()) > 0  # and they are replicates, not copies of sample 0
    with pytest.raises(verdicts.Untestable, match="the conventions study with smallcnn and the epsilon reading"):
        ev.replicates("smallcnn", "mnist", verdicts.Reading("epsilon", "per-checkpoint"))


@slow
def test_a_swept_reading_that_flips_a_verdict_is_named_in_its_readings(ran):
    """A claim whose statistic reads the responses under the reading — the filtered networks' mean clean accuracy
    at the last epoch, which BatchNorm on batch statistics raises here — with a threshold between the two readings'
    intervals: the row holds under the paper's reading and says that the swept reading flips it, on which cells, and
    what the paper's reading gives on those same cells."""
    _, results = ran
    ev = verdicts.Evidence(results, samples=20)
    batch = verdicts.Reading("batchnorm", "batch")

    def mean(ev, panel, reading):  # h1, every layer and threshold
        rs = ev.replicates(panel.model, panel.dataset, reading)
        acc = rs["accuracy"].sel(input="clean", filter="h1").isel(epoch=-1).mean("seed")
        return verdicts.Outcome(acc.mean([d for d in acc.dims if d != "sample"]), "the mean")

    panel = verdicts.Panel("x", "smallcnn", "digits")
    (pl, ph), (sl, sh) = ([float(v) for v in uncertainty.interval(mean(ev, panel, r).samples)] for r in (None, batch))
    assert pl > sh or sl > ph  # measured: 0.36–0.41 against 0.48–0.54
    claim = verdicts.Claim("T", "*a test sentence*", (panel,), "the mean on the paper's side", mean,
                           (pl + sh) / 2 if pl > sh else (sl + ph) / 2, pl > sh, "claims", readings=("batchnorm",))
    [row] = verdicts.decide_claim(claim, ev)
    assert row["verdict"] == "holds", row
    assert row["readings"].startswith("flips under BatchNorm batch statistics: differs on seed 0, epoch(s) "), \
        row["readings"]
    assert "the paper's reading there: holds" in row["readings"]


@slow
def test_an_interrupted_unit_resumes_from_its_sweeps(ran, tmp_path):
    profile, results = ran
    results = shutil.copytree(results, tmp_path / "results")
    path = studies.study_path(results, "conventions", "smallcnn", "digits", 0)
    before = xr.load_dataset(path, engine="h5netcdf")
    parts = sorted((results / "studies" / "conventions" / "runs").rglob("*.nc"))
    names = [p.name for p in parts]
    assert {"adaptive-epoch001.nc", "adaptive-epoch002.nc", "batch-epoch001.nc", "batch-epoch002.nc",
            "epsilon-epoch002.nc"} <= set(names) <= {*names, "epsilon-epoch001.nc"}
    times = {p: p.stat().st_mtime_ns for p in parts}
    path.unlink()
    pipeline.run(profile, results, progress=False)
    assert {p: p.stat().st_mtime_ns for p in parts} == times  # each sweep read back, not recomputed
    xr.testing.assert_equal(xr.load_dataset(path, engine="h5netcdf")["accuracy"], before["accuracy"])
