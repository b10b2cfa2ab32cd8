"""Study steps (fragility.steps): a study's own trainings and sweeps are tasks of their own — planned with their
outputs and dependencies, counted by `status`, run apart by `--workers` — and a unit computed through them is the unit
computed in one go, and the one the code before the steps computed."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from conftest import Stop, earlier_code, stopping_after
from test_pipeline import TINY

from fragility import FragilityError, checks, cli, data, pipeline, profiles, steps, studies, training
from fragility import verification
from fragility import partial as partials
from fragility import study as base
from fragility.studies import conventions

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


# A study of the test's own, registered from outside the package: the label counts of the test subset (step
# `count`, a JSON record) and their shares (step `share/all`, a netCDF file, after `count`).

def _count(ctx):
    counts = np.bincount(ctx.test[1].numpy(), minlength=ctx.settings["classes"])
    steps.write_json(ctx, {"counts": counts.tolist()}, ctx.folder("count.json"), 0.25)


def _share(ctx):
    counts = np.array(steps.read_json(ctx, ctx.folder("count.json"))["counts"])
    steps.write_netcdf(ctx, xr.Dataset({"share": ("label", counts / counts.sum())}), ctx.folder("share.nc"), 0.5)


def _steps(ctx):
    count, share = ctx.folder("count.json"), ctx.folder("share.nc")
    return [steps.Step("count", count, partial(_count, ctx), recorded=partial(steps.checked, ctx, count)),
            steps.Step("share/all", share, partial(_share, ctx), ("count",), partial(steps.checked, ctx, share))]


def _run(ctx):
    counts = steps.read_json(ctx, ctx.folder("count.json"))["counts"]
    return xr.Dataset({"label_count": ("label", counts),
                       "label_share": steps.read_netcdf(ctx, ctx.folder("share.nc"))["share"]})


TALLY = base.Study("tally", "label counts in two steps", {"classes": base.Setting(10, checks.whole(1))},
                   lambda profile, settings: [base.Unit(run, run[0]) for run in profile.runs()], _run,
                   ("label_count", "label_share"), ("model", "dataset", "seed"), lambda *a, **k: None,
                   lambda *a, **k: "", steps=_steps)


@pytest.fixture
def tally():
    base.register(TALLY)
    yield TALLY
    base.REGISTRY.pop("tally", None)


def toy(**settings):
    return profiles.parse_profile({**TINY, "seeds": [0], "studies": {"tally": settings}})


UNIT = "study/tally/smallcnn/digits/0"


def test_plan_lists_each_missing_step_as_a_task_that_knows_its_output(tally, tmp_path):
    profile = toy()
    tasks = {t.key: t for t in pipeline.plan(profile, tmp_path)}
    assert [k for k in tasks if k.startswith("study/")] == [f"{UNIT}/count", f"{UNIT}/share/all", UNIT]
    assert tasks[f"{UNIT}/count"].after == ()  # the unit reads nothing of the profile's
    assert tasks[f"{UNIT}/share/all"].after == (f"{UNIT}/count",)
    assert tasks[UNIT].after == (f"{UNIT}/count", f"{UNIT}/share/all")
    folder = tmp_path / "studies" / "tally" / "runs" / "smallcnn__digits__seed0"
    assert tasks[f"{UNIT}/count"].output(profile, tmp_path) == folder / "count.json"
    assert tasks[f"{UNIT}/share/all"].output(profile, tmp_path) == folder / "share.nc"
    assert tasks[UNIT].output(profile, tmp_path) == tmp_path / "studies" / "tally" / "smallcnn__digits__seed0.nc"
    assert tasks["train/smallcnn/digits/0"].output(profile, tmp_path) == (
        tmp_path / "checkpoints" / "smallcnn" / "digits" / "seed0" / "epoch002.pt")
    assert tasks["sweep/smallcnn/digits/0/1"].output(profile, tmp_path) == (
        tmp_path / "responses" / "smallcnn" / "digits" / "seed0" / "epoch001.nc")
    assert tasks["epsilon/smallcnn/digits"].output(profile, tmp_path) is None  # it validates its own record
    assert not any(tmp_path.iterdir())  # planning writes nothing


def rows(profile, results):
    return [(s.steps_done, s.steps, s.done) for s in pipeline.study_status(profile, results)]


def test_steps_run_as_tasks_give_the_unit_computed_in_one_go(tally, tmp_path):
    profile = toy()
    apart, together = tmp_path / "apart", tmp_path / "together"
    apart.mkdir()
    todo = [t for t in pipeline.plan(profile, apart) if t.key.startswith("study/")]
    assert rows(profile, apart) == [(0, 2, False)]
    pipeline.execute(profile, todo[:1], apart, progress=False)
    assert rows(profile, apart) == [(1, 2, False)]
    left = [t for t in pipeline.plan(profile, apart) if t.key.startswith("study/")]
    assert [(t.key, t.after) for t in left] == [(f"{UNIT}/share/all", ()), (UNIT, (f"{UNIT}/share/all",))]
    pipeline.execute(profile, left, apart, progress=False)
    assert rows(profile, apart) == [(2, 2, True)]
    [(name, unit)] = studies.units(profile)
    studies.run_unit(profile, together, name, unit, progress=False)  # its steps computed on the way
    found, again = (base.read(studies.study_path(r, name, *unit.key), TALLY) for r in (apart, together))
    xr.testing.assert_identical(untimed(found), untimed(again))
    y = data.test_subset(data.load("digits", "test"), profile.n_test, seed=0)[1].numpy()
    counts = [int((y == k).sum()) for k in range(10)]  # counted here, label by label
    assert found["label_count"].values.tolist() == counts and sum(counts) == profile.n_test
    np.testing.assert_allclose(found["label_share"].values, np.array(counts) / profile.n_test)
    assert found.attrs["seconds"] >= 0.75  # what its steps record (0.25 s and 0.5 s), and its own time


def test_a_step_computed_with_other_settings_is_refused(tally, tmp_path):
    profile = toy()
    [(name, unit)] = studies.units(profile)
    studies.run_unit(profile, tmp_path, name, unit, progress=False)
    studies.study_path(tmp_path, name, *unit.key).unlink()
    other = toy(classes=12)
    folder = tmp_path / "studies" / "tally" / "runs" / "smallcnn__digits__seed0"
    for call in (lambda: pipeline.plan(other, tmp_path), lambda: pipeline.study_status(other, tmp_path),
                 lambda: studies.run_unit(other, tmp_path, name, unit, progress=False)):
        with pytest.raises(FragilityError, match=f"{folder / 'count.json'} was computed with other settings than "
                                                 "profile tiny .settings_hash"):
            call()
    (folder / "count.json").unlink()
    with pytest.raises(FragilityError, match=f"{folder / 'share.nc'} was computed with other settings"):
        pipeline.plan(other, tmp_path)
    (folder / "count.json").write_text("[1, 2")
    with pytest.raises(FragilityError, match=f"{folder / 'count.json'} is not a readable step record"):
        pipeline.plan(profile, tmp_path)
    assert not studies.study_path(tmp_path, name, *unit.key).exists()


def _declared(change, ctx):
    return change(_steps(ctx), ctx)


@pytest.mark.parametrize("change, message", [
    (lambda found, ctx: found + found[:1], "its name must be new"),
    (lambda found, ctx: found[::-1], "its `after` must name earlier steps of the unit .those before it: none"),
    (lambda found, ctx: [dataclasses.replace(found[0], name="a b")], "named with letters, digits"),
    (lambda found, ctx: [dataclasses.replace(found[0], name="../up")], "named with letters, digits"),
    (lambda found, ctx: [dataclasses.replace(found[0], output=ctx.results / "count.json")],
     "its output must lie in the unit's folder"),
    (lambda found, ctx: ["count"], "each must be a fragility.steps.Step"),
])
def test_a_bad_declaration_of_steps_is_refused(tally, tmp_path, monkeypatch, change, message):
    monkeypatch.setitem(base.REGISTRY, "tally", dataclasses.replace(TALLY, steps=partial(_declared, change)))
    with pytest.raises(FragilityError, match=f"study tally declares a step .*{message}"):
        pipeline.plan(toy(), tmp_path)
    assert not any(tmp_path.iterdir())


def test_status_counts_each_units_steps(tally, tmp_path, capsys):
    path = tmp_path / "tally.yaml"
    path.write_text(yaml.safe_dump({**TINY, "seeds": [0, 1], "studies": {"tally": {}}}))
    profile = profiles.load_profile(str(path))
    unit = studies.units(profile)[1][1]
    steps.run_step(profile, tmp_path / "R", "tally", unit, "count")
    assert cli.main(["status", "--profile", str(path), "--results", str(tmp_path / "R")]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index("") + 1:-2]
    assert table[0].split() == ["study", "model", "dataset", "seed", "done", "steps", "done"]
    assert [line.split() for line in table[1:-1]] == [["tally", "smallcnn", "digits", "0", "no", "0/2"],
                                                      ["tally", "smallcnn", "digits", "1", "no", "1/2"]]
    assert table[-1] == "2 study units: 0 done; 4 of their steps: 1 done"


def test_an_unknown_step_is_named(tally, tmp_path):
    profile = toy()
    [(name, unit)] = studies.units(profile)
    with pytest.raises(FragilityError, match=r"study tally has no step 'sweep' in unit smallcnn/digits/0: its steps "
                                             "are count, share/all"):
        steps.run_step(profile, tmp_path, name, unit, "sweep")


# The depth and conventions studies on the tiny profile: smallcnn at 3 and 4 blocks trained here, and every reading.

STUDIES = {"depth": {"depths": [3, 4], "epochs": 1, "A": 2, "magnitudes": [0.0, 0.2]},
           "conventions": {"readings": {"adaptive": [2], "batch": 1, "epsilon": None}}}
PROFILE = {**TINY, "seeds": [1], "threads": 1, "studies": STUDIES}
DEPTH = [f"study/depth/smallcnn-d{d}/digits/1" for d in (3, 4)]
CONVENTIONS = "study/conventions/smallcnn/digits/1"
TIMED = ("seconds", "step_seconds", "train_seconds", "device", "step_device")  # how long and where: vary by run


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The profile run in this process: (profile, results folder, the keys of the tasks it planned)."""
    torch.set_num_threads(1)
    profile = profiles.parse_profile(PROFILE)
    results = tmp_path_factory.mktemp("steps") / "results"
    planned = [t.key for t in pipeline.plan(profile, results)]
    pipeline.run(profile, results, progress=False)
    (results.parent / "profile.yaml").write_text(yaml.safe_dump(PROFILE))
    return profile, results, planned


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def untimed(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_attrs(deep=False).assign_attrs({k: v for k, v in ds.attrs.items() if k not in TIMED})


def assert_same(found: Path, expected: Path, names=None):
    """The same files under both folders (or those of `names`), holding the same results but for timings."""
    if names is None:
        assert listing(found) == listing(expected)
        names = listing(expected)
    for name in names:
        a, b = found / name, expected / name
        if name.endswith(".nc"):
            xr.testing.assert_identical(*(untimed(xr.load_dataset(p, engine="h5netcdf")) for p in (a, b)))
        elif name.endswith(".json"):
            assert {k: v for k, v in json.loads(a.read_text()).items() if k not in TIMED} == {
                k: v for k, v in json.loads(b.read_text()).items() if k not in TIMED}, name
        else:
            (net_a, meta_a), (net_b, meta_b) = training.load_checkpoint(a), training.load_checkpoint(b)
            assert all(torch.equal(x, y) for x, y in zip(net_a.state_dict().values(), net_b.state_dict().values()))
            assert {k: v for k, v in meta_a.items() if k in ("test_accuracy", "config_hash", "epoch")} == {
                k: v for k, v in meta_b.items() if k in ("test_accuracy", "config_hash", "epoch")}


def studied(root: Path) -> list[str]:
    return [n for n in listing(root) if n.startswith("studies/")]


@pytest.mark.slow
def test_the_plan_makes_each_training_and_sweep_of_a_study_a_task(ran):
    profile, results, planned = ran
    runs = "studies/depth/runs/smallcnn-d{}__digits__seed1"
    assert [k for k in planned if k.startswith("study/")] == [
        f"{DEPTH[0]}/train", f"{DEPTH[0]}/epsilon", f"{DEPTH[0]}/sweep", DEPTH[0],
        f"{DEPTH[1]}/train", f"{DEPTH[1]}/epsilon", f"{DEPTH[1]}/sweep", DEPTH[1],
        f"{CONVENTIONS}/sweep/adaptive/2", f"{CONVENTIONS}/sweep/batch/2", f"{CONVENTIONS}/sweep/epsilon/1",
        f"{CONVENTIONS}/sweep/epsilon/2", CONVENTIONS]
    parts = "studies/conventions/runs/smallcnn__digits__seed1"
    assert set(studied(results)) == {
        *(f"{runs.format(d)}/{f}" for d in (3, 4) for f in ("checkpoints/smallcnn/digits/seed1/epoch001.pt",
                                                            "epsilon.json", "sweep.nc")),
        *(f"{parts}/{p}-epoch{e:03d}.nc" for p, e in (("adaptive", 2), ("batch", 2), ("epsilon", 1), ("epsilon", 2))),
        "studies/depth/smallcnn-d3__digits__seed1.nc", "studies/depth/smallcnn-d4__digits__seed1.nc",
        "studies/conventions/smallcnn__digits__seed1.nc"}
    assert rows(profile, results) == [(3, 3, True), (3, 3, True), (4, 4, True)]
    assert pipeline.plan(profile, results) == []


@pytest.mark.slow
def test_units_computed_in_one_go_are_those_computed_through_their_steps(ran, tmp_path):
    """`fragility.studies.run` computes each unit's missing steps itself, in one task: the same files."""
    profile, results, _ = ran
    again = shutil.copytree(results, tmp_path / "results", ignore=shutil.ignore_patterns("studies"))
    studies.run(profile, again, progress=False)
    assert_same(again, results)


BEFORE = "c2f5f5c9859df13ec0bf9fc0d85a18681d408fb7"  # the last commit whose depth and conventions units were one task
SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
from fragility import pipeline, profiles
pipeline.run(profiles.parse_profile(json.loads(sys.argv[1])), sys.argv[2], progress=False)
"""


@pytest.mark.slow
def test_units_are_those_of_the_code_before_the_steps(ran, tmp_path):
    """The depth and conventions units equal, value for value and in their settings hash, those the code computed
    when each unit trained and swept its networks in one task."""
    profile, results, _ = ran
    earlier = earlier_code(tmp_path, BEFORE)
    (tmp_path / "run.py").write_text(SCRIPT)
    subprocess.run([sys.executable, str(tmp_path / "run.py"), json.dumps(PROFILE), str(tmp_path / "old")],
                   cwd=tmp_path, check=True, env={**os.environ, "PYTHONPATH": str(earlier), "OMP_NUM_THREADS": "1"})
    units = sorted(str(p.relative_to(results)) for p in (results / "studies").glob("*/*.nc"))
    assert len(units) == 3
    for name in units:
        new, old = (xr.load_dataset(root / name, engine="h5netcdf") for root in (results, tmp_path / "old"))
        xr.testing.assert_identical(new.drop_attrs(), old.drop_attrs())
        assert new.attrs["settings_hash"] == old.attrs["settings_hash"]
        differ = {k for k in new.attrs.keys() | old.attrs.keys() if str(new.attrs.get(k)) != str(old.attrs.get(k))}
        assert differ <= {"seconds", "git_commit", "device"}, differ


@pytest.mark.slow
def test_two_workers_run_the_steps_apart_with_the_in_process_results(ran, tmp_path):
    profile, results, _ = ran
    again = tmp_path / "results"
    pipeline.run(profile, again, progress=False, workers=2)
    assert_same(again, results)
    assert pipeline.plan(profile, again) == []


@pytest.mark.slow
def test_an_interrupted_run_of_the_code_before_resumes(ran, tmp_path):
    """The code before the steps left a depth variant's checkpoints and the conventions sweeps (which record no
    settings hash) under each unit's folder: they are taken as done, the rest is computed."""
    profile, results, _ = ran
    again = shutil.copytree(results, tmp_path / "results")
    for d in (3, 4):
        studies.study_path(again, "depth", f"smallcnn-d{d}", "digits", 1).unlink()
        for name in ("epsilon.json", "sweep.nc"):
            (again / "studies" / "depth" / "runs" / f"smallcnn-d{d}__digits__seed1" / name).unlink()
    studies.study_path(again, "conventions", "smallcnn", "digits", 1).unlink()
    for part in (again / "studies" / "conventions" / "runs").rglob("*.nc"):
        ds = xr.load_dataset(part, engine="h5netcdf")
        ds.drop_attrs(deep=False).assign_attrs({k: v for k, v in ds.attrs.items() if not k.startswith("step_")}
                                               ).to_netcdf(part, engine="h5netcdf")
    kept = {p: p.stat().st_mtime_ns for p in again.rglob("*") if p.is_file()}
    assert rows(profile, again) == [(1, 3, False), (1, 3, False), (4, 4, False)]
    assert [t.key for t in pipeline.plan(profile, again)] == [
        f"{DEPTH[0]}/epsilon", f"{DEPTH[0]}/sweep", DEPTH[0], f"{DEPTH[1]}/epsilon", f"{DEPTH[1]}/sweep", DEPTH[1],
        CONVENTIONS]
    pipeline.run(profile, again, progress=False)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing stored was computed again
    assert_same(again, results, [n for n in studied(results) if "conventions/runs" not in n])


