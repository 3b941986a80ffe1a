"""The audit pipeline end to end at tiny scale: stages, caching, results, report, CLI, notebook."""

import json
import math
from pathlib import Path

import pytest

import privaudit as pa
from privaudit.cli import main
from privaudit.scenario import MethodSpec
from reports.schema import load_results
from reports.tables import fmt_number, result_tables
from reports.validator import validate_results

NOTEBOOK_METHODS = ("fedpe", "shared-centers", "privacyface")


def notebook_scenario(out: Path) -> "pa.Scenario":
    # Must match examples/tiny_audit.ipynb so the notebook test reuses these cached stages.
    return pa.Scenario.tiny(out=str(out), methods=[MethodSpec(m) for m in NOTEBOOK_METHODS])


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    return out, pa.run_audit(notebook_scenario(out), progress=False)


def test_what_leaves_each_client_and_its_formal_epsilon(audit):
    _, result = audit
    fedpe, shared, pf = (result.method(m) for m in NOTEBOOK_METHODS)
    assert fedpe.shares == ["backbone"]
    assert all(eps == 0 for eps in fedpe.privacy.formal_epsilon.values())
    assert shared.shares == ["backbone", "class_centers"]
    assert all(math.isinf(eps) for eps in shared.privacy.formal_epsilon.values())
    assert pf.shares == ["backbone", "noisy_cluster_centers"]
    eps = pf.privacy.formal_epsilon
    assert set(eps) == {"basic", "advanced", "rdp", "prv"}
    assert all(0 < v < math.inf for v in eps.values())
    assert eps["prv"] <= eps["rdp"] + 1e-9 and eps["rdp"] <= eps["basic"] + 1e-9
    # Each round adds at most Q = 1 release per client: ε grows over rounds.
    per_round = pf.privacy.epsilon_per_round["rdp"]
    assert len(per_round) == 2 and per_round[0] < per_round[1]
    # The server observes the raw class centers of shared-centers.
    assert "class_centers" in shared.observers["server"]


def test_audits_show_theorem2_holds_and_algorithm1_claim_fails(audit):
    _, result = audit
    findings = {a.name: a for a in result.method("privacyface").privacy.empirical}
    theorem2 = findings["Theorem 2 mechanism (fixed S)"]
    assert not theorem2.refutes_claim and theorem2.epsilon_lower_bound <= theorem2.claimed_epsilon
    algorithm1 = [a for a in findings.values() if a.name.startswith("Algorithm 1")]
    # the threshold-crossing pair (|S| = T against T - 1) refutes any per-release claim
    assert any(a.refutes_claim for a in algorithm1 if "threshold" in a.name)
    assert any("refutes the claimed" in f for f in result.all_flags() if f.startswith("privacyface:"))
    # audited at what was deployed: the run's d, T and δ, per class-center record, one release
    scenario = notebook_scenario(Path("unused"))
    for a in findings.values():
        assert a.parameters["dim"] == scenario.pretrain.embedding_dim
        assert a.parameters["min_cluster_size"] == 3  # ceil(0.5 * 6 classes)
        assert a.delta == scenario.privacy.delta == 1e-5
        assert (a.unit, a.scope) == ("class-center", "one release")
    pf = result.method("privacyface").privacy
    assert pf.guarantee_of("class information")["status"] == "refuted"
    assert pf.verdict["rule"] == "R1" and "refuted" in pf.verdict["text"]


def test_utility_is_recorded_per_round(audit):
    _, result = audit
    for m in result.methods:
        assert [r["round"] for r in m.utility_per_round] == [0.0, 1.0, 2.0]
        last = m.utility_per_round[-1]
        headline = json.dumps(m.utility, sort_keys=True)  # NaN-safe: unsupported FARs are NaN
        assert json.dumps({k: last[k] for k in m.utility}, sort_keys=True) == headline  # the final round's
        assert m.bytes_per_round["client_upload"] > 0


