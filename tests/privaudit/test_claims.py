"""The claims table: verdicts read from the interval over seeds (hand-worked), claims that cannot be
checked listed as "not run" with the reason, the paper's evidence for every claim, schema 1.3."""

from __future__ import annotations

import math

import pytest
from scipy.stats import t

from privaudit.claim_sources import PAPER_RESULTS
from privaudit.claims import CLAIMS, Claim, evaluate_claims, setting_of
from reports.schema import AuditResult
from reports.tables import claims_table
from reports.validator import validate_results

GREATER = Claim("a>b", "A beats B", "a", "b", "m", "greater")
LESS = Claim("a<b", "A leaks less than B", "a", "b", "m", "less")
SAME = Claim("a~b", "A matches B", "a", "b", "m", "equivalent", margin=0.05)


def _values(control: list[float], diffs: list[float]) -> dict[str, dict[str, list[float]]]:
    return {"a": {"m": [c + d for c, d in zip(control, diffs)]}, "b": {"m": control}}


def _one(claim: Claim, per_seed, partition: str = "balanced") -> dict:
    (row,) = evaluate_claims(per_seed, partition, "our setting", claims=[claim])
    return row


def test_a_difference_whose_interval_excludes_zero_is_reproduced_or_contradicted():
    control = [0.50, 0.60, 0.55]
    up = _one(GREATER, _values(control, [0.10, 0.12, 0.11]))
    # by hand: mean 0.11, sd 0.01, t_{0.975,2} = 4.3027 -> half-width 0.02484
    half = t.ppf(0.975, 2) * 0.01 / math.sqrt(3)
    assert up["mean"] == pytest.approx(0.11) and up["ci_low"] == pytest.approx(0.11 - half)
    assert up["verdict"] == "reproduced" and up["n"] == 3
    assert up["differences"] == pytest.approx([0.10, 0.12, 0.11])
    down = _one(GREATER, _values(control, [-0.10, -0.12, -0.11]))
    assert down["verdict"] == "contradicted"
    # "less" reads the same interval the other way round
    assert _one(LESS, _values(control, [-0.10, -0.12, -0.11]))["verdict"] == "reproduced"
    assert _one(LESS, _values(control, [0.10, 0.12, 0.11]))["verdict"] == "contradicted"


def test_an_interval_covering_zero_is_inconclusive_with_what_could_be_detected():
    diffs = [0.05, -0.02, 0.04]
    row = _one(GREATER, _values([0.5, 0.5, 0.5], diffs))
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    detectable = (t.ppf(0.975, 2) + t.ppf(0.8, 2)) * sd / math.sqrt(3)
    assert row["verdict"] == "inconclusive" and row["detectable"] == pytest.approx(detectable)
    assert row["verdict_text"] == f"inconclusive (could detect ≥ {detectable:.3g})"
    assert row["p_value"] == pytest.approx(4 / 8)  # sign flips with |sum| >= 0.07: ±(+,+,+), ±(+,-,+)


def test_equivalence_within_and_outside_the_margin():
    assert _one(SAME, _values([0.5] * 3, [0.001, -0.002, 0.0015]))["verdict"] == "reproduced"
    assert _one(SAME, _values([0.5] * 3, [0.20, 0.21, 0.19]))["verdict"] == "contradicted"
    crossing = _one(SAME, _values([0.5] * 3, [0.0, 0.09, -0.05]))
    assert crossing["verdict"] == "inconclusive" and "crosses ±0.05" in crossing["verdict_text"]


def test_identical_values_in_every_seed_say_so_instead_of_a_detectable_zero():
    claim = Claim("x", "X", "a", "b", "m", "greater")
    row = _one(claim, {"a": {"m": [0.1, 0.2, 0.3]}, "b": {"m": [0.1, 0.2, 0.3]}})
    assert row["verdict"] == "inconclusive" and "identical values in every seed" in row["verdict_text"]
    assert "could detect ≥ 0" not in row["verdict_text"]


def test_one_seed_gives_no_interval_and_no_verdict():
    row = _one(GREATER, _values([0.5], [0.3]))
    assert row["verdict"] == "inconclusive" and row["verdict_text"] == "inconclusive (1 seed: no interval)"
    assert math.isnan(row["ci_low"]) and row["n"] == 1