@pytest.mark.slow
def test_a_checkpoint_without_an_epsilon_is_one_stored_skip(ran, tmp_path, monkeypatch):
    """Where no ε meets constraint 3 at a checkpoint, the `epsilon` reading's step stores that: the unit names it,
    and a later run does not search again."""
    profile, results, _ = ran
    again = shutil.copytree(results, tmp_path / "results")
    part = again / "studies" / "conventions" / "runs" / "smallcnn__digits__seed1" / "epsilon-epoch001.nc"
    part.unlink()
    studies.study_path(again, "conventions", "smallcnn", "digits", 1).unlink()
    searched = []

    def refused(*args, **kwargs):
        searched.append(kwargs["epsilon"])
        raise FragilityError("no ε meets constraint 3 here")

    monkeypatch.setattr(conventions, "sweep", refused)
    pipeline.run(profile, again, progress=False)
    assert searched == ["auto"]  # the one missing sweep, of the epsilon reading
    unit = xr.load_dataset(studies.study_path(again, "conventions", "smallcnn", "digits", 1), engine="h5netcdf")
    assert unit.attrs["epsilon_skipped"] == "epoch 1: no ε meets constraint 3 here"
    assert list(unit["epoch"].values) == [2]  # no reading swept epoch 1
    before = xr.load_dataset(studies.study_path(results, "conventions", "smallcnn", "digits", 1), engine="h5netcdf")
    xr.testing.assert_identical(unit["accuracy"].sel(reading="epsilon", epoch=2),
                                before["accuracy"].sel(reading="epsilon", epoch=2))
    assert xr.load_dataset(part, engine="h5netcdf").attrs["skipped"] == "epoch 1: no ε meets constraint 3 here"
    studies.study_path(again, "conventions", "smallcnn", "digits", 1).unlink()
    pipeline.run(profile, again, progress=False)
    assert searched == ["auto"]


