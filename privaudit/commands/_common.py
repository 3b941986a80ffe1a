"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_run_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """--out, --seed, --device and --quiet, the same for every command that runs something."""
    parser.add_argument(
        "--out", type=Path, default=Path(default_out), help=f"output directory (default: {default_out})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def resolve_device(name: str) -> str:
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"--device {name!r} was asked for, but CUDA is not available on this machine; use --device cpu"
        )
    try:
        torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1): {exc}") from None
    return name


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value