def test_final_utility_is_rederived_from_the_saved_backbone(audit):
    """Recomputed outside our evaluation code: the run's saved backbone embeds the test faces,
    cosine scores by plain torch, AUROC by scikit-learn on the protocol's pairs. The 10-fold
    accuracy (thresholds chosen on other folds) cannot beat the best single threshold."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score, roc_curve

    from federated_core.engine.evaluate import GenericEvaluator
    from federated_core.models import embed, load_backbone
    from federated_core.scales import build_federated_data, federated_config
    from privaudit.pipeline import federated_scale_for, pretrain_config_for

    out, result = audit
    scenario = notebook_scenario(out)
    scale = federated_scale_for(scenario)
    data = build_federated_data(scale, pretrain_config_for(scenario).data, seed=scenario.seed)
    protocol = GenericEvaluator(data.test, federated_config(scale, "fedpe", seed=scenario.seed).evaluation)
    i, j, same = (torch.as_tensor(np.asarray(a)) for a in protocol.pairs)
    for m in result.methods:
        backbone, _ = load_backbone(out / "runs" / m.name / "checkpoint" / "backbone.safetensors")
        emb = torch.nn.functional.normalize(embed(backbone, data.test).double(), dim=1)
        scores = (emb[i] * emb[j]).sum(dim=1).numpy()
        labels = same.numpy().astype(bool)
        assert m.utility["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9), m.name
        fpr, tpr, _ = roc_curve(labels, scores)
        best_single_threshold = np.max((tpr * labels.sum() + (1 - fpr) * (~labels).sum()) / labels.size)
        assert m.utility["accuracy"] <= best_single_threshold + 1e-12, m.name
        # its interval is over test identities (the independent unit), every one of them resampled
        boot = m.utility_intervals
        assert (boot["unit"], boot["identities"], boot["replicates"]) == ("test identity", 12, 200)
        assert set(boot["intervals"]) == {"auroc"} | {k for k in m.utility if k.startswith("tar@far=")}
    assert "Utility (generic protocol)" in {t.title for t in result_tables(result)}
    (table,) = [t for t in result_tables(result) if t.anchor == "utility"]
    auroc_column = table.headers.index("auroc")
    low, high = result.methods[0].utility_intervals["intervals"]["auroc"]
    assert str(table.rows[0][auroc_column]).endswith(f"[{fmt_number(low)}, {fmt_number(high)}]")


def test_results_json_round_trips_and_validates(audit):
    out, result = audit
    path = out / "results.json"
    validate_results(json.loads(path.read_text()))
    # from Python as from the CLI: the report is written next to the results
    assert (out / "report.html").read_text().count("<h2") > 3 and (out / "report.md").is_file()
    again = load_results(path)
    assert again.to_dict() == result.to_dict()


def test_rerun_with_one_method_added_trains_only_that_method(audit, tmp_path):
    out, _ = audit
    stamps = {m: (out / "runs" / m / "audit_stage.json").stat().st_mtime_ns for m in NOTEBOOK_METHODS}
    scenario = pa.Scenario.tiny(out=str(out), methods=[MethodSpec(m) for m in (*NOTEBOOK_METHODS, "fedface")])
    result = pa.run_audit(scenario, progress=False)
    assert [m.name for m in result.methods] == [*NOTEBOOK_METHODS, "fedface"]
    for m in NOTEBOOK_METHODS:
        assert (out / "runs" / m / "audit_stage.json").stat().st_mtime_ns == stamps[m]
    assert json.loads((out / "runs" / "fedface" / "audit_stage.json").read_text())["finished"]


def test_report_command_renders_html_from_results(audit, tmp_path, capsys):
    out, _ = audit
    assert main(["report", str(out / "results.json"), "--out", str(tmp_path)]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "privacyface" in html and "<script" not in html.lower()
    assert (tmp_path / "report.md").is_file()


def test_audit_command_rejects_bad_scenarios_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('scale = "tiny"\n[privacy]\nepsilon = -1\n')
    assert main(["audit", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "privacy.epsilon must be a finite number > 0, got -1" in capsys.readouterr().err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("federation:\n  clientz: 3\n")
    assert main(["audit", str(unknown)]) == 2
    assert "unknown key(s) 'clientz'" in capsys.readouterr().err
    assert main(["audit", "--methods", "fedavg2", "--out", str(tmp_path / "o")]) == 2
    assert "unknown method 'fedavg2'" in capsys.readouterr().err


def test_example_notebook_executes(audit, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    out, _ = audit
    monkeypatch.setenv("PRIVAUDIT_NOTEBOOK_OUT", str(out))
    path = Path(__file__).resolve().parents[2] / "examples" / "tiny_audit.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("text/html" in o.get("data", {}) for o in outputs)  # the result rendered as HTML


def test_attacks_run_from_the_server_position_on_what_it_observed(audit):
    _, result = audit
    shared = result.method("shared-centers")
    knn = [a for a in shared.attacks if a.attack == "knn" and a.target_kind == "class_centers"]
    assert knn and knn[0].observer == "server"  # its numbers are derived by hand in tests/attacks/test_knn.py
    assert any(a.attack == "inversion" for a in shared.attacks)
    pf_kinds = {a.target_kind for a in result.method("privacyface").attacks}
    assert "noisy_cluster_centers" in pf_kinds and "class_centers" not in pf_kinds  # W never reaches the server
    gradient = [a for a in result.method("fedpe").attacks if a.attack == "gradient"]
    # the simulated probe (target: the backbone) and the inversions of a client's logged updates
    # of the first and last round (target: the backbone update it uploaded)
    assert sorted({a.target_kind for a in gradient}) == ["backbone", "backbone_update"]
    logged = [a for a in gradient if a.target_kind == "backbone_update"]
    assert len(logged) == 2 and all("logged update of round" in a.notes for a in logged)
    assert all(a.image_grid for a in logged)
    # every method uploads a backbone: its logged updates are inverted too (no simulated probe there)
    pf_gradient = [a for a in result.method("privacyface").attacks if a.attack == "gradient"]
    assert pf_gradient and {a.target_kind for a in pf_gradient} == {"backbone_update"}
    assert not [a for a in result.method("fedpe").attacks if a.attack == "knn"]  # nothing center-like observed


def test_audit_carries_the_analyses_and_their_figures(audit, tmp_path):
    from reports.figures import render_all_figures

    _, result = audit
    a = result.analyses
    assert "512" in a.occupancy and str(result.scenario["pretrain"]["embedding_dim"]) in a.occupancy
    assert set(a.epsilon_vs_rounds) == set(result.scenario["privacy"]["accountants"])
    assert a.cos_p_phat and "privacyface" in a.extra["cos_p_phat"]
    figures = render_all_figures(result, tmp_path / "figures", formats=("png",))
    assert {"occupancy", "epsilon_vs_rounds", "cos_p_phat"} <= set(figures)
    # no flag repeats what the guarantee line says, and each audit refutation is listed once
    flags = result.all_flags()
    assert not any("NonPrivateEvent" in f for f in flags)
    assert len(flags) == len(set(flags))


def test_logged_gradient_findings_are_judged_per_update_against_other_clients(audit):
    _, result = audit
    logged = [a for a in result.method("fedpe").attacks if a.target_kind == "backbone_update"]
    assert logged
    for a in logged:
        # the dummies of one optimisation are not independent trials: no interval over them
        assert "rank1" not in a.intervals
        k = int(a.metrics["units"])  # the clients (updates) the permutation null ranges over
        assert k == notebook_scenario(Path("unused")).federation.num_clients
        # an exact permutation p over k clients is a multiple of 1/k in [1/k, 1]
        p = a.metrics["permutation_p"]
        assert round(p * k) == pytest.approx(p * k) and 1 / k <= p <= 1


def test_inversion_carries_the_gan_curve_and_the_whitebox_row_beside_it(audit, tmp_path):
    from reports.figures import render_all_figures
    from reports.tables import attacks_table, decoder_curve_of, is_whitebox, strongest_per_family

    _, result = audit
    shared = result.method("shared-centers")
    inversion = [a for a in shared.attacks if a.attack == "inversion"]
    decoder = [a for a in inversion if not is_whitebox(a)]
    whitebox = [a for a in inversion if is_whitebox(a)]
    assert decoder and [a.target_kind for a in decoder] == [a.target_kind for a in whitebox]  # the same vectors
    curve = decoder_curve_of(decoder[0])  # tiny: a GAN decoder, 3-epoch budget, patience 1
    epochs = [e for e, _v in curve["heldout_feature_cosine"]]
    assert epochs == list(range(1, len(epochs) + 1)) and 1 <= len(epochs) <= 3
    assert {"d_loss", "g_adv_loss", "heldout_l1"} <= set(curve) and "decoder objective 'gan'" in decoder[0].notes
    wb = whitebox[0]
    assert wb.metrics["whitebox_iterations"] == 10 and {"null_rank1", "oracle_rank1"} <= set(wb.metrics)
    assert "whitebox_minus_decoder_identity_similarity" in wb.intervals and "lower bound" in wb.notes
    assert strongest_per_family(shared)["inversion"] in inversion  # one family: same evaluator, same chance
    assert not any("evaluator_agreement@far=0.01" in a.metrics for a in inversion)  # tiny: one evaluator
    assert any(str(row[1]) == "inversion (white-box)" for row in attacks_table(result.methods).rows)
    assert "decoder_curve" in render_all_figures(result, tmp_path / "figures", formats=("png",))
