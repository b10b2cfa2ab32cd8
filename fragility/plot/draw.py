"""Drawing primitives shared by every figure: the figure with its provenance line, images, areas, bands, grids,
and the checks of what a panel function is given (`axes`, `panel`, `number`).

Figures are sized for the book's page width (about 9 inches) with text of 9 points or more, and every figure's
foot names where its numbers come from (profile, models, data, seeds, test-set size, A, ε, attack, commit).

Every chapter's `figure(...)` selects and validates once, then calls its panel functions: each takes data already
selected down to its panel and the `ax` (or the list of axes) to draw into, as xarray's `plot(ax=…)`, and creates no
figure — so panels of several chapters can be composed on one figure of your own.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np
import xarray as xr

from .. import checks
from ..errors import FragilityError
from ..scores import characterize

WIDTH = 9.0  # inches: the book's page width at 100 dpi
SCORES = {"r_x": r"$r_x$", "r_xe": r"$r_{x\epsilon}$", "r_e": r"$r_\epsilon$"}
ALPHA = r"normalized threshold $\alpha$"
TEXT = checks.Rule(lambda v: isinstance(v, str), "a text")
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
         "legend.fontsize": 8.5, "figure.titlesize": 11}


def styled(fn):
    """Run a figure function with the book's font sizes."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib  # deferred: matplotlib (0.6 s to import) serves drawing alone

        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def axes(ax, count: int | None = None, name: str = "ax"):
    """`ax`, a matplotlib Axes to draw into; with `count`, a sequence (list, tuple or array) of that many Axes, as a
    list. Else one FragilityError naming `name`."""
    from matplotlib.axes import Axes  # deferred: matplotlib (0.6 s to import) serves drawing alone

    if count is None:
        if not isinstance(ax, Axes):
            raise FragilityError(f"{name} must be a matplotlib Axes to draw into; got {type(ax).__name__}.")
        return ax
    found = list(np.ravel(np.asarray(ax, dtype=object))) if isinstance(ax, (list, tuple, np.ndarray)) else None
    if found is None or len(found) != count or not all(isinstance(a, Axes) for a in found):
        got = f"{len(found)} item(s)" if found is not None else type(ax).__name__
        raise FragilityError(f"{name} must be a sequence of {count} matplotlib Axes to draw into; got {got}.")
    return found


def panel(data, variables: dict[str | None, tuple[str, ...]], name: str = "data"):
    """`data`, checked to be selected down to one panel: an xarray Dataset holding each of `variables` (name → its
    dims, in any order), or a DataArray (the key None) with exactly the dims given. Else one FragilityError naming
    `name`, the variable, and the dims to select away or that it lacks."""
    want = "a DataArray" if None in variables else "an xarray Dataset"
    if not isinstance(data, xr.DataArray if None in variables else xr.Dataset):
        raise FragilityError(f"{name} must be {want} selected down to one panel; got {type(data).__name__}.")
    for var, dims in variables.items():
        if var is not None and var not in data:
            raise FragilityError(f"{name} lacks the variable {var!r} this panel draws: pass the chapter's selected "
                                 "data (see its figure function).")
        found = data if var is None else data[var]
        if set(found.dims) != set(dims):
            what = f"{name}" + ("" if var is None else f"[{var!r}]")
            extra, missing = sorted(set(found.dims) - set(dims)), sorted(set(dims) - set(found.dims))
            raise FragilityError(f"{what} must have the dims ({', '.join(dims)}); got ({', '.join(found.dims)}): "
                                 + (f"select one value of {', '.join(extra)} first" if extra else
                                    f"it lacks {', '.join(missing)}") + ".")
    return data


def number(value, name: str) -> float:
    """A real number as a float, NaN accepted (a score never stored); else one FragilityError."""
    return float(checks.require(value, checks.Rule(lambda v: isinstance(v, numbers.Real) and not isinstance(
        v, (bool, np.bool_)), "a number (NaN where none was stored)"), name))