@pytest.mark.slow
def test_verify_re_sweeps_a_network_the_depth_study_trained(ran, tmp_path, capsys):
    """A depth variant's sweep and a conventions reading's sweep, recomputed from what they read: identical on this
    machine (the same CPU kind and the profile's one thread); a changed stored sweep is named."""
    profile, results, _ = ran
    keys = [f"{DEPTH[0]}/sweep", f"{CONVENTIONS}/sweep/batch/2"]
    found = verification.verify_steps(profile, keys, results, tmp_path / "scratch", progress=False)
    assert ["/".join(v.unit) for v in found] == keys
    for v in found:
        assert v.method == "re-swept" and v.same_machine and v.identical and v.agrees, v
    assert set(found[0].differences) == {"accuracy", "n_filtered", "n_params", "threshold", "base_accuracy",
                                         "epsilon"}  # what a bare sweep holds of the unit's variables
    assert (tmp_path / "scratch" / "studies" / "depth" / "runs" / "smallcnn-d3__digits__seed1" / "sweep.nc").is_file()
    changed = shutil.copytree(results, tmp_path / "changed")
    path = changed / "studies" / "depth" / "runs" / "smallcnn-d3__digits__seed1" / "sweep.nc"
    ds = xr.load_dataset(path, engine="h5netcdf")
    ds["accuracy"][{"layer": 0, "alpha": 1, "input": 0}] += 0.25
    ds.to_netcdf(path, engine="h5netcdf")
    assert cli.main(["verify", "--profile", str(results.parent / "profile.yaml"), "--results", str(changed),
                     "--scratch", str(tmp_path / "scratch2"), "--steps", keys[0], "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"{keys[0]}: re-swept" in out and "DIFFERS" in out
    [v] = verification.verify_steps(profile, keys[:1], changed, tmp_path / "scratch2", progress=False)
    assert v.differences["accuracy"] == pytest.approx(0.25) and not v.agrees


@pytest.mark.slow
@pytest.mark.parametrize("step, output", [
    (f"{DEPTH[0]}/sweep", "studies/depth/runs/smallcnn-d3__digits__seed1/sweep.nc"),
    (f"{CONVENTIONS}/sweep/batch/2", "studies/conventions/runs/smallcnn__digits__seed1/batch-epoch002.nc")])
def test_a_study_sweep_stopped_part_way_resumes_after_its_finished_layers(ran, tmp_path, monkeypatch, capsys, step,
                                                                        output):
    """A study's sweep step keeps its finished layers beside its output as it goes (`.<name>.partial.npz`): stopped
    after one, it resumes with the others alone, to the output of an uninterrupted run, and the kept file is deleted."""
    profile, results, _ = ran
    again = shutil.copytree(results, tmp_path / "results")
    expected = xr.load_dataset(results / output, engine="h5netcdf")
    layers = [str(u) for u in expected["layer"].values]
    assert len(layers) > 1, "the step must sweep more than one unit for a stop part-way to mean anything"
    (again / output).unlink()
    name = step.split("/")[1]
    [unit] = [u for n, u in studies.units(profile) if n == name and step.startswith(steps.key(n, u) + "/")]
    run = partial(steps.run_step, profile, again, name, unit, step[len(steps.key(name, unit)) + 1:])
    stopping_after(monkeypatch, 1)
    with pytest.raises(Stop):
        run()
    kept = again / Path(output).with_name(f".{Path(output).stem}.partial.npz")  # spelled out: the documented name
    assert kept.is_file() and not (again / output).exists()
    assert partials.kept(kept) == 1
    studies.study_path(again, name, *unit.key).unlink()  # a unit not computed yet: its steps are what status shows
    [row] = [r for r in pipeline.study_status(profile, again) if (r.study, r.model) == (name, unit.key[0])]
    assert (row.done, row.steps_done, row.kept) == (False, row.steps - 1, 1)
    cli.print_status([], [row], {})
    assert f"{row.steps - 1}/{row.steps} (1 layer kept)" in capsys.readouterr().out  # `fragility status`'s table
    calls = stopping_after(monkeypatch, 10 ** 6)
    run()
    assert calls == layers[1:], "the resumed sweep evaluated a finished layer again, or missed one"
    assert not kept.exists()
    xr.testing.assert_identical(untimed(xr.load_dataset(again / output, engine="h5netcdf")), untimed(expected))


@pytest.mark.parametrize("key, message", [
    ("study/depth/smallcnn-d9/digits/1/sweep", "is not a step of profile tiny's study units"),
    (f"{DEPTH[0]}/fit", "study depth has no step 'fit' in unit smallcnn-d3/digits/1: its steps are train, epsilon, "
                        "sweep"),
    (f"{DEPTH[0]}/epsilon", "writes epsilon.json, not a sweep"),
    (f"{DEPTH[0]}/sweep", "is not stored under"),
])
def test_verify_names_a_step_it_cannot_recompute(tmp_path, key, message):
    with pytest.raises(FragilityError, match=message):
        verification.verify_steps(profiles.parse_profile(PROFILE), [key], tmp_path / "R", tmp_path / "scratch")


def test_a_step_of_a_study_the_profile_does_not_run_is_named(tally, tmp_path):
    profile = toy()
    [(_, unit)] = studies.units(profile)
    with pytest.raises(FragilityError, match="profile tiny runs no study 'depth': its studies are tally"):
        steps.run_step(profile, tmp_path, "depth", unit, "sweep")
    assert not any(tmp_path.iterdir())
