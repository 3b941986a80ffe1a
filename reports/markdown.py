"""``report.md``: the report's tables in GitHub-flavoured Markdown, figures linked from ``figures/``.

Cells are escaped for Markdown tables: backslashes, pipes, backticks and asterisks are
backslash-escaped, ``<``, ``>`` and ``&`` become HTML entities (so text from the result can never turn into markup), line
breaks become ``<br>``.
"""

from __future__ import annotations

from collections.abc import Mapping

from reports.figures import figure_caption
from reports.schema import AuditResult
from reports.selection import headline_utility_metric
from reports.tables import Cell, Table, key_value_table, result_tables, summary_table

__all__ = ["render_markdown", "markdown_table", "escape_cell", "summary_markdown"]


def escape_cell(text: object) -> str:
    """Text safe inside one Markdown table cell."""
    s = str(text)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = s.replace("\\", "\\\\").replace("|", "\\|")
    s = s.replace("`", "\\`").replace("*", "\\*")
    s = s.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")
    return s


def _inline(text: object) -> str:
    """Text outside tables (titles, flags): the same escaping, line breaks kept as spaces."""
    return escape_cell(text).replace("<br>", " ")


def markdown_table(table: Table, heading: str = "##") -> str:
    lines = [f"{heading} {_inline(table.title)}", ""] if heading else []
    lines.append("| " + " | ".join(escape_cell(h) for h in table.headers) + " |")
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    for row in table.rows:
        cells = []
        for c in row:
            if isinstance(c, Cell) and c.level in ("bad", "name") and c.text:
                text = f"**{escape_cell(c.text)}**" + (f"<br>{escape_cell(c.detail)}" if c.detail else "")
            else:
                text = escape_cell(c)
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", f"_{_inline(table.note)}_"]
    return "\n".join(lines)


def summary_markdown(result: AuditResult) -> str:
    """Just the summary table (what a README or an issue note shows)."""
    return markdown_table(summary_table(result.methods, headline_utility_metric(result)), heading="")


def render_markdown(result: AuditResult, figures: Mapping[str, str] | None = None) -> str:
    """The report as Markdown; ``figures``: name -> path relative to the report (e.g. figures/x.png)."""
    tables = result_tables(result)
    flags = result.all_flags()
    out = [
        f"# {_inline(result.title)}",
        "",
        f"{len(result.methods)} methods · created {_inline(result.created)} · privaudit "
        f"{_inline(result.privaudit_version)} · results schema {_inline(result.schema_version)}",
        "",
        markdown_table(tables[0]),
        "",
        "## Flags",
        "",
    ]
    out += [f"- {_inline(f)}" for f in flags] or ["No flags: the accountants and the auditor raised no warning."]
    for t in tables[1:]:
        out += ["", markdown_table(t)]
    if figures:
        out += ["", "## Figures", ""]
        for name, path in figures.items():
            out += [f"![{_inline(name)}]({_link(path)})", "", f"_{_inline(figure_caption(name, result))}_", ""]
    grids = [(m, a, a.image_grid) for m in result.methods for a in m.attacks if a.image_grid is not None]
    if grids:
        out += ["", "## Reconstructions", ""]
        for m, a, grid in grids:
            title = f"{m.name}: {a.attack} by {a.observer} on {a.target_kind}"
            out += [f"![{_inline(title)}]({_link(grid)})", "", f"_{_inline(title)}_", ""]
    for kv in (
        key_value_table("Other analyses", "extra", result.analyses.extra),
        key_value_table("Scenario", "scenario", result.scenario, ("setting", "value")),
        key_value_table("Software", "software", result.software, ("package", "version")),
    ):
        if kv is not None:
            out += ["", markdown_table(kv)]
    return "\n".join(out).rstrip() + "\n"


def _link(path: str) -> str:
    """A relative link target: spaces and parentheses percent-encoded so the link cannot break."""
    return "".join({" ": "%20", "(": "%28", ")": "%29", "<": "%3C", ">": "%3E"}.get(ch, ch) for ch in str(path))
