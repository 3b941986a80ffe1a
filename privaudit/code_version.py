"""Fingerprints for the stage caches' keys: of the code behind the audit's numbers, and of a
stage's settings (`fingerprint`).

The pipeline caches each stage in the output folder and reuses it when its key matches. A key made
of configuration alone would let an upgraded privaudit serve numbers that the old code computed
(a method's local loss changed, an attack's scoring fixed). `code_fingerprint` hashes the source
of the packages that compute the numbers, so a stage reruns whenever that code changes and only
then.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

# the packages whose code computes the audit's numbers (the CLI and report layout do not)
COMPUTING_PACKAGES = ("federated_core", "attacks", "accountants")
PIPELINE_MODULES = (
    "privaudit.pipeline",
    "privaudit.privacy_stage",
    "privaudit.audit_stage",
    "privaudit.attack_stage",
    "privaudit.personal_stage",
    "privaudit.scenario",
)


def _sources() -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for name in COMPUTING_PACKAGES:
        module_file = importlib.import_module(name).__file__
        if module_file is None:
            raise ValueError(f"package {name!r} of the computation has no source file (__file__ is None)")
        root = Path(module_file).resolve().parent
        files += [(f"{name}/{p.relative_to(root).as_posix()}", p) for p in root.rglob("*.py")]
    for name in PIPELINE_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ValueError(f"module {name!r} of the pipeline cannot be found")
        files.append((name, Path(spec.origin)))
    return sorted(files)


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 (16 hex digits) over the relative paths and bytes of every source file of
    `COMPUTING_PACKAGES` and `PIPELINE_MODULES` (computed once per process)."""
    h = hashlib.sha256()
    for rel, path in _sources():
        h.update(rel.encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def fingerprint(obj: Any) -> str:
    """SHA-256 (16 hex digits) of ``obj`` as canonical JSON (sorted keys; non-JSON values by str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
