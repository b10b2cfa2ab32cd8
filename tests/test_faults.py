"""Every fault ends in one line (exit status 2 on the command line; 130 for Ctrl-C) with nothing partial left, and
the resume ends with an uninterrupted run's results: a full disk, a scheduler address that is not a Dask
scheduler, more workers than the machine holds, a damaged ε record, a notebook parameter of the wrong type under
papermill, Ctrl-C."""
import errno
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import xarray as xr

from conftest import SMALL, profile_file, untimed
from fragility import FragilityError, book, checks, cli, cluster, files, ownership, pipeline, profiles, store, training

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
UNTIMED = ("seconds", "train_seconds", "device")


def same_results(found: Path, expected: Path) -> None:
    """The same files (no temporary file, no lock), holding the same numbers up to timings."""
    def listing(root):
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    assert listing(found) == listing(expected)
    for name in listing(expected):
        a, b = found / name, expected / name
        if name.endswith(".nc"):
            xr.testing.assert_identical(untimed(store.read_unit(a)), untimed(store.read_unit(b)))
        elif name.endswith(".json"):
            assert ({k: v for k, v in json.loads(a.read_text()).items() if k not in UNTIMED}
                    == {k: v for k, v in json.loads(b.read_text()).items() if k not in UNTIMED}), name
        else:
            (net_a, meta_a), (net_b, meta_b) = training.load_checkpoint(a), training.load_checkpoint(b)
            assert all(torch.equal(x, y) for x, y in zip(net_a.state_dict().values(), net_b.state_dict().values()))
            assert meta_a["test_accuracy"] == meta_b["test_accuracy"] and meta_a["epoch"] == meta_b["epoch"]


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# the writers a full disk stops, and the file each is stopped at
WRITERS = {
    "a response unit": (xr.Dataset, "to_netcdf", lambda args: args[1], "epoch001.nc", "sweep/smallcnn/digits/0/1"),
    "a checkpoint": (torch, "save", lambda args: args[1], "epoch002.pt", "train/smallcnn/digits/0"),
    "an ε record": (json, "dump", lambda args: args[1].name, "smallcnn__digits.json", "epsilon/smallcnn/digits"),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_is_one_line_stops_every_write_and_the_resume_is_identical(small, tmp_path, monkeypatch, capsys,
                                                                               writer):
    _, expected = small
    results, profile = tmp_path / "results", profile_file(tmp_path)
    owner, name, target, stopped_at, task = WRITERS[writer]
    real, atomic, written = getattr(owner, name), files.atomic, []

    def full(*args, **kwargs):
        if f".{stopped_at}{files.MARK}" in str(target(args)):
            no_space()
        return real(*args, **kwargs)

    def logged(path, write):
        written.append(Path(path).name)
        return atomic(path, write)

    monkeypatch.setattr(owner, name, full)
    monkeypatch.setattr(files, "atomic", logged)
    assert cli.main(["run", "--quiet", "--profile", profile, "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fragility: error: {task}: no space left on the device of {results}"), err
    assert err.endswith(f" to write {stopped_at} (nothing partial was kept): free some space, then run the same "
                        "command again to resume.\n") and err.count("\n") == 1
    assert written[-1] == stopped_at  # nothing was written after the first failure
    assert not [p for p in results.rglob("*") if files.temporary(p) or p.name == ownership.LOCK]
    assert not list(results.rglob(stopped_at))
    monkeypatch.undo()
    assert cli.main(["run", "--quiet", "--profile", profile, "--results", str(results)]) == 0
    same_results(results, expected)


def test_no_write_starts_on_a_full_file_system(tmp_path, monkeypatch):
    class Full:
        f_blocks, f_bavail = 1000, 0

    monkeypatch.setattr(files.os, "statvfs", lambda path: Full)
    called = []
    with pytest.raises(FragilityError, match="no space left on the device of .* to write x.json"):
        files.atomic(tmp_path / "x.json", called.append)
    assert called == [] and list(tmp_path.iterdir()) == []


def test_a_writer_that_hides_the_full_disk_is_still_one_line(tmp_path, monkeypatch):
    """torch.save and HDF5 report a full disk as their own errors; the free space tells."""
    state = {"full": False}
    monkeypatch.setattr(files, "no_space", lambda folder: state["full"])

    def write(tmp):
        state["full"] = True
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    with pytest.raises(FragilityError, match="no space left"):
        files.atomic(tmp_path / "x.pt", write)
    assert list(tmp_path.iterdir()) == []
    state["full"] = False
    with pytest.raises(RuntimeError, match="PytorchStreamWriter"):  # a writer's own bug is not hidden
        files.atomic(tmp_path / "x.pt", lambda tmp: (_ for _ in ()).throw(RuntimeError("PytorchStreamWriter")))


# the cluster


@pytest.fixture
def silent_server():
    """The address of a server that accepts connections and answers nothing Dask understands (an HTTP port)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_address_that_is_not_a_dask_scheduler_is_refused_in_time(silent_server, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "TIMEOUT", 2)
    profile = profiles.parse_profile(SMALL)
    start = time.monotonic()
    with pytest.raises(FragilityError, match=f"no Dask scheduler answered at '{silent_server}' within 2 s"):
        cluster.execute(profile, pipeline.plan(profile, tmp_path), tmp_path, progress=False, scheduler=silent_server)
    assert time.monotonic() - start < 2 + 8 and not any(tmp_path.iterdir())


def test_workers_are_bounded_by_the_machine(tmp_path, monkeypatch):
    profile = profiles.parse_profile(SMALL)
    for workers in (1000, checks.cores() + 1):
        with pytest.raises(FragilityError, match=f"workers {workers} is more than this machine can run at once"):
            pipeline.run(profile, tmp_path / "R", progress=False, workers=workers)
        with pytest.raises(FragilityError, match="more than this machine can run"):
            cluster.execute(profile, pipeline.plan(profile, tmp_path), tmp_path, progress=False, workers=workers)
    assert not any(tmp_path.iterdir())
    monkeypatch.setattr(checks, "cores", lambda: 8)
    monkeypatch.setattr(checks, "free_memory", lambda: int(2.5 * checks.WORKER_MEMORY))
    assert checks.workers(2) == 2
    with pytest.raises(FragilityError, match=r"at most 2 \(8 CPU cores and 2.5 GiB of memory available"):
        checks.workers(3)
    monkeypatch.setattr(checks, "free_memory", lambda: None)
    assert checks.workers(8) == 8


# damaged records


@pytest.mark.parametrize("content", ["", "{", "[]", '{"epsilon": "x"}', '{"epsilon": -1}', '{"epsilon": NaN}',
                                     '{"epsilon": 0.1, "seconds": []}', "\x00\xff"])
def test_a_damaged_epsilon_record_is_named(small, tmp_path, content, capsys):
    profile, results = small
    results = shutil.copytree(results, tmp_path / "results")
    path = results / "epsilon" / "smallcnn__digits.json"
    path.write_text(content)
    assert cli.main(["status", "--profile", profile_file(tmp_path), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err == f"fragility: error: {path} is not a readable ε record: {store.MOVE}.\n"
    for call in (lambda: pipeline.plan(profile, results), lambda: pipeline.recorded_seconds(profile, results)):
        with pytest.raises(FragilityError, match=f"{path} is not a readable ε record"):
            call()


# notebooks


def test_each_notebook_checks_its_parameters_first():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        at = [i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", [])][0]
        lines = "".join(code[at + 1]["source"]).splitlines()
        check = [i for i, line in enumerate(lines) if line.startswith("book.check(globals())")]
        load = [i for i, line in enumerate(lines) if "book.load(" in line]
        assert check and load and check[0] < load[0], path.name


@pytest.mark.parametrize("namespace, message", [
    ({"epoch": "x"}, "parameter epoch must be a whole number ≥ 1, or null; got 'x'."),
    ({"seed": True}, "parameter seed must be a whole number ≥ 0, or null; got True."),
    ({"layers": "fc"}, "parameter layers must be a list of layer names, or null; got 'fc'."),
    ({"results": 3}, "parameter results must be a name (text), or null; got 3."),
    ({"normalized": "yes"}, "parameter normalized must be true or false; got 'yes'."),
])
def test_book_check_refuses_what_execute_refuses(namespace, message):
    ok = {"results": None, "profile": "reference", "model": None, "epoch": None, "In": [], "print": print}
    book.check(ok)
    with pytest.raises(FragilityError) as error:
        book.check({**ok, **namespace})
    assert str(error.value) == message
    assert error.value._render_traceback_() == [f"FragilityError: {message}"]  # what Jupyter shows: one line


@pytest.mark.slow
def test_papermill_on_a_notebook_stops_at_a_wrong_parameter_type(tmp_path):
    out = tmp_path / "out.ipynb"
    done = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "fig06_filters.ipynb"),
                           str(out), "-p", "epoch", '"x"', "--cwd", str(tmp_path)], capture_output=True, text=True,
                          env=ENV)
    assert done.returncode != 0
    error = [o for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", []) if o["output_type"] ==
             "error"]
    assert len(error) == 1 and len(error[0]["traceback"]) == 1
    assert error[0]["traceback"][0].startswith("FragilityError: parameter epoch must be a whole number ≥ 1, or null; "
                                               "got ")
    assert "parameter epoch must be a whole number ≥ 1" in done.stderr


# Ctrl-C


# The interrupted run is held in its second epoch until the test's Ctrl-C arrives, so a loaded machine cannot let it
# finish first (the command line is the same `fragility run`; only training's epoch function is wrapped). Ctrl-C at a
# terminal raises KeyboardInterrupt: a test runner started in the background (as `cmd &` does) passes SIGINT on
# ignored, so the run gets Python's own handler back, as it has at a terminal.
HELD = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from fragility import cli, training
epoch, calls = training._epoch, []
def held(*args, **kwargs):
    calls.append(None)
    if len(calls) == 2:  # epoch 1's checkpoint is written: wait here for the Ctrl-C
        time.sleep(600)
    return epoch(*args, **kwargs)
training._epoch = held
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_the_resume_is_identical(small, tmp_path):
    _, expected = small
    results, profile = tmp_path / "results", profile_file(tmp_path)
    arguments = ["run", "--quiet", "--profile", profile, "--results", str(results)]
    process = subprocess.Popen([sys.executable, "-c", HELD, *arguments], env=ENV, stderr=subprocess.PIPE, text=True)
    first, deadline = training.checkpoint_path(results, "smallcnn", "digits", 0, 1), time.monotonic() + 300
    while not first.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err == cli.INTERRUPTED + "\n", err
    assert not store.unit_path(results, "smallcnn", "digits", 0, 2).exists(), "the run ended before the signal"
    assert not [p for p in results.rglob("*") if files.temporary(p) or p.name == ownership.LOCK]
    command = [sys.executable, "-m", "fragility.cli", *arguments]
    assert subprocess.run(command, env=ENV).returncode == 0
    same_results(results, expected)
