"""φ0's cache key holds the code that trains it: a φ0 trained by other code (another
`federated_core.models`, `.data`, pretrain module or torch) is never reused under the same config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import federated_core
from federated_core import pretrain as pretrain_module
from federated_core.pretrain import WEIGHTS_CODE, PretrainConfig, code_fingerprint_of, weights_code_fingerprint

ROOT = Path(federated_core.__file__).resolve().parent


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "federated_core"
    for entry in (*WEIGHTS_CODE, "methods"):
        src = ROOT / entry
        if src.is_file():
            root.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / entry)
        else:
            shutil.copytree(src, root / entry, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_code_fingerprint_follows_the_weights_code_only(tmp_path):
    root = _copy(tmp_path)
    base = code_fingerprint_of(root, WEIGHTS_CODE, "2.14.1")
    assert base == code_fingerprint_of(ROOT, WEIGHTS_CODE, "2.14.1") == code_fingerprint_of(root, WEIGHTS_CODE, "2.14.1")
    assert code_fingerprint_of(root, WEIGHTS_CODE, "2.15.0") != base  # another torch
    (root / "methods" / "__init__.py").write_text("# a method's change does not touch φ0\n")
    assert code_fingerprint_of(root, WEIGHTS_CODE, "2.14.1") == base
    for changed in ("pretrain.py", "models/heads.py", "data/synthetic.py"):
        path = root / changed
        original = path.read_bytes()
        path.write_bytes(original + b"\n# one more line\n")
        assert code_fingerprint_of(root, WEIGHTS_CODE, "2.14.1") != base, changed
        path.write_bytes(original)
    (root / "models" / "new_backbone.py").write_text("X = 1\n")  # a new file counts too
    assert code_fingerprint_of(root, WEIGHTS_CODE, "2.14.1") != base
    assert weights_code_fingerprint() == code_fingerprint_of(ROOT, WEIGHTS_CODE, torch.__version__)
    with pytest.raises(ValueError, match="does not exist"):
        code_fingerprint_of(root, ("no_such_module.py",), "2.14.1")


def test_the_cache_key_holds_the_code_fingerprint(monkeypatch):
    config = PretrainConfig()
    key = config.fingerprint()
    assert key == PretrainConfig().fingerprint()
    monkeypatch.setattr(pretrain_module, "weights_code_fingerprint", lambda: "0" * 16)  # as if other code
    assert config.fingerprint() != key
