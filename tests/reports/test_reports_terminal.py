"""The terminal summary: plain text (no HTML or Markdown), wrapped to the width asked for, one
block per method led by its verdict."""

from __future__ import annotations

from reports_helpers import small_result

from reports.terminal import summary_text


def test_plain_wrapped_blocks_per_method():
    result = small_result()
    text = summary_text(result, width=60)
    assert "<br>" not in text and "**" not in text and "|" not in text
    assert all(len(line) <= 60 for line in text.splitlines())
    for m in result.methods:
        assert any(line.startswith(f"{m.name}: ") for line in text.splitlines())
    assert "attacks per family (success):" in text and "flag(s)" in text


def test_a_comparison_release_is_never_the_best_attack():
    from reports.schema import AttackFinding

    result = small_result()
    m = result.methods[1]
    m.attacks.append(AttackFinding("knn", "server", "dp_kmeans_centers", metrics={"top1_rate": 0.99},
                                   success_metric="top1_rate"))
    assert m.best_attack().target_kind == "class_centers"


def test_claims_are_summarised_and_unrun_ones_counted():
    from privaudit.claims import evaluate_claims

    per_seed = {"fedgc": {"tar@far=0.001": [0.3, 0.35, 0.32]}, "fedpe": {"tar@far=0.001": [0.2, 0.22, 0.21]}}
    result = small_result(claims=evaluate_claims(per_seed, "balanced", "setting"))
    text = summary_text(result, width=100)
    assert "  FedGC > FedPE on unseen-identity verification: reproduced" in text.splitlines()
    not_run = sum(1 for row in result.claims if row["verdict"] == "not run")
    assert f"  {not_run} claim(s) not run in this audit (the report says what each needs)" in text
