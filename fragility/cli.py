"""The `fragility` command: run, train, sweep and inspect the experiments of a profile."""
from __future__ import annotations

import argparse
import sys

from . import pipeline, profiles
from .errors import FragilityError, report

EXAMPLES = """examples:
  fragility run --profile quick                 # everything the book needs, offline, minutes on a laptop
  fragility run --profile mnist --data ~/data   # the paper's MNIST experiments
  fragility run --profile my.yaml --results out # your own copy of a profile
  fragility status --profile quick              # what is trained and swept so far

A profile is a shipped name ({shipped}) or the path of a YAML file; copy a shipped one from
fragility/profiles/ to make your own. Results go to results/<profile name> unless --results says otherwise.
Every step skips what already exists and writes atomically: stop a run at any time and start it again."""

COMMANDS = {
    "run": ("train what is missing, sweep every checkpoint that has no stored responses, then run the "
            "profile's studies that are missing", pipeline.run),
    "train": ("train (or resume) every model, dataset and seed of the profile", pipeline.train),
    "sweep": ("sweep every trained checkpoint that has no stored responses yet", pipeline.sweep),
    "status": ("list every unit of the profile (trained? swept?) and of its studies (done?)", None),
}


def parser() -> argparse.ArgumentParser:
    """The argument parser of the `fragility` command."""
    epilog = EXAMPLES.format(shipped=", ".join(profiles.shipped()))
    main = argparse.ArgumentParser(
        prog="fragility", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog,
        description="Fragility, robustness and antifragility of deep network parameters (Pravin et al. 2024): "
                    "train the networks of a profile, sweep synaptic filters and FGSM over their checkpoints, "
                    "and store the responses for the figures.")
    commands = main.add_subparsers(dest="command", required=True, metavar="command")
    for name, (summary, _) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                                  epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--profile", required=True, help="a shipped profile name or a profile YAML file")
        sub.add_argument("--results", help="results folder (default: results/<profile name>)")
        if name != "status":
            sub.add_argument("--data", help="data folder (default: $FRAGILITY_DATA, else data/)")
            sub.add_argument("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
            sub.add_argument("--quiet", action="store_true", help="no progress bars")
    return main


def _table(header: tuple, rows: list[tuple]) -> None:
    """Left-aligned columns."""
    table = [header] + [tuple("yes" if c is True else "no" if c is False else str(c) for c in r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def print_status(rows: list[pipeline.Status], study_rows: list[pipeline.StudyStatus]) -> None:
    """The table of units, its counts, then the table of study units and its count."""
    _table(("model", "dataset", "seed", "epoch", "trained", "swept"),
           [(r.model, r.dataset, r.seed, r.epoch, r.trained, r.swept) for r in rows])
    print(f"{len(rows)} units: {sum(r.trained for r in rows)} trained, {sum(r.swept for r in rows)} swept")
    if study_rows:
        print()
        _table(("study", "model", "dataset", "seed", "done"),
               [(r.study, r.model, r.dataset, r.seed, r.done) for r in study_rows])
        print(f"{len(study_rows)} study units: {sum(r.done for r in study_rows)} done")


def main(argv=None) -> int:
    """Entry point; a FragilityError becomes `fragility: error: <message>` on stderr and exit status 2."""
    args = parser().parse_args(argv)
    try:
        profile = profiles.load_profile(args.profile)
        if args.command == "status":
            print_status(pipeline.status(profile, args.results), pipeline.study_status(profile, args.results))
        else:
            COMMANDS[args.command][1](profile, args.results, args.data, args.device, progress=not args.quiet)
    except FragilityError as err:
        return report(err, "fragility")
    return 0


if __name__ == "__main__":
    sys.exit(main())
