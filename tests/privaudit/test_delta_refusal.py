"""δ ≥ 1/n is refused before any work (exit 2, naming δ, n and the unit; no files left), unless
the scenario allows it, and then the affected guarantees carry flags."""

from __future__ import annotations

from pathlib import Path

from privaudit.cli import main
from privaudit.pipeline import check_delta_against_units
from privaudit.privacy_stage import UnitCounts
from privaudit.scenario import MethodSpec, Scenario


def test_a_large_delta_exits_2_naming_delta_and_n_and_leaves_no_files(tmp_path: Path, capsys) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text('scale = "tiny"\n[[methods]]\nname = "privacyface"\n[privacy]\ndelta = 0.2\n')
    out = tmp_path / "out"
    assert main(["audit", str(scenario), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    # the tiny preset gives each client 6 identities, hence 6 class centers: 0.2 >= 1/6
    assert "privacy.delta = 0.2 ≥ 1/n = 1/6" in err and "class-center" in err
    assert not out.exists()


def test_allow_large_delta_turns_the_refusal_into_flags() -> None:
    counts = UnitCounts(images=24, identities=6, max_images_per_identity=4)
    base = Scenario.tiny(methods=[MethodSpec("privacyface"), MethodSpec("fedpe", dp_sgd={"noise_multiplier": 1.0})])
    strict = Scenario.from_dict({**base.to_dict(), "privacy": {**base.to_dict()["privacy"], "delta": 0.2}})
    try:
        check_delta_against_units(strict, counts)
    except ValueError as exc:
        message = str(exc)
    else:
        raise AssertionError("δ = 0.2 ≥ 1/6 was not refused")
    # 0.2 ≥ 1/6 (class centers, identities) and 0.2 ≥ 1/24 (images): every unit is named with its n
    assert "1/n = 1/6, n = the fewest class-center records" in message
    assert "1/n = 1/6, n = the fewest identity records" in message
    assert "1/n = 1/24, n = the fewest image records" in message
    allowed = Scenario.from_dict({**base.to_dict(), "privacy": {**base.to_dict()["privacy"], "delta": 0.2,
                                                               "allow_large_delta": True}})
    flags = check_delta_against_units(allowed, counts)
    assert len(flags) == 3  # class-center (privacyface), image and identity (DP-SGD)


def test_the_default_delta_passes() -> None:
    counts = UnitCounts(images=24, identities=6, max_images_per_identity=4)
    assert Scenario.tiny().privacy.delta == 1e-5
    assert check_delta_against_units(Scenario.tiny(), counts) == []


def test_a_method_that_refuses_dp_sgd_is_refused_before_any_file(tmp_path: Path) -> None:
    import pytest

    import privaudit as pa

    out = tmp_path / "out"
    scenario = Scenario.tiny(out=str(out), methods=[MethodSpec("fedfr", dp_sgd={"noise_multiplier": 1.0})])
    with pytest.raises(ValueError, match=r"variant 'fedfr\+dpsgd' \(fedfr with dp_sgd\) cannot be trained: fedfr does "
                                         r"not support dp_sgd"):
        pa.run_audit(scenario, progress=False)
    assert not out.exists()  # refused in pre-flight: φ0 never trained, nothing written
