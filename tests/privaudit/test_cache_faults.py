"""The fault matrix of the stage caches: each cached artifact kind truncated, emptied, edited,
byte-flipped or deleted is recomputed with a warning naming the file, and gives the numbers of a
clean run; keys ignore presentation flags and absolute paths; --force, --no-cache and clean work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import privaudit as pa
from federated_core.integrity import CachedFileWarning
from privaudit.cli import main
from privaudit.scenario import AttackSpec, MethodSpec


def scenario(out: Path) -> "pa.Scenario":
    return pa.Scenario.tiny(out=str(out), methods=[MethodSpec("privacyface")], attacks=AttackSpec(run=[]))


def numbers(result) -> str:
    """Everything that is a result (timings and creation time aside)."""
    doc = result.to_dict()
    doc.pop("timings"), doc.pop("created"), doc.pop("flags")  # flags are checked on their own
    assert "out" not in doc["scenario"]  # where the folder is: not a result, not in the results
    return json.dumps(doc, sort_keys=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "out"
    return out, numbers(pa.run_audit(scenario(out), progress=False))


def rerun(out: Path, **kwargs):
    return pa.run_audit(scenario(out), **{"progress": False, **kwargs})


def copy_of(out: Path, tmp_path: Path) -> Path:
    target = tmp_path / "moved"
    shutil.copytree(out, target)
    return target


def test_a_rerun_and_a_moved_folder_reuse_every_stage_without_a_warning(clean, tmp_path, recwarn):
    out, expected = clean
    moved = copy_of(out, tmp_path)
    again = rerun(moved, progress=True)
    assert numbers(again) == expected and again.flags == []  # progress output is not part of any key
    assert not [w for w in recwarn if issubclass(w.category, CachedFileWarning)]
    manifest = json.loads((moved / "manifest.json").read_text())["entries"]
    assert all(not Path(p).is_absolute() for p in manifest)
    assert {e["stage"] for e in manifest.values()} >= {"train", "personal", "audit", "analyses"}


def _phi0_file(out: Path) -> Path:
    return next((out / "cache").glob("phi0-*/backbone.safetensors"))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_audits(path: Path) -> None:
    doc = json.loads(path.read_text())
    doc["findings"][0]["epsilon_lower_bound"] = 0.999  # still valid JSON, a number that was never measured
    path.write_text(json.dumps(doc))


CASES = [
    ("φ0 checkpoint truncated", _phi0_file, _truncate, "backbone.safetensors"),
    ("run metrics zero bytes", lambda o: o / "runs/privacyface/metrics.json", lambda p: p.write_bytes(b""),
     "metrics.json"),
    ("wire chunk byte-flipped", lambda o: sorted((o / "runs/privacyface/wire").glob("chunk-*.safetensors"))[0], _flip,
     "chunk-00000000"),
    ("audits edited but valid", lambda o: o / "runs/privacyface/audits.json", _edit_audits, "audits.json"),
    ("personalised deleted", lambda o: o / "runs/privacyface/personalised.json", lambda p: p.unlink(),
     "personalised.json"),
]


@pytest.mark.parametrize("name, target, damage, named", CASES, ids=[c[0] for c in CASES])
def test_each_damaged_artifact_is_recomputed_with_a_warning_naming_it(clean, tmp_path, name, target, damage, named):
    out, expected = clean
    moved = copy_of(out, tmp_path)
    damage(target(moved))
    with pytest.warns(CachedFileWarning, match=named.replace(".", r"\.")):
        again = rerun(moved)
    assert numbers(again) == expected
    # the recomputation is in the results' flags, not only in a warning (DESIGN §8)
    assert any(f.startswith("cache: ") and named in f for f in again.flags), again.flags


def test_force_and_no_cache_recompute_without_warnings(clean, tmp_path, recwarn):
    out, expected = clean
    moved = copy_of(out, tmp_path)
    assert numbers(rerun(moved, force=("audit",))) == expected
    assert numbers(rerun(moved, use_cache=False)) == expected
    assert not [w for w in recwarn if issubclass(w.category, CachedFileWarning)]
    with pytest.raises(ValueError, match=r"--force: unknown stage\(s\) \['trian'\]"):
        rerun(moved, force=("trian",))


def test_a_damaged_saved_wire_log_is_refused_by_attack_with_exit_2(clean, tmp_path, capsys):
    out, _ = clean
    moved = copy_of(out, tmp_path)
    chunk = sorted((moved / "runs/privacyface/wire").glob("chunk-*.safetensors"))[0]
    _flip(chunk)
    code = main(["attack", str(moved / "runs/privacyface"), "--attacks", "knn", "--out", str(tmp_path / "a")])
    assert code == 2
    assert chunk.name in capsys.readouterr().err


def test_clean_removes_the_caches_and_keeps_the_results(clean, tmp_path, capsys):
    out, _ = clean
    moved = copy_of(out, tmp_path)
    assert main(["clean", str(moved)]) == 0
    assert not (moved / "runs").exists() and not (moved / "cache").exists() and not (moved / "manifest.json").exists()
    assert (moved / "results.json").is_file()
    assert main(["clean", str(tmp_path)]) == 2  # not an output folder: refused, nothing deleted


def test_an_observer_that_took_no_part_is_refused_with_exit_2(clean, capsys):
    out, _ = clean
    assert main(["attack", str(out / "runs/privacyface"), "--observer", "client:99", "--attacks", "knn"]) == 2
    err = capsys.readouterr().err
    assert "--observer 'client:99' took no part in this run" in err and "client:0" in err