def test_claims_that_cannot_be_checked_say_why():
    per_seed = _values([0.5, 0.6], [0.1, 0.1])
    missing = _one(Claim("x", "X", "a", "zzz", "m", "greater"), per_seed)
    assert missing["verdict"] == "not run" and missing["verdict_text"] == "not run: variant(s) zzz not in this audit"
    metric = _one(Claim("x", "X", "a", "b", "other", "greater"), per_seed)
    assert metric["verdict_text"] == "not run: no 'other' for a, b"
    setting = _one(Claim("x", "X", "a", "b", "m", "greater", partition="one-identity"), per_seed)
    assert setting["verdict_text"] == "not run: needs federation.partition = 'one-identity' (this audit: 'balanced')"
    nan = _one(GREATER, {"a": {"m": [0.5, math.nan]}, "b": {"m": [0.4, 0.4]}})
    assert nan["verdict"] == "not run" and "not finite on every seed" in nan["verdict_text"]


def test_holm_runs_across_the_claims_checked_only():
    per_seed = {"a": {"m": [0.6, 0.7, 0.65], "k": [0.9, 0.8, 0.85]}, "b": {"m": [0.5, 0.5, 0.5], "k": [0.1, 0.2, 0.1]}}
    claims = [GREATER, Claim("k", "K", "a", "b", "k", "greater"), Claim("x", "X", "a", "nope", "m", "greater")]
    rows = evaluate_claims(per_seed, "balanced", "s", claims=claims)
    # both checked claims: all differences positive -> exact sign-flip p = 2/8; Holm over 2 -> 0.5
    assert [r["p_value"] for r in rows[:2]] == [0.25, 0.25]
    assert [r["p_holm"] for r in rows[:2]] == [0.5, 0.5] and "p_holm" not in rows[2]
    assert not any(r.get("family_wise_significant") for r in rows)


def test_every_claim_names_the_papers_evidence_and_distinct_variants():
    assert [c.key for c in CLAIMS] == list(PAPER_RESULTS)
    for c in CLAIMS:
        paper = PAPER_RESULTS[c.key]
        assert paper["paper"] and paper["where"] and paper["result"], c.key
        assert c.treatment != c.control, c.key


def test_claims_round_trip_in_schema_1_3_and_render():
    per_seed = {"fedgc": {"tar@far=0.001": [0.3, 0.35, 0.32]}, "fedpe": {"tar@far=0.001": [0.2, 0.22, 0.21]}}
    scenario = {"scale": "bench", "data": {"resolution": 32}, "federation": {"num_clients": 8, "partition": "balanced"}}
    rows = evaluate_claims(per_seed, "balanced", setting_of(scenario, 3))
    result = AuditResult(claims=rows)
    doc = result.to_dict()
    assert doc["schema_version"] == "1.3" and len(doc["claims"]) == len(CLAIMS)
    back = AuditResult.from_dict(doc)
    assert back.to_dict()["claims"] == doc["claims"]
    (fedgc,) = [r for r in back.claims if r["claim"] == "fedgc>fedpe"]
    assert fedgc["verdict"] == "reproduced" and math.isnan(back.claims[-1].get("ci_low", math.nan))
    table = claims_table(back)
    assert table is not None and len(table.rows) == len(CLAIMS)
    assert "8 clients" in table.note and "3 seeds" in table.note
    verdicts = [row[-1].text for row in table.rows]
    assert "reproduced" in verdicts and any(v.startswith("not run: variant(s)") for v in verdicts)
    old = dict(doc, schema_version="1.2")
    with pytest.raises(ValueError, match=r"claims: new in schema_version 1\.3, but the document says 1\.2"):
        validate_results(old)


