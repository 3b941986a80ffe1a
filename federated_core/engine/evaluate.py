"""Generic evaluation of a global backbone on unseen identities (DESIGN §5).

`GenericEvaluator` fixes the protocol once per run (so every round is scored on the same pairs
and the same gallery/probe split):

* 1:1 verification: `make_verification_pairs` (as many genuine / impostor pairs as asked, capped
  at what the test set holds), then `verification_report` (10-fold accuracy, AUROC, TAR@FAR for
  the FARs the impostor count supports; the others are listed as unsupported), with 95% intervals
  of AUROC and TAR@FAR from a cluster bootstrap over the test identities (`identity_bootstrap`:
  pairs share identities and are not independent).
* 1:N open-set identification: a seeded ``enrolled_fraction`` of the identities is enrolled with
  their first image as gallery; their other images are mated probes, every image of the other
  identities a non-mated probe; rank-1 and TPIR@FPIR (NIST FRVT) for the FPIRs the non-mated
  probe count supports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from federated_core.data.faceset import FaceSet
from federated_core.engine.config import EvaluationConfig


class GenericEvaluator:
    """Scores backbones on ``faces`` (test identities, disjoint from every training identity)."""

    def __init__(self, faces: FaceSet, config: EvaluationConfig | None = None) -> None:
        from federated_core.evaluation import make_verification_pairs

        self.config = config or EvaluationConfig()
        if len(faces) < 2:
            raise ValueError(f"the evaluation set needs at least 2 images, got {len(faces)}")
        self.faces = faces
        labels = faces.labels.numpy()
        _, counts = np.unique(labels, return_counts=True)
        if counts.shape[0] < 2:
            raise ValueError(f"the evaluation set needs at least 2 identities, got {counts.shape[0]}")
        total_genuine = int((counts * (counts - 1) // 2).sum())
        total_pairs = len(labels) * (len(labels) - 1) // 2
        total_impostor = total_pairs - total_genuine
        if total_genuine == 0:
            raise ValueError("the evaluation set needs identities with at least 2 images (genuine pairs)")
        self.num_genuine = min(self.config.genuine_pairs, total_genuine)
        self.num_impostor = min(self.config.impostor_pairs, total_impostor)
        self.pairs = make_verification_pairs(labels, self.num_genuine, self.num_impostor, self.config.seed)

        rng = np.random.default_rng(self.config.seed)
        ids = np.unique(labels)
        enrolled_count = min(len(ids) - 1, max(1, int(round(self.config.enrolled_fraction * len(ids)))))
        enrolled = np.sort(rng.permutation(ids)[:enrolled_count])
        is_enrolled = np.isin(labels, enrolled)
        first = np.zeros(len(labels), dtype=bool)
        seen: set[int] = set()
        for index, label in enumerate(labels.tolist()):
            if label in seen:
                continue
            seen.add(label)
            first[index] = True
        self.gallery_index = np.nonzero(is_enrolled & first)[0]
        self.probe_index = np.nonzero(~(is_enrolled & first))[0]
        self.num_non_mated = int((~is_enrolled).sum())
        self.num_mated = int((is_enrolled & ~first).sum())

    def _bootstrap(self, emb: np.ndarray, labels: np.ndarray, fars: list[float]) -> dict[str, Any]:
        """Intervals of AUROC and the supported TAR@FARs over test identities (`identity_bootstrap`)."""
        from federated_core.evaluation.bootstrap import identity_bootstrap
        from federated_core.evaluation.report import pair_scores

        i, j, is_same = self.pairs
        scores = pair_scores(emb, i, j)
        return identity_bootstrap(
            scores, is_same, labels[i], labels[j], fars, replicates=self.config.bootstrap, seed=self.config.seed
        )

    def evaluate(self, backbone: nn.Module, device: str | torch.device = "cpu") -> dict[str, Any]:
        """Verification and identification numbers of ``backbone`` (JSON-ready dict)."""
        from federated_core.evaluation import rank1, tpir_at_fpir, verification_report
        from federated_core.models import embed

        emb = embed(backbone, self.faces, device=device).numpy()
        labels = self.faces.labels.numpy()
        report = verification_report(emb, labels, pairs=self.pairs, fars=self.config.fars)
        if self.config.bootstrap > 0:
            report["bootstrap"] = self._bootstrap(emb, labels, [float(far) for far in report["tar_at_far"]])
        gallery, gallery_ids = emb[self.gallery_index], labels[self.gallery_index]
        probes, probe_ids = emb[self.probe_index], labels[self.probe_index]
        identification: dict[str, Any] = {"mated_probes": self.num_mated, "non_mated_probes": self.num_non_mated}
        identification["rank1"] = rank1(gallery, gallery_ids, probes, probe_ids) if self.num_mated else None
        tpir: dict[str, float] = {}
        unsupported = []
        for fpir in self.config.fpirs:
            if self.num_mated and self.num_non_mated and fpir >= 1.0 / self.num_non_mated:
                tpir[repr(float(fpir))] = tpir_at_fpir(gallery, gallery_ids, probes, probe_ids, fpir)
            else:
                unsupported.append(fpir)
        identification["tpir_at_fpir"] = tpir
        identification["unsupported_fpirs"] = unsupported
        return {"verification": report, "identification": identification}
