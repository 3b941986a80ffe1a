"""`privaudit data check PATH`: check an identity-per-folder tree of face images before auditing it.

Prints the check's summary (or, with ``--json``, its JSON) on stdout. Exit code 0 when the tree can
be audited; 2 when it cannot, with each problem (naming the file or identity) on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `privaudit data` and its action `check`."""
    p = subparsers.add_parser("data", help="check a folder of face images (one sub-folder per identity)")
    p.set_defaults(func=lambda args: _usage(p))
    actions = p.add_subparsers(dest="data_action", metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="count identities and images, name unreadable files, duplicates and identities with too few images",
        description="Check an identity-per-folder tree of face images (root/<identity>/<image>.jpg|png|...) "
        "without loading it into memory. Exit 0 if it can be audited, 2 otherwise (problems on stderr).",
    )
    check.add_argument("path", type=Path, help="root folder holding one sub-folder per identity")
    check.add_argument(
        "--min-images",
        type=int,
        default=2,
        help="readable images every identity needs (default: 2, one to train on and one to test)",
    )
    check.add_argument("--json", action="store_true", help="print the check as JSON instead of a summary")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.set_defaults(func=run_check)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_check(args: argparse.Namespace) -> int:
    """Run the check, print it; 0 when `problems()` is empty, else 2 with the problems on stderr."""
    from federated_core.data.check import check_folder_tree

    result = check_folder_tree(args.path, min_images_per_identity=args.min_images, progress=not args.quiet)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text())
    problems = result.problems()
    if not problems:
        return 0
    print(f"privaudit data check: {args.path} cannot be audited ({len(problems)} problems):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 2
