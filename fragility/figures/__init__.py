"""The paper's figure chapters, one module each (the studies' chapters are their study modules): a module owns its
figure (drawn by plot functions that take data and `ax=`, after one selection), its summary ("What our run shows")
and the claims it decides, and registers its chapter in `fragility.chapters`.

Adding a figure chapter is one module here plus one import line below (and its notebook).
"""
from . import (  # noqa: F401 (each registers its chapter)
    claims, fig04_baseline, fig05_targeted, fig06_filters, fig07_landscape, fig08_scores, fig09_global, fig10_local,
    report,
)
