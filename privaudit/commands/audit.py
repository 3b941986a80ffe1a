"""`privaudit audit [SCENARIO]` (and `privaudit demo`): the whole audit, then the report.

Trains every method of the scenario on the federated core, accounts for each client's releases,
audits the DP claims empirically, attacks what each party observed, and writes
``results.json``, ``report.html``, ``report.md`` and ``figures/`` to ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from privaudit.commands._common import resolve_device
from privaudit.scenario import SCALES


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, help_text in (
        ("audit", "run the privacy audit (default scenario: synthetic faces, demo scale)"),
        ("demo", "alias of `audit` with the default scenario"),
    ):
        p = subparsers.add_parser(name, help=help_text)
        if name == "audit":
            p.add_argument(
                "scenario",
                nargs="?",
                type=Path,
                default=None,
                help="a scenario file (.toml, .yaml); default: the embedded demo scenario",
            )
        p.add_argument(
            "--scale",
            choices=SCALES,
            default=None,
            help="preset to start from (default: the file's, else demo)",
        )
        p.add_argument("--methods", default=None, help="comma-separated methods to run (default: the scenario's)")
        p.add_argument("--out", type=Path, default=None, help="output directory (default: the scenario's, 'out')")
        p.add_argument("--seed", type=int, default=None, help="seed (default: the scenario's, 0)")
        p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: the scenario's)")
        p.add_argument("--quiet", action="store_true", help="no progress output")
        p.add_argument(
            "--force",
            action="append",
            default=[],
            metavar="STAGE",
            help="recompute this stage even when cached (repeatable): phi0, train, personal, audit, attacks, analyses",
        )
        p.add_argument("--no-cache", action="store_true", help="recompute every stage (the caches are rewritten)")
        p.add_argument(
            "--dry-run",
            action="store_true",
            help="print the merged scenario, what is cached and what will run, time and disk estimates; write nothing",
        )
        p.set_defaults(func=run)


def build_scenario(args: argparse.Namespace):
    """The scenario of the command line: the file (or a preset), then the flags on top."""
    import dataclasses

    from privaudit.config_io import load_document
    from privaudit.scenario import MethodSpec, Scenario

    path = getattr(args, "scenario", None)
    if path is not None:
        document = load_document(path)
        document["scale"] = args.scale or document.get("scale", "demo")
        scenario = Scenario.from_dict(document)  # the preset, with every table of the file deep-merged
    else:
        scenario = Scenario.preset(args.scale or "demo")
    changes: dict[str, Any] = {}
    if args.methods:
        names = [m.strip() for m in args.methods.split(",") if m.strip()]
        changes["methods"] = [MethodSpec(n) for n in names]
    if args.out is not None:
        changes["out"] = str(args.out)
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.device is not None:
        changes["device"] = resolve_device(args.device)
    return dataclasses.replace(scenario, **changes)


def run(args: argparse.Namespace) -> int:
    from privaudit.pipeline import run_audit
    from reports.terminal import summary_text

    scenario = build_scenario(args)
    resolve_device(scenario.device)
    if args.dry_run:
        from privaudit.dry_run import plan_audit

        print(plan_audit(scenario, tuple(args.force), use_cache=not args.no_cache).text())
        return 0
    started = time.perf_counter()
    result = run_audit(scenario, progress=not args.quiet, force=tuple(args.force), use_cache=not args.no_cache)
    report = scenario.out_dir / "report.html"  # written by run_audit, as from Python
    seconds = time.perf_counter() - started
    print(summary_text(result))
    print(f"\nreport: {report}  (results: {scenario.out_dir / 'results.json'}; {seconds:.0f} s)")
    return 0
