"""Personalised utility stage: FedFR / FedFS protocols on held-out images of each client's own
identities, with each client's own model, on a tiny real audit (fedpe, fedfr, fedfs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from privaudit.cache import StageCache
import torch
from sklearn.metrics import roc_auc_score

import privaudit as pa
from federated_core.engine.checkpoint import load_engine_state
from federated_core.methods import get_method
from federated_core.methods.fedfr import TransformedBackbone
from federated_core.models import embed, load_backbone
from federated_core.personalised import FEDFR_FARS, PersonalisedReport
from federated_core.scales import build_federated_data
from privaudit.personal_stage import (
    CACHE_NAME,
    HeldOut,
    flatten_report,
    load_run_models,
    metric_name,
    model_plan,
    personalised_utility,
)
from privaudit.pipeline import federated_scale_for, pretrain_config_for
from privaudit.scenario import AttackSpec, MethodSpec
from reports.validator import validate_results

METHODS = ("fedpe", "fedfr", "fedfs", "fedavg-finetune")


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("personal")
    scenario = pa.Scenario.tiny(out=str(out), methods=[MethodSpec(m) for m in METHODS], attacks=AttackSpec(run=[]))
    result = pa.run_audit(scenario, progress=False)
    data = build_federated_data(federated_scale_for(scenario), pretrain_config_for(scenario).data, seed=scenario.seed)
    return scenario, result, data


def _cached(scenario, method):
    return json.loads((scenario.out_dir / "runs" / method / CACHE_NAME).read_text())


def _own_identity_auroc(model, split) -> float:
    """FedFS protocol computed by hand: per client, cosine of every held-out image (all clients) to
    the mean-feature template of each local identity (enrolled from the training images)."""
    test_images = torch.cat([t.images for t in split.test])
    test_ids = torch.cat([t.labels for t in split.test]).numpy()
    per_client = []
    for c, client in enumerate(split.clients):
        m = model(c)
        probes = embed(m, test_images).numpy()
        enrol = embed(m, client.faces).numpy()
        scores, same = [], []
        for identity in client.identities:
            t = enrol[client.faces.labels.numpy() == identity].sum(0)
            t /= np.linalg.norm(t)
            scores.append(probes @ t)
            same.append(test_ids == identity)
        per_client.append(roc_auc_score(np.concatenate(same), np.concatenate(scores)))
    return float(np.mean(per_client))


def test_every_method_gets_personalised_utility_keys_and_its_auroc_by_hand(audit):
    scenario, result, data = audit
    split = HeldOut(data, 3).split()
    # FedFR protocol, per client: local held-out images x other clients' held-out images.
    local = len(split.test[0])
    others = sum(len(t) for t in split.test) - local
    supported = {f"fedfr:tar@far={far:g}" for far in FEDFR_FARS if far >= 1 / (local * others)}
    assert supported and len(supported) < len(FEDFR_FARS)  # the tiny scale cannot support every FAR
    owns = (("fedpe", "global"), ("fedfr", "local+dfc"), ("fedfs", "personal"), ("fedavg-finetune", "finetuned"))
    for name, model in owns:
        m = result.method(name)
        u = m.personalised_utility
        assert {"fedfr:auroc", "fedfr:rank1", "fedfs:auroc"} <= set(u)
        assert {k for k in u if k.startswith("fedfr:tar@far=")} == supported
        plan = model_plan(load_run_models(scenario.out_dir / "runs" / name), split.clients, scenario.seed)
        assert u["fedfs:auroc"] == pytest.approx(_own_identity_auroc(plan.own, split), abs=1e-9)
        assert ("fedfs:auroc [aggregated]" in u) == (name == "fedfs")
        assert m.params["personalised_model"] == model
        assert f"personal:{name}" in result.timings
        dropped = _cached(scenario, name)["dropped"]
        assert "fedfr:tar@far=1e-06" in dropped and not set(dropped) & set(u)
    validate_results(json.loads((scenario.out_dir / "results.json").read_text()))


def test_fedavg_finetune_is_evaluated_with_the_global_model_fine_tuned_per_client(audit):
    scenario, result, data = audit
    split = HeldOut(data, 3).split()
    run = scenario.out_dir / "runs" / "fedavg-finetune"
    with pytest.raises(ValueError, match="clients' training data"):
        model_plan(load_run_models(run))
    plan = model_plan(load_run_models(run), split.clients, scenario.seed)
    global_model, _ = load_backbone(run / "checkpoint" / "backbone.safetensors")
    x = split.clients[0].faces.as_float()
    with torch.no_grad():  # a different model per client, none of them Θ_g
        outs = [plan.own(c).eval()(x) for c in range(2)] + [global_model.eval()(x)]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])
    tuned = _own_identity_auroc(plan.own, split)
    assert result.method("fedavg-finetune").personalised_utility["fedfs:auroc"] == pytest.approx(tuned, abs=1e-9)
    assert abs(tuned - _own_identity_auroc(lambda c: global_model, split)) > 1e-6


def test_fedfr_is_evaluated_with_its_personalised_model(audit):
    scenario, result, data = audit
    split = HeldOut(data, 3).split()
    run = scenario.out_dir / "runs" / "fedfr"
    plan = model_plan(load_run_models(run))
    assert plan.own_name == "local+dfc" and not plan.clients_on_global_model
    assert all(isinstance(plan.own(c), TransformedBackbone) for c in range(len(split.clients)))
    # Rebuilt independently of the stage: FedFR's [Θ_l, Π_l] from the engine state, Θ_g from the checkpoint.
    states = load_engine_state(run).client_states
    params = json.loads((run / "checkpoint" / "config.json").read_text())["config"]["method_params"]
    fedfr = get_method("fedfr", **params)
    personal = {c: fedfr.personalised_model(states[c], "local+dfc") for c in states}
    global_model, _ = load_backbone(run / "checkpoint" / "backbone.safetensors")
    by_hand = _own_identity_auroc(lambda c: personal[c], split)
    with_global = _own_identity_auroc(lambda c: global_model, split)
    assert result.method("fedfr").personalised_utility["fedfs:auroc"] == pytest.approx(by_hand, abs=1e-9)
    assert abs(by_hand - with_global) > 1e-6  # so the check above tells the two models apart
    assert _cached(scenario, "fedfr")["reports"]["global"]["fedfs"]["mean"]["auroc"]["mean"] == \
        pytest.approx(with_global, abs=1e-9)
    # The global-model method: one Θ_g for every client, and the same number by hand.
    fedpe_run = scenario.out_dir / "runs" / "fedpe"
    fedpe_plan = model_plan(load_run_models(fedpe_run))
    assert fedpe_plan.own_name == "global" and fedpe_plan.own(0) is fedpe_plan.own(len(split.clients) - 1)
    fedpe_global, _ = load_backbone(fedpe_run / "checkpoint" / "backbone.safetensors")
    assert result.method("fedpe").personalised_utility["fedfs:auroc"] == \
        pytest.approx(_own_identity_auroc(lambda c: fedpe_global, split), abs=1e-9)


def test_heldout_images_are_new_images_of_each_clients_own_identities(audit):
    _, _, data = audit
    heldout = HeldOut(data, 3)
    split = heldout.split()
    for c, (party, ranges) in enumerate(heldout.index_ranges().items()):
        (a, b), (x, y) = ranges["train"], ranges["heldout"]
        assert b - a == data.data_spec["clients"][party]["images_per_identity"] and y - x == 3 and b <= x
        train, test = split.clients[c].faces, split.test[c]
        assert set(test.labels.tolist()) == set(split.clients[c].identities)
        assert len(test) == 3 * len(split.clients[c].identities)
        assert split.clients[c] is data.clients[c]  # enrolment = the client's own training data
        flat_train = train.images.reshape(len(train), -1)
        for img in test.images.reshape(len(test), -1):
            assert not (flat_train == img).all(dim=1).any()  # no held-out image is a training image


def test_rerun_reads_the_cache_and_recomputing_gives_the_same_numbers(audit, tmp_path):
    scenario, result, data = audit
    run = scenario.out_dir / "runs" / "fedfs"
    stamp = (run / CACHE_NAME).stat().st_mtime_ns
    again = personalised_utility(MethodSpec("fedfs"), scenario, data, run, cache=StageCache(scenario.out_dir))
    assert again.from_cache and again.values == result.method("fedfs").personalised_utility
    assert (run / CACHE_NAME).stat().st_mtime_ns == stamp
    assert not personalised_utility(MethodSpec("fedfs"), scenario, data, run).from_cache  # no manifest: no trust
    copy = tmp_path / "fedfs"
    shutil.copytree(run, copy)
    (copy / CACHE_NAME).unlink()
    fresh = personalised_utility(MethodSpec("fedfs"), scenario, data, copy, cache=StageCache(tmp_path))
    assert not fresh.from_cache and fresh.values == again.values  # seeded and deterministic
    more = personalised_utility(MethodSpec("fedfs"), scenario, data, copy, heldout_per_identity=4,
                                cache=StageCache(tmp_path))
    assert not more.from_cache and more.details["key"] != fresh.details["key"]
    assert more.details["heldout"]["test_images"] == 4 * sum(len(c.identities) for c in data.clients)


def test_a_fresh_process_rerun_reads_every_cached_stage(audit):
    scenario, result, _ = audit
    stamps = {m: (scenario.out_dir / "runs" / m / CACHE_NAME).stat().st_mtime_ns for m in METHODS}
    script = (
        "import json, sys, privaudit as pa\n"
        "from privaudit.scenario import AttackSpec, MethodSpec\n"
        f"s = pa.Scenario.tiny(out={str(scenario.out_dir)!r}, methods=[MethodSpec(m) for m in {METHODS!r}], "
        "attacks=AttackSpec(run=[]))\n"
        "r = pa.run_audit(s, progress=False)\n"
        "print(json.dumps({m.name: m.personalised_utility for m in r.methods}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]  # the cached fedfr run's wire log must load
    again = json.loads(done.stdout.strip().splitlines()[-1])
    assert again == {m.name: m.personalised_utility for m in result.methods}
    assert {m: (scenario.out_dir / "runs" / m / CACHE_NAME).stat().st_mtime_ns for m in METHODS} == stamps


def test_bad_inputs_are_refused_with_the_value(audit, tmp_path):
    scenario, _, data = audit
    with pytest.raises(ValueError, match="heldout_per_identity must be an integer >= 2.*got 1"):
        HeldOut(data, 1)
    real = type(data)(data.clients, data.test, {**data.data_spec, "source": "folders"})
    with pytest.raises(ValueError, match="source must be 'synthetic' or 'folder', got 'folders'"):
        HeldOut(real, 3)
    with pytest.raises(ValueError, match="no finished audit run"):
        personalised_utility(MethodSpec("fedpe"), scenario, data, tmp_path)


def test_flatten_keeps_only_metrics_every_client_reports():
    per_client = [{"verification": {"unsupported_fars": [1e-3]}, "identification": {"unsupported_fpirs": []}}] * 2
    report = PersonalisedReport("fedfr", "nist", per_client, {
        "verification.auroc": {"mean": 0.8, "std": 0.0, "clients": 2},
        "verification.tar_at_far.0.01": {"mean": 0.4, "std": 0.1, "clients": 1},
        "identification.tpir_at_fpir.0.1": {"mean": 0.3, "std": 0.0, "clients": 2}})
    values, dropped = flatten_report(report, 2)
    assert values == {"fedfr:auroc": 0.8, "fedfr:tpir@fpir=0.1": 0.3}
    assert dropped == {"fedfr:tar@far=0.001": "unsupported at this impostor count",
                       "fedfr:tar@far=0.01": "reported by 1 of 2 clients"}
    report.mean["verification.auroc"]["mean"] = 1.5
    with pytest.raises(ValueError, match="fedfr:auroc must be a rate in \\[0, 1\\], got 1.5"):
        flatten_report(report, 2)
    assert metric_name("identification.tpir_at_fpir.1e-05") == "tpir@fpir=1e-05"
    assert metric_name("identification.rank1") == "rank1"
