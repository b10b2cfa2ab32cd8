"""The book's chapters, registered once: each figure module (`fragility.figures`) and each study module
(`fragility.studies`) registers the chapter it owns — its figure, its summary ("What our run shows"), the paper's own
selections (its defaults), the controls a reader can switch in the rendered book, and the claims it decides.

This registry imports nothing of the chapters, so that they can import it; `import fragility` fills it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import FragilityError


@dataclass(frozen=True)
class Chapter:
    """One chapter: `figure(results, **selections)` and `summary(results, **selections)` take the responses of
    `fragility.open_results` (a study's results first, with the responses as `results=` when the study reads them),
    or the results folder itself where `reads_folder` (summary) or `draws_folder` (figure) says so; `claims` are the
    `fragility.verdicts.Claim`s it decides."""

    name: str
    figure: Callable | None
    summary: Callable
    study: str | None = None
    paper: dict = field(default_factory=dict)  # the paper's selections, used when the results hold them
    controls: tuple[str, ...] = ()  # switchable in the rendered book, without a kernel
    options: dict = field(default_factory=dict)  # fixed options of controls that are not selections of the results
    reads_folder: bool = False  # `summary` takes the results folder (the claims chapter and the claims' summaries)
    claims: tuple = ()
    draws_folder: bool = False  # `figure` takes the results folder too (the report chapter: its intervals read units)


CHAPTERS: dict[str, Chapter] = {}
ORDER = ("fig04_baseline", "fig05_targeted", "fig06_filters", "fig07_landscape", "fig08_scores", "fig09_global",
         "fig10_local", "fig11_batchnorm", "fig12_selective", "study_neurons", "study_removal", "study_depth",
         "study_conventions", "report", "claims")


def register(chapter: Chapter) -> Chapter:
    """Add a chapter to `CHAPTERS` (kept in the book's order); a name registered twice is refused."""
    if chapter.name in CHAPTERS:
        raise FragilityError(f"chapter {chapter.name!r} is registered twice.")
    CHAPTERS[chapter.name] = chapter
    # a chapter the order does not list comes after the shipped ones, before the claims chapter that sums them up
    ranked = sorted(CHAPTERS.values(), key=lambda c: ORDER.index(c.name) if c.name in ORDER else len(ORDER) - 1.5)
    CHAPTERS.clear()
    CHAPTERS.update((c.name, c) for c in ranked)
    return chapter


def chapter(name: str) -> Chapter:
    """The registered chapter `name`, or one FragilityError listing them."""
    if not isinstance(name, str) or name not in CHAPTERS:
        raise FragilityError(f"unknown chapter {name!r}: choose from {', '.join(CHAPTERS)}.")
    return CHAPTERS[name]
