"""Run a profile's tasks on a Dask cluster: a local one of N worker processes, or a running one at an address.

Each task of `fragility.pipeline.plan` — a training run, an ε search, a sweep, a study step (fragility.steps) or a
study unit — becomes one Dask future whose arguments include the futures of the tasks it runs after, so the
scheduler starts it only once they have finished. A task runs itself (`Task.run`) on a worker; its output is written
atomically (fragility.files), and a task whose output (`Task.output`) already exists when it starts does nothing.
When a worker is lost the scheduler runs its tasks again on another worker (at most `ALLOWED_FAILURES` times for a
local cluster; a running cluster's own setting applies there): a sweep, study step or study unit lost half-way is
recomputed from scratch, a training run resumes from its last checkpoint, and nothing is written twice.

Every task computes with the profile's CPU thread count (`Task.run` sets it on the worker as in-process),
so a unit's numbers do not depend on how it was executed. The client holds the results folder's lock
(fragility.ownership) while the workers write it.

On CUDA each task asks for one unit of the worker resource `GPU`, so a worker started with `--resources GPU=1` runs
one task at a time on its GPU; a local cluster gives each of its workers that resource itself.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import torch
from distributed import Client, LocalCluster, as_completed
from tqdm.auto import tqdm

from . import checks, data, files, ownership
from .errors import FragilityError

ALLOWED_FAILURES = 3  # times a task may be on a worker that is lost before the run fails (KilledWorker)
TIMEOUT = 10  # seconds to wait for the scheduler at an address to answer, the whole connection attempt included


def execute(profile, tasks: list, results, data_dir=None, device=None, progress: bool = True, workers=None,
            scheduler=None) -> None:
    """Run `tasks` on a local Dask cluster of `workers` processes, or on the running one at `scheduler`.

    Args:
        profile: the Profile the tasks were planned from.
        tasks: `pipeline.Task`s in an order that respects their dependencies (`pipeline.plan`); a dependency that
            is not among them is taken as done.
        results: the results folder, which every worker must see at the same path (a shared file system).
        data_dir: the data folder (default: $FRAGILITY_DATA, else data/ here), seen by every worker.
        device: torch device of every task, e.g. "cpu" or "cuda" (None: CUDA when available; on a running cluster
            each worker chooses, and only an explicit CUDA device asks for the `GPU` resource).
        progress: show a progress bar over the finished tasks.
        workers: start a local cluster of this many processes (at most one per CPU core and per
            `checks.WORKER_MEMORY` of available memory), each running one task at a time with the profile's thread
            count.
        scheduler: the address of a running cluster's scheduler, e.g. "tcp://head:8786".

    Raises:
        FragilityError: bad workers (more than the machine holds), scheduler or device; an address where no Dask
            scheduler answers within `TIMEOUT` seconds (whatever listens there); another live run writing
            `results`; or the first task that fails with one (its message names the task). A task's other
            exceptions propagate as they are. The remaining tasks are cancelled first.
    """
    if workers is not None and scheduler is not None:
        raise FragilityError("give either workers (a local cluster) or scheduler (a running cluster), not both.")
    if workers is None and scheduler is None:
        raise FragilityError("give workers (the size of a local cluster) or scheduler (a running cluster's "
                             "address), e.g. workers=2.")
    if workers is not None:
        checks.workers(workers)
        device = str(checks.device(device))
    else:
        checks.require(scheduler, checks.Rule(lambda v: isinstance(v, str) and v.strip() != "",
                                              "an address such as 'tcp://head:8786'"), "scheduler")
        device = _device(device)
    if not tasks:
        return
    results, data_dir = checks.path(results, "results").absolute(), data.data_root(data_dir).absolute()
    gpu = device is not None and torch.device(device).type == "cuda"
    with ownership.lock(results):
        files.clean(results)
        if workers is not None:
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                              scheduler_kwargs={"allowed_failures": ALLOWED_FAILURES},
                              **({"resources": {"GPU": 1}} if gpu else {})) as local, \
                    Client(local, set_as_default=False) as client:
                _submit_all(client, profile, tasks, results, data_dir, device, gpu, progress)
        else:
            with _connect(scheduler) as client:
                _submit_all(client, profile, tasks, results, data_dir, device, gpu, progress)
        files.clean(results)


def _device(device) -> str | None:
    """The device of a running cluster's tasks, checked for its form only: the workers, not this machine, run it."""
    if device is None:
        return None
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        found = None
    if found is None or found.type not in ("cpu", "cuda"):
        raise FragilityError(f"device must be a torch device such as 'cpu' or 'cuda:0'; got {device!r}.")
    return str(found)


