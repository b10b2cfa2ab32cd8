"""Runs on a Dask cluster (fragility.cluster): a sequential run's results, a worker lost mid-unit, bad input."""
import json
import os
import shutil
import signal
import threading
import time

import pytest
import torch
import xarray as xr
import yaml
from conftest import untimed
from distributed import LocalCluster
from test_pipeline import TINY

from fragility import cli, cluster, pipeline, profiles, store, studies, training
from fragility import study as base
from fragility.errors import FragilityError

PROFILE = {**TINY, "studies": {"removal": {"p": [0.0, 0.5], "draws": 1}}}
UNTIMED = ("seconds", "train_seconds", "device")

# Loaded into every worker of the `held` cluster: logs each sweep's start and each file written (every write goes
# through fragility.files.atomic) with the worker's pid, and makes the first sweep to finish computing wait before
# writing its unit, so that the test can kill its worker there.
PRELOAD = """
import os
import time

from fragility import files, pipeline

LOG, HOLD = {log!r}, {hold!r}


def log(line):
    with open(LOG, "a") as f:
        f.write(f"{{os.getpid()}} {{line}}\\n")


def atomic(path, write):
    out = files.unlogged(path, write)
    log(f"wrote {{path}}")
    return out


def sweep_unit(profile, checkpoints, unit, *args, **kwargs):
    log(f"start {{'/'.join(map(str, unit))}}")
    ds = pipeline.unheld(profile, checkpoints, unit, *args, **kwargs)
    try:
        os.close(os.open(HOLD, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return ds
    log("hold")
    time.sleep(120)
    return ds


if not hasattr(files, "unlogged"):  # a worker may load this more than once
    files.unlogged, files.atomic = files.atomic, atomic
    pipeline.unheld, pipeline.sweep_unit = pipeline.sweep_unit, sweep_unit
"""


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    """The profile run in this process, on one thread: (profile, results folder)."""
    torch.set_num_threads(1)
    profile = profiles.parse_profile(PROFILE)
    results = tmp_path_factory.mktemp("sequential")
    pipeline.run(profile, results, progress=False)
    return profile, results


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    """A 2-worker local cluster whose workers load PRELOAD: (cluster, write log)."""
    folder = tmp_path_factory.mktemp("held")
    log = folder / "writes.log"
    (folder / "held_preload.py").write_text(PRELOAD.format(log=str(log), hold=str(folder / "hold")))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      preload=[str(folder / "held_preload.py")]) as local:
        yield local, log


def bare(ds):
    """`ds` without the attributes that say how long and on what it was computed."""
    return ds.drop_attrs(deep=False).assign_attrs({k: v for k, v in ds.attrs.items() if k not in UNTIMED})


def listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_same_results(found, expected):
    """The same files (none temporary), holding the same results up to timings and device descriptions."""
    assert listing(found) == listing(expected)
    for name in listing(expected):
        a, b = found / name, expected / name
        if name.startswith("responses"):
            xr.testing.assert_identical(untimed(store.read_unit(a)), untimed(store.read_unit(b)))
        elif name.startswith("studies"):
            xr.testing.assert_identical(*(bare(base.read(p, studies.study(p.parent.name))) for p in (a, b)))
        elif name == "profile.json":  # the owner record
            assert json.loads(a.read_text()) == json.loads(b.read_text())
        elif name.startswith("epsilon"):
            record_a, record_b = ({k: v for k, v in json.loads(p.read_text()).items() if k not in UNTIMED}
                                  for p in (a, b))
            assert record_a == record_b
        else:
            (net_a, meta_a), (net_b, meta_b) = training.load_checkpoint(a), training.load_checkpoint(b)
            assert all(torch.equal(x, y) for x, y in zip(net_a.state_dict().values(), net_b.state_dict().values()))
            assert {k: meta_a[k] for k in ("test_accuracy", "train_accuracy", "config_hash", "epoch")} == {
                k: meta_b[k] for k in ("test_accuracy", "train_accuracy", "config_hash", "epoch")}


@pytest.mark.slow
def test_two_local_workers_give_the_sequential_results(sequential, tmp_path):
    profile, expected = sequential
    results = tmp_path / "results"
    pipeline.run(profile, results, progress=False, workers=2)
    assert_same_results(results, expected)
    assert pipeline.plan(profile, results) == []


@pytest.mark.slow
def test_a_units_numbers_do_not_depend_on_how_it_was_executed(tmp_path):
    """The same profile (threads: 1) run in one process and on a local cluster of 2 workers, from the command line:
    every variable of every unit, ε record, checkpoint and study unit is the same; each records the profile's one
    thread, not a share of the machine's cores."""
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump({**PROFILE, "threads": 1}))
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main(["run", "--quiet", "--profile", str(profile), "--results", str(one)]) == 0
    assert cli.main(["run", "--quiet", "--profile", str(profile), "--results", str(two), "--workers", "2"]) == 0
    assert_same_results(two, one)
    for results in (one, two):
        headers = store.scan(results).values()
        assert len(headers) == 4 and all(h.attrs["device"].endswith(", 1 threads") for h in headers)
        assert all(base.read(p, studies.study("removal")).attrs["device"].endswith(", 1 threads")
                   for p in (results / "studies" / "removal").glob("*.nc"))


