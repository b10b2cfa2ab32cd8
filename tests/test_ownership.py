"""Nothing of the user's is ever lost: one run at a time writes a results folder (its lock), one profile owns it
(profile.json), only fragility's own temporary files are cleaned, folders that are only read stay untouched (even
read-only ones), and no path built from a name leaves the results folder."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest
import xarray as xr

import fragility as fr
from conftest import SMALL, profile_file, untimed
from fragility import FragilityError, book, cli, files, ownership, pipeline, profiles, store, training, verification

pytestmark = pytest.mark.usefixtures("one_thread")

COMMAND = [sys.executable, "-m", "fragility.cli"]


def tree(root, times=False):
    """Every path under `root` with its content (files) or None (folders; their modification times if asked)."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else p.stat().st_mtime_ns if times else None)
            for p in [root, *root.rglob("*")]}


# the lock


def test_a_run_leaves_its_folder_unlocked_and_owned(small):
    profile, results = small
    assert not (results / ownership.LOCK).exists()
    record = json.loads((results / ownership.OWNER).read_text())
    assert record == {"schema": ownership.SCHEMA, "profile": "small", "sweep_settings": json.loads(
        json.dumps(profile.sweep_settings)), "sweep_hash": profile.sweep_hash}


def test_a_live_run_keeps_the_folder(small, tmp_path, capsys):
    profile, results = small
    results = shutil.copytree(results, tmp_path / "results")
    store.unit_path(results, "smallcnn", "digits", 0, 2).unlink()
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock = results / ownership.LOCK
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "now"}))
        before = tree(results)
        with pytest.raises(FragilityError) as error:
            pipeline.run(profile, results, progress=False)
        message = str(error.value)
        assert message.startswith(f"{results} is being written by another fragility run (pid {holder.pid} on "
                                  f"{socket.gethostname()}, started now; its lock is {lock})") and "\n" not in message
        assert tree(results) == before  # nothing written, the holder's lock kept
        assert cli.main(["sweep", "--quiet", "--profile", profile_file(tmp_path), "--results", str(results)]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_runs_lock_is_taken_over_with_a_notice(small, tmp_path, capsys):
    profile, results = small
    results = shutil.copytree(results, tmp_path / "results")
    store.unit_path(results, "smallcnn", "digits", 0, 2).unlink()
    ended = subprocess.Popen(["true"])
    ended.wait()
    lock = results / ownership.LOCK
    lock.write_text(json.dumps({"pid": ended.pid, "host": socket.gethostname(), "started": "then"}))
    pipeline.run(profile, results, progress=False)
    notice = capsys.readouterr().err
    assert notice == (f"fragility: taking over the lock of {results} from a run that has ended (pid {ended.pid} on "
                      f"{socket.gethostname()}, started then).\n")
    assert store.unit_path(results, "smallcnn", "digits", 0, 2).is_file() and not lock.exists()


@pytest.mark.parametrize("record", ["", "{not json", json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                                 "process_start": "-1"})],
                         ids=["empty", "not-json", "this-pid-reused"])  # ids that every test process collects alike
def test_an_unreadable_or_reused_lock_is_taken_over(tmp_path, record, capsys):
    """A lock left empty by a run killed while it wrote it, or whose pid another process now has."""
    (tmp_path / ownership.LOCK).write_text(record)
    with ownership.lock(tmp_path):
        assert json.loads((tmp_path / ownership.LOCK).read_text())["pid"] == os.getpid()
    assert "taking over the lock" in capsys.readouterr().err and not (tmp_path / ownership.LOCK).exists()