def value_range(values) -> str:
    """'a' or 'a–b': the distinct finite values, to three significant digits."""
    values = sorted({float(f"{v:.3g}") for v in np.ravel(values) if np.isfinite(v)})
    return "?" if not values else f"{values[0]:g}" if len(values) == 1 else f"{values[0]:g}–{values[-1]:g}"


def _coordinate(ds: xr.Dataset, name: str) -> list:
    """The values of coordinate `name`; for `seed`, those that hold results (of `base_accuracy`, where the Dataset
    has it): a selection of one model keeps the seed coordinate of every model combined with it."""
    if name not in ds.coords:
        return []
    values = np.atleast_1d(ds[name].values)
    if name == "seed" and ds[name].ndim == 1 and "base_accuracy" in ds and name in ds["base_accuracy"].dims:
        held = ds["base_accuracy"].notnull()
        values = values[held.any([d for d in held.dims if d != name]).values]
    return values.tolist()


def _commit(attrs: dict) -> str:
    """The code commit part of a provenance line: one commit, or how many the results combined come from
    (fragility.store.commits: an attribute of the whole folder, so a selection of it says the folder's count)."""
    if "git_commit" not in attrs and "git_commits" in attrs:
        return f"{len(str(attrs['git_commits']).split(', '))} commits in these results (each unit records its own)"
    return f"commit {str(attrs.get('git_commit', 'unknown'))[:10]}"


def provenance_line(ds: xr.Dataset, epsilon=None, **attrs) -> str:
    """Profile, models, datasets, seeds, n_test, A, ε, attack and code commit(s) of the results shown (`attrs`
    override the Dataset's attributes; parts a result lacks are left out)."""
    a = {**ds.attrs, **attrs}
    eps = ds["epsilon"].values if epsilon is None and "epsilon" in ds else epsilon
    parts = [f"profile {a.get('profile', '?')}",
             f"model {', '.join(map(str, _coordinate(ds, 'model')))}",
             f"data {', '.join(map(str, _coordinate(ds, 'dataset')))}",
             f"seeds {', '.join(map(str, _coordinate(ds, 'seed')))}",
             f"n_test {a.get('n_test', '?')}",
             f"A {a.get('A', '?')}",
             f"ε {value_range(eps) if eps is not None else '?'}",
             f"attack {a.get('attack', '?')}",
             _commit(a)]
    return " · ".join(p for p in parts if not p.endswith((" ?", " ")))


def figure(shown: xr.Dataset, title: str, height: float, width: float = WIDTH, line: str | None = None):
    """A constrained-layout Figure with `title` and the provenance line of the results `shown` (or `line`) at its
    foot."""
    from matplotlib.figure import Figure  # deferred: matplotlib (0.6 s to import) serves drawing alone

    fig = Figure(figsize=(width, height), layout="constrained", dpi=100)
    fig.get_layout_engine().set(rect=(0, 0.035, 1, 0.965))
    fig.suptitle(title)
    fig.text(0.5, 0.004, line or provenance_line(shown), ha="center", va="bottom", fontsize=8, color="0.35",
             wrap=True)
    return fig


def label(score: float) -> str:
    """Fr, Ro or Af of one score at the default tolerance."""
    return str(characterize(xr.DataArray(score)).item())


def area(ax, alpha, upper, lower, styles, name: str, score: float) -> None:
    """Two curves and the area between them: blue where `upper` lies above (the score > 0 side), red below."""
    upper, lower = np.asarray(upper, float), np.asarray(lower, float)
    for curve, (style, color, text) in zip((upper, lower), styles):
        ax.plot(alpha, curve, style, color=color, lw=2, label=text)
    for side, color, sign in ((upper >= lower, "tab:blue", ">"), (upper < lower, "tab:red", "<")):
        ax.fill_between(alpha, lower, upper, where=side, interpolate=True, color=color, alpha=0.25,
                        label=f"{name} {sign} 0 side")
    ax.set(xlabel=ALPHA, title=f"{name} = {score:+.3f} ({label(score)})")
    ax.legend()


