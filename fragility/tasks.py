"""A task: one piece of a profile's work that writes one output, and knows that output and how it is called.

`fragility.pipeline.plan` lists the tasks still to do — training runs, ε searches, sweeps, study steps
(fragility.steps) and study units — each after the tasks whose outputs it reads; `run_task` runs one, in this
process or on a Dask worker (fragility.cluster, which skips a task whose output exists when it starts).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from . import imports
from .errors import FragilityError
from .provenance import threads

OPTIONS = ("progress", "cache")  # the keyword arguments a task's function may take besides data_dir and device


@dataclass(frozen=True)
class Task:
    """One piece of work: `fn(profile, results, *args, data_dir=…, device=…, <takes>…)`, after the tasks named in
    `after`.

    Attributes:
        key: its name, unique in a plan, e.g. "sweep/smallcnn/digits/0/2" or "study/depth/smallcnn-d3/digits/0/train".
        fn: the function that computes and writes its output (a module-level one: a Dask worker unpickles it).
        args: its arguments after the profile and the results folder.
        after: the keys of the tasks it runs after (those whose outputs it reads).
        place: `(profile, results, *args) -> Path`, the file whose presence means it is done; None for a task that
            checks its own output (the ε search validates its record) or has none.
        takes: which of `OPTIONS` `fn` takes as keyword arguments.
    """

    key: str
    fn: Callable
    args: tuple
    after: tuple = ()
    place: Callable | None = None
    takes: tuple = ("progress",)

    def run(self, profile, results, data_dir=None, device=None, progress=False, cache=None):
        """`run_task` of this task (what a Dask worker calls: fragility.cluster)."""
        return run_task(profile, self, results, data_dir, device, progress, cache)

    def output(self, profile, results) -> Path | None:
        """The file whose presence means this task is done (None: it has none to tell, see `place`)."""
        return None if self.place is None else self.place(profile, results, *self.args)


def run_task(profile, task: Task, results, data_dir=None, device=None, progress=False, cache=None):
    """Run one task with the profile's CPU thread count (the same in this process and on a Dask worker, so that
    results do not depend on how they were executed); a FragilityError it raises names the task."""
    given = {"progress": progress, "cache": cache}
    extra = {k: given[k] for k in task.takes if k in given}
    try:
        imports.ensure(profile)  # a worker registers the profile's own models and data sets first
        with threads(profile.threads):
            return task.fn(profile, results, *task.args, data_dir=data_dir, device=device, **extra)
    except FragilityError as err:
        raise FragilityError(f"{task.key}: {err}") from None
