"""The book: each chapter notebook loads its results with one call, shows its figure and its summary; `execute` runs
every notebook with papermill against a results folder, its parameters checked first.

In a notebook::

    page = book.load("fig05_targeted", results, profile, model=model, layer=layer)  # says what is missing
    page.figure()    # live controls in Jupyter; precomputed views in the rendered book; a figure elsewhere
    page.summary()   # "What our run shows"

From the shell::

    python -m fragility.book execute --results results/reference --profile reference [--only fig06_filters]
                                     [-p layer fc]

writes the executed notebooks to book/_executed/ (and the figures' views beside them), which `jupyter-book build .`
renders. A bad parameter stops everything with one message naming the valid choices before any kernel starts, and
a notebook that fails leaves nothing behind.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from IPython.display import HTML, Markdown, display

from . import checks, views, widgets
from .chapters import CHAPTERS
from .errors import FragilityError, report
from .selection import check_parameters, choices, paper_defaults
from .store import open_results
from .study import REGISTRY, open_study

NOTEBOOKS = Path("notebooks")
EXECUTED = Path("book") / "_executed"
VIEWS = "FRAGILITY_VIEWS"  # set by `execute`: the folder the rendered book's precomputed views are written to
ROOT = Path(__file__).resolve().parents[1]
# the notebooks' parameters and what each accepts (checked before any kernel starts)
TEXT = checks.Rule(lambda v: isinstance(v, str), "a name (text)")
TYPES = {"results": checks.optional(TEXT), "profile": TEXT, "model": checks.optional(TEXT),
         "dataset": checks.optional(TEXT), "seed": checks.optional(checks.whole(0)),
         "epoch": checks.optional(checks.whole(1)), "layer": checks.optional(TEXT),
         "layers": checks.optional(checks.items(TEXT, what="a list of layer names")), "filter": checks.optional(TEXT),
         "input": TEXT,
         "normalized": checks.Rule(lambda v: isinstance(v, bool), "true or false")}
SELECTIONS = ("model", "dataset", "seed", "epoch", "layer", "layers", "filter", "input", "normalized")


def default_results(profile: str) -> Path:
    """results/<profile>: a profile given as a file (mine.yaml, path/to/mine.yaml) by its name without the suffix,
    as `make book` names it."""
    checks.require(profile, TEXT, "profile")
    name = Path(profile).stem if profile.endswith((".yaml", ".yml")) else profile
    return Path("results") / checks.part(name, "profile")


def results_folder(results=None, profile: str = "reference") -> Path:
    """`results`, or results/<profile> when None (`default_results`); a relative path missing here is looked up from
    the repository root."""
    checks.require(profile, TEXT, "profile")
    path = checks.path(results, "results") if results is not None else default_results(profile)
    found = ROOT / path
    return path if path.is_absolute() or path.exists() or not found.exists() else found


class Page:
    """A chapter's results and selections: `figure()` and `summary()` display them (nothing when `missing`)."""

    def __init__(self, name: str, results=None, profile: str = "reference", **selections):
        self.chapter, self.missing = CHAPTERS[name], None
        self.folder = folder = results_folder(results, profile)
        self.responses = self.study = None
        try:
            self.responses = open_results(folder)
            if self.chapter.study:
                self.study = open_study(folder, self.chapter.study)
        except FragilityError as err:
            self.missing = (f"**Not run.** The results in `{results or default_results(profile)}` (profile "
                            f"{profile}) lack what this chapter shows: {err}")
            return
        for data in (self.responses, self.study):
            if data is not None:
                data.attrs.setdefault("profile", profile)
        data = self.study if self.study is not None else self.responses
        given = {k: v for k, v in selections.items() if v is not None}
        defaults, self.notes = paper_defaults(data, {k: v for k, v in self.chapter.paper.items() if k not in given})
        self.selections = {**selections, **{k: v for k, v in defaults.items() if k in selections}}
        check_parameters(data, **{k: v for k, v in self.selections.items() if k in SELECTIONS and k != "normalized"})

    def call(self, fn, **selections):
        """`fn` on this chapter's results: the results folder when the chapter draws from it, else a study's
        results first (with the responses as `results` when the study reads them), else the responses."""
        chosen = {**self.selections, **selections}
        if self.chapter.draws_folder:
            return fn(self.folder, **chosen)
        if self.study is None:
            return fn(self.responses, **chosen)
        extra = {"results": self.responses} if REGISTRY[self.chapter.study].needs_responses else {}
        return fn(self.study, **extra, **chosen)

    def options(self, **current) -> dict[str, list]:
        """The values each control can take, given the current model and dataset."""
        data = self.study if self.study is not None else self.responses
        valid = {**choices(data, current.get("model"), current.get("dataset")), **self.chapter.options}
        return {c: valid[c] for c in self.chapter.controls if c in valid}

    def figure(self):
        """The chapter's figure: live controls in Jupyter, precomputed switchable views in the book."""
        if self.missing:
            return display(Markdown(self.missing))
        if self.chapter.figure is None:
            return None
        if self.notes:
            display(Markdown("Shown by default: " + "; ".join(self.notes) + "."))
        if widgets.live():
            widgets.interactive(self)  # displayed; not returned, which would show it twice as the cell's value
            return None
        if os.environ.get(VIEWS):
            return views.show(self, Path(os.environ[VIEWS]))
        return display(self.call(self.chapter.figure))

    def summary(self):
        """The chapter's "What our run shows", from the same rules as the claims."""
        if not self.missing:
            if self.chapter.reads_folder:  # the claims it decides read the per-image results in the unit files
                text = self.chapter.summary(self.folder, **self.selections)
            else:
                text = self.call(self.chapter.summary)
            display(HTML(text) if self.chapter.figure is None else Markdown(text))


