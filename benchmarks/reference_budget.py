"""A profile's compute from nothing on this machine: one task of each kind timed, summed over the whole plan.

Run:
    python benchmarks/reference_budget.py time DIR KEY [KEY ...]   # run these tasks in order into DIR, timing each
    python benchmarks/reference_budget.py sum DIR [DIR ...] [--stored results/reference] [--workers 2]

`time` runs the named tasks of the profile's plan (`fragility.pipeline.plan`, keys as `fragility run` names them),
one after the other in this process, into the results folder DIR, and appends `key<TAB>seconds` for each to
DIR/times.tsv. A task needs the outputs of the tasks it runs after: name those first. To time them as
`fragility run --workers 2` runs them, start two `time` commands at once, each into its own folder. The reference's
figures in the README were measured with:

    time a train/resnet18/mnist/0 epsilon/resnet18/mnist sweep/resnet18/mnist/0/6 sweep/resnet18/mnist/0/3 \
        study/selective/resnet18/mnist/0 study/batchnorm/resnet18/mnist/0 study/neurons/resnet18/mnist/0 \
        study/removal/resnet18/mnist/0 study/conventions/resnet18/mnist/0/sweep/adaptive/6 \
        study/conventions/resnet18/mnist/0/sweep/batch/6 study/conventions/resnet18/mnist/0/sweep/epsilon/6
    time b train/squeezenet1_1/mnist/1 epsilon/squeezenet1_1/mnist sweep/squeezenet1_1/mnist/1/12 \
        train/shufflenet_v2_x1_0/mnist/0 epsilon/shufflenet_v2_x1_0/mnist sweep/shufflenet_v2_x1_0/mnist/0/6 \
        study/depth/resnet34/mnist/0/train study/depth/resnet34/mnist/0/epsilon study/depth/resnet34/mnist/0/sweep \
        study/depth/resnet34/mnist/0 study/conventions/squeezenet1_1/mnist/1/sweep/adaptive/12 \
        sweep/squeezenet1_1/mnist/1/2 sweep/squeezenet1_1/mnist/1/6 \
        study/conventions/squeezenet1_1/mnist/1/sweep/batch/2 study/conventions/squeezenet1_1/mnist/1/sweep/batch/6 \
        study/conventions/squeezenet1_1/mnist/1/sweep/batch/12 study/conventions/squeezenet1_1/mnist/1/sweep/epsilon/2 \
        study/conventions/squeezenet1_1/mnist/1/sweep/epsilon/6 \
        study/conventions/squeezenet1_1/mnist/1/sweep/epsilon/12 study/conventions/squeezenet1_1/mnist/1
    sum a b --stored results/reference --assume 'study/conventions/resnet18/mnist/*=1.1'

(the conventions study's ResNet-18 unit only combines its seven readings' sweeps; four of them were not timed, so its
own seconds are taken as the SqueezeNet unit's). A conventions reading at one checkpoint reads the profile's own sweep
of that checkpoint: time that sweep first.

`sum` gives every task of the plan from nothing the seconds of its kind — its key with seeds and epochs left out
("sweep/resnet18/mnist/*/*": every sweep of ResNet-18 is the same work) — as timed by `time` (the mean where a kind was
timed more than once). A kind not timed takes what the stored results under `--stored` record for it (a training
run's seconds, a sweep unit's, an ε search's, a study unit's without steps of its own, whose record would include
theirs): from units computed on this CPU model first, else on another (labelled so); then `--assume KIND=SECONDS`; a
kind with none of these is listed as missing. It prints each kind's count, seconds and source, the sum (task time),
and the wall-clock time of `--workers` workers taking the plan's tasks in order as their inputs are ready (what
`fragility run --workers N` does).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fragility import pipeline, profiles, steps, store, studies
from fragility.provenance import processor


def kind(key: str) -> str:
    """A task's kind: its key with every number (seed, epoch) written `*`."""
    return "/".join("*" if part.isdigit() else part for part in key.split("/"))


def time_tasks(profile, results: Path, keys: list[str], data_dir) -> None:
    """Run the tasks `keys` of the profile's plan in order into `results`, appending `key<TAB>seconds` to
    results/times.tsv as each ends."""
    plan = {t.key: t for t in pipeline.plan(profile, results)}
    unknown = [k for k in keys if k not in plan]
    if unknown:
        sys.exit(f"not in the plan for {results} (done already, or misspelt): {', '.join(unknown)}")
    for key in keys:
        start = time.perf_counter()
        pipeline.execute(profile, [plan[key]], results, data_dir=data_dir, progress=False)
        seconds = time.perf_counter() - start
        with open(results / "times.tsv", "a") as out:
            out.write(f"{key}\t{seconds:.1f}\n")
        print(f"{key}\t{seconds:.1f}", flush=True)


def timed(folders: list[Path]) -> dict[str, list[float]]:
    """Seconds per kind from the folders' times.tsv."""
    out: dict[str, list[float]] = {}
    for folder in folders:
        for line in (folder / "times.tsv").read_text().splitlines():
            key, seconds = line.split("\t")
            out.setdefault(kind(key), []).append(float(seconds))
    return out


def _here(device) -> bool:
    """Whether a stored record's device string names this machine's CPU model."""
    return isinstance(device, str) and device.startswith(f"cpu: {processor()}")