def signed(values):
    """A colour scale centred on 0 and symmetric about it."""
    from matplotlib.colors import TwoSlopeNorm  # deferred: matplotlib (0.6 s to import) serves drawing alone

    lim = max(float(np.nanmax(np.abs(values))) if np.size(values) else 0.0, 1e-9)
    return TwoSlopeNorm(0, -lim, lim)


def top(values) -> float:
    """The upper end of a 0-based colour or y scale: 1, or the largest finite value when it exceeds 1 (a metric
    other than an accuracy, a scaled response above 1)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return max(1.0, float(finite.max())) if finite.size else 1.0


def image(fig, ax, values, alpha, rows, title, bar, ylabel="epoch", cmap="viridis", norm=None, vmax=1.0,
          colorbar=True):
    """(rows × α) image, pixels centred on the thresholds, with row labels and a colour bar (`norm`, else 0..vmax)."""
    half = (alpha[1] - alpha[0]) / 2 if len(alpha) > 1 else 0.5
    im = ax.imshow(values, aspect="auto", origin="lower", interpolation="nearest", cmap=cmap, norm=norm,
                   extent=(alpha[0] - half, alpha[-1] + half, -0.5, len(rows) - 0.5))
    if norm is None:
        im.set_clim(0, vmax)
    step = max(1, len(rows) // 28)
    ax.set_yticks(range(0, len(rows), step), [str(r) for r in rows][::step], fontsize=9 if len(rows) <= 12 else 7)
    ax.set(title=title, xlabel=ALPHA, ylabel=ylabel)
    if colorbar:
        fig.colorbar(im, ax=ax, label=bar, shrink=0.9)
    return im


def lines(ax, curves: xr.DataArray, dim: str, cmap: str = "viridis", style: str = "-", fmt="{dim} {value}"):
    """One line per value of `dim` of `curves` (dim, x), coloured from dark (first) to light (last)."""
    from matplotlib import colormaps  # deferred: matplotlib (0.6 s to import) serves drawing alone

    x = curves[[d for d in curves.dims if d != dim][0]].values
    keys = curves[dim].values
    for k, color in zip(keys, colormaps[cmap](np.linspace(0.05, 0.9, len(keys)))):
        ax.plot(x, curves.sel({dim: k}), style, color=color, lw=1.5, label=fmt.format(dim=dim, value=k))


def band(ax, x, samples: xr.DataArray, over, color, label=None, style="-"):
    """The mean of `samples` over the dims `over` as a line, ± one standard deviation as a shaded band."""
    mean, std = samples.mean(over), samples.std(over)
    ax.plot(x, mean, style, color=color, lw=1.8, label=label)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.18, lw=0)


def grid(fig, ax, values, rows, columns, title: str, bar: str, cmap="viridis", norm=None, marks=None,
         xlabel="", vmin=0.0, vmax=1.0):
    """A (rows × columns) image with categorical ticks and a colour bar (`norm`, else vmin..vmax); cell text from
    `marks` (an array of strings), else the values when there are few cells."""
    im = ax.imshow(values, aspect="auto", interpolation="nearest", cmap=cmap, norm=norm,
                   **({} if norm is not None else {"vmin": vmin, "vmax": vmax}))
    texts = marks if marks is not None else (np.vectorize(lambda v: f"{v:.2f}" if np.isfinite(v) else "")(values)
                                             if values.size <= 120 else None)
    if texts is not None:
        small = 7 if values.shape[0] > 24 or values.shape[1] > 12 else 8
        for (i, j), text in np.ndenumerate(texts):
            ax.text(j, i, text, ha="center", va="center", fontsize=small, color="0.1")
    ax.set_xticks(range(len(columns)), [f"{c:g}" if isinstance(c, float) else str(c) for c in columns])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=8 if len(rows) <= 30 else 6)
    ax.set(title=title, xlabel=xlabel)
    fig.colorbar(im, ax=ax, label=bar, shrink=0.9)
    return im


def colors(names, palette: str = "tab10") -> dict:
    """A distinct colour per name."""
    from matplotlib import colormaps  # deferred: matplotlib (0.6 s to import) serves drawing alone

    return dict(zip(names, colormaps[palette].colors))


def seed_text(seeds: list) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± std over {len(seeds)} seeds"
