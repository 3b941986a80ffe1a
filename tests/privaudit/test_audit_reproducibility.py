"""Two same-seed audits in different folders write the same bytes: every artifact of a run
(checkpoint, wire chunks, state, decoder, attack records) and results.json, timings and the
creation time aside (they live in ``timings.json`` files and the ``timings`` / ``created`` fields)."""

from __future__ import annotations

import json
from pathlib import Path

import privaudit as pa
from privaudit.scenario import AttackSpec, MethodSpec

TIMING_FILES = {"timings.json"}


def _audit(out: Path) -> None:
    attacks = AttackSpec(decoder_steps=20, decoder_identities=12, gallery_distractors=10, gradient_iterations=4,
                         gradient_restarts=1, gradient_logged_iterations=4, gradient_logged_restarts=1,
                         gradient_logged_dummies=2)
    scenario = pa.Scenario.tiny(out=str(out), methods=[MethodSpec("shared-centers")], attacks=attacks)
    pa.run_audit(scenario, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in TIMING_FILES}


def test_two_same_seed_audits_write_the_same_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _audit(a)
    _audit(b)
    runs_a, runs_b = _files(a / "runs"), _files(b / "runs")
    assert runs_a.keys() == runs_b.keys()
    assert any(name.endswith("decoder.safetensors") for name in runs_a)  # the attack artifacts are among them
    assert any("/wire/" in name for name in runs_a) and any("checkpoint" in name for name in runs_a)
    differing = sorted(name for name in runs_a if runs_a[name] != runs_b[name])
    assert differing == []
    docs = [json.loads((d / "results.json").read_text()) for d in (a, b)]
    for doc in docs:
        doc.pop("created"), doc.pop("timings")
    assert docs[0] == docs[1]
    text = (a / "results.json").read_text()
    assert str(a) not in text and str(tmp_path) not in text  # no absolute path inside the artifact
