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
