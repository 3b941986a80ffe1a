"""reports: results schema (versioned JSON), matplotlib figures, HTML / Markdown reports.

Renders plain data (numbers, lists, numpy arrays, PNG files) and imports nothing from
``privaudit``, ``attacks`` or ``federated_core``.

    from reports import AuditResult, save_results, write_report
    save_results(result, "out/")            # out/results.json (validated against the schema)
    write_report(result, "out/")            # out/report.html, out/report.md, out/figures/
"""

from reports.schema import (
    RESULTS_FILENAME,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    Analyses,
    AttackFinding,
    AuditFinding,
    AuditResult,
    MethodResult,
    PrivacySummary,
    load_results,
    save_results,
    software_versions,
    utc_now_iso,
)
from reports.validator import load_results_schema, validate_results


def _result_html(result: AuditResult) -> str:
    from reports.notebook import result_html  # matplotlib and the renderers load on first display

    return result_html(result)


def _method_html(method: MethodResult) -> str:
    from reports.notebook import method_html

    return method_html(method)


# Jupyter's rich display: bound here, above both modules, so that reports.schema (the data) never
# imports reports.notebook (its rendering), which imports the schema.
AuditResult._repr_html_ = _result_html  # type: ignore[attr-defined]  # Jupyter's display protocol
MethodResult._repr_html_ = _method_html  # type: ignore[attr-defined]  # Jupyter's display protocol

__all__ = [
    "RESULTS_FILENAME",
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "Analyses",
    "AttackFinding",
    "AuditFinding",
    "AuditResult",
    "MethodResult",
    "PrivacySummary",
    "load_results",
    "save_results",
    "software_versions",
    "utc_now_iso",
    "load_results_schema",
    "validate_results",
    "render_html",
    "write_report",
    "render_markdown",
    "render_all_figures",
    "save_figure",
]


def __getattr__(name: str):  # lazy: matplotlib is imported only when a renderer is used
    if name in ("render_html", "write_report"):
        from reports import html

        return getattr(html, name)
    if name == "render_markdown":
        from reports.markdown import render_markdown

        return render_markdown
    if name in ("render_all_figures", "save_figure"):
        from reports import figures

        return getattr(figures, name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