@pytest.mark.slow
def test_a_worker_killed_mid_unit_loses_nothing(sequential, held, tmp_path):
    profile, expected = sequential
    local, log = held
    results = shutil.copytree(expected, tmp_path / "results")
    shutil.rmtree(results / "responses")
    shutil.rmtree(results / "studies")
    killed = []

    def kill_the_held_worker():
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            for pid, what in (line.split(" ", 1) for line in (log.read_text() if log.exists() else "").splitlines()):
                if what == "hold":
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_held_worker)
    killer.start()
    cluster.execute(profile, pipeline.plan(profile, results), results, progress=False,
                    scheduler=local.scheduler_address)
    killer.join()
    assert_same_results(results, expected)
    lines = [line.split(" ", 1) for line in log.read_text().splitlines()]
    [held_unit] = [what[len("start "):] for pid, what in lines if pid == killed[0] and what.startswith("start")]
    starts = [pid for pid, what in lines if what == f"start {held_unit}"]
    # killed mid-unit, then run again elsewhere (Dask runs a task at least once: under load the scheduler may start
    # the rescheduled unit on more than one worker before it lands; only one of them writes, checked below)
    assert len(starts) >= 2 and starts[0] == killed[0] and killed[0] not in starts[1:]
    # a sweep's finished layers (`.<unit>.partial.npz`) are rewritten as it goes and deleted with the unit stored
    writes = [what[len("wrote "):] for _, what in lines if what.startswith(f"wrote {results}")
              and not what.endswith(".partial.npz")]
    assert sorted(writes) == sorted(set(writes))  # no file written twice ...
    assert set(writes) == {str(results / n) for n in listing(expected) if n.startswith(("responses", "studies"))}
    assert not any(pid == killed[0] for pid, what in lines if what.startswith("wrote")
                   and not what.endswith(".partial.npz"))


@pytest.mark.slow
def test_task_errors_reach_the_caller(sequential, held, tmp_path):
    expected = sequential[1]
    results = tmp_path / "results"
    shutil.copytree(expected / "checkpoints", results / "checkpoints")
    other = profiles.parse_profile({**PROFILE, "lr": 0.002})  # the stored checkpoints were trained with lr 0.001
    with pytest.raises(FragilityError, match=r"^epsilon/smallcnn/digits: .*trained with other settings") as err:
        cluster.execute(other, pipeline.plan(other, results), results, progress=False,
                        scheduler=held[0].scheduler_address)
    assert "\n" not in str(err.value)
    assert not (results / "responses").exists()
    other_error = pipeline.Task("odd/task", os.getcwd, ())  # a TypeError: getcwd takes no arguments
    with pytest.raises(TypeError, match="getcwd"):
        cluster.execute(other, [other_error], results, progress=False, scheduler=held[0].scheduler_address)


@pytest.fixture
def tasks(tmp_path):
    profile = profiles.parse_profile(PROFILE)
    return profile, pipeline.plan(profile, tmp_path), tmp_path


@pytest.mark.parametrize("options, message", [
    ({"workers": 2, "scheduler": "tcp://127.0.0.1:8786"}, "not both"),
    ({}, "give workers"),
    ({"workers": 0}, "workers must be a whole number ≥ 1; got 0"),
    ({"workers": 1.5}, "workers must be a whole number ≥ 1"),
    ({"scheduler": ""}, "scheduler must be an address"),
    ({"scheduler": "tcp://127.0.0.1:8786", "device": "tpu"}, "device must be a torch device"),
    ({"workers": 1, "device": "vulkan"}, "not supported"),
])
def test_bad_input_is_refused_before_anything_starts(tasks, options, message):
    profile, todo, results = tasks
    with pytest.raises(FragilityError, match=message):
        cluster.execute(profile, todo, results, progress=False, **options)
    assert not any(results.iterdir())


def test_an_unreachable_scheduler_is_named(tasks, monkeypatch):
    profile, todo, results = tasks
    monkeypatch.setattr(cluster, "TIMEOUT", 1)
    start = time.monotonic()
    with pytest.raises(FragilityError, match=r"no Dask scheduler answered at 'tcp://127.0.0.1:9' within 1 s.*"
                                             r"dask scheduler"):
        cluster.execute(profile, todo, results, progress=False, scheduler="tcp://127.0.0.1:9")
    assert time.monotonic() - start < 30 and not any(results.iterdir())
