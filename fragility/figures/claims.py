"""The claims chapter: every claim of the paper and of its related seeds, one row per claim and panel, with the rule
that decides it, the evidence (each number with its 95 % interval), the verdict and the readings that could flip it —
drawn from `fragility.verdicts.claims` as an HTML table whose chapter column links to the chapter that shows it."""
from __future__ import annotations

import html
import re

from .. import chapters, checks, store, verdicts
from ..studies.conventions import drift


def _markup(text: str) -> str:
    """Escaped text with *emphasis* and `code` kept."""
    text = html.escape(text)
    text = re.sub(r"\*([^*]+)\*", r"<i>\1</i>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _interval(row) -> str:
    low, high = row.interval
    if not (low == low and high == high):  # NaN: no interval (untestable, or too few results)
        return ""
    return f"<br><small>{row.statistic:.3g} [{low:.3g}, {high:.3g}] vs {row.threshold:g}</small>"


def report(results, **_selections) -> str:
    """The claims of `fragility.verdicts.claims(results)` as an HTML table, after a count of the verdicts."""
    folder = checks.folder(results, "results")
    table = verdicts.claims(folder)
    counts = table["verdict"].value_counts()
    head = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in verdicts.VERDICTS)
    rows = "".join(
        f"<tr><td><b>{html.escape(r.id)}</b></td><td>{html.escape(r.panel)}</td><td>{_markup(r.claim)}</td>"
        f"<td>{html.escape(r.rule)}</td><td>{_markup(r.evidence)}</td>"
        f"<td class='verdict-{r.verdict}'><b>{r.verdict}</b>{_interval(r)}</td><td>{_markup(r.readings)}</td>"
        f"<td><a href='{r.chapter}.html'>{r.chapter.split('_')[0]}</a></td></tr>"
        for r in table.itertuples())
    return (f"<p>{len(table)} rows (claim × panel): {head}.</p>"
            "<table class='claims'><thead><tr><th>id</th><th>panel</th><th>claim (the paper's words)</th>"
            "<th>rule</th><th>evidence (95 % intervals)</th><th>verdict<br><small>statistic [interval] vs "
            "threshold</small></th><th>readings</th><th>chapter</th></tr></thead><tbody>" + rows + "</tbody></table>"
            + _drift(folder))


def _drift(folder) -> str:
    """How far the adversarial/clean accuracy ratio of the stored checkpoints drifts from ρ when ε is searched once
    per network: the ε reading's measured side (its other side, ε per checkpoint, is a conventions-study sweep)."""
    responses = store.open_results(folder)
    if "base_accuracy" not in responses or "model" not in responses.dims:
        return ""
    ratio, policy = float(responses.attrs.get("ratio", 0.5)), str(responses.attrs.get("epsilon_policy", "auto"))
    lines = "".join(f"<li>{_markup(line[2:])}</li>" for line in drift(responses, ratio).splitlines())
    how = {"auto": "ε is searched once per network (on the last checkpoint of its first seed, for acc(f(x_ε)) ≈ ρ · "
                   f"acc(f(x)), ρ = {ratio:g}) and used at every checkpoint. The ratio each stored checkpoint reaches "
                   "with it (mean over seeds) shows how far the others drift from ρ; the readings column names the "
                   "claims an ε searched per checkpoint would flip, where the conventions study swept it.",
           "per-checkpoint": f"ε is searched for every checkpoint (ρ = {ratio:g}): the ratio each reaches (mean over "
                             "seeds) is the search's own tolerance."}
    return (f"<h3>ε's drift across checkpoints</h3><p>{how.get(policy, f'ε is fixed at {policy} for every network.')}"
            f"</p><ul>{lines}</ul>")


chapters.register(chapters.Chapter("claims", None, report, reads_folder=True))
