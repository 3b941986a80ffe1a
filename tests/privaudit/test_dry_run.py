"""`privaudit audit --dry-run`: the merged scenario, what is recorded and what will run, time and
disk estimates; nothing written; the pre-flight's refusals still exit 2."""

from __future__ import annotations

import pytest

import privaudit as pa
from federated_core.models import build_backbone
from privaudit.cli import main
from privaudit.dry_run import plan_audit
from privaudit.scenario import AttackSpec, MethodSpec


def test_a_dry_run_writes_nothing_and_estimates_from_the_backbone(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["audit", "--scale", "tiny", "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    scenario = pa.Scenario.tiny(out=str(out))
    assert all(f"seed 0: {m.key} (train, utility, ledger, audits, attacks): will run" in text for m in scenario.methods)
    # disk by hand: uploads of every client and one stored broadcast per round, plus 4 backbones
    params = sum(p.numel() for p in build_backbone("tiny", embedding_dim=32, resolution=32).parameters())
    f = scenario.federation
    expected = params * 4 * (f.rounds * (f.num_clients + 1) + 4) * len(scenario.methods)
    assert plan_audit(scenario).disk_bytes == expected
    assert f"estimated disk: about {expected / 2**20:.0f} MiB" in text and '"out": "' in text


def test_what_the_manifest_records_is_reported_and_force_overrides_it(tmp_path, capsys):
    out = tmp_path / "out"
    pa.run_audit(pa.Scenario.tiny(out=str(out), methods=[MethodSpec("fedpe")], attacks=AttackSpec(run=[])),
                 progress=False, report=False)
    scenario = pa.Scenario.tiny(out=str(out), methods=[MethodSpec("fedpe"), MethodSpec("fedgc")])
    stages = dict(plan_audit(scenario).stages)
    assert stages["seed 0: fedpe (train, utility, ledger, audits, attacks)"].startswith("recorded in the manifest")
    assert stages["seed 0: fedgc (train, utility, ledger, audits, attacks)"] == "will run"
    forced = dict(plan_audit(scenario, force=("train",)).stages)
    assert forced["seed 0: fedpe (train, utility, ledger, audits, attacks)"] == "will run (forced)"
    with pytest.raises(ValueError, match="--force: unknown stage"):
        plan_audit(scenario, force=("nope",))


def test_the_pre_flight_refusals_still_exit_2(tmp_path, capsys):
    scenario_file = tmp_path / "bad.toml"
    scenario_file.write_text('scale = "tiny"\n[[methods]]\nname = "fedgc"\nparams = {lam = -1}\n')
    assert main(["audit", str(scenario_file), "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    assert "variant 'fedgc'" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_train_dry_run_builds_the_method_and_writes_nothing(tmp_path, capsys):
    from privaudit.dry_run import run_disk_bytes

    out = tmp_path / "train"
    assert main(["train", "--method", "fedgc", "--scale", "tiny", "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists() and not (tmp_path / "cache").exists()
    assert '"method": "fedgc"' in text and "φ0: will be pre-trained" in text
    from federated_core.scales import federated_scale

    scale = federated_scale("tiny")
    expected = run_disk_bytes("tiny", 32, 32, scale.rounds, scale.num_clients)
    assert f"estimated disk: about {expected / 2**20:.0f} MiB" in text
    assert main(["train", "--method", "fedgc", "--scale", "tiny", "--out", str(out), "--dry-run",
                 "--param", "lam=-1"]) == 2
    assert "lam (λ) must be a finite number >= 0" in capsys.readouterr().err and not out.exists()