def _connect(address: str):
    """A client of the scheduler at `address` within `TIMEOUT` seconds — the whole attempt bounded, in a thread with
    a deadline, since a server that is not a Dask scheduler may accept the connection and never answer — or a
    FragilityError saying how to start one."""
    box, guard = {}, threading.Lock()

    def connect():
        try:
            client = Client(address, timeout=TIMEOUT, set_as_default=False)
        except Exception as err:  # reported in the caller's thread
            with guard:
                box["error"] = err
            return
        with guard:
            if "abandoned" not in box:
                box["client"] = client
                return
        client.close()  # it answered after the deadline: nobody uses it

    attempt = threading.Thread(target=connect, name="fragility-connect", daemon=True)
    attempt.start()
    attempt.join(TIMEOUT)
    with guard:
        if "client" in box:
            return box["client"]
        box["abandoned"] = True
        reason = box.get("error", "what listens there does not speak Dask's protocol")
    raise FragilityError(f"no Dask scheduler answered at {address!r} within {TIMEOUT} s ({reason}): start one "
                         "with `dask scheduler` and workers with `dask worker ADDRESS` (or a dask-jobqueue "
                         "cluster), then pass the address it prints; or use a local cluster instead (workers=N, "
                         "or `--workers N` on the command line).")


def _submit_all(client, profile, tasks, results: Path, data_dir: Path, device, gpu: bool, progress: bool) -> None:
    """Submit every task after the futures of the tasks it runs after, then wait for them all."""
    token = hashlib.sha256(f"{results}|{profile!r}".encode()).hexdigest()[:8]
    futures = {}
    for task in tasks:
        after = [futures[k] for k in task.after if k in futures]
        futures[task.key] = client.submit(_run, profile, task, results, data_dir, device, *after,
                                          key=f"{task.key.replace('/', '-')}-{token}", pure=False,
                                          resources={"GPU": 1} if gpu else None)
    _wait(client, futures, progress)


def _wait(client, futures: dict, progress: bool) -> None:
    """Wait for `futures` (by task key) with a progress bar; on the first that does not finish, cancel the others
    and raise its error."""
    keys = {future.key: key for key, future in futures.items()}
    with tqdm(total=len(futures), desc="tasks", unit="task", disable=not progress) as bar:
        for future in as_completed(list(futures.values()), loop=client.loop):
            if future.status == "finished":
                bar.update()
                continue
            status = future.status
            error, trace = (future.exception(), future.traceback()) if status == "error" else (None, None)
            client.cancel(list(futures.values()))
            if isinstance(error, FragilityError):
                raise FragilityError(str(error)) from None
            if error is not None:
                raise error.with_traceback(trace)
            raise FragilityError(f"{keys[future.key]}: {status} on the cluster (did a worker or the scheduler go "
                                 "away?): run again to resume.")


def _run(profile, task, results: Path, data_dir: Path, device, *_after) -> None:
    """One task on a worker (`_after`: its dependencies' results, which order it), unless its output exists; with
    the profile's thread count, which `Task.run` sets."""
    path = task.output(profile, results)
    if path is not None and path.is_file():
        return
    task.run(profile, results, data_dir, device, progress=False)
