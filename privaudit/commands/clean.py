"""`privaudit clean [OUT]`: delete an output folder's stage caches, keeping results and reports."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

CACHED = ("cache", "runs", "manifest.json")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("clean", help="delete the stage caches of an output folder (φ0, runs, manifest)")
    p.add_argument("out", nargs="?", type=Path, default=Path("out"), help="the audit's output folder (default: out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if not out.is_dir():
        raise FileNotFoundError(f"output folder {str(out)!r} does not exist")
    if not (out / "manifest.json").is_file() and not (out / "scenario.json").is_file():
        raise ValueError(
            f"{str(out)!r} is not a privaudit output folder (no manifest.json or scenario.json): nothing was deleted"
        )
    removed = []
    for name in CACHED:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(name + "/")
        elif path.is_file():
            path.unlink()
            removed.append(name)
    print(f"removed from {out}: {', '.join(removed) if removed else 'nothing (no cache)'}")
    return 0
