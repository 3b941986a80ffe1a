"""The `privaudit` command line.

Each subcommand lives in its own module under `privaudit.commands` and exposes
``register(subparsers)`` (adds its parser and sets ``func``). Exit codes: 0 ok, 2 bad input
(the message names the problem), 1 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from privaudit import __version__

# Subcommand modules, in the order `--help` lists them.
COMMAND_MODULES = (
    "privaudit.commands.audit",
    "privaudit.commands.account",
    "privaudit.commands.pretrain",
    "privaudit.commands.train",
    "privaudit.commands.attack",
    "privaudit.commands.report",
    "privaudit.commands.clean",
    "privaudit.commands.data",
)


class UsageError(ValueError):
    """Bad input from the user: reported on stderr with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privaudit",
        description="Train, attack and audit federated face-recognition systems.",
    )
    parser.add_argument("--version", action="version", version=f"privaudit {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an internal error")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: $PRIVAUDIT_THREADS, else the cores this process may use)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from privaudit.threads import configure_threads

        configure_threads(args.threads)
        return int(args.func(args) or 0)
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"privaudit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence: reported, exit 1
        if args.debug:
            import traceback

            traceback.print_exc()
        print(
            f"privaudit {args.command}: internal error: {type(exc).__name__}: {exc}"
            + ("" if args.debug else " (run with `privaudit --debug ...` for the traceback)"),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
