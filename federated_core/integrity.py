"""Checksums of cached files: nothing read back from disk is trusted without one.

`file_sha256` is the one SHA-256 of a file used everywhere (wire chunks, φ0 checkpoints, the
audit's stage manifest). `write_checksums` records the SHA-256 of named files of a folder in its
``checksums.json``; `verify_checksums` lists what is missing, truncated or altered, each problem
naming the file, so a caller can recompute with a warning instead of crashing or, worse, loading
altered bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

CHECKSUMS_NAME = "checksums.json"


class CachedFileWarning(UserWarning):
    """A cached file was missing, truncated or altered; it is recomputed (the message names it)."""


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path`` (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder: str | Path, names: Iterable[str]) -> Path:
    """Record ``{name: {"sha256", "bytes"}}`` of ``names`` (relative to ``folder``) in its
    ``checksums.json`` (written last, so a folder interrupted mid-save has no valid record)."""
    folder = Path(folder)
    record = {
        name: {"sha256": file_sha256(folder / name), "bytes": (folder / name).stat().st_size} for name in sorted(names)
    }
    path = folder / CHECKSUMS_NAME
    tmp = path.with_name(CHECKSUMS_NAME + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def verify_checksums(folder: str | Path, names: Iterable[str]) -> list[str]:
    """Problems with ``names`` in ``folder`` against its ``checksums.json``: each a sentence naming
    the file (empty list: every file is present with its recorded bytes)."""
    folder = Path(folder)
    path = folder / CHECKSUMS_NAME
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return [f"{path} is missing or unreadable: the cached files beside it cannot be checked"]
    problems = []
    for name in names:
        file = folder / name
        expected = record.get(name) if isinstance(record, dict) else None
        if not isinstance(expected, dict) or "sha256" not in expected:
            problems.append(f"{file} has no recorded checksum in {path}")
        elif not file.is_file():
            problems.append(f"{file} is missing")
        elif file.stat().st_size != expected.get("bytes"):
            problems.append(
                f"{file} has {file.stat().st_size} bytes, {expected.get('bytes')} were recorded (truncated?)"
            )
        elif file_sha256(file) != expected["sha256"]:
            problems.append(f"{file} differs from its recorded SHA-256 (altered)")
    return problems
