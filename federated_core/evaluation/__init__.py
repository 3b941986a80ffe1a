"""Evaluation protocols of face recognition.

- 1:1 verification (`verification`): `roc`, `auroc`, `tar_at_far` (+ `supported_fars`),
  `verification_accuracy` (LFW 10-fold protocol); `make_verification_pairs` (`pairs`);
  `verification_report` (`report`).
- 1:N identification (`identification`): `tpir_at_fpir` (open set, NIST FRVT), `rank1`.

Scores are similarities (higher = more likely the same identity).
"""

from federated_core.evaluation.identification import gallery_templates, rank1, search, tpir_at_fpir
from federated_core.evaluation.pairs import make_verification_pairs
from federated_core.evaluation.report import DEFAULT_FARS, far_key, pair_scores, verification_report
from federated_core.evaluation.verification import (
    auroc,
    best_threshold,
    roc,
    supported_fars,
    tar_at_far,
    verification_accuracy,
)

__all__ = [
    "DEFAULT_FARS",
    "auroc",
    "best_threshold",
    "far_key",
    "gallery_templates",
    "make_verification_pairs",
    "pair_scores",
    "rank1",
    "roc",
    "search",
    "supported_fars",
    "tar_at_far",
    "tpir_at_fpir",
    "verification_accuracy",
    "verification_report",
]
