"""Tests of the `fragility` command: help, errors, status, and a run killed mid-way that resumes to the same results."""
import os
import signal
import subprocess
import sys
import time

import pytest
import xarray as xr

from conftest import untimed
from fragility import cli, profiles, store, studies
from fragility import study as base
from test_pipeline import write_profile

COMMAND = [sys.executable, "-m", "fragility.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny networks; busy shared CPUs make multi-threaded runs crawl


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["train", "--help"], ["sweep", "--help"],
                                  ["status", "--help"], ["verify", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    out = capsys.readouterr().out
    assert exit.value.code == 0 and "examples:" in out and "fragility run --profile quick" in out
    assert all(name in out for name in cli.COMMANDS) if argv == ["--help"] else "--results" in out


def test_errors_are_one_line_with_status_2(capsys):
    assert cli.main(["status", "--profile", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fragility: error: unknown profile 'nope'") and "quick" in err and "Traceback" not in err
    done = subprocess.run(COMMAND + ["status", "--profile", "nope"], capture_output=True, text=True, env=ENV)
    assert done.returncode == 2 and done.stderr.startswith("fragility: error: unknown profile")
    assert "Traceback" not in done.stderr


BAD = {
    "a results path that is a file": (lambda tmp: ["--results", str(tmp / "file")],
                                       "--results {tmp}/file is a file, not a folder: name a folder."),
    "a results folder that cannot be written": (lambda tmp: ["--results", "/proc/fragility-results"],
                                                "--results /proc/fragility-results cannot be written to"),
    "a device this machine lacks": (lambda tmp: ["--device", "cuda:7"], "device 'cuda:7' is not usable"),
    "a device that is not one": (lambda tmp: ["--device", "tpu"], "device must be a torch device"),
    "a profile that is not UTF-8": (lambda tmp: ["--profile", str(tmp / "latin.yaml")],
                                    "{tmp}/latin.yaml is not a UTF-8 text file"),
    "n_test larger than the test set": (lambda tmp: ["--profile", str(write_profile(tmp, n_test=501))],
                                        "{tmp}/tiny.yaml: n_test 501 is larger than the test set of digits (500 "),
    "a study setting of the wrong type": (
        lambda tmp: ["--profile", str(write_profile(tmp, studies={"removal": {"draws": -1}}))],
        "{tmp}/tiny.yaml: studies.removal.draws must be a whole number ≥ 1; got -1."),
    "a depth study whose seeds are not the profile's": (
        lambda tmp: ["--profile", str(write_profile(tmp, studies={"depth": {"depths": [1], "seeds": [7]}}))],
        "{tmp}/tiny.yaml: studies.depth.seeds [7] are not the profile's"),
    "a selective epoch that is not a checkpoint": (
        lambda tmp: ["--profile", str(write_profile(tmp, studies={"selective": {"epoch": 5}}))],
        "{tmp}/tiny.yaml: studies.selective.epoch 5 is not a checkpoint of smallcnn"),
    "a verify unit that is not stored": (lambda tmp: ["--units", "smallcnn/digits/0/1"],
                                         "no stored unit smallcnn/digits/0/1"),
    "a verify unit that leaves the results folder": (lambda tmp: ["--units", "../digits/0/1"],
                                                     "model '..' cannot name a file of a results folder"),
    "a verify filter the unit was not swept with": (
        lambda tmp: ["--units", "smallcnn/digits/0/1", "--filters", "random"],
        "filters must be some of smallcnn's swept filters ['h1', 'h2', 'h3']; got ['random']."),
    "a verify filter beside study steps only": (
        lambda tmp: ["--steps", "study/depth/x", "--filters", "h1"],
        "--filters chooses the filters of the re-swept units (--units)"),
    "a verify tolerance that is NaN": (lambda tmp: ["--tolerance", "nan"],
                                       "--tolerance must be a finite number ≥ 0; got 'nan'."),
    "a verify tolerance that is negative": (lambda tmp: ["--tolerance", "-0.5"],
                                            "--tolerance must be a finite number ≥ 0; got '-0.5'."),
    "a verify tolerance that is infinite": (lambda tmp: ["--tolerance", "inf"],
                                            "--tolerance must be a finite number ≥ 0; got 'inf'."),
    "more local workers than the machine holds": (lambda tmp: ["--workers", "1000"],
                                                  "workers 1000 is more than this machine can run at once: at most "),
    "a learning rate that diverges": (lambda tmp: ["--profile", str(write_profile(tmp, lr=2.0))],
                                      "{tmp}/tiny.yaml: lr must be Adam's learning rate, a number between 0 and 1"),
    "a test subset too small to search ε": (lambda tmp: ["--profile", str(write_profile(tmp, n_test=1))],
                                            "{tmp}/tiny.yaml: n_test 1 is too small to search ε"),
    "a study layer the model lacks": (
        lambda tmp: ["--profile", str(write_profile(tmp, studies={"batchnorm": {"layers": ["blocks.9.conv"]}}))],
        "{tmp}/tiny.yaml: studies.batchnorm.layers: 'blocks.9.conv' is not a Conv2d or Linear layer of smallcnn"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "latin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    extra, message = BAD[case]
    args = ["--profile", str(write_profile(tmp_path)), "--results", str(tmp_path / "R")]
    args = [a for pair in dict(zip(args[::2], args[1::2]), **dict(zip(extra(tmp_path)[::2],
                                                                     extra(tmp_path)[1::2]))).items() for a in pair]
    before = sorted(p.name for p in tmp_path.iterdir())
    command = "verify" if case.startswith("a verify") else "run"
    done = subprocess.run(COMMAND + [command, "--quiet", *args], capture_output=True, text=True, env=ENV)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("fragility: error: " + message.format(tmp=tmp_path)), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not (tmp_path / "R").exists()


def test_status_table(tmp_path, capsys):
    assert cli.main(["status", "--profile", str(write_profile(tmp_path)), "--results", str(tmp_path / "R")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "dataset", "seed", "epoch", "trained", "swept"]
    assert lines[1].split() == ["smallcnn", "digits", "0", "1", "no", "no"]
    assert lines[-3] == "4 units: 0 trained, 0 swept"
    assert lines[-1].startswith("Compute recorded by what is stored: 0.0 min (training 0.0 min")


def store_study_unit(results, profile, name, key, seconds=90.0):
    """A stored study unit of `profile` (its variables all zero), as `fragility run` writes one."""
    [unit] = [u for n, u in studies.units(profile) if n == name and u.key == key]
    ds = xr.Dataset(dict.fromkeys(studies.study(name).variables, ((), 0.0)))
    path = studies.study_path(results, name, *key)
    base.write(ds, path, name, unit, profile, profile.studies[name], seconds, "cpu")
    return path


def test_status_lists_study_units(tmp_path, capsys):
    profile = write_profile(tmp_path, studies={"neurons": {}, "depth": {"depths": [1, 2]}})
    store_study_unit(tmp_path / "R", profiles.load_profile(profile), "neurons", ("smallcnn", "digits", 1))
    assert cli.main(["status", "--profile", str(profile), "--results", str(tmp_path / "R")]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index("") + 1:-2]
    assert "studies 1.5 min;" in lines[-1]
    assert table[0].split() == ["study", "model", "dataset", "seed", "done", "steps", "done"]
    rows = [line.split() for line in table[1:-1]]
    assert ["neurons", "smallcnn", "digits", "1", "yes", "-"] in rows  # a study without steps
    assert ["neurons", "smallcnn", "digits", "0", "no", "-"] in rows
    # each depth variant trained here: train, ε and sweep, none done yet
    assert sorted((r[1], r[-1]) for r in rows if r[0] == "depth") == [("smallcnn-d1", "0/3"), ("smallcnn-d2", "0/3")]
    assert table[-1] == f"{len(rows)} study units: 1 done; 6 of their steps: 0 done"


def test_status_names_a_corrupt_file(tmp_path, capsys):
    path = store.unit_path(tmp_path / "R", "smallcnn", "digits", 0, 2)
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(1000))
    assert cli.main(["status", "--profile", str(write_profile(tmp_path)), "--results", str(tmp_path / "R")]) == 2
    assert f"{path} is not a readable netCDF file" in capsys.readouterr().err


def run(profile, results, **kwargs):
    return subprocess.Popen(COMMAND + ["run", "--quiet", "--profile", str(profile), "--results", str(results)],
                            env=ENV, cwd=results.parent, **kwargs)


@pytest.mark.slow
def test_killed_run_resumes_to_the_results_of_an_uninterrupted_one(tmp_path):
    profile = write_profile(tmp_path)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process, uninterrupted = run(profile, killed), run(profile, whole)
    first, deadline = store.unit_path(killed, "smallcnn", "digits", 0, 1), time.monotonic() + 300
    while not first.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before storing a unit"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert len(list(killed.rglob("*.nc"))) < 4, "the run finished before it could be killed"
    assert run(profile, killed).wait() == 0 and uninterrupted.wait() == 0
    units = sorted(p.relative_to(killed) for p in killed.rglob("*.nc"))
    assert len(units) == 4 and units == sorted(p.relative_to(whole) for p in whole.rglob("*.nc"))
    for unit in units:
        xr.testing.assert_identical(untimed(store.read_unit(killed / unit)), untimed(store.read_unit(whole / unit)))
    assert not list(killed.rglob("*.tmp"))
