"""attacks: what each party of a federated run can recover from what it observed.

Every attack runs from a named observer's position (``server``, ``client:<id>``, ``outsider``)
on exactly the tensors that observer received (`attacks.views`, from the engine's wire log), and
is scored against ground truth the attacker never saw.

- `views`: observer views of the wire log, grouped by kind and round; the ground truth.
- `knn`: k-NN identity and membership attack on center-like vectors (PrivacyFace A.2.4), DP
  k-means (diffprivlib) as a sanitised alternative; `search`: the blocked cosine search.
- `inversion`: the embedding-inversion decoder (PrivacyFace Table 5; L1 or GAN objective with a
  held-out training curve), its training and scoring; `whitebox`: white-box optimisation
  inversion against the observed model, and `compare_attacks` (which of two attacks is stronger).
- `gradient`: DLG, Inverting Gradients (single- and multi-step), client update probes with
  optional DP-SGD, the granted-labels upper-bound row, sweeps; `labels`: iDLG and LLG label recovery.
- `metrics`: PSNR, SSIM, identity similarity, rank-1 match, ROC/AUC, TPR@FPR with intervals.
- `evaluator`: the independent evaluation model (trained on public identities disjoint from the
  attacked ones, optionally of another architecture), the identity ground truth in its space, its
  thresholds at fixed FARs, and the agreement of two evaluators.
- `run`: all attacks of one observer against a run folder (`privaudit attack`).

Submodules are imported on first use (``attacks.knn`` etc.), so importing the package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "observer_view": "views",
    "load_ground_truth": "views",
    "ObserverView": "views",
    "GroundTruth": "views",
    "knn_identity_attack": "knn",
    "KnnAttackConfig": "knn",
    "KnnAttackResult": "knn",
    "Gallery": "knn",
    "KnnTruth": "knn",
    "dp_kmeans_centers": "knn",
    "DecoderConfig": "inversion",
    "EmbeddingDecoder": "inversion",
    "train_decoder": "inversion",
    "invert": "inversion",
    "invert_and_score": "inversion",
    "load_decoder": "inversion",
    "decoder_record": "inversion",
    "DecoderTrainResult": "inversion",
    "InversionResult": "inversion",
    "WhiteBoxConfig": "whitebox",
    "WhiteBoxResult": "whitebox",
    "whitebox_invert": "whitebox",
    "AttackComparison": "whitebox",
    "compare_attacks": "whitebox",
    "GradientProbeConfig": "gradient",
    "run_gradient_probe": "gradient",
    "sweep_gradient_probe": "gradient",
    "inverting_gradients": "gradient",
    "dlg": "gradient",
    "recover_labels_idlg": "gradient",
    "recover_label_counts_llg": "labels",
    "LabelCounts": "labels",
    "GRANTED_LABELS_ROW": "gradient",
    "psnr": "metrics",
    "ssim": "metrics",
    "tpr_at_fpr": "metrics",
    "identity_similarity": "metrics",
    "rank1_match": "metrics",
    "Evaluator": "evaluator",
    "train_evaluator": "evaluator",
    "build_reference": "evaluator",
    "evaluator_config": "evaluator",
    "calibrate_evaluator": "evaluator",
    "evaluator_agreement": "evaluator",
    "EvaluatorAgreement": "evaluator",
    "AttackRunConfig": "run",
    "AttackReport": "run",
    "run_attacks": "run",
    "evaluator_architecture_for": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"attacks.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'attacks' has no attribute {name!r}")
