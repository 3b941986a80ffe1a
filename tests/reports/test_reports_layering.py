"""DESIGN.md §2: reports renders plain data and imports nothing from the layers above it, nor torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import reports

FORBIDDEN = ("privaudit", "attacks", "federated_core", "torch")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_module_of_reports_imports_an_upper_layer():
    files = sorted(Path(reports.__file__).parent.glob("*.py"))
    assert len(files) >= 8
    offenders = {f.name: sorted(_imported_roots(f) & set(FORBIDDEN)) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_module_loads_no_upper_layer():
    code = ("import sys, reports, reports.schema, reports.validator, reports.figures, reports.html, "
            "reports.markdown, reports.notebook, reports.sample, reports.tables, reports.selection\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