def test_the_bench_preset_runs_every_variant_its_claims_compare():
    import privaudit as pa

    bench = pa.Scenario.preset("bench")
    keys = {m.key for m in bench.methods}
    runnable = [c for c in CLAIMS if c.partition in (None, bench.federation.partition)]
    missing = {v for c in runnable for v in (c.treatment, c.control) if v not in keys}
    assert missing == set()  # every claim of the balanced setting can be checked on the bench
    assert {c.key for c in CLAIMS if c not in runnable} == {"fedfs>finetune", "fedface>fedavg:one-identity"}
    assert bench.seed_list() == [0, 1, 2] and bench.federation.impostor_pairs == 30000


def test_the_one_identity_companion_runs_every_variant_its_claims_compare():
    from pathlib import Path

    import privaudit as pa

    companion = pa.Scenario.load(Path(__file__).resolve().parents[2] / "bench" / "scenarios" / "one_identity.toml")
    keys = {m.key for m in companion.methods}
    claims = [c for c in CLAIMS if c.partition == companion.federation.partition]
    assert {c.key for c in claims} == {"fedfs>finetune", "fedface>fedavg:one-identity"}
    assert {v for c in claims for v in (c.treatment, c.control)} <= keys


def test_every_scale_preset_has_its_per_scale_settings():
    import privaudit as pa
    from privaudit.analyses_stage import DRAWS
    from privaudit.personal_stage import HELDOUT_PER_IDENTITY, heldout_images_per_identity
    from privaudit.scenario import SCALES

    assert set(HELDOUT_PER_IDENTITY) == set(DRAWS) == set(SCALES)
    assert [heldout_images_per_identity(pa.Scenario.preset(s)) for s in SCALES] == [3, 4, 4, 10]


def _claims_report_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "claims_report.py"
    spec = importlib.util.spec_from_file_location("claims_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reproduction_document_lists_every_claim_row_and_the_sweep():
    report = _claims_report_module()
    per_seed = {"fedgc": {"tar@far=0.001": [0.3, 0.35, 0.32]}, "fedpe": {"tar@far=0.001": [0.2, 0.22, 0.21]}}
    scenario = {"scale": "bench", "data": {"resolution": 32}, "federation": {"num_clients": 8, "partition": "balanced"}}
    result = AuditResult(claims=evaluate_claims(per_seed, "balanced", setting_of(scenario, 3)), timings={"a": 120.0})
    text = report.claims_markdown([("bench.json", result)])
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert len(rows) == len(CLAIMS)  # every claim once, checked or "not run"
    (fedgc,) = [r for r in rows if "FedGC > FedPE" in r]
    assert "0.1" in fedgc and "reproduced" in fedgc and "(n = 3)" in fedgc
    assert "wall time of all stages 2 min" in text
    sweep = {"setting": "S", "points": [
        {"identities_per_client": 1, "error": "ValueError: no | pipe"},
        {"identities_per_client": 5, "clients": 20, "rounds": 5, "seeds": [0, 1, 2],
         "claims": {"fedgc>fedpe": {"mean": 0.02, "ci_low": -0.01, "ci_high": 0.05, "n": 3.0,
                                    "verdict": "inconclusive", "verdict_text": "inconclusive (could detect ≥ 0.04)"}}},
    ]}
    table = report.sweep_markdown(sweep, "fig.png")
    assert "| 1 | — | — | — | not run: ValueError: no \\| pipe |" in table  # the failed point kept, escaped
    assert "| 5 | 20 | 5 | 0, 1, 2 | 0.020 [-0.010, 0.050] (n = 3); inconclusive (could detect ≥ 0.04) |" in table


def test_the_committed_reproduction_document_is_what_the_committed_results_generate(capsys):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    report = _claims_report_module()
    args = [str(root / "bench" / "results" / f) for f in ("bench.json", "one_identity.json")]
    assert report.main([*args, "--sweep", str(root / "bench" / "results" / "scale_sweep.json")]) == 0
    generated = capsys.readouterr().out
    assert generated == (root / "docs" / "reproduction.md").read_text()
    rows = [line for line in generated.splitlines() if line.startswith("| ") and "|---" not in line]
    verdicts = [line.rsplit("|", 2)[-2] for line in rows[1 : 1 + len(CLAIMS)]]
    assert len(verdicts) == len(CLAIMS) and not any("not run" in v for v in verdicts)  # every claim checked
