"""The code fingerprint in the pipeline caches' keys."""

from __future__ import annotations

import re
import subprocess
import sys

from privaudit.code_version import _sources, code_fingerprint


def test_fingerprint_covers_the_computing_code_and_is_stable_across_processes():
    names = [rel for rel, _ in _sources()]
    for needed in ("federated_core/methods/fedface.py", "attacks/logged_update.py", "accountants/mechanisms.py",
                   "privaudit.attack_stage"):
        assert needed in names
    assert not any(n.startswith("reports") for n in names)  # layout changes do not recompute numbers
    fp = code_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", fp)
    out = subprocess.run([sys.executable, "-c", "from privaudit.code_version import code_fingerprint as f; print(f())"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == fp


def test_fingerprint_changes_with_a_source_file(tmp_path, monkeypatch):
    import privaudit.code_version as cv

    files = [(rel, p) for rel, p in _sources()][:3]
    copies = []
    for i, (rel, p) in enumerate(files):
        c = tmp_path / f"{i}.py"
        c.write_bytes(p.read_bytes())
        copies.append((rel, c))
    monkeypatch.setattr(cv, "_sources", lambda: copies)
    cv.code_fingerprint.cache_clear()
    try:
        before = cv.code_fingerprint()
        cv.code_fingerprint.cache_clear()
        copies[1][1].write_bytes(copies[1][1].read_bytes() + b"\n# changed\n")
        after = cv.code_fingerprint()
        assert before != after
    finally:
        cv.code_fingerprint.cache_clear()
