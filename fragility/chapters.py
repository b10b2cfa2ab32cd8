"""The book's chapters: for each figure and study notebook, what it draws, what it says, the results it reads, the
paper's own selections (its defaults) and the controls a reader can switch in the rendered book."""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable

from . import findings, verdicts
from .plot import responses, scores
from .studies import REGISTRY


@dataclass(frozen=True)
class Chapter:
    """One chapter: `figure` and `summary` take the results (and a study's results when `study` is set)."""

    name: str
    figure: Callable
    summary: Callable
    study: str | None = None
    paper: dict = field(default_factory=dict)  # the paper's selections, used when the results hold them
    controls: tuple[str, ...] = ()  # switchable in the rendered book, without a kernel
    options: dict = field(default_factory=dict)  # fixed options of controls that are not selections of the results
    reads_folder: bool = False  # `summary` takes the results folder (the claims chapter)


def _study(name: str, chapter: str, paper=None, controls=("seed",)) -> Chapter:
    found = REGISTRY[name]
    return Chapter(chapter, found.figure, found.summary, study=name, paper=paper or {}, controls=controls)


CHAPTERS = {c.name: c for c in (
    Chapter("fig04_baseline", responses.fig04_baseline, findings.fig04_baseline,
            paper=dict(model="resnet18", dataset="cifar10", epoch=100, layer="conv1"),
            controls=("layer", "input")),
    Chapter("fig05_targeted", responses.fig05_targeted, findings.fig05_targeted,
            paper=dict(model="resnet18", dataset="mnist", layer="layer3.0.conv2"), controls=("layer", "filter")),
    Chapter("fig06_filters", responses.fig06_filters, findings.fig06_filters,
            paper=dict(model="resnet18", dataset="cifar10", layer="conv1"), controls=("model", "input")),
    Chapter("fig07_landscape", responses.fig07_landscape, findings.fig07_landscape, paper=dict(model="resnet18"),
            controls=("model", "input", "filter")),
    Chapter("fig08_scores", responses.fig08_scores, findings.fig08_scores,
            paper=dict(model="resnet18", dataset="cifar10", epoch=100, layer="conv1"), controls=("epoch", "filter")),
    Chapter("fig09_global", scores.fig09_global, findings.fig09_global, controls=("filter", "normalized"),
            options={"normalized": [True, False]}),
    Chapter("fig10_local", scores.fig10_local, findings.fig10_local, controls=("filter",)),
    _study("batchnorm", "fig11_batchnorm", dict(model="resnet18", dataset="cifar10")),
    _study("selective", "fig12_selective", dict(model="resnet18")),
    _study("neurons", "study_neurons", dict(model="resnet18"), ("seed", "input")),
    _study("removal", "study_removal", dict(model="resnet18"), ("layer",)),
    _study("depth", "study_depth", controls=()),
    _study("conventions", "study_conventions", dict(model="resnet18"), controls=()),
    Chapter("claims", None, verdicts.report, reads_folder=True),
)}