def load(name: str, results=None, profile: str = "reference", **selections) -> Page:
    """The chapter `name` on the results folder (default results/<profile>); the selections are checked against
    the results, and those left None take the paper's own when the results hold them, else the nearest."""
    if name not in CHAPTERS:
        raise FragilityError(f"unknown chapter {name!r}: choose from {', '.join(CHAPTERS)}.")
    return Page(name, results, profile, **selections)


def check_types(parameters: dict) -> None:
    """Refuse a parameter whose value has the wrong type, before any kernel starts."""
    for key, value in parameters.items():
        if key in TYPES:
            checks.require(value, TYPES[key], f"parameter {key}")


def check(namespace: dict) -> None:
    """The type checks `execute` makes of the notebooks' parameters, made in a notebook itself: its first cell after
    the parameters calls ``book.check(globals())``, so that papermill run directly on it (which injects whatever
    `-p` gives, declared or not) stops there with one FragilityError line naming the parameter. The selections'
    values are then checked against the results by `load`, as `execute` checks them."""
    if not isinstance(namespace, dict):
        raise FragilityError(f"book.check takes the notebook's globals(); got {type(namespace).__name__}.")
    check_types({key: namespace[key] for key in TYPES if key in namespace})


def execute(results, profile: str, notebooks=NOTEBOOKS, output=EXECUTED, only=None, parameters=None,
            log=print, workers: int = 2) -> list[Path]:
    """Execute every chapter notebook of `notebooks` (or those named in `only`) into `output` with papermill.

    Each notebook gets `results` (as given: a path a reader can type), `profile` and those of `parameters` it
    declares. Before any runs, `parameters` must each be declared by some notebook, have the right type, and pass
    `check_parameters` against the results. A notebook runs into a temporary file renamed on success; `workers`
    notebooks run at once (at most one per core).
    """
    import papermill as pm  # deferred: papermill (1.8 s to import) serves executing the notebooks alone

    workers = int(checks.require(workers, checks.whole(1), "workers"))
    parameters = dict(parameters or {})
    paths = [p for p in (Path(notebooks) / f"{n}.ipynb" for n in CHAPTERS) if p.is_file()]
    if not paths:
        raise FragilityError(f"no chapter notebooks in {Path(notebooks).resolve()}: run from the repository root.")
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
    check_types(parameters)
    folder = results_folder(results, profile)
    check_parameters(open_results(folder), **{k: v for k, v in parameters.items() if k in SELECTIONS
                                              and k != "normalized" and not (k == "layer" and v == "global")})
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    shown = str(results) if results is not None else str(default_results(profile))
    previous, os.environ[VIEWS] = os.environ.get(VIEWS), str((output / "_extra" / "views").resolve())

    def run(path: Path) -> None:
        given = {k: v for k, v in {"results": shown, "profile": profile, **parameters}.items() if k in declared[path]}
        start, target = time.perf_counter(), output / path.name
        partial = target.with_name(f".running-{target.name}")
        try:
            pm.execute_notebook(str(path), str(partial), parameters=given, progress_bar=False,
                                kernel_name="python3", cwd=str(Path.cwd()))
            os.replace(partial, target)
        except pm.PapermillExecutionError as err:
            raise FragilityError(f"{path.name}: {err.evalue}") from None
        finally:
            partial.unlink(missing_ok=True)
        log(f"{path.name}: {time.perf_counter() - start:.1f} s")

    try:  # kernels start and import while others compute: as many notebooks at once as the machine has cores
        with ThreadPoolExecutor(min(os.cpu_count() or 1, len(declared), workers)) as pool:
            running = [pool.submit(run, path) for path in declared]
            try:
                for done in running:
                    done.result()
            except BaseException:
                for waiting in running:
                    waiting.cancel()
                raise
    finally:
        if previous is None:
            os.environ.pop(VIEWS)
        else:
            os.environ[VIEWS] = previous
    return [output / p.name for p in declared]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fragility.book", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("execute", help="execute the chapter notebooks into book/_executed/")
    run.add_argument("--results", help="results folder (default results/<profile>)")
    run.add_argument("--profile", default="reference", help="profile name (default reference)")
    run.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="notebook names, e.g. fig06_filters study_depth")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a notebook parameter (a YAML value), e.g. -p layer fc -p epoch 10")
    run.add_argument("--output", default=str(EXECUTED), help=f"where executed notebooks go (default {EXECUTED})")
    args = parser.parse_args(argv)
    try:
        parameters = {}
        for key, value in args.parameter:
            try:
                parameters[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                raise FragilityError(f"parameter {key}: {value!r} is not a YAML value.") from None
        execute(args.results, args.profile, output=args.output, only=args.only, parameters=parameters)
    except FragilityError as err:
        return report(err, parser.prog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