def test_another_hosts_lock_is_never_taken(tmp_path):
    (tmp_path / ownership.LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(FragilityError, match=f"if that run is gone, delete {tmp_path / ownership.LOCK}"), \
            ownership.lock(tmp_path):
        pass
    assert (tmp_path / ownership.LOCK).exists()


def test_the_lock_is_released_however_the_run_ends_and_nested_locks_share_it(tmp_path):
    folder = tmp_path / "new"
    with pytest.raises(RuntimeError), ownership.lock(folder):
        with ownership.lock(folder):  # the same run: nested
            assert (folder / ownership.LOCK).is_file()
        assert (folder / ownership.LOCK).is_file()
        raise RuntimeError
    assert not folder.exists()  # created for the run and left empty: removed again
    with ownership.lock(tmp_path):
        (tmp_path / "kept").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


# the owner


def test_another_profiles_run_into_the_folder_is_refused(small, tmp_path):
    _, results = small
    results = shutil.copytree(results, tmp_path / "results")
    other = profiles.parse_profile({**SMALL, "name": "other", "seeds": [1]})
    before = tree(results)
    for call in (lambda: pipeline.run(other, results, progress=False), lambda: pipeline.status(other, results),
                 lambda: pipeline.train(other, results, progress=False)):
        with pytest.raises(FragilityError, match=f"{results} holds the results of profile 'small' "
                                                 f"\\({results / ownership.OWNER}\\), not of profile 'other'"):
            call()
    assert tree(results) == before
    (results / ownership.OWNER).unlink()  # a folder written before owner records: its units say whose it is
    with pytest.raises(FragilityError, match="holds the results of profile 'small' .*epoch00[12].nc"):
        pipeline.run(other, results, progress=False)
    (results / ownership.OWNER).write_text("[]")
    with pytest.raises(FragilityError, match=f"{results / ownership.OWNER} is not a readable record"):
        pipeline.status(other, results)


def test_the_same_profile_resumes_and_changed_settings_are_refused(small, tmp_path):
    profile, results = small
    results = shutil.copytree(results, tmp_path / "results")
    store.unit_path(results, "smallcnn", "digits", 0, 1).unlink()
    pipeline.run(profile, results, progress=False)
    assert pipeline.plan(profile, results) == []
    for changes in ({"A": 3}, {"threads": 2}):
        with pytest.raises(FragilityError, match="was computed with other settings than profile small"):
            pipeline.run(profiles.parse_profile({**SMALL, **changes}), results, progress=False)


# cleaning


def test_only_fragilitys_own_temporary_files_are_cleaned(small, tmp_path):
    profile, results = small
    results = shutil.copytree(results, tmp_path / "results")
    store.unit_path(results, "smallcnn", "digits", 0, 2).unlink()
    mine = {results / "thesis" / ".chapter1.tex.swp.tmp": b"my thesis", results / ".git" / ".COMMIT_EDITMSG.tmp":
            b"message", results / "responses" / ".notes.tmp": b"notes",
            results / ".x.fragility-abcd1234.tmp": b"beside, not in a folder fragility writes",
            results / "responses" / ".a.fragility-toolong12345.tmp": b"not atomic's pattern"}
    left = results / "responses" / "smallcnn" / ".epoch002.nc.fragility-k2j4h_9z.tmp"
    for path, content in {**mine, left: b"partial"}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    pipeline.run(profile, results, progress=False)
    assert {p: p.read_bytes() for p in mine} == mine and not left.exists()
    assert not [p for folder in files.FOLDERS for p in (results / folder).rglob("*") if files.temporary(p)]


# folders only read


def test_reading_commands_write_nothing_even_to_a_read_only_folder(small, tmp_path, monkeypatch):
    profile, results = small
    results = shutil.copytree(results, tmp_path / "results")
    shutil.rmtree(results / "checkpoints")  # a shipped folder: no checkpoints
    before = tree(results, times=True)
    modes = {p: p.stat().st_mode for p in [results, *results.rglob("*")]}
    for path in modes:
        path.chmod(0o555 if path.is_dir() else 0o444)
    done = subprocess.run(COMMAND + ["status", "--profile", profile_file(tmp_path), "--results", str(results)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and "2 units: 0 trained, 2 swept" in done.stdout, done.stderr

    def refused(*args, **kwargs):
        raise AssertionError("a write was attempted")

    monkeypatch.setattr(files, "atomic", refused)
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    try:
        assert [s.swept for s in pipeline.status(profile, results)] == [True, True]
        assert pipeline.recorded_seconds(profile, results)["sweeps"] > 0
        assert fr.open_results(results)["accuracy"].load().notnull().all()
        assert len(fr.claims(results)) > 0
        page = book.load("fig06_filters", results, "small")
        assert page.missing is None and page.responses is not None
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    assert tree(results, times=True) == before


# paths


@pytest.mark.parametrize("value", [3, None, ["results"], 2.5, b"results", "", {"a": 1}])
def test_path_arguments_that_are_not_paths_are_one_line(value):
    calls = [lambda: fr.open_results(value), lambda: fr.open_study(value, "removal"), lambda: fr.claims(value),
             lambda: store.scan(value)]
    if value is not None:  # None means the default folder
        calls += [lambda: pipeline.status(profiles.parse_profile(SMALL), value),
                  lambda: pipeline.run(profiles.parse_profile(SMALL), value, progress=False),
                  lambda: book.load("fig06_filters", value)]
    for call in calls:
        with pytest.raises(FragilityError) as error:
            call()
        assert "must be the path of a folder" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "/abs", "", "x\0y"])
def test_no_path_built_from_a_name_leaves_the_results_folder(name, tmp_path):
    for build in (lambda: store.unit_path(tmp_path, name, "digits", 0, 1),
                  lambda: store.unit_path(tmp_path, "smallcnn", name, 0, 1),
                  lambda: training.checkpoint_path(tmp_path, name, "digits", 0, 1),
                  lambda: pipeline.stored_epsilon(profiles.parse_profile(SMALL), tmp_path, name, "digits")):
        with pytest.raises(FragilityError, match="cannot name a file of a results folder"):
            build()
    profile = profiles.parse_profile(SMALL)
    with pytest.raises(FragilityError, match="cannot name a file of a results folder"):
        profiles.results_dir(profiles.Profile(**{**profile.__dict__, "name": name}))


# verify's scratch


@pytest.mark.parametrize("where", ["the results", "inside them", "holding them"])
def test_verify_refuses_a_scratch_that_would_overwrite_the_stored_units(small, tmp_path, where):
    profile, results = small
    results = shutil.copytree(results, tmp_path / "outer" / "results")
    scratch = {"the results": results, "inside them": results / "scratch", "holding them": tmp_path / "outer"}[where]
    profile_file(tmp_path / "outer")
    before = tree(tmp_path)
    with pytest.raises(FragilityError, match="would overwrite the stored ones they are compared with"):
        verification.verify(profile, None, results, scratch, progress=False)
    done = subprocess.run(COMMAND + ["verify", "--profile", profile_file(tmp_path / "outer"), "--results",
                                     str(results), "--scratch", str(scratch)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "would overwrite" in done.stderr
    assert tree(tmp_path) == before


def test_verify_leaves_the_results_as_they_were(small, tmp_path):
    profile, results = small
    results = shutil.copytree(results, tmp_path / "results")
    before = tree(results)
    [found] = verification.verify(profile, [("smallcnn", "digits", 0, 1)], results, tmp_path / "scratch",
                                  progress=False)
    assert found.identical, found.differences
    assert tree(results) == before and not (tmp_path / "scratch" / ownership.LOCK).exists()
    xr.testing.assert_identical(untimed(store.read_unit(store.unit_path(tmp_path / "scratch", *found.unit))),
                                untimed(store.read_unit(store.unit_path(results, *found.unit))))
