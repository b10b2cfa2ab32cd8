"""Tests of the `fragility` command: help, errors, status, and a run killed mid-way that resumes to the same results."""
import os
import signal
import subprocess
import sys
import time

import pytest
import xarray as xr

from conftest import untimed
from fragility import cli, store, studies
from test_pipeline import write_profile

COMMAND = [sys.executable, "-m", "fragility.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny networks; busy shared CPUs make multi-threaded runs crawl


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["train", "--help"], ["sweep", "--help"],
                                  ["status", "--help"]])
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


def test_status_table(tmp_path, capsys):
    assert cli.main(["status", "--profile", str(write_profile(tmp_path)), "--results", str(tmp_path / "R")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "dataset", "seed", "epoch", "trained", "swept"]
    assert lines[1].split() == ["smallcnn", "digits", "0", "1", "no", "no"]
    assert lines[-1] == "4 units: 0 trained, 0 swept"


def test_status_lists_study_units(tmp_path, capsys):
    profile = write_profile(tmp_path, studies={"neurons": {}, "depth": {"depths": [1, 2]}})
    done = studies.study_path(tmp_path / "R", "neurons", "smallcnn", "digits", 1)
    done.parent.mkdir(parents=True)
    done.touch()
    assert cli.main(["status", "--profile", str(profile), "--results", str(tmp_path / "R")]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index("") + 1:]
    assert table[0].split() == ["study", "model", "dataset", "seed", "done"]
    rows = [line.split() for line in table[1:-1]]
    assert ["neurons", "smallcnn", "digits", "1", "yes"] in rows and ["neurons", "smallcnn", "digits", "0", "no"] in rows
    assert sorted(r[1] for r in rows if r[0] == "depth") == ["smallcnn-d1", "smallcnn-d2"]
    assert table[-1] == f"{len(rows)} study units: 1 done"


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
