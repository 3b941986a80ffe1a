"""``report.html``: one self-contained page, readable from disk without a server.

Images are inlined as base64 ``data:`` URIs, CSS is inline, there is no JavaScript and no
external URL; a Content-Security-Policy meta tag forbids scripts and any non-``data:`` resource,
as a second line of defence. Every piece of text that comes from the result (method names,
scenario keys and values, notes, flags, metric names) is escaped with `html.escape`.

Order: short header and table of contents, the summary verdict per method (the first table),
the flags, the other tables, the figures and image grids, the scenario, the software versions.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from reports.figures import figure_caption, render_all_figures
from reports.schema import AuditResult
from reports.tables import Cell, Table, key_value_table, result_tables

__all__ = ["render_html", "write_report", "html_table", "escape", "STYLE"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

STYLE = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;font-size:14px;color:#1d2330;
 margin:0;background:#f6f7f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:18px 28px 40px;background:#fff;min-height:100vh;box-sizing:border-box}
header.pa-head{border-bottom:3px solid #1f4e8c;margin-bottom:14px;padding-bottom:8px}
header.pa-head h1{font-size:22px;margin:0 0 4px;color:#1f4e8c}
.pa-meta{color:#555;font-size:12.5px}
h2{font-size:18px;margin:28px 0 8px;padding-bottom:3px;border-bottom:1px solid #d5d9e0;color:#1f4e8c}
h3{font-size:15px;margin:18px 0 6px}
nav.pa-toc{background:#eef2f8;border:1px solid #d5dce8;border-radius:4px;padding:8px 14px;margin:10px 0 6px}
nav.pa-toc ol{margin:4px 0;padding-left:20px;columns:2}
nav.pa-toc a{color:#1f4e8c;text-decoration:none}
table.pa{border-collapse:collapse;margin:6px 0 4px;font-size:12.5px;width:auto;max-width:100%}
table.pa.wide{width:100%}
.pa-scroll{max-width:100%;overflow-x:auto}
table.pa th,table.pa td{border:1px solid #b9c0cc;padding:4px 7px;vertical-align:top;text-align:left;overflow-wrap:break-word}
table.pa th{background:#e4e9f1;font-weight:600}
table.pa tr:nth-child(even) td{background:#f8f9fb}
table.pa td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pa-note{color:#555;font-size:12px;margin:2px 0 10px}
.good{color:#17622b;font-weight:600}.warn{color:#8a5a00;font-weight:600}.bad{color:#a11d1d;font-weight:600}
.muted{color:#666}.name{font-weight:600;white-space:nowrap}.detail{color:#666;font-size:11.5px;margin-top:2px}
ul.pa-flags{margin:6px 0;padding-left:0;list-style:none}
ul.pa-flags li{background:#fff4e5;border-left:4px solid #e08a00;padding:5px 10px;margin:4px 0;font-size:13px}
p.pa-ok{background:#eaf6ec;border-left:4px solid #2c8a42;padding:5px 10px}
figure{margin:14px 0;border:1px solid #d5d9e0;padding:8px;background:#fff;display:inline-block;max-width:100%}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#444;margin-top:4px;max-width:900px}
.pa-missing{color:#a11d1d;font-size:12px}
footer{margin-top:30px;color:#777;font-size:11.5px;border-top:1px solid #ddd;padding-top:6px}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def escape(text: object) -> str:
    """`html.escape` with quotes, on the text form of anything."""
    return html.escape(str(text), quote=True)


def _breakable(text: str) -> str:
    """Escaped text with line breaks kept and a break opportunity after each underscore, so that
    snake_case message kinds wrap inside narrow cells instead of widening the table."""
    return escape(text).replace("\n", "<br>").replace("_", "_<wbr>")


def _cell_html(cell: str | Cell) -> str:
    if not isinstance(cell, Cell):
        return _breakable(cell)
    text = _breakable(cell.text)
    if cell.level in ("good", "warn", "bad", "muted", "name"):
        text = f'<span class="{cell.level}">{text}</span>'
    if cell.detail:
        text += f'<div class="detail">{escape(cell.detail)}</div>'
    return text


def _is_numeric(cell: str | Cell) -> bool:
    t = str(cell).replace(",", "").replace("∞", "1").replace("n/a", "1").strip()
    try:
        float(t)
        return True
    except ValueError:
        return False


def html_table(table: Table, heading_level: int = 2, with_heading: bool = True, css_class: str = "") -> str:
    """A `Table` as escaped HTML (heading, table, note)."""
    parts = []
    if with_heading:
        parts.append(f'<h{heading_level} id="{escape(table.anchor)}">{escape(table.title)}</h{heading_level}>')
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = []
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{_cell_html(c)}</td>'
            if table.align_numbers and _is_numeric(c)
            else f"<td>{_cell_html(c)}</td>"
            for c in row
        )
        body.append(f"<tr>{cells}</tr>")
    classes = "pa" + (f" {escape(css_class)}" if css_class else "")
    parts.append(
        f'<div class="pa-scroll"><table class="{classes}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )
    if table.note:
        parts.append(f'<p class="pa-note">{escape(table.note)}</p>')
    return "\n".join(parts)


def _png_data_uri(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_PNG_MAGIC):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _figure_html(uri: str | None, alt: str, caption: str, missing: str) -> str:
    if uri is None:
        return f'<p class="pa-missing">{escape(missing)}</p>'
    return f'<figure><img src="{uri}" alt="{escape(alt)}"><figcaption>{escape(caption)}</figcaption></figure>'


def _flags_html(flags: Sequence[str]) -> str:
    if not flags:
        return '<p class="pa-ok">No flags: the accountants and the auditor raised no warning.</p>'
    return '<ul class="pa-flags">' + "".join(f"<li>{escape(f)}</li>" for f in flags) + "</ul>"


def _image_grids_html(result: AuditResult, base_dir: Path | None) -> str:
    parts = []
    for m in result.methods:
        for a in m.attacks:
            if a.image_grid is None:
                continue
            title = f"{m.name}: {a.attack} by {a.observer} on {a.target_kind}"
            if base_dir is None:
                parts.append(
                    _figure_html(
                        None, title, title, f"{title}: image {a.image_grid} not inlined (no results folder given)"
                    )
                )
                continue
            path = base_dir / a.image_grid
            uri = _png_data_uri(path) if _inside(path, base_dir) and path.suffix.lower() == ".png" else None
            parts.append(
                _figure_html(
                    uri,
                    title,
                    f"{title} — real images on top, the attack's reconstructions below them; grids of "
                    "identity inversion add the oracle (ceiling) and null (floor) rows, and caption each tile "
                    "with its evaluator similarity to the true identity, framed green when it passes the "
                    "evaluator's threshold at the stated FAR and red when it does not."
                    + (f" {a.notes}" if a.notes else ""),
                    f"{title}: image grid {a.image_grid} is missing, outside the results folder or not a PNG",
                )
            )
    return "\n".join(parts)


def render_html(
    result: AuditResult,
    figures: Mapping[str, str | os.PathLike[str]] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The report page as a string.

    ``figures``: name -> PNG path (from `render_all_figures`), inlined in this order with the
    captions of `FIGURE_CAPTIONS`. ``base_dir``: the results folder, against which the attacks'
    ``image_grid`` paths are resolved (a path that leaves that folder is not read).
    """
    figures = dict(figures or {})
    base = None if base_dir is None else Path(base_dir)
    tables = result_tables(result)
    flags = result.all_flags()
    scenario = key_value_table(
        "Scenario",
        "scenario",
        result.scenario,
        ("setting", "value"),
        note="The configuration this audit ran (as given by the user).",
    )
    software = key_value_table("Software", "software", result.software, ("package", "version"))
    extra = key_value_table("Other analyses", "extra", result.analyses.extra)
    grids = _image_grids_html(result, base)

    toc = [("summary", "Summary"), ("flags", f"Flags ({len(flags)})")]
    toc += [(t.anchor, t.title) for t in tables[1:]]
    if figures:
        toc.append(("figures", "Figures"))
    if grids:
        toc.append(("reconstructions", "Reconstructions"))
    toc += [(t.anchor, t.title) for t in (extra, scenario, software) if t is not None]

    n_methods = len(result.methods)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(result.title)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        f'<header class="pa-head"><h1>{escape(result.title)}</h1>',
        f'<div class="pa-meta">{n_methods} method{"s" if n_methods != 1 else ""} · created {escape(result.created)} '
        f"· privaudit {escape(result.privaudit_version)} · results schema {escape(result.schema_version)} · "
        f"{len(flags)} flag{'s' if len(flags) != 1 else ''}</div>",
        '<div class="pa-meta">For every method: what leaves a client and who observes it, what the observers '
        "recovered (attacks), what the mathematics promises (formal ε) and what an experiment proves "
        "(empirical lower bound), and the utility of the model.</div></header>",
        '<nav class="pa-toc"><strong>Contents</strong><ol>'
        + "".join(f'<li><a href="#{escape(a)}">{escape(t)}</a></li>' for a, t in toc)
        + "</ol></nav>",
        html_table(tables[0], css_class="wide"),
        '<h2 id="flags">Flags</h2>',
        _flags_html(flags),
    ]
    out += [html_table(t) for t in tables[1:]]
    if figures:
        out.append('<h2 id="figures">Figures</h2>')
        for name, path in figures.items():
            caption = figure_caption(name, result)
            out.append(
                _figure_html(_png_data_uri(Path(path)), name, caption, f"figure {name}: {path} is missing or not a PNG")
            )
    if grids:
        out.append('<h2 id="reconstructions">Reconstructions</h2>')
        out.append(grids)
    out += [html_table(t) for t in (extra, scenario, software) if t is not None]
    out.append(
        f"<footer>Rendered by privaudit reports from results schema {escape(result.schema_version)}. "
        "All numbers are in results.json next to this file.</footer>"
    )
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


def write_report(result: AuditResult, folder: str | os.PathLike[str], figures: bool = True) -> Path:
    """Write ``folder/report.html``, ``folder/report.md`` and ``folder/figures/`` (PNG + SVG).

    ``folder`` is the results folder: the attacks' ``image_grid`` paths are relative to it.
    Returns the path of ``report.html``.
    """
    from reports.markdown import render_markdown

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    drawn = render_all_figures(result, folder / "figures") if figures else {}
    page = render_html(result, drawn, base_dir=folder)
    html_path = folder / "report.html"
    html_path.write_text(page, encoding="utf-8")
    relative = {name: p.relative_to(folder).as_posix() for name, p in drawn.items()}
    (folder / "report.md").write_text(render_markdown(result, relative), encoding="utf-8")
    return html_path
