"""`privaudit report RESULTS.json`: re-render report.html, report.md and figures from results."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="re-render the HTML / Markdown report from a results.json")
    p.add_argument("results", type=Path, metavar="RESULTS.json", help="results written by `privaudit audit`")
    p.add_argument("--out", type=Path, default=None, help="folder of the report (default: beside RESULTS.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reports.html import write_report
    from reports.schema import load_results

    if not args.results.is_file():
        raise FileNotFoundError(f"RESULTS.json {str(args.results)!r} does not exist")
    result = load_results(args.results)
    out = args.out or args.results.parent
    path = write_report(result, out)
    print(f"report: {path}")
    return 0
