"""HTML fragments for Jupyter: `AuditResult._repr_html_` and `MethodResult._repr_html_`.

The fragments use the same tables (and the same escaping) as ``report.html``, with a small
scoped style so the tables have borders in any notebook theme. Figures are returned by the
`reports.figures` functions as matplotlib ``Figure`` objects, which notebooks display as they are.
"""

from __future__ import annotations

from reports.html import escape, html_table
from reports.schema import AuditResult, MethodResult
from reports.selection import headline_utility_metric
from reports.tables import method_tables

__all__ = ["result_html", "method_html"]

_STYLE = (
    "<style>.pa-nb table.pa{border-collapse:collapse;font-size:12px;margin:4px 0}"
    ".pa-nb table.pa th,.pa-nb table.pa td{border:1px solid #b9c0cc;padding:3px 6px;text-align:left;"
    "vertical-align:top}.pa-nb table.pa th{background:#e4e9f1}.pa-nb .bad{color:#a11d1d;font-weight:600}"
    ".pa-nb .good{color:#17622b;font-weight:600}.pa-nb .warn{color:#8a5a00;font-weight:600}"
    ".pa-nb .pa-note{color:#555;font-size:11px}.pa-nb ul{margin:2px 0}</style>"
)


def result_html(result: AuditResult) -> str:
    """Summary table, flags and the utility table of an audit (the rest: ``write_report``)."""
    metric = headline_utility_metric(result)
    tables = {t.anchor: t for t in method_tables(result.methods, metric)}
    flags = result.all_flags()
    parts = [
        _STYLE,
        '<div class="pa-nb">',
        f"<h3>{escape(result.title)}</h3>",
        f'<p class="pa-note">{len(result.methods)} methods · created {escape(result.created)} · privaudit '
        f"{escape(result.privaudit_version)}</p>",
        html_table(tables["summary"], with_heading=False),
    ]
    if flags:
        parts.append("<strong>Flags</strong><ul>" + "".join(f"<li>{escape(f)}</li>" for f in flags) + "</ul>")
    if "utility" in tables:
        parts.append(html_table(tables["utility"], heading_level=4))
    parts.append("</div>")
    return "\n".join(parts)


def method_html(method: MethodResult) -> str:
    """Every table of one method (summary, utility, privacy, audits, attacks, communication)."""
    metric = headline_utility_metric([method])
    parts = [_STYLE, '<div class="pa-nb">', f"<h3>{escape(method.name)}</h3>"]
    if method.description:
        parts.append(f'<p class="pa-note">{escape(method.description)}</p>')
    for table in method_tables([method], metric):
        parts.append(html_table(table, heading_level=4))
    if method.privacy.flags:
        parts.append(
            "<strong>Flags</strong><ul>" + "".join(f"<li>{escape(f)}</li>" for f in method.privacy.flags) + "</ul>"
        )
    parts.append("</div>")
    return "\n".join(parts)
