"""The end-of-audit summary for a terminal: one block per method, long cells wrapped, no markup.

The same cells as the report's summary table (`reports.tables.summary_table`), laid out as
``label: value`` lines under each method's name, so that nothing depends on the terminal being
wide enough for a nine-column table and no HTML (``<br>``) or Markdown reaches the screen.
"""

from __future__ import annotations

import shutil
import textwrap

from reports.schema import AuditResult
from reports.selection import headline_utility_metric
from reports.tables import summary_table


def summary_text(result: AuditResult, width: int | None = None) -> str:
    """The summary of ``result`` as plain text wrapped at ``width`` columns (default: the
    terminal's width, at most 120)."""
    width = width or min(120, shutil.get_terminal_size((100, 24)).columns)
    metric = headline_utility_metric(result)
    table = summary_table(result.methods, metric)
    labels = table.headers[1:]
    pad = max(len(label) for label in labels) + 2
    lines = [result.title, "=" * min(width, len(result.title))]
    for row in table.rows:
        name = str(row[0]).split("\n")[0]
        verdict = row[-1]
        lines += [""] + textwrap.wrap(f"{name}: {str(verdict).splitlines()[0]}", width=width, subsequent_indent="    ")
        for label, cell in zip(labels[:-1], row[1:-1]):
            text = " / ".join(part for part in str(cell).split("\n") if part)
            wrapped = textwrap.wrap(text, width=max(20, width - pad - 2)) or ["—"]
            lines.append(f"  {label + ':':<{pad}}{wrapped[0]}")
            lines += [f"  {'':<{pad}}{more}" for more in wrapped[1:]]
    lines += _claims_lines(result, width)
    flags = result.all_flags()
    lines += ["", f"{len(flags)} flag(s): see the report's Flags section" if flags else "no flags"]
    return "\n".join(lines)


def _claims_lines(result: AuditResult, width: int) -> list[str]:
    """The papers' claims checked on this audit: one line per claim with a verdict other than
    "not run", then how many could not be run."""
    if not result.claims:
        return []
    lines = ["", "Claims of the papers (95% interval over seeds):"]
    not_run = 0
    for row in result.claims:
        if row.get("verdict") == "not run":
            not_run += 1
            continue
        text = f"{row.get('statement', row.get('claim'))}: {row.get('verdict_text', row.get('verdict'))}"
        lines += textwrap.wrap(text, width=width, initial_indent="  ", subsequent_indent="      ")
    if not_run:
        lines.append(f"  {not_run} claim(s) not run in this audit (the report says what each needs)")
    return lines
