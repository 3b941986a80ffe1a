"""The audit's stage caches and their manifest: nothing read back without its key and checksum.

Every artifact a stage caches in the output folder (a run's metrics, wire index, checkpoints and
ground truth; a stage's JSON) is listed in ``OUT/manifest.json`` with the stage that wrote it, the
key of the inputs that produced it and its SHA-256. Paths are relative to the output folder, and
keys hold only what changes results (configurations, data specs, upstream keys, the code
fingerprint; never presentation flags or absolute paths), so a moved output folder stays valid.

`StageCache.fresh` answers whether a stage may reuse its files: every file recorded under that
stage with that key and the same bytes. A recorded file that is missing, truncated or altered, or a
file that is present but was never recorded, is recomputed with a `CachedFileWarning` naming it.
``force`` (stage names) and ``enabled=False`` (``--no-cache``) recompute without a warning.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable

from federated_core.integrity import CachedFileWarning, file_sha256

MANIFEST_NAME = "manifest.json"
STAGES = ("phi0", "train", "personal", "audit", "attacks", "analyses")


class StageCache:
    """The manifest of one output folder (see the module docstring)."""

    def __init__(self, root: str | Path, force: Iterable[str] = (), enabled: bool = True) -> None:
        self.root = Path(root)
        self.force = set(force)
        unknown = sorted(self.force - set(STAGES))
        if unknown:
            raise ValueError(f"--force: unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
        self.enabled = bool(enabled)
        self.path = self.root / MANIFEST_NAME
        self.problems: list[str] = []  # damaged or unrecorded cached files (recomputed): the audit's flags
        self.entries: dict[str, dict[str, Any]] = self._read()
        self.events: list[tuple[str, str]] = []  # (stage, "cached" | "computed"), for progress lines

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except ValueError:
            self.problems.append(f"{self.path} is not valid JSON: every cached stage is recomputed")
            warnings.warn(self.problems[-1], CachedFileWarning, stacklevel=3)
            return {}
        return data.get("entries", {}) if isinstance(data, dict) else {}

    def _write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "entries": dict(sorted(self.entries.items()))}, indent=1))
        tmp.replace(self.path)

    def _relative(self, path: str | Path) -> str:
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def uses(self, stage: str) -> bool:
        """Whether ``stage`` may read its cache at all (not forced, caching on)."""
        return self.enabled and stage not in self.force

    def fresh(self, stage: str, key: str, paths: Iterable[str | Path]) -> bool:
        """True when every one of ``paths`` is recorded under ``stage`` with ``key`` and its bytes
        match; otherwise False, with a warning for each file that is damaged or unrecorded."""
        paths = list(paths)
        if not self.uses(stage) or not paths:
            return False
        problems = []
        for path in paths:
            entry = self.entries.get(self._relative(path))
            if entry is None:
                if Path(path).exists():
                    problems.append(f"{path} has no checksum in {self.path}")
                continue
            if entry.get("stage") != stage or entry.get("key") != key:
                return False  # produced by other inputs: recomputed, nothing is wrong
            if not Path(path).is_file():
                problems.append(f"{path} is missing")
            elif Path(path).stat().st_size != entry.get("bytes"):
                problems.append(f"{path} has {Path(path).stat().st_size} bytes, {entry.get('bytes')} were recorded")
            elif file_sha256(path) != entry.get("sha256"):
                problems.append(f"{path} differs from its recorded SHA-256 (altered)")
        if problems:
            message = f"{stage} stage recomputed: {'; '.join(problems)}"
            self.problems.append(message)
            warnings.warn(message, CachedFileWarning, stacklevel=2)
            return False
        if all(self._relative(p) in self.entries for p in paths):
            self.events.append((stage, "cached"))
            return True
        return False

    def record(self, stage: str, key: str, paths: Iterable[str | Path]) -> None:
        """Record ``paths`` (written by ``stage`` from inputs with ``key``) with their SHA-256."""
        for path in paths:
            self.entries[self._relative(path)] = {
                "stage": stage,
                "key": key,
                "sha256": file_sha256(path),
                "bytes": Path(path).stat().st_size,
            }
        self.events.append((stage, "computed"))
        self._write()

    def summary(self, since: int = 0) -> str:
        """``"train cached, attacks computed"``: what happened to each stage since event ``since``."""
        seen: dict[str, str] = {}
        for stage, what in self.events[since:]:
            seen[stage] = "computed" if "computed" in (what, seen.get(stage)) else what
        return ", ".join(f"{stage} {what}" for stage, what in seen.items())

    def forget_under(self, folder: str | Path) -> None:
        """Drop every entry under ``folder`` (before a stage rewrites it)."""
        prefix = self._relative(folder).rstrip("/") + "/"
        self.entries = {k: v for k, v in self.entries.items() if not k.startswith(prefix)}
        self._write()

    def load_json(self, stage: str, key: str, path: str | Path) -> Any | None:
        """The JSON at ``path`` if it is fresh (`fresh`), else None."""
        return json.loads(Path(path).read_text()) if self.fresh(stage, key, [path]) else None

    def save_json(self, stage: str, key: str, path: str | Path, data: Any) -> None:
        """Write ``data`` to ``path`` atomically and record it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
        tmp.replace(path)
        self.record(stage, key, [path])


def files_under(folder: str | Path, exclude: Iterable[str] = ()) -> list[Path]:
    """Every file under ``folder`` (sorted), except those whose first path part is in ``exclude``."""
    folder = Path(folder)
    skip = set(exclude)
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] not in skip and not p.name.endswith(".tmp")
    )
