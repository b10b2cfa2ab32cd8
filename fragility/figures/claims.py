"""The claims chapter: every claim of the paper and of its related seeds, one row per claim and panel, with the rule
that decides it, the evidence (each number with its 95 % interval), the verdict and the readings that could flip it —
drawn from `fragility.verdicts.claims` as an HTML table whose chapter column links to the chapter that shows it."""
from __future__ import annotations

import html
import re

from .. import chapters, checks, verdicts


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
    table = verdicts.claims(checks.folder(results, "results"))
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
            "threshold</small></th><th>readings</th><th>chapter</th></tr></thead><tbody>" + rows + "</tbody></table>")


chapters.register(chapters.Chapter("claims", None, report, reads_folder=True))
