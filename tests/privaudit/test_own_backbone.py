"""Your own backbone as φ0 (`[model]`): the audit starts from the weights file and pre-trains
nothing; a file that does not fit is refused before any file is written."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score

import privaudit as pa
from federated_core.engine.evaluate import GenericEvaluator
from federated_core.models import build_backbone, embed
from federated_core.scales import build_federated_data, federated_config
from privaudit.cli import main
from privaudit.pipeline import federated_scale_for, pretrain_config_for
from privaudit.scenario import AttackSpec, MethodSpec, ModelSpec


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(7)
    model = build_backbone("tiny", embedding_dim=24, resolution=32)  # d = 24, unlike the tiny preset's 32
    path = tmp_path_factory.mktemp("weights") / "team_backbone.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model.eval()


def _scenario(out, weights_path, **model):
    return pa.Scenario.tiny(out=str(out), methods=[MethodSpec("fedpe")], attacks=AttackSpec(run=[]),
                            model=ModelSpec(**{"backbone": "tiny", "weights": str(weights_path), **model}))


def test_the_audit_starts_from_the_weights_and_pretrains_nothing(weights, tmp_path):
    path, model = weights
    scenario = _scenario(tmp_path / "out", path)
    result = pa.run_audit(scenario, progress=False)
    cache = tmp_path / "out" / "cache"
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith("phi0-")) == \
        [f"phi0-imported-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"]
    config = json.loads((tmp_path / "out" / "runs" / "fedpe" / "config.json").read_text())
    assert config["phi0"]["fingerprint"].startswith("imported-") and config["federated"]["embedding_dim"] == 24
    # round 0 scores exactly these weights: AUROC recomputed here with scikit-learn
    scale = federated_scale_for(scenario)
    data = build_federated_data(scale, pretrain_config_for(scenario).data, seed=scenario.seed)
    i, j, same = (np.asarray(a) for a in GenericEvaluator(data.test, federated_config(scale, "fedpe").evaluation).pairs)
    emb = torch.nn.functional.normalize(embed(model, data.test).double(), dim=1)
    expected = roc_auc_score(same.astype(bool), (emb[i] * emb[j]).sum(dim=1).numpy())
    assert result.method("fedpe").utility_per_round[0]["auroc"] == pytest.approx(expected, abs=1e-9)


def test_weights_that_do_not_fit_are_refused_before_any_file(weights, tmp_path, capsys):
    path, _ = weights
    out = tmp_path / "refused"
    with pytest.raises(ValueError, match=r"model\.weights: .*team_backbone\.safetensors.*do not fit backbone"):
        pa.run_audit(_scenario(out, path, backbone="iresnet18"), progress=False)
    with pytest.raises(ValueError, match=r"model\.weights: .*\b16\b.*\b24\b|model\.weights: .*\b24\b.*\b16\b"):
        pa.run_audit(_scenario(out, path, embedding_dim=16), progress=False)
    assert not out.exists()
    scenario_file = tmp_path / "scenario.toml"
    scenario_file.write_text(f'scale = "tiny"\n[model]\nbackbone = "tiny"\nweights = "{tmp_path / "missing.pt"}"\n')
    assert main(["audit", str(scenario_file), "--out", str(out), "--quiet"]) == 2
    assert "missing.pt" in capsys.readouterr().err and not out.exists()


def test_model_section_errors_name_the_key():
    with pytest.raises(ValueError, match="model.weights .* needs model.backbone"):
        ModelSpec(weights="w.safetensors")
    with pytest.raises(ValueError, match="model.backbone must be one of"):
        ModelSpec(backbone="resnet50", weights="w.safetensors")
    with pytest.raises(ValueError, match="only used with model.weights"):
        ModelSpec(backbone="tiny")
