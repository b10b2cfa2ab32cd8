"""The book: every figure and study notebook executed with papermill against a results folder, its parameters checked
first.

    python -m fragility.book execute --results results/quick --profile quick [--only fig06_filters] [-p layer fc]

writes the executed notebooks to book/_executed/, which `jupyter-book build .` then renders. A bad parameter
(unknown model, layer, epoch …) stops everything with one message naming the valid choices, before any notebook
runs; a notebook that fails stops with its error's one-line message.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

from .errors import FragilityError, report
from .plots import PARAMETERS, check_parameters
from .store import open_results
from .widgets import STATIC

__all__ = ["check_parameters", "execute", "main", "results_folder"]
NOTEBOOKS = Path("notebooks")
EXECUTED = Path("book") / "_executed"
PATTERNS = ("fig*.ipynb", "study_*.ipynb")  # the paper's figures (4–12), then the related studies (seeds 002–004)


def results_folder(results=None, profile: str = "quick") -> Path:
    """`results`, or results/<profile> when None; a relative path missing here is looked up from the repository root."""
    path = Path(results) if results is not None else Path("results") / profile
    root = Path(__file__).resolve().parents[1] / path
    return path if path.is_absolute() or path.exists() or not root.exists() else root


def execute(results, profile: str, notebooks=NOTEBOOKS, output=EXECUTED, only=None, parameters=None,
            log=print) -> list[Path]:
    """Execute every notebooks/fig*.ipynb and study_*.ipynb (or those named in `only`) into `output` with papermill.

    Each notebook gets `results`, `profile` and those of `parameters` it declares. Before any runs, `parameters`
    must each be declared by some notebook, and the figure selections among them pass `check_parameters`.
    """
    import papermill as pm

    results, parameters = results_folder(results, profile).resolve(), dict(parameters or {})
    paths = [path for pattern in PATTERNS for path in sorted(Path(notebooks).glob(pattern))]
    if not paths:
        raise FragilityError(f"no {' or '.join(PATTERNS)} notebooks in {Path(notebooks).resolve()}: run from the "
                             "repository root.")
    if only:
        missing = sorted(set(only) - {p.stem for p in paths})
        if missing:
            raise FragilityError(f"no notebook(s) {', '.join(missing)} in {notebooks}: choose from "
                                 f"{', '.join(p.stem for p in paths)}.")
        paths = [p for p in paths if p.stem in only]
    declared = {p: pm.inspect_notebook(str(p)) for p in paths}
    known = sorted(set().union(*declared.values()))
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise FragilityError(f"no notebook takes the parameter(s) {', '.join(unknown)}: they take {', '.join(known)}.")
    check_parameters(open_results(results), **{k: v for k, v in parameters.items() if k in PARAMETERS})
    Path(output).mkdir(parents=True, exist_ok=True)
    previous, os.environ[STATIC] = os.environ.get(STATIC), "1"  # the kernels draw static figures, no widgets
    try:
        for path, names in declared.items():
            given = {k: v for k, v in {"results": str(results), "profile": profile, **parameters}.items()
                     if k in names}
            start = time.perf_counter()
            try:
                pm.execute_notebook(str(path), str(Path(output) / path.name), parameters=given, progress_bar=False,
                                    kernel_name="python3")
            except pm.PapermillExecutionError as err:
                raise FragilityError(f"{path.name}: {err.evalue}") from None
            log(f"{path.name}: {time.perf_counter() - start:.1f} s")
    finally:
        if previous is None:
            os.environ.pop(STATIC)
        else:
            os.environ[STATIC] = previous
    return [Path(output) / p.name for p in declared]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fragility.book", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("execute", help="execute the figure and study notebooks into book/_executed/")
    run.add_argument("--results", help="results folder (default results/<profile>)")
    run.add_argument("--profile", default="quick", help="profile name (default quick)")
    run.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook names, e.g. fig06_filters study_depth")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a notebook parameter (YAML value), e.g. -p layer fc -p epoch 10")
    run.add_argument("--output", default=str(EXECUTED), help=f"where executed notebooks go (default {EXECUTED})")
    args = parser.parse_args(argv)
    try:
        execute(args.results, args.profile, output=args.output, only=args.only,
                parameters={k: yaml.safe_load(v) for k, v in args.parameter})
    except FragilityError as err:
        return report(err, parser.prog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
