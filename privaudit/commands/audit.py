"""`privaudit audit` (and `privaudit demo`): the default audit.

Until the full audit pipeline lands (train every method, account, attack, report), the audit
runs its first stage, the central pre-training of φ0 and its evaluation on unseen identities, and
prints the numbers.
"""

from __future__ import annotations

import argparse

from privaudit.commands._common import add_run_arguments, resolve_device
from privaudit.commands.pretrain import print_pretrain_result, timed_pretrain


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, help_text in (("audit", "run the privacy audit (default scenario: synthetic faces, demo scale)"),
                            ("demo", "alias of `audit` with the default scenario")):
        p = subparsers.add_parser(name, help=help_text)
        p.add_argument("--scale", choices=("tiny", "demo", "paper"), default="demo", help="preset (default: demo)")
        add_run_arguments(p, default_out="out")
        p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from privaudit.presets import pretrain_config

    device = resolve_device(args.device)
    config = pretrain_config(args.scale, seed=args.seed)
    print("privaudit audit: stage 1/1 — pre-training φ0 on public identities (methods, accounting, "
          "attacks and the report are added by later stages)")
    result, seconds = timed_pretrain(config, args.out / "cache", device, progress=not args.quiet)
    print_pretrain_result(result, seconds)
    return 0