def stored(profile, results: Path, here: bool = True) -> dict[str, list[float]]:
    """Seconds per kind that the stored results record, from units computed on this CPU model (`here`) or on
    another. A study unit's record is left out where the plan from nothing has steps for it: its seconds may
    include theirs."""
    out: dict[str, list[float]] = {}
    runs: dict[tuple, tuple[int, float]] = {}
    for (model, dataset, seed, epoch), header in store.scan(results).items():
        attrs = header.attrs
        if _here(attrs.get("device")) != here:
            continue
        out.setdefault(kind(f"sweep/{model}/{dataset}/{seed}/{epoch}"), []).append(float(attrs["seconds"]))
        if epoch > runs.get((model, dataset, seed), (-1, 0.0))[0]:
            runs[model, dataset, seed] = (epoch, float(attrs.get("train_seconds", -1.0)))
    for (model, dataset, seed), (epoch, seconds) in runs.items():
        if seconds > 0 and epoch == profile.grid(model).epochs[-1]:  # the whole run, as its last unit records it
            out.setdefault(kind(f"train/{model}/{dataset}/{seed}"), []).append(seconds)
    for path in sorted((results / "epsilon").glob("*.json")):
        record = pipeline.read_epsilon(path)
        if _here(record.get("device")) == here:
            out.setdefault(kind(f"epsilon/{record['model']}/{record['dataset']}"), []).append(record["seconds"])
    for name, unit in studies.units(profile):
        path = studies.study_path(results, name, *unit.key)
        if path.is_file():
            attrs = store.read_attrs(path)
            if _here(attrs.get("device")) == here:
                out.setdefault(kind(steps.key(name, unit)), []).append(float(attrs.get("seconds", 0.0)))
    return out


def schedule(tasks, seconds: dict[str, float], workers: int) -> float:
    """The wall-clock time of `workers` workers that each take the first task of the plan whose inputs are done."""
    free, done, clock, todo = [0.0] * workers, {}, 0.0, list(tasks)
    while todo:
        clock = min(free)
        ready = [t for t in todo if all(a in done and done[a] <= clock for a in t.after)]
        if not ready:  # wait for the next finishing task
            clock = min(v for v in done.values() if v > clock)
            free = [max(f, clock) for f in free]
            continue
        task, worker = ready[0], free.index(clock)
        free[worker] = done[task.key] = clock + seconds[kind(task.key)]
        todo.remove(task)
    return max(done.values(), default=0.0)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def summarise(profile, folders: list[Path], stored_at: Path | None, workers: int, assumed: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as empty:
        tasks = pipeline.plan(profile, Path(empty) / "results")
    counts: dict[str, int] = {}
    for task in tasks:
        counts[kind(task.key)] = counts.get(kind(task.key), 0) + 1
    stepped = {k for k in counts if any(other.startswith(f"{k}/") for other in counts)}
    sources = [("timed here", timed(folders))]
    if stored_at:
        sources += [(f"stored, {label}", {k: v for k, v in stored(profile, stored_at, here).items()
                                          if k not in stepped})
                    for here, label in ((True, "this CPU model"), (False, "another CPU"))]
    sources.append(("assumed", {k: [v] for k, v in assumed.items()}))
    seconds, missing = {}, []
    print(f"{profile.name} from nothing on {processor()}: {len(tasks)} tasks")
    print(f"{'kind':<58} {'count':>5} {'seconds':>9} {'total':>9}  from")
    for name, count in counts.items():
        found = [(label, values[name]) for label, values in sources if values.get(name)]
        if not found:
            missing.append(name)
            continue
        label, values = found[0]
        seconds[name] = statistics.mean(values)
        print(f"{name:<58} {count:>5} {seconds[name]:>9.0f} {_hours(count * seconds[name]):>9}  {label} "
              f"(mean of {len(values)})")
    if missing:
        print("missing (time them, pass --stored results holding them, or --assume KIND=SECONDS):", *missing,
              sep="\n  ")
        sys.exit(1)
    by_group: dict[str, float] = {}
    for name, count in counts.items():
        group = name.split("/")[0] if not name.startswith("study/") else f"study/{name.split('/')[1]}"
        by_group[group] = by_group.get(group, 0.0) + count * seconds[name]
    print("by kind:", ", ".join(f"{g} {_hours(s)}" for g, s in by_group.items()))
    total = sum(by_group.values())
    print(f"task time: {_hours(total)}; wall-clock with {workers} workers: {_hours(schedule(tasks, seconds, workers))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="reference")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("time", help="run tasks into a folder, timing each")
    run.add_argument("results", type=Path)
    run.add_argument("keys", nargs="+")
    run.add_argument("--data", default=None, help="data folder (default: the library's)")
    total = sub.add_parser("sum", help="the plan's compute from nothing, from the timed kinds")
    total.add_argument("folders", type=Path, nargs="+")
    total.add_argument("--stored", type=Path, default=None, help="stored results for kinds not timed")
    total.add_argument("--workers", type=int, default=2)
    total.add_argument("--assume", action="append", default=[], metavar="KIND=SECONDS",
                       help="seconds for a kind neither timed nor stored (say why where you quote the sum)")
    args = parser.parse_args()
    profile = profiles.load_profile(args.profile)
    if args.command == "time":
        time_tasks(profile, args.results, args.keys, args.data)
        return
    if args.workers < 1:
        parser.error(f"--workers: got {args.workers}; give a count of at least 1")
    unread = [str(f) for f in args.folders if not (f / "times.tsv").is_file()]
    if unread:
        parser.error(f"folders: {', '.join(unread)} hold no times.tsv; give folders `time` wrote to")
    assumed = {}
    for given in args.assume:
        kind_, _, value = given.rpartition("=")
        try:
            assumed[kind_] = float(value)
        except ValueError:
            kind_ = ""
        if not kind_:
            parser.error(f"--assume: got {given!r}; give KIND=SECONDS, e.g. 'study/conventions/resnet18/mnist/*=1.1'")
    summarise(profile, args.folders, args.stored, args.workers, assumed)


if __name__ == "__main__":
    main()
