"""Run the attacks of one observer against a federated run folder (what `privaudit attack` does).

For an observer (``server``, ``client:<id>``, ``outsider``) and a run folder written by the
engine (`federated_core.engine`; synthetic data, so every image can be regenerated):

* **knn** — the observer's latest received backbone embeds a gallery (PrivacyFace A.2.4: a few
  images of some clients' identities and of many distractors, image indices disjoint from the
  training images); every center-like kind it observed (W, W̃, p, p̂, the global class
  embeddings) is matched against it, and so are DP k-means centers (diffprivlib) of the clients'
  true class centers, the sanitised alternative to DPLC.
* **inversion** — a decoder (PrivacyFace Table 5) trained on public identities (disjoint from
  everything else) embedded by the observed model inverts the same kinds; reconstructions are
  scored by the *independent* evaluator (trained on other public identities, `attacks.evaluator`).
  By default the decoder's objective is ``"gan"`` (pixel L1 + feature loss through the observed
  model + a DCGAN discriminator, `attacks.inversion`) with ``decoder_holdout_fraction`` of the
  public identities held out: its per-epoch curve (held-out feature cosine and L1, D/G losses)
  is recorded and ``decoder_patience`` stops it on the held-out cosine (the best epoch's weights
  invert). Beside it, the **white-box** attack (`attacks.whitebox`) optimises an image per vector
  against the observed model, is scored by the same `IdentityReference.score` with the same
  null and true-center oracle, and `compare_attacks` says per kind which of the two is stronger
  (paired per vector, bootstrap over units; resolved only when the interval excludes 0).
* **the evaluator is of another architecture** than the attacked model (``evaluator_architecture``:
  MobileFaceNet by default, IResNet-18 beside a MobileFaceNet φ0; issue #14, DESIGN §8): the decoder's
  feature loss and the white-box attack optimise through the observed model, and an evaluator of that
  same architecture passes their noise-textured reconstructions more often than real unseen images of
  the identity (demo: 27.5% vs 21.2% at FAR 1e-2). A **second evaluator** of φ0's architecture,
  trained and cached like the first on identities of its own and calibrated on its own held-out
  identities, scores every inversion's reconstructions too; `attacks.evaluator.evaluator_agreement`
  reports per FAR each one's pass/fail, their agreement and Cohen's kappa, and the Spearman
  correlation of the similarities. ``evaluator_architecture = "same"`` (or None): one evaluator, of
  φ0's architecture.
* **ceilings and floors** (DESIGN §8) — every k-NN and inversion number on a center-like kind
  comes with the same attacker's result on oracle queries (the true class centers ``W_k`` behind
  each observation, from the ground truth; and the observed model's mean embedding of real unseen
  images of the same identities, rendered at ``oracle_start_index``) and on as many seeded random
  unit vectors (null), and the normalised success ``(raw - null) / (oracle - null)`` with a
  bootstrap interval over independent units: the source identity of a class-center row, the
  source client of a cluster (DPLC's clusters of one client are chosen one after another).
  The evaluator's threshold is calibrated at fixed FARs on its own held-out identities
  (`attacks.evaluator.calibrate_evaluator`), so inversions report "success at FAR" beside rank-1.
* **gradient** — probes (`attacks.gradient.run_gradient_probe`) simulate one client's update at
  the run's local settings from the models the observer saw (the first broadcast = initial state,
  the last = trained state) on real client images, and invert it. Where the head's update is
  observed (the method uploads class centers) the probe's labels are recovered — LLG's counts for
  several images, iDLG for one — and the same attack given the true labels runs beside it as the
  granted-labels upper bound (``gradient_granted_labels_row``); elsewhere the labels are granted
  (the probe is that upper bound). ``gradient_bn_prior_weight`` adds GradInversion's BatchNorm
  prior (0 by default; the `tiny` backbone has no BatchNorm). Only the server observes a
  single client's update; a client observes aggregates, an outsider no update (both noted).
  The backbone updates clients actually uploaded are inverted too (`attacks.logged_update`), and
  the same reconstructions are scored against the clients that were *not* attacked: a null over
  clients with an exact permutation p-value (the unit is the client update, never a dummy).
  Inverting Gradients follows breaching's recipe (TV 0.2, signed Adam, step decay, restarts);
  every gradient result is a lower bound on what an attacker with its stated knowledge can do.

**Face folders.** A run trained on an identity-per-folder tree (its data spec says
``"source": "folder"``) is attacked on that folder (`GroundTruth.folder_source`, its fingerprint
checked): the identities every resource needs come from the run's identity split instead of the
synthetic offsets — gallery distractors and membership non-members from its ``distractors`` part,
the attacker's auxiliary identities from a seeded half of ``public``, the evaluators' training and
calibration identities from the other half plus the identities the split left unused — and member
identities' gallery, oracle and query images from the images their client never trained on (after
the held-out images first, then the held-out ones); every cap and every identity with too few images is counted in ``notes`` (and in
``failures`` where it weakens a number), the roles and index ranges in ``attacks.json``'s ``data``
(`_AttackData` says why).

Everything is seeded by ``seed``; results are plain data (`AttackReport.to_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, cast

import numpy as np
import torch

from attacks.knn import Gallery, KnnAttackConfig, KnnAttackResult, KnnTruth, dp_kmeans_centers, knn_identity_attack
from attacks.views import (
    CENTER_KINDS,
    OUTSIDER,
    GroundTruth,
    ObserverView,
    backbone_from_state,
    load_ground_truth,
    observer_view,
)
from federated_core.data.faceset import FaceSet

__all__ = ["ATTACKS", "AttackRunConfig", "AttackReport", "run_attacks", "FaceSource"]

ATTACKS = ("knn", "inversion", "gradient", "membership")
AGGREGATE_MODES = ("auto", "always", "never")
# Renders a FaceSet: (identities, images_per_identity, start_index) -> FaceSet.
FaceSource = Callable[[torch.Tensor, int, int], Any]


@dataclass(frozen=True)
class AttackRunConfig:
    """Sizes of the attacker's resources and of the attacks (defaults: demo scale, CPU).

    The ``*_offset`` and ``*_start_index`` fields place identities and images in the synthetic
    generator's unlimited space; a run on a face folder takes its identities from the run's split and
    its members' images after their training ones instead (`_AttackData`), capping every count at what
    the folder holds (said in the report's notes)."""

    observer: str = "server"
    attacks: tuple[str, ...] = ATTACKS
    gallery_member_fraction: float = 0.5
    gallery_distractors: int = 1000
    gallery_images_per_identity: int = 3
    gallery_start_index: int = 10_000
    distractor_offset: int = 7_000_000
    knn_k: int = 5
    n_bootstrap: int = 200
    dp_kmeans_epsilon: float = 1.0
    dp_kmeans_clusters: int = 1
    public_identities: int = 300
    public_images_per_identity: int = 8
    public_offset: int = 8_000_000
    decoder_epochs: int = 20
    decoder_base_channels: int = 128
    decoder_batch_size: int = 128
    decoder_lr_step_epochs: int = 8
    max_inverted: int = 200
    evaluator_identity_offset: int = 5_000_000
    oracle_images_per_identity: int = 3
    oracle_start_index: int = 20_000
    calibration_identities: int = 200
    calibration_images_per_identity: int = 5
    calibration_fars: tuple[float, ...] = (1e-3, 1e-2)
    gradient_clients: int = 2
    gradient_images: int = 2
    gradient_iterations: int = 200  # ten probes here; the audit's single probe runs 1000 (AttackSpec)
    gradient_restarts: int = 4
    gradient_tv_weight: float = 0.2
    gradient_local_steps: tuple[int, ...] = (1, 3)
    gradient_dp_noise_multipliers: tuple[float, ...] = (0.5,)
    gradient_dp_max_grad_norm: float = 1.0
    gradient_logged_rounds: tuple[str, ...] = ("first", "last")
    gradient_logged_dummies: int = 8
    gradient_logged_iterations: int = 100
    gradient_logged_restarts: int = 4
    gradient_logged_null: bool = True  # score the reconstructions against the clients not attacked too
    # how the logged update's local epochs are modelled (attacks.multistep): "none" (one step on
    # gradient_logged_dummies images), "independent", "shared" or "dimitrov" (Dimitrov et al. 2022's
    # epoch order-invariant prior of weight gradient_logged_epoch_prior_weight), unrolling the
    # protocol's epochs, batches and SGD momentum
    gradient_logged_epoch_prior: str = "none"
    gradient_logged_epoch_prior_weight: float = 1.0
    # the aggregate of a round's updates (the difference of consecutive broadcasts: all the server
    # learns under secure aggregation): "auto" attacks it when the server observed no client's own
    # update, "always" beside the clients' updates, "never" not at all
    gradient_logged_aggregate: str = "auto"
    gradient_logged_null_groups: int = 19  # the aggregate's null: groups of non-member identities
    gradient_simulated: bool = True
    membership_nonmembers: int = 2000  # >= 1000: TPR at FPR 1e-2 supported; 1e-3 needs 10,000
    membership_shadows: int = 64
    membership_query_images: int = 2
    # the decoder: "gan" (pixel L1 + feature loss through the observed model + DCGAN discriminator)
    # or "l1" (PrivacyFace's); held-out public identities give the training curve and the patience stop
    decoder_objective: str = "gan"
    decoder_holdout_fraction: float = 0.1
    decoder_patience: int = 3
    # white-box optimisation inversion of the same vectors (attacks.whitebox), scored the same way
    whitebox: bool = True
    whitebox_iterations: int = 100
    whitebox_restarts: int = 2
    whitebox_tv_weight: float = 0.05
    whitebox_init: str = "mean_face"
    # the evaluator's architecture ("auto": MobileFaceNet, or IResNet-18 where φ0 is a MobileFaceNet;
    # a registered name), with a second evaluator of φ0's architecture beside it on identities of its
    # own; None or "same": one evaluator, of φ0's architecture
    evaluator_architecture: str | None = "auto"
    second_evaluator_identity_offset: int = 6_000_000
    gradient_granted_labels_row: bool = True  # beside a probe with recovered labels: the same attack given them
    gradient_bn_prior_weight: float = 0.0  # GradInversion's BatchNorm prior (the `tiny` backbone has no BatchNorm)
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.attacks) - set(ATTACKS))
        if unknown or not self.attacks:
            raise ValueError(f"attacks must be a non-empty subset of {list(ATTACKS)}, got {list(self.attacks)}")
        if not 0 < self.gallery_member_fraction <= 1:
            raise ValueError(f"gallery_member_fraction must be in (0, 1], got {self.gallery_member_fraction}")
        for name in (
            "gallery_distractors",
            "gallery_images_per_identity",
            "public_identities",
            "public_images_per_identity",
            "decoder_epochs",
            "max_inverted",
            "gradient_clients",
            "gradient_images",
            "gradient_iterations",
            "gradient_restarts",
            "dp_kmeans_clusters",
            "gradient_logged_dummies",
            "gradient_logged_iterations",
            "gradient_logged_restarts",
            "gradient_logged_null_groups",
            "oracle_images_per_identity",
            "calibration_identities",
            "membership_nonmembers",
            "membership_shadows",
            "membership_query_images",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for sigma in self.gradient_dp_noise_multipliers:
            if not (sigma > 0 and math.isfinite(sigma)):
                raise ValueError(f"gradient_dp_noise_multipliers must hold finite numbers > 0, got {sigma}")
        if not (self.gradient_dp_max_grad_norm > 0 and math.isfinite(self.gradient_dp_max_grad_norm)):
            raise ValueError(
                f"gradient_dp_max_grad_norm must be a finite number > 0, got {self.gradient_dp_max_grad_norm}"
            )
        from attacks.multistep import check_epoch_prior

        try:
            check_epoch_prior(self.gradient_logged_epoch_prior, self.gradient_logged_epoch_prior_weight)
        except ValueError as exc:
            raise ValueError(f"gradient_logged_{exc}") from exc
        if self.gradient_logged_aggregate not in AGGREGATE_MODES:
            raise ValueError(
                f"gradient_logged_aggregate must be one of {list(AGGREGATE_MODES)}, got {self.gradient_logged_aggregate!r}"
            )
        bad = [r for r in self.gradient_logged_rounds if r not in ("first", "last")]
        if bad:
            raise ValueError(
                f"gradient_logged_rounds must hold 'first' and/or 'last', got {list(self.gradient_logged_rounds)}"
            )
        if not (self.gradient_tv_weight >= 0 and math.isfinite(self.gradient_tv_weight)):
            raise ValueError(f"gradient_tv_weight must be a finite number >= 0, got {self.gradient_tv_weight}")
        if not (self.dp_kmeans_epsilon > 0 and math.isfinite(self.dp_kmeans_epsilon)):
            raise ValueError(f"dp_kmeans_epsilon must be a finite number > 0, got {self.dp_kmeans_epsilon}")
        if isinstance(self.calibration_images_per_identity, bool) or self.calibration_images_per_identity < 2:
            raise ValueError(
                "calibration_images_per_identity must be an integer >= 2 (a probe and a template), "
                f"got {self.calibration_images_per_identity!r}"
            )
        if not all(0 < f < 1 for f in self.calibration_fars):
            raise ValueError(f"calibration_fars must lie in (0, 1), got {list(self.calibration_fars)}")
        if self.oracle_start_index < 0:
            raise ValueError(f"oracle_start_index must be >= 0, got {self.oracle_start_index}")
        _check_inversion_options(self)
        _check_evaluator_and_probe_options(self)


def _check_inversion_options(config: AttackRunConfig) -> None:
    """Validate the decoder's objective and convergence stop and the white-box budget (each error names
    the option and the value)."""
    from attacks.inversion import OBJECTIVES
    from attacks.whitebox import INITS

    if config.decoder_objective not in OBJECTIVES:
        raise ValueError(f"decoder_objective must be one of {list(OBJECTIVES)}, got {config.decoder_objective!r}")
    frac = config.decoder_holdout_fraction
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac < 1:
        raise ValueError(f"decoder_holdout_fraction must be a number in [0, 1), got {frac!r}")
    if isinstance(config.decoder_patience, bool) or not isinstance(config.decoder_patience, int):
        raise ValueError(f"decoder_patience must be an integer >= 0, got {config.decoder_patience!r}")
    if config.decoder_patience < 0:
        raise ValueError(f"decoder_patience must be an integer >= 0, got {config.decoder_patience!r}")
    if config.decoder_patience > 0 and frac == 0:
        raise ValueError(
            f"decoder_patience={config.decoder_patience} stops on held-out identities: set decoder_holdout_fraction > 0"
        )
    if not isinstance(config.whitebox, bool):
        raise ValueError(f"whitebox must be True or False, got {config.whitebox!r}")
    for name in ("whitebox_iterations", "whitebox_restarts"):
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    tv = config.whitebox_tv_weight
    if isinstance(tv, bool) or not isinstance(tv, (int, float)) or not (math.isfinite(tv) and tv >= 0):
        raise ValueError(f"whitebox_tv_weight must be a finite number >= 0, got {tv!r}")
    if config.whitebox_init not in INITS:
        raise ValueError(f"whitebox_init must be one of {list(INITS)}, got {config.whitebox_init!r}")


EVALUATOR_CHOICES = ("auto", "same")


def _check_evaluator_and_probe_options(config: AttackRunConfig) -> None:
    """Validate the second evaluator's architecture and the simulated probe's label and prior options."""
    from federated_core.models.registry import BACKBONE_NAMES

    arch = config.evaluator_architecture
    if arch is not None and arch not in EVALUATOR_CHOICES + BACKBONE_NAMES:
        raise ValueError(
            f"evaluator_architecture must be None, 'same', 'auto' or a registered backbone {list(BACKBONE_NAMES)}, "
            f"got {arch!r}"
        )
    offset = config.second_evaluator_identity_offset
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 1:
        raise ValueError(f"second_evaluator_identity_offset must be an integer >= 1, got {offset!r}")
    if offset == config.evaluator_identity_offset:
        raise ValueError(
            f"second_evaluator_identity_offset ({offset}) must differ from evaluator_identity_offset: "
            "the two evaluators train on identities of their own"
        )
    if not isinstance(config.gradient_granted_labels_row, bool):
        raise ValueError(
            f"gradient_granted_labels_row must be True or False, got {config.gradient_granted_labels_row!r}"
        )
    w = config.gradient_bn_prior_weight
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
        raise ValueError(f"gradient_bn_prior_weight must be a finite number >= 0, got {w!r}")


def evaluator_architecture_for(requested: str | None, phi0_backbone: str) -> str | None:
    """The evaluator's architecture for ``requested`` (`AttackRunConfig.evaluator_architecture`) when
    φ0 is a ``phi0_backbone``: None (φ0's own, one evaluator) for None / "same"; for "auto"
    MobileFaceNet, or IResNet-18 where φ0 itself is a MobileFaceNet (an evaluator of *another*
    architecture, DESIGN §8); otherwise the name given. With an architecture, a second evaluator of
    φ0's architecture is trained beside it."""
    if requested in (None, "same"):
        return None
    if requested == "auto":
        return "iresnet18" if phi0_backbone == "mobilefacenet" else "mobilefacenet"
    return requested


@dataclass
class AttackReport:
    """Results of one observer's attacks on one run (plain data)."""

    run_dir: str
    observer: str
    config: dict[str, Any]
    knn: list[KnnAttackResult] = field(default_factory=list)
    inversion: list[Any] = field(default_factory=list)
    gradient: list[Any] = field(default_factory=list)
    gradient_logged: list[Any] = field(default_factory=list)
    membership: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # attacks that raised: not "nothing leaked"
    evaluator: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None  # the evaluator's thresholds at fixed FARs
    # the white-box inversion of the same vectors as the decoder (`attacks.whitebox`), one per kind
    whitebox: list[Any] = field(default_factory=list)
    # per kind: which of decoder and white-box is stronger (`attacks.whitebox.compare_attacks` summary)
    inversion_comparison: list[dict[str, Any]] = field(default_factory=list)
    decoder: dict[str, Any] | None = None  # the decoder's training record (objective, curve, stop)
    second_evaluator: str | None = None  # the second evaluator, of φ0's architecture
    second_calibration: dict[str, Any] | None = None
    # per (kind, attack): the two evaluators on the same reconstructions (`attacks.evaluator.evaluator_agreement`)
    evaluator_agreement: list[dict[str, Any]] = field(default_factory=list)
    # a face-folder run: which identities and image indices each role used (`_AttackData`); None: synthetic
    data: dict[str, Any] | None = None

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """JSON-able summary: scalars of every result, small arrays as lists. With ``relative_to``
        (the folder the file is written to): paths relative to it and no timings, so the file is
        the same bytes wherever and however fast it ran (the timings go to `timings_dict`)."""
        doc = self._summary_dict()
        if relative_to is None:
            return {**doc, "seconds": self.seconds}
        doc["run_dir"] = os.path.relpath(self.run_dir, relative_to)
        for key in ("inversion", "whitebox", "gradient_logged"):
            for row in doc[key]:
                if row.get("grid"):
                    row["grid"] = os.path.relpath(row["grid"], relative_to)
        return doc

    def timings_dict(self) -> dict[str, float]:
        """Seconds per attack step (kept apart from the results: they change run to run)."""
        return dict(self.seconds)

    def _summary_dict(self) -> dict[str, Any]:
        """Every result's scalars, paths as recorded, no timings."""
        return {
            "run_dir": self.run_dir,
            "observer": self.observer,
            "config": self.config,
            "evaluator": self.evaluator,
            "evaluator_calibration": _jsonable(self.calibration),
            "knn": [
                _jsonable(
                    {
                        **r.summary(),
                        "tpr_at_fpr": [t.to_dict() for t in r.tpr_at_fpr],
                        "top1_ci": r.top1_ci,
                        "topk_ci": r.topk_ci,
                        "group_ci": r.group_ci,
                        "num_gallery_identities": r.num_gallery_identities,
                        "num_member_identities_in_gallery": r.num_member_identities_in_gallery,
                        "roc_fpr": r.roc_fpr,
                        "roc_tpr": r.roc_tpr,
                        "notes": r.notes,
                    }
                )
                for r in self.knn
            ],
            "inversion": [
                _jsonable(
                    {
                        **r.summary(),
                        **self._decoder_scalars(),
                        **self._agreement_scalars(r.kind, "decoder"),
                        "grid": r.grid_path,
                        "notes": r.notes,
                    }
                )
                for r in self.inversion
            ],  # fmt: skip
            "whitebox": [
                _jsonable(
                    {
                        **r.summary(),
                        **self._whitebox_scalars(r.kind),
                        **self._agreement_scalars(r.kind, "whitebox"),
                        "grid": r.grid_path,
                        "notes": r.notes,
                    }
                )
                for r in self.whitebox
            ],  # fmt: skip
            "inversion_comparison": _jsonable(self.inversion_comparison),
            "decoder": _jsonable(self.decoder),
            "second_evaluator": self.second_evaluator,
            "second_evaluator_calibration": _jsonable(self.second_calibration),
            "evaluator_agreement": _jsonable(self.evaluator_agreement),
            "gradient": [_jsonable(_probe_row(r)) for r in self.gradient],
            "gradient_logged": [
                _jsonable({**r.summary(), "threat_model": r.threat_model, "grid": r.grid_path, "notes": r.notes})
                for r in self.gradient_logged
            ],
            "membership": [r.to_dict() for r in self.membership],
            "notes": self.notes,
            "failures": self.failures,
            **({} if self.data is None else {"data": _jsonable(self.data)}),
        }

    def _decoder_scalars(self) -> dict[str, Any]:
        """The decoder's training record as scalars of each decoder inversion row."""
        d = self.decoder or {}
        if not d:
            return {}
        return {
            "decoder_objective": d.get("objective"),
            "decoder_epochs_done": d.get("epochs_done"),
            "decoder_epoch_budget": d.get("epoch_budget"),
            "decoder_best_epoch": d.get("best_epoch"),
            "decoder_best_heldout_feature_cosine": d.get("best_heldout_feature_cosine"),
            "decoder_stopped_early": d.get("stopped_early"),
        }

    def _whitebox_scalars(self, kind: str) -> dict[str, Any]:
        """The white-box row's budget and its comparison with the decoder on the same vectors."""
        row = next((c for c in self.inversion_comparison if c["kind"] == kind), None)
        if row is None:
            return {}
        w = row["whitebox"]
        out: dict[str, Any] = {
            "whitebox_iterations": w["iterations"],
            "whitebox_restarts": w["restarts"],
            "whitebox_tv_weight": w["tv_weight"],
            "whitebox_mean_cosine": w["mean_cosine"],
            "whitebox_mean_init_cosine": w["mean_init_cosine"],
        }
        c = row.get("comparison")
        if c is not None:
            out.update(
                {
                    "whitebox_minus_decoder_identity_similarity": c["signed_difference"],
                    "whitebox_minus_decoder_identity_similarity_ci": c["signed_interval"],
                    "comparison_resolved": c["resolved"],
                    "comparison_stronger": c["stronger"],
                }
            )
        return out

    def _agreement_scalars(self, kind: str, attack: str) -> dict[str, Any]:
        """The second evaluator's verdicts on one row's reconstructions: its success at each FAR,
        pass/fail agreement, Cohen's kappa and the 2×2 counts per FAR, Spearman of the similarities,
        and each evaluator's genuine accept rate on real pairs at its FAR threshold (what a pass means)."""
        row = next((a for a in self.evaluator_agreement if a["kind"] == kind and a["attack"] == attack), None)
        if row is None:
            return {}
        out = agreement_scalars(row)
        for prefix, cal in (("evaluator", self.calibration), ("second_evaluator", self.second_calibration)):
            for t in (cal or {}).get("thresholds", []):
                out[f"{prefix}_genuine_accept@far={float(t['target_far']):g}"] = t["genuine_accept_rate"]
        return out

    def table(self) -> str:
        """A plain-text table of the headline numbers."""
        lines = [f"attacks by {self.observer!r} on {self.run_dir}"]
        if self.knn:
            lines += _knn_table(self.knn)
        if self.inversion:
            lines += _inversion_table(self.inversion)
        if self.decoder:
            lines.append(_decoder_line(self.decoder))
        if self.whitebox:
            lines += _whitebox_table(self.whitebox, self.inversion_comparison)
        if self.evaluator_agreement:
            lines += _agreement_lines(self.evaluator_agreement, self.second_evaluator)
        if self.gradient:
            lines += _gradient_table(self.gradient)
        if self.gradient_logged:
            lines += _gradient_logged_table(self.gradient_logged)
        if self.membership:
            lines += _membership_table(self.membership)
        for n in self.notes:
            lines.append(f"  note: {n}")
        if self.evaluator:
            lines.append(f"  {self.evaluator}")
        if self.calibration:
            lines.append(_calibration_line(self.calibration))
        return "\n".join(lines)


def _probe_row(r: Any) -> dict[str, Any]:
    """A simulated probe's record: its summary, client, label source and threat model; with a
    granted-labels row, that row's summary under ``labels_granted`` and its threat model."""
    row = {
        **r.summary(),
        "client": r.config.get("client"),
        "label_source": r.config.get("label_source"),
        "threat_model": r.threat_model,
    }
    if r.granted is not None:
        row["labels_granted_threat_model"] = r.granted.threat_model
    return row


def _membership_table(results: list[Any]) -> list[str]:
    lines = ["  membership (offline LiRA; TPR at FPR over (identity, client) pairs, interval over clients):"]
    for r in results:
        cells = []
        for key, entry in r.lira["at_fpr"].items():
            if not entry.get("supported"):
                cells.append(f"FPR {key}: unsupported ({r.nonmembers} non-members)")
                continue
            n = r.normalised.get(key, {})
            oracle = "—" if r.oracle is None else _f(r.oracle["at_fpr"][key].get("tpr"))
            cells.append(
                f"FPR {key}: TPR {_f(entry['tpr'])} (oracle {oracle}, null {_f(entry['achieved_fpr'])}, "
                f"normalised {_f(n.get('normalised'))})"
            )
        lines.append(f"    {r.kind:<24} {'; '.join(cells)}; AUROC {_f(r.lira['auroc'])}")
    return lines


def _tpr_cell(x: Any) -> str:
    """One TPR-at-FPR cell of the k-NN table: rate, 95% interval, ``*`` when unsupported."""
    if x is None:
        return "   —"
    star = "" if x.supported else "*"
    return f"{x.tpr:.3f}[{x.ci_low:.2f},{x.ci_high:.2f}]{star}"


def _knn_table(knn: list[KnnAttackResult]) -> list[str]:
    """The k-NN section of `AttackReport.table`: one row per kind, then its ceilings (DESIGN §8)."""
    lines = [
        f"  k-NN identity attack (gallery: {knn[0].num_gallery_identities} identities, "
        f"{knn[0].num_member_identities_in_gallery} of them clients'):",
        f"    {'kind':26s} {'n':>5s} {'top-1':>6s} {'(chance)':>8s} {'top-k':>6s} {'AUC':>6s} {'TPR@1e-3':>16s} "
        f"{'TPR@1e-2':>16s} {'group/chance':>12s}",
    ]
    for r in knn:
        t = {x.target_fpr: x for x in r.tpr_at_fpr}
        g = "—" if r.group_accuracy is None else f"{r.group_accuracy:.2f}/{r.group_chance:.2f}"
        lines.append(
            f"    {r.kind:26s} {r.num_observations:5d} {r.top1_rate:6.3f} {r.top1_chance:8.3f} {r.topk_rate:6.3f} "
            f"{r.membership_auc:6.3f} {_tpr_cell(t.get(1e-3)):>16s} {_tpr_cell(t.get(1e-2)):>16s} {g:>12s}"
        )
    lines.append("    (* = too few non-member identities for that FPR; intervals: 95% bootstrap)")
    lines.append(
        "    ceilings (oracle W = true class centers, oracle real = unseen real images, null = random "
        "unit vectors; normalised = (raw - null) / (oracle W - null), 95% bootstrap over units):"
    )
    for r in knn:
        lines.append(f"    {r.kind:26s} {_ceiling_line('top-1', r.summary(), 'top1')}")
    return lines


def _inversion_table(inversion: list[Any]) -> list[str]:
    """The embedding-inversion section of `AttackReport.table`: means per kind, then each metric's ceilings."""
    lines = [
        "  embedding inversion (scored by the independent evaluator):",
        f"    {'kind':26s} {'n':>5s} {'id-sim (impostor)':>18s} {'rank-1':>7s} {'SSIM (impostor)':>16s} "
        f"{'PSNR (impostor)':>16s}",
    ]
    for r in inversion:
        m = r.means
        lines.append(
            f"    {r.kind:26s} {r.num_observations:5d} {m['identity_similarity']:7.3f} ({m['impostor_identity_similarity']:7.3f}) "
            f"{m['rank1']:7.3f} {m['ssim']:6.3f} ({m['impostor_ssim']:6.3f}) {m['psnr']:6.2f} ({m['impostor_psnr']:6.2f})"
        )
    for r in inversion:
        s = r.summary()
        for metric in r.ceilings:
            mean = s.get(f"mean_{metric}")
            label = metric if mean is None else f"{metric} {mean:.3f}"
            lines.append(f"    {r.kind:26s} {_ceiling_line(label, s, metric)}")
    return lines


def _decoder_line(d: dict[str, Any]) -> str:
    """The decoder's training in one line: objective, epochs, the held-out stop."""
    best = d.get("best_epoch")
    stop = (
        f", best held-out feature cosine {d['best_heldout_feature_cosine']:.3f} at epoch {best} "
        f"({'stopped by patience ' + str(d['patience']) if d['stopped_early'] else 'budget reached'})"
        if best is not None and d.get("best_heldout_feature_cosine") is not None
        else ""
    )
    return (
        f"  decoder: objective {d['objective']!r}, {d['epochs_done']} of {d['epoch_budget']} epochs, "
        f"{d['heldout_identities']} held-out public identities{stop}"
    )


def _whitebox_table(whitebox: list[Any], comparisons: list[dict[str, Any]]) -> list[str]:
    """The white-box section of `AttackReport.table`: scores per kind beside the decoder's on the
    same vectors, which is stronger, and the ceilings."""
    lines = [
        "  white-box inversion of the same vectors (scored by the same evaluator; a lower bound):",
        f"    {'kind':26s} {'n':>5s} {'id-sim (impostor)':>18s} {'rank-1':>7s} {'cos(F(x),v)':>11s}  vs decoder",
    ]
    by_kind = {c["kind"]: c for c in comparisons}
    for r in whitebox:
        m, c = r.means, by_kind.get(r.kind, {})
        cmp = c.get("comparison") or {}
        lo, hi = cmp.get("signed_interval", (float("nan"), float("nan")))
        verdict = cmp.get("stronger") or "not resolved (interval covers 0)"
        lines.append(
            f"    {r.kind:26s} {r.num_observations:5d} {m['identity_similarity']:7.3f} "
            f"({m['impostor_identity_similarity']:7.3f}) {m['rank1']:7.3f} {c.get('whitebox', {}).get('mean_cosine', float('nan')):11.3f}  "
            f"id-sim white-box − decoder {cmp.get('signed_difference', float('nan')):+.3f} [{lo:+.3f}, {hi:+.3f}]: {verdict}"
        )
    for r in whitebox:
        s = r.summary()
        for metric in r.ceilings:
            mean = s.get(f"mean_{metric}")
            label = metric if mean is None else f"{metric} {mean:.3f}"
            lines.append(f"    {r.kind:26s} {_ceiling_line(label, s, metric)}")
    return lines


def _agreement_lines(rows: list[dict[str, Any]], second: str | None) -> list[str]:
    """The two evaluators' agreement per (kind, attack): pass/fail agreement and kappa per FAR, Spearman."""
    lines = [f"  second evaluator: {second}", "    agreement of the two evaluators on the same reconstructions:"]
    for row in rows:
        cells = [
            f"FAR {float(p['far']):g}: agree {p['agreement']:.2f} (kappa {_f(p['kappa']).strip()})"
            for p in row["at_far"]
        ]
        lines.append(
            f"    {row['kind']:26s} {row['attack']:9s} n={row['num_reconstructions']:<4d} {'; '.join(cells)}; "
            f"Spearman {_f(row['spearman']).strip()}"
        )
    return lines


def _gradient_table(gradient: list[Any]) -> list[str]:
    """The simulated gradient-inversion probes' section of `AttackReport.table`: one row per probe."""
    lines = [
        "  gradient inversion probes (Inverting Gradients):",
        f"    {'client':10s} {'state':8s} {'imgs':>4s} {'steps':>5s} {'DP σ':>5s} {'PSNR':>6s} {'SSIM':>6s} {'id-sim':>7s} {'(imp.)':>7s} {'rank-1':>7s} {'labels':>6s}",
    ]
    for r in gradient:
        for row, s in [(r, r.summary())] + ([] if r.granted is None else [(r.granted, r.granted.summary())]):
            sigma = "—" if s["dp_noise_multiplier"] is None else f"{s['dp_noise_multiplier']:g}"
            labels = row.config.get("label_source", "")
            tag = f"  labels {labels}" if row is r else "  labels granted: upper bound on this attacker"
            lines.append(
                f"    {r.config.get('client', ''):10s} {s['model_state']:8s} {s['num_images']:4d} {s['local_steps']:5d} "
                f"{sigma:>5s} {s['psnr']:6.2f} {s['ssim']:6.3f} {_f(s['identity_similarity'])} "
                f"{_f(s['impostor_identity_similarity'])} {_f(s['rank1'])} {s['label_accuracy']:6.2f}{tag}"
            )
    return lines


def _gradient_logged_table(gradient_logged: list[Any]) -> list[str]:
    """The logged-update inversions' section of `AttackReport.table`: one row per client update, with its null."""
    lines = [
        "  gradient inversion of logged client updates (what the server received):",
        f"    {'client':10s} {'round':>5s} {'imgs':>4s} {'of':>5s} {'steps':>5s} {'cos(Δ)':>7s} {'PSNR':>6s} "
        f"{'SSIM':>6s} {'id-sim':>7s} {'(imp.)':>7s} {'rank-1':>7s} {'(chance)':>8s} {'null id':>7s} "
        f"{'null r1':>7s} {'null PSNR':>9s} {'p':>5s} {'K':>3s}",
    ]
    for r in gradient_logged:
        s = r.summary()
        steps = "?" if s["local_steps"] is None else str(s["local_steps"])
        p = "—" if s["permutation_p"] is None else f"{s['permutation_p']:.3f}"
        null_psnr = "—" if s["null_psnr"] is None else f"{s['null_psnr']:.2f}"
        lines.append(
            f"    {s['client']:10s} {s['round']:5d} {s['num_images']:4d} {str(s['num_samples']):>5s} {steps:>5s} "
            f"{s['update_cosine']:7.3f} {s['psnr']:6.2f} {s['ssim']:6.3f} {_f(s['identity_similarity'])} "
            f"{_f(s['impostor_identity_similarity'])} {_f(s['rank1'])} {_f(s['rank1_chance'])} "
            f"{_f(s['null_identity_similarity'])} {_f(s['null_rank1'])} {null_psnr:>9s} {p:>5s} {s['units']:3d}"
        )
    lines.append(
        "    (PSNR/SSIM against the nearest real training image of the client; rank-1 and id-sim are per "
        "update, over its dummies, which are not independent trials; null: the same reconstructions scored "
        "against the clients not attacked; p: exact permutation p-value over the K clients, at least 1/K; "
        "aggregate: a round's summed updates, all the server sees under secure aggregation, scored against the "
        "participants' images, its null K-1 groups of as many non-member identities, id-sim from each group's "
        "own images)"
    )
    return lines


def _calibration_line(calibration: dict[str, Any]) -> str:
    """The evaluator's thresholds at fixed FARs, one table line."""
    parts = [
        f"FAR {t['target_far']:g}: {t['threshold']:.3f} (genuine accept {t['genuine_accept_rate']:.2f}"
        f"{'' if t['supported'] else ', unsupported'})"
        for t in calibration["thresholds"]
    ]
    return f"  evaluator thresholds ({calibration['pairs']}): {'; '.join(parts)}"


def _f(x: Any) -> str:
    return f"{x:7.3f}" if isinstance(x, (int, float)) else f"{'—':>7s}"


def _ceiling_line(label: str, s: dict[str, Any], metric: str) -> str:
    """One table line: a metric's oracle(s), null and normalised success with its unit interval."""

    def v(key: str) -> str:
        x = s.get(key)
        return "—" if x is None or not math.isfinite(x) else f"{x:.3f}"

    ci = s.get(f"normalised_{metric}_ci") or (float("nan"), float("nan"))
    ci_s = "—" if not all(math.isfinite(c) for c in ci) else f"[{ci[0]:.2f}, {ci[1]:.2f}]"
    return (
        f"{label}: oracle W {v('oracle_' + metric)}, oracle real {v('oracle_real_' + metric)}, "
        f"null {v('null_' + metric)} -> normalised {v('normalised_' + metric)} {ci_s} "
        f"({s.get('units', 0)} units: {s.get('unit_name') or '—'})"
    )


def _jsonable(d: Any) -> Any:
    if isinstance(d, dict):
        return {str(k): _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, np.ndarray):
        return [_jsonable(v) for v in d.tolist()]
    if isinstance(d, (np.floating, float)):
        return None if not math.isfinite(float(d)) else float(d)
    if isinstance(d, np.integer):
        return int(d)
    return d


#: On a face folder, the seeded share of the split's public identities kept for the independent
#: evaluators (their training and calibration identities); the rest is the attacker's auxiliary
#: data (decoder, white-box mean face, membership shadows). Identities in no part of the split
#: join the evaluators' share. See `_AttackData`.
FOLDER_EVALUATOR_SHARE = 0.5
#: The share of the evaluators' folder identities that calibrates their thresholds (the rest trains
#: them), as 200 of the 500 synthetic ones do.
FOLDER_CALIBRATION_SHARE = 0.4


def _render_spans(render: FaceSource, spans: list[tuple[int, int, int]]) -> Any:
    """The images of several identities, each from its own ``(identity, start_index, count)`` (a
    count of 0: none of that identity), identity-major in the order given; None when no image is asked."""
    from federated_core.data.faceset import FaceSet

    asked = [s for s in spans if s[2] > 0]
    if not asked:
        return None
    batches: dict[tuple[int, int], list[int]] = {}
    for identity, start, count in asked:
        batches.setdefault((start, count), []).append(identity)
    faces = FaceSet.concat([render(torch.tensor(ids), n, start) for (start, n), ids in batches.items()])
    rank: dict[int, int] = {}
    for k, (identity, _s, _n) in enumerate(asked):
        rank.setdefault(identity, k)
    key = torch.tensor([rank[int(i)] for i in faces.labels.tolist()])
    return faces.subset(torch.argsort(key, stable=True))


def _runs(identity: int, indices: list[int]) -> list[tuple[int, int, int]]:
    """``indices`` of one identity as ``(identity, start, count)`` runs of consecutive indices."""
    out: list[tuple[int, int, int]] = []
    for k in indices:
        if out and out[-1][1] + out[-1][2] == k:
            out[-1] = (identity, out[-1][1], out[-1][2] + 1)
        else:
            out.append((identity, k, 1))
    return out


def _seeded_order(ids: list[int], seed: int, stream: int) -> list[int]:
    """``ids`` in a seeded order (``(seed, stream)``) independent of their given order."""
    ordered = sorted(ids)
    perm = np.random.default_rng([seed, stream]).permutation(len(ordered))
    return [ordered[int(k)] for k in perm]


@dataclass
class _AttackData:
    """Which identities and which images every resource of the attacks uses.

    Synthetic runs (and a caller's own ``faces``): identities at the configured offsets
    (``distractor_offset``, ``public_offset``, the evaluators' ``*_identity_offset``) and unseen
    images of the members at ``gallery_start_index`` / ``oracle_start_index``, as before.

    Face folders (``data_spec["source"] == "folder"``) hold finitely many identities and images, so the
    roles are the split's parts (`federated_core.data.folder_source.split_folder_identities`):

    * gallery distractors and membership non-members: the ``distractors`` part (a seeded subset when
      it holds more than asked; fewer when it holds fewer, said in ``notes``), images from index 0;
    * the attacker's auxiliary identities (decoder, white-box mean face, membership shadows): a seeded
      ``1 - FOLDER_EVALUATOR_SHARE`` of the ``public`` part (capped at ``public_identities``);
    * the independent evaluators: the other seeded share of ``public`` plus every identity the split
      left unused, of which ``FOLDER_CALIBRATION_SHARE`` calibrates the thresholds and the rest trains.
      Why this choice: the evaluators must be disjoint from everything attacked (client identities,
      distractors) and should not share the attacker's own data (a decoder and an evaluator trained
      on the same faces agree for the wrong reason); a folder has no spare identity range, and the
      ``public`` part is the only one meant for training other than the clients'. φ0 pre-trains on the
      ``public`` part too, so the evaluators may share identities with φ0 (counted in ``notes``): they
      stay independent of the attacked identities, which is what scoring needs. Both evaluators train
      on the same identities (another architecture, not other faces: a folder is too small to halve);
    * member identities' gallery, oracle and membership-query images: images its client never
      trained on (`GroundTruth.image_ranges`), first those after its held-out images, then -- where
      those are too few -- its held-out images (never seen in training either; the personalised
      protocols test on them, which the attacks do not disturb), gallery first, then the oracle's
      (membership queries take the gallery's first ones: a separate game). Without this fallback an
      identity-per-folder set with a handful of images per identity (the common case) would leave
      every member out of the gallery. Every identity with fewer images than asked, and every one
      whose held-out images are used, is counted in ``notes`` (in ``failures`` where none is left);
      training images are never used.
    """

    render: FaceSource
    config: AttackRunConfig
    distractors: torch.Tensor
    public: torch.Tensor
    folder: Any = None  # the FolderFaceSource of a folder run; None: synthetic offsets and indices
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # member -> (training end, held-out end)
    nonmembers: list[int] = field(default_factory=list)  # the membership game's (folder)
    evaluator_train: torch.Tensor | None = None  # the evaluators' training identities (folder)
    calibration: torch.Tensor | None = None  # the evaluators' calibration identities (folder)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None  # the roles, for the report (folder)

    @classmethod
    def of(cls, gt: GroundTruth, render: FaceSource | None, config: AttackRunConfig) -> _AttackData:
        """The data of the attacks on ``gt``'s run (``render``: a caller's face source, else the run's)."""
        if not gt.is_folder:
            d0, p0 = config.distractor_offset, config.public_offset
            distractors = torch.arange(d0, d0 + config.gallery_distractors)
            public = torch.arange(p0, p0 + config.public_identities)
            return cls(render if render is not None else gt.face_source(), config, distractors, public)
        return _folder_data(gt, render if render is not None else gt.face_source(), config)

    # ---------------------------------------------------------------- images
    def unseen_images(self, identity: int) -> list[int]:
        """A member identity's image indices its client never trained on, in the order the attacks
        take them: those after its held-out images, then its held-out images (class docstring)."""
        train_end, held_end = self.ranges[identity]
        n = self.folder.images_available(identity)
        return list(range(held_end, n)) + list(range(train_end, min(held_end, n)))

    def member_images(self, identity: int) -> tuple[list[int], list[int]]:
        """``(gallery indices, oracle indices)`` of a member identity (disjoint, never training images)."""
        order, g = self.unseen_images(identity), self.config.gallery_images_per_identity
        return order[:g], order[g : g + self.config.oracle_images_per_identity]

    def gallery(self, ids: torch.Tensor) -> Any:
        """``gallery_images_per_identity`` unseen images of each of ``ids`` (fewer, or none, on a folder)."""
        c = self.config
        if self.folder is None:
            return self.render(ids, c.gallery_images_per_identity, c.gallery_start_index)
        spans = []
        for i in ids.tolist():
            if i in self.ranges:
                spans += _runs(i, self.member_images(i)[0])
            else:
                spans.append((i, 0, min(c.gallery_images_per_identity, self.folder.images_available(i))))
        faces = _render_spans(self.render, spans)
        if faces is None:
            raise ValueError(f"no gallery image of the {len(ids)} gallery identities: the folder holds none unseen")
        return faces

    def oracle(self, ids: torch.Tensor) -> Any:
        """``oracle_images_per_identity`` unseen images of each of ``ids`` (members), disjoint from the
        gallery's; None on a folder where none of them has one left."""
        c = self.config
        if self.folder is None:
            return self.render(ids, c.oracle_images_per_identity, c.oracle_start_index)
        spans = [run for i in ids.tolist() if i in self.ranges for run in _runs(i, self.member_images(i)[1])]
        return _render_spans(self.render, spans)

    def public_faces(self) -> Any:
        """The attacker's public identities, ``public_images_per_identity`` images each from index 0
        (on a folder: as many as an identity has, up to that)."""
        per = self.config.public_images_per_identity
        if self.folder is None:
            return self.render(self.public, per, 0)
        spans = [(i, 0, min(per, self.folder.images_available(i))) for i in self.public.tolist()]
        return _render_spans(self.render, spans)

    def identity_groups(self, members: torch.Tensor, gallery_faces: Any) -> dict[int, int]:
        """Each member's and gallery identity's population group (folders carry none: empty)."""
        if self.folder is not None:
            return _identity_groups(gallery_faces)
        return {
            **_identity_groups(self.render(members, 1, self.config.gallery_start_index)),
            **_identity_groups(gallery_faces),
        }

    # ---------------------------------------------------------------- membership and calibration
    def membership_source(self) -> tuple[FaceSource, dict[str, Any]]:
        """The membership game's face source and `MembershipConfig` settings. Synthetic data: the
        run's source and the game's defaults. A folder: the game names its non-members
        ``nonmember_offset + n``; here they stand for ``self.nonmembers[n]`` (images from index 0),
        and a member's query images are the first of its images never trained on (`unseen_images`)."""
        if self.folder is None:
            return self.render, {}
        base = max(self.folder.names) + 1  # above every folder id: never a client identity
        virtual = {real: base + n for n, real in enumerate(self.nonmembers)}

        def render(ids: torch.Tensor, per_identity: int, start_index: int) -> Any:
            del start_index  # 0: every identity's span is its own
            spans = []
            for i in torch.as_tensor(ids).tolist():
                if i >= base:
                    real = self.nonmembers[i - base]
                    spans.append((real, 0, min(per_identity, self.folder.images_available(real))))
                else:
                    spans += _runs(i, self.unseen_images(i)[:per_identity])
            faces = _render_spans(self.render, spans)
            labels = torch.tensor([virtual.get(int(i), int(i)) for i in faces.labels.tolist()])
            return dataclasses.replace(faces, labels=labels, names={})

        return render, {"nonmembers": len(self.nonmembers), "nonmember_offset": base, "query_start_index": 0}

    def members_without_unseen(self, ids: list[int]) -> list[int]:
        """The member identities of ``ids`` with no image their client did not train on (always none on
        synthetic data)."""
        if self.folder is None:
            return []
        return [i for i in ids if not self.unseen_images(i)]

    def calibration_set(self, ev: Any) -> tuple[torch.Tensor, int, tuple[int, int] | None]:
        """``(identities, images per identity, span)`` that calibrate ``ev``: synthetic data, its own
        held-out range (or the identities right after its training ones); a folder, the evaluators'
        calibration identities that hold the images asked, or the fewer most of them hold (`_even_images`)."""
        c = self.config
        if self.folder is None:
            span = ev.eval_identities or (ev.train_identities[1], ev.train_identities[1] + c.calibration_identities)
            n = min(c.calibration_identities, span[1] - span[0])
            return (
                torch.arange(span[0], span[0] + n),
                c.calibration_images_per_identity,
                (int(span[0]), int(span[0] + n)),
            )
        ids = self.calibration if self.calibration is not None else torch.zeros(0, dtype=torch.int64)
        ids, per = _even_images(self.folder, ids, c.calibration_images_per_identity)
        if ids.numel() < 2:
            raise ValueError(
                f"the face folder leaves {ids.numel()} calibration identities for the evaluators (needs >= 2)"
            )
        return ids, per, None


def _capped(what: str, pool: list[int], asked: int, notes: list[str]) -> list[int]:
    """The first ``asked`` of ``pool`` (seeded order), with a note when the folder holds fewer."""
    if len(pool) < asked:
        notes.append(f"face folder: {what}: {len(pool)} identities, fewer than the {asked} asked (all used)")
    return sorted(pool[:asked])


def _folder_parts(gt: GroundTruth, folder: Any, config: AttackRunConfig, notes: list[str]) -> dict[str, list[int]]:
    """The split's parts of a folder run, with ``"unused"`` (identities the folder serves in no part).
    Without a recorded split, the identities outside the clients and the test set are dealt seeded
    into public and distractors halves (said in ``notes``)."""
    parts = gt.split_parts()
    if parts is None:
        members = set(gt.member_ids().tolist())
        test = {int(i) for i in gt.data_spec.get("test", {}).get("identities", [])}
        rest = _seeded_order([i for i in folder.identities.tolist() if i not in members | test], config.seed, 1)
        half = len(rest) // 2
        notes.append(
            f"face folder: the data spec records no identity split; the {len(rest)} identities outside the "
            "clients and the test set are dealt seeded into public and distractors halves"
        )
        return {"public": rest[:half], "distractors": rest[half:], "unused": []}
    assigned = {i for v in parts.values() for i in v}
    return {**parts, "unused": [i for i in folder.identities.tolist() if i not in assigned]}


def _folder_data(gt: GroundTruth, render: FaceSource, config: AttackRunConfig) -> _AttackData:
    """`_AttackData` of a folder run: the roles of the split's parts and the shortfalls (class docstring)."""
    folder = gt.folder_source()
    notes: list[str] = []
    parts = _folder_parts(gt, folder, config, notes)
    dpool = _seeded_order(parts.get("distractors", []), config.seed, 2)
    distractors = _capped("gallery distractors (split part 'distractors')", dpool, config.gallery_distractors, notes)
    nonmembers = []
    if "membership" in config.attacks:
        nonmembers = _capped(
            "membership non-members (split part 'distractors')", dpool, config.membership_nonmembers, notes
        )
    pub = _seeded_order(parts.get("public", []), config.seed, 3)
    n_eval = int(math.floor(FOLDER_EVALUATOR_SHARE * len(pub) + 0.5))
    attacker = _capped(
        "the attacker's public identities (split part 'public')", pub[n_eval:], config.public_identities, notes
    )
    pool = _seeded_order(pub[:n_eval] + parts["unused"], config.seed, 4)
    n_cal = max(
        0, min(config.calibration_identities, max(2, round(FOLDER_CALIBRATION_SHARE * len(pool))), len(pool) - 2)
    )
    data = _AttackData(
        render, config, torch.tensor(distractors, dtype=torch.int64), torch.tensor(attacker, dtype=torch.int64),
        folder=folder, ranges=gt.image_ranges(), nonmembers=nonmembers,
        evaluator_train=torch.tensor(sorted(pool[n_cal:]), dtype=torch.int64),
        calibration=torch.tensor(sorted(pool[:n_cal]), dtype=torch.int64), notes=notes,
    )  # fmt: skip
    notes.append(
        f"face folder roles: {len(distractors)} gallery distractors and {len(nonmembers)} membership non-members "
        f"from the split's distractors; the attacker's {len(attacker)} auxiliary identities and the evaluators' "
        f"{len(pool)} ({len(pool) - n_cal} training, {n_cal} calibrating of the {config.calibration_identities} "
        f"calibration identities asked; {len(pub[:n_eval])} from a seeded "
        f"{FOLDER_EVALUATOR_SHARE:g} of the public part, {len(parts['unused'])} unused by the split) are "
        "disjoint; the evaluators may share public identities with φ0 and both evaluators train on the same ones"
    )
    if len(pool) < 4:
        data.failures.append(
            f"face folder: {len(pool)} identities left for the independent evaluators (2 to train, 2 to calibrate "
            "needed): add identities to the split's public part or leave some unused"
        )
    _count_shortfalls(data, gt.member_ids().tolist())
    data.record = _roles_record(data, parts, gt.member_ids().tolist())
    return data


def _count_shortfalls(data: _AttackData, members: list[int]) -> None:
    """Count, in ``data.notes`` / ``data.failures``, the folder identities with fewer images than the
    attacks ask: members' gallery and oracle images (and those that needed their held-out images),
    distractors' and public identities' images."""
    c, folder = data.config, data.folder
    g_short = o_short = g_none = o_none = held = 0
    for i in members:
        gallery, oracle = data.member_images(i)
        g_short += len(gallery) < c.gallery_images_per_identity
        o_short += len(oracle) < c.oracle_images_per_identity
        g_none += not gallery
        o_none += not oracle
        held += any(k < data.ranges[i][1] for k in gallery + oracle)
    n = len(members)
    if held:
        data.notes.append(
            f"face folder: {held} of {n} client identities have fewer than {c.gallery_images_per_identity} gallery + "
            f"{c.oracle_images_per_identity} oracle image(s) after their held-out ones: their held-out images (never "
            "trained on; the personalised protocols' test images) fill in"
        )
    if g_short or o_short:
        data.notes.append(
            f"face folder: of {n} client identities, {g_short} have fewer than {c.gallery_images_per_identity} "
            f"gallery image(s) and {o_short} fewer than {c.oracle_images_per_identity} oracle image(s) their client "
            f"never trained on ({g_none} without a gallery image, {o_none} without an oracle image); training images "
            "are never used"
        )
    if g_none:
        data.failures.append(
            f"face folder: {g_none} of {n} client identities have no image their client did not train on: they are "
            "absent from the k-NN and scoring galleries (a reconstruction of one cannot be rank-1) and have no "
            "real-image oracle"
        )
    elif o_none:
        data.failures.append(f"face folder: {o_none} of {n} client identities have no real-image oracle image left")
    for what, ids, per in (
        ("gallery distractors", data.distractors, c.gallery_images_per_identity),
        ("attacker's public identities", data.public, c.public_images_per_identity),
    ):
        short = sum(folder.images_available(i) < per for i in ids.tolist())
        if short:
            data.notes.append(
                f"face folder: {short} of the {len(ids)} {what} have fewer than {per} image(s) (all used)"
            )


def _roles_record(data: _AttackData, parts: dict[str, list[int]], members: list[int]) -> dict[str, Any]:
    """The folder roles for the report: identities per role and each member's image indices."""
    images = {}
    for i in members:
        gallery, oracle = data.member_images(i)
        train_end, held_end = data.ranges[i]
        images[str(i)] = {"training_end": train_end, "heldout_end": held_end, "gallery": gallery, "oracle": oracle}
    return {
        "source": "folder",
        "fingerprint": data.folder.fingerprint(),
        "split_parts": {k: len(v) for k, v in parts.items()},
        "distractors": data.distractors.tolist(),
        "nonmembers": list(data.nonmembers),
        "attacker_public": data.public.tolist(),
        "evaluator_train": [] if data.evaluator_train is None else data.evaluator_train.tolist(),
        "calibration": [] if data.calibration is None else data.calibration.tolist(),
        "evaluator_share_of_public": FOLDER_EVALUATOR_SHARE,
        "member_images": images,
    }


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _local_protocol(run_dir: Path) -> dict[str, Any]:
    """The clients' local training as the protocol states it (lr, epochs, batch size, momentum,
    weight decay): the engine's ``checkpoint/config.json`` (always written), else the command's
    ``config.json`` (``federated``); empty when neither exists."""
    engine = run_dir / "checkpoint" / "config.json"
    if engine.is_file():
        return dict(json.loads(engine.read_text()).get("config", {}))
    return dict(_run_config(run_dir).get("federated", {}))


def run_attacks(
    run_dir: str | Path,
    config: AttackRunConfig,
    out_dir: str | Path | None = None,
    faces: FaceSource | None = None,
    evaluator: Any | None = None,
    cache_dir: str | Path | None = None,
    second_evaluator: Any | None = None,
) -> AttackReport:
    """Run ``config.attacks`` from ``config.observer``'s position on the run in ``run_dir``.

    ``faces`` renders images of any identity (default: the run's synthetic generator from its
    ground truth); ``evaluator`` (an `attacks.evaluator.Evaluator`) skips training one;
    ``second_evaluator`` (another architecture's) skips training the second one that
    ``config.evaluator_architecture`` asks for (and is used even when it asks for none);
    ``cache_dir`` keeps the trained evaluators (default ``out_dir/cache``) so that attacks on
    several runs share them.
    """
    run_dir = Path(run_dir)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    gt = load_ground_truth(run_dir)
    view = observer_view(run_dir, config.observer)
    data = _AttackData.of(gt, faces, config)
    report = AttackReport(str(run_dir), config.observer, dataclasses.asdict(config))
    report.notes.extend(data.notes)
    report.failures.extend(data.failures)
    report.data = data.record
    members = _target_members(gt, config, report)
    distractors, gallery_faces = _attacker_gallery(members, data, config)
    observed = _observed_targets(view, gt, config, report)
    vectors, observed_model = observed.vectors, observed.model
    identity_groups = data.identity_groups(members, gallery_faces)
    t0 = time.perf_counter()
    ceilings: dict[str, dict[str, Any]] = {}
    if observed_model is not None and vectors:
        ceilings = _ceiling_inputs(gt, vectors, observed.sources, observed_model, data, config, report)
    report.seconds["ceilings"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if "knn" in config.attacks and observed_model is not None and vectors:
        truth = _KnnTargets(members, identity_groups)
        _knn_attacks(observed_model, gallery_faces, vectors, truth, ceilings, config, report)
    report.seconds["knn"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if "membership" in config.attacks and observed_model is not None and observed.releases:
        report.membership = _membership_attacks(observed_model, observed, gt, data, config, report)
    report.seconds["membership"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    reference = second = None
    inverting = "inversion" in config.attacks and bool(vectors) and observed_model is not None
    if inverting and data.public.numel() == 0:
        report.failures.append("inversion: the attacker has no public identity to train its decoder on")
        inverting = False
    gradient_possible = "gradient" in config.attacks and config.observer == "server"
    cache = Path(cache_dir) if cache_dir is not None else (None if out is None else out / "cache")
    if inverting or gradient_possible:
        reference = _evaluator_reference(run_dir, gt, data, config, members, distractors, evaluator, cache, report)
    report.seconds["evaluator"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if inverting:
        targets = (members, distractors)
        second = _second_reference(run_dir, gt, data, config, targets, second_evaluator, cache, report)
    report.seconds["second_evaluator"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if inverting:
        report.inversion = _inversion(observed_model, vectors, reference, data, config, out, report, ceilings, second)
    report.seconds["inversion"] = time.perf_counter() - t0 - report.seconds.get("whitebox", 0.0)

    t0 = time.perf_counter()
    if "gradient" in config.attacks:
        report.gradient_logged = _gradient_logged(view, gt, data, reference, config, run_dir, out, report)
        if config.gradient_simulated:
            report.gradient = _gradient(view, gt, data.render, reference, config, run_dir, report)
    report.seconds["gradient"] = time.perf_counter() - t0
    if out is not None:
        (out / "attacks.json").write_text(json.dumps(report.to_dict(relative_to=out), indent=2))
        (out / "timings.json").write_text(json.dumps(report.timings_dict(), indent=2))
    return report


def _target_members(gt: GroundTruth, config: AttackRunConfig, report: AttackReport) -> torch.Tensor:
    """The clients' identities the attacker targets: all of them, less a curious client's own."""
    members = gt.member_ids()
    if config.observer in gt.identities:
        # a curious client knows its own identities: they are neither targets nor in its gallery
        own = torch.tensor(gt.identities[config.observer], dtype=torch.int64)
        members = members[~torch.isin(members, own)]
        report.notes.append(
            f"{config.observer}'s own {len(own)} identities are left out of the gallery and the membership truth"
        )
    return members


def _attacker_gallery(members: torch.Tensor, data: _AttackData, config: AttackRunConfig) -> tuple[torch.Tensor, Any]:
    """The distractor identities and the attacker's gallery images (a seeded fraction of the
    members plus the distractors, at unseen image indices; PrivacyFace A.2.4; `_AttackData`)."""
    rng = np.random.default_rng(config.seed)
    n_in = max(1, int(round(config.gallery_member_fraction * len(members))))
    in_gallery = torch.from_numpy(np.sort(rng.choice(members.numpy(), size=n_in, replace=False)))
    distractors = data.distractors
    return distractors, data.gallery(torch.cat([in_gallery, distractors]))


@dataclass
class _ObservedTargets:
    """What k-NN and inversion attack: the observer's latest backbone (None: none usable), the
    attacked vectors by kind as ``(vectors, identity sets, when)`` and each kind's source parties."""

    model: Any
    vectors: dict[str, tuple[Any, ...]]
    sources: dict[str, list[str]]
    # kind -> client -> its released rows and its release's meta (the membership game's releases)
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    metas: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def _observed_targets(
    view: ObserverView, gt: GroundTruth, config: AttackRunConfig, report: AttackReport
) -> _ObservedTargets:
    """The observed model and center-like vectors, plus the hypothetical DP k-means release."""
    kinds = [k for k in CENTER_KINDS if k in view.kinds()]
    observed_model = None
    if "knn" in config.attacks or "inversion" in config.attacks:
        try:
            observed_model = view.build_latest_backbone()
        except ValueError as exc:
            report.failures.append(f"k-NN and inversion: no observed model to embed with: {exc}")
    vectors: dict[str, tuple[Any, ...]] = {}
    sources: dict[str, list[str]] = {}
    releases: dict[str, dict[str, Any]] = {}
    metas: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in kinds:
        try:
            cv = view.center_vectors(kind)
        except ValueError as exc:
            report.failures.append(f"reading the observed {kind}: {exc}")
            continue
        vectors[kind] = (cv.vectors, gt.observation_ids(cv), f"round {cv.round}")
        sources[kind] = list(cv.sources)
        _collect_releases(cv, releases, metas)
    observed_any = bool(vectors)
    report.notes.extend(n for n in gt.notes if n not in report.notes)
    if "knn" in config.attacks or "inversion" in config.attacks:
        dp = _dp_kmeans_vectors(gt, config, observed_model)
        if dp is not None:
            vectors["dp_kmeans_centers"], sources["dp_kmeans_centers"] = dp[:3], dp[3]
            report.notes.append(
                "dp_kmeans_centers is a hypothetical sanitised release (diffprivlib KMeans, "
                f"epsilon={config.dp_kmeans_epsilon}, {config.dp_kmeans_clusters} cluster(s) per client) of the "
                "clients' true class centers, attacked for comparison; no party observed it"
            )
    if not observed_any:
        report.notes.append(
            f"observer {config.observer!r} observed no center-like tensor ({', '.join(CENTER_KINDS)}); "
            "k-NN and inversion have nothing to attack"
        )
    return _ObservedTargets(observed_model, vectors, sources, releases, metas)


def _collect_releases(
    cv: Any, releases: dict[str, dict[str, Any]], metas: dict[str, dict[str, dict[str, Any]]]
) -> None:
    """Group ``cv``'s rows by the client they describe (the membership game's releases)."""
    from attacks.membership_attack import CLASS_LIKE, CLUSTER_LIKE

    if cv.kind not in CLASS_LIKE + CLUSTER_LIKE:
        return
    for party in sorted(set(cv.sources)):
        if not party.startswith("client:"):
            continue
        rows = [i for i, src in enumerate(cv.sources) if src == party]
        releases.setdefault(cv.kind, {})[party] = cv.vectors[rows]
        metas.setdefault(cv.kind, {})[party] = dict(cv.metas[rows[0]]) if cv.metas else {}


def _membership_attacks(
    model: Any, observed: _ObservedTargets, gt: GroundTruth, data: _AttackData, config: AttackRunConfig, report: Any
) -> list[Any]:
    """The membership game (`attacks.membership_attack`) on every observed kind it can simulate,
    with the attacker's public identities as shadow class centers and the true ``W_k`` as the oracle
    (on a face folder: non-members and query images as `_AttackData.membership_source` says; a
    member without an unseen image stops the game, flagged)."""
    from attacks.membership_attack import MembershipConfig, membership_attack

    render, settings = data.membership_source()
    attacked = sorted({i for party in {p for r in observed.releases.values() for p in r} for i in gt.identities[party]})
    blind = data.members_without_unseen(attacked)
    if blind or settings.get("nonmembers", 1) == 0 or data.public.numel() == 0:
        why = (
            f"{len(blind)} of the {len(attacked)} attacked client identities have no image their client did not "
            "train on to query with"
            if blind
            else "the face folder gives it no non-member (split part 'distractors') or no public identity"
        )
        report.failures.append(f"membership attack: not run: {why}")
        return []
    public = data.public
    faces = data.public_faces()
    emb = _embed_gallery(model, faces, config.device).embeddings.double()
    row = {int(i): k for k, i in enumerate(public.tolist())}
    index = torch.tensor([row[int(i)] for i in faces.labels.tolist()])
    sums = torch.zeros(len(public), emb.shape[1], dtype=torch.float64).index_add_(0, index, emb)
    pool = torch.nn.functional.normalize(sums, dim=1)
    true = {}
    for party in gt.identities:
        try:
            true[party] = gt.true_centers(party)[0]
        except ValueError:
            continue
    mc = MembershipConfig(
        **{"nonmembers": config.membership_nonmembers, **settings},
        query_images=config.membership_query_images,
        shadows=config.membership_shadows,
        n_bootstrap=config.n_bootstrap,
        seed=config.seed,
        device=config.device,
    )
    results = []
    for kind, releases in observed.releases.items():
        ids = {p: gt.identities[p] for p in releases}
        try:
            results.append(
                membership_attack(
                    kind, config.observer, model, render, releases, observed.metas[kind], ids, pool, true or None, mc
                )
            )
        except ValueError as exc:
            report.failures.append(f"membership attack on {kind}: {exc}")
    return results


@dataclass
class _KnnTargets:
    """The membership truth of the k-NN attack: the target members and each identity's group."""

    members: torch.Tensor
    identity_groups: dict[int, int]


def _knn_attacks(
    model: Any,
    gallery_faces: Any,
    vectors: dict,
    targets: _KnnTargets,
    ceilings: dict[str, dict[str, Any]],
    config: AttackRunConfig,
    report: AttackReport,
) -> None:
    """The k-NN identity attack on every attacked kind against the gallery embedded by ``model``
    (results to ``report.knn``, a failing kind to ``report.failures``)."""
    gallery = _embed_gallery(model, gallery_faces, config.device)
    for kind, (vecs, ids, _when) in vectors.items():
        truth = KnnTruth(ids, targets.members, targets.identity_groups)
        try:
            res = knn_identity_attack(
                vecs,
                gallery,
                truth,
                KnnAttackConfig(
                    k=config.knn_k,
                    n_bootstrap=config.n_bootstrap,
                    seed=config.seed,
                    device=config.device,
                    progress=config.progress,
                ),
                observer=config.observer,
                kind=kind,
                **ceilings.get(kind, {}),
            )
        except ValueError as exc:
            report.failures.append(f"k-NN attack on {kind}: {exc}")
            continue
        report.knn.append(res)


def _evaluator_reference(
    run_dir: Path,
    gt: GroundTruth,
    data: _AttackData,
    config: AttackRunConfig,
    members: torch.Tensor,
    distractors: torch.Tensor,
    evaluator: Any | None,
    cache: Path | None,
    report: AttackReport,
) -> Any:
    """The independent evaluator (given, or trained) and the clients' reference in its space, its
    thresholds calibrated at fixed FARs (`_calibrate`)."""
    ev = evaluator
    if ev is None:
        ev = _train_evaluator(run_dir, gt, data, config, members, distractors, cache, report=report)
    # rank-1 scoring needs every client identity in the gallery (the attacker's gallery holds
    # only a fraction of them): the same distractors, all members, unseen image indices
    scoring_gallery = data.gallery(torch.cat([members, distractors]))
    reference = _reference(ev, gt, data.render, members, scoring_gallery, config)
    report.evaluator = ev.description
    report.failures.extend(f"evaluator cache failed its checksum and was retrained: {p}" for p in ev.cache_problems)
    cal = _calibrate(ev, reference, data, config, torch.cat([members, distractors]), report)
    report.calibration = None if cal is None else cal.to_dict()
    return reference


def _second_reference(
    run_dir: Path,
    gt: GroundTruth,
    data: _AttackData,
    config: AttackRunConfig,
    targets: tuple[torch.Tensor, torch.Tensor],
    evaluator: Any | None,
    cache: Path | None,
    report: AttackReport,
) -> Any | None:
    """The second evaluator (given, or trained and cached like the first when
    ``config.evaluator_architecture`` asks for one) and the clients' reference in its space,
    calibrated on its own held-out identities; None when there is none or it failed (flagged).
    ``targets``: the attacked members and the distractors. Only identity similarities and success at
    FAR are read from it (the agreement), so its rank-1 gallery is the reference images themselves."""
    members, distractors = targets
    if evaluator is None:
        if config.evaluator_architecture in (None, "same"):
            return None
        try:
            evaluator = _train_evaluator(run_dir, gt, data, config, members, distractors, cache, second=True)
        except ValueError as exc:
            report.failures.append(
                f"second evaluator (φ0's architecture, beside the {config.evaluator_architecture} one): {exc} "
                "(a second_evaluator, or evaluator_architecture=None for one evaluator)"
            )
            return None
    reference = _reference(evaluator, gt, data.render, members, None, config)
    report.second_evaluator = evaluator.description
    report.failures.extend(
        f"second evaluator cache failed its checksum and was retrained: {p}" for p in evaluator.cache_problems
    )
    what = "second evaluator"
    cal = _calibrate(evaluator, reference, data, config, torch.cat([members, distractors]), report, what)
    report.second_calibration = None if cal is None else cal.to_dict()
    return None if cal is None else reference


def _identity_groups(faces: Any) -> dict[int, int]:
    if faces.groups is None:
        return {}
    return {int(i): int(g) for i, g in zip(faces.labels.tolist(), faces.groups.tolist())}


def _embed_gallery(model: Any, faces: Any, device: str) -> Gallery:
    from federated_core.models import embed

    return Gallery(
        embed(model, faces, device=device), faces.labels.clone(), None if faces.groups is None else faces.groups.clone()
    )


def _dp_kmeans_vectors(
    gt: GroundTruth,
    config: AttackRunConfig,
    model: Any,
) -> tuple[torch.Tensor, list, str, list[str]] | None:
    """DP k-means centers (diffprivlib) of every client's true class centers — a sanitised release
    the clients *could* make instead of DPLC (the attacked vectors, not something observed) —
    with the client each center comes from."""
    blocks: list[torch.Tensor] = []
    ids: list[frozenset[int]] = []
    senders: list[str] = []
    for party in sorted(gt.private):
        if party == config.observer:
            continue
        try:
            w, row_ids = gt.true_centers(party)
        except ValueError:  # a client without true class centers (e.g. FedPE's are local only): nothing to sanitise
            continue
        if model is not None and w.shape[1] != getattr(model, "embedding_dim", w.shape[1]):
            continue
        w = torch.nn.functional.normalize(w.double(), dim=1).float().clamp(-1, 1)
        k = min(config.dp_kmeans_clusters, w.shape[0])
        res = dp_kmeans_centers(w, torch.tensor(row_ids), k, config.dp_kmeans_epsilon, seed=config.seed + len(blocks))
        blocks.append(res.centers)
        ids += res.covered
        senders += [party] * res.centers.shape[0]
    if not blocks:
        return None
    return torch.cat(blocks), ids, f"diffprivlib KMeans, epsilon={config.dp_kmeans_epsilon} per client", senders


_CLIENT_UNIT_KINDS = ("cluster_centers", "noisy_cluster_centers", "dp_kmeans_centers")


def _units(kind: str, ids: list[frozenset[int]], senders: list[str]) -> tuple[list[str], str]:
    """The independent unit of each observed row (DESIGN §8): its source client for clusters (a
    client's DPLC clusters are chosen one after another from the same centers, its DP k-means
    centers come from one fit), its source identity for class-center-like rows."""
    if kind in _CLIENT_UNIT_KINDS:
        return list(senders), "client"
    return [",".join(str(i) for i in sorted(s)) if s else f"{src}:none" for s, src in zip(ids, senders)], "identity"


def _true_center_table(gt: GroundTruth, dim: int) -> dict[int, torch.Tensor]:
    """Every client's final true class center ``W_k`` (normalised) by identity, from the ground truth."""
    table: dict[int, torch.Tensor] = {}
    for party in sorted(gt.private):
        try:
            w, row_ids = gt.true_centers(party)
        except ValueError:
            continue
        if w.dim() != 2 or w.shape[1] != dim:
            continue
        w = torch.nn.functional.normalize(w.double(), dim=1).float()
        for row, ident in zip(w, row_ids):
            table.setdefault(int(ident), row)
    return table


def _oracle_queries(ids: list[frozenset[int]], table: dict[int, torch.Tensor], dim: int) -> torch.Tensor:
    """Per observation the normalised mean of ``table``'s rows over the identities it stands for
    (a class center: that identity's row; a cluster: the noise-free mean of its members); NaN rows
    where none of them has one."""
    out = torch.full((len(ids), dim), float("nan"))
    for i, s in enumerate(ids):
        rows = [table[j] for j in sorted(s) if j in table]
        if rows:
            out[i] = torch.nn.functional.normalize(torch.stack(rows).double().mean(0), dim=0).float()
    return out


def _oracle_index_clash(gt: GroundTruth, config: AttackRunConfig) -> str | None:
    """Why the oracle's image indices would reuse gallery or training images (None: disjoint)."""
    lo, hi = config.oracle_start_index, config.oracle_start_index + config.oracle_images_per_identity
    spans = {
        "the gallery": (config.gallery_start_index, config.gallery_start_index + config.gallery_images_per_identity)
    }
    for party, spec in sorted(gt.data_spec.get("clients", {}).items()):
        start = int(spec.get("start_index", 0))
        spans[f"{party}'s training images"] = (start, start + int(spec.get("images_per_identity", 1)))
    for what, (a, b) in spans.items():
        if lo < b and a < hi:
            return f"oracle image indices [{lo}, {hi}) overlap {what} [{a}, {b}); change oracle_start_index"
    return None


def _real_templates(
    model: Any,
    data: _AttackData,
    identities: list[int],
    config: AttackRunConfig,
) -> dict[int, torch.Tensor]:
    """The observed model's normalised mean embedding of ``oracle_images_per_identity`` unseen
    images of each identity (`_AttackData.oracle`: indices from ``oracle_start_index``; on a folder
    images its client never trained on, after the gallery's, and none where none is left)."""
    from federated_core.models import embed

    faces = data.oracle(torch.tensor(identities, dtype=torch.int64))
    if faces is None:
        return {}
    emb = embed(model, faces, device=config.device)
    uniq, inverse = torch.unique(faces.labels.to(torch.int64), return_inverse=True)
    sums = torch.zeros(len(uniq), emb.shape[1]).index_add_(0, inverse, emb)
    return {int(i): row for i, row in zip(uniq.tolist(), torch.nn.functional.normalize(sums, dim=1))}


def _ceiling_inputs(
    gt: GroundTruth,
    vectors: dict,
    sources: dict[str, list[str]],
    model: Any,
    data: _AttackData,
    config: AttackRunConfig,
    report: AttackReport,
) -> dict[str, dict[str, Any]]:
    """Per attacked kind, the keyword arguments of the ceilings (`knn_identity_attack`,
    `invert_and_score`): oracle queries from the true ``W_k``, oracle queries from real unseen
    images, and the unit of each row."""
    dim = int(getattr(model, "embedding_dim", next(iter(vectors.values()))[0].shape[1]))
    table = _true_center_table(gt, dim)
    if not table:
        report.notes.append(
            "ceilings: the ground truth holds no true class centers of the embedding dimension; no true-center oracle"
        )
    wanted = sorted({j for _v, ids, _w in vectors.values() for s in ids for j in s})
    real: dict[int, torch.Tensor] = {}
    clash = None if data.folder is not None else _oracle_index_clash(gt, config)  # a folder's spans are disjoint
    if clash is not None:
        report.failures.append(f"real-image oracle: {clash}")
    elif wanted:
        try:
            real = _real_templates(model, data, wanted, config)
        except ValueError as exc:
            report.failures.append(f"real-image oracle: {exc}")
    where = (
        f"indices from {config.oracle_start_index}"
        if data.folder is None
        else "images its client never trained on, after the gallery's"
    )
    source = (
        f"observed model's mean embedding of {config.oracle_images_per_identity} unseen image(s) per identity "
        f"({where}); a cluster averages its identities'"
    )
    out = {}
    for kind, (vecs, ids, _when) in vectors.items():
        units, unit_name = _units(kind, ids, sources.get(kind) or ["?"] * len(ids))
        out[kind] = {
            "oracle": _oracle_queries(ids, table, vecs.shape[1]) if table else None,
            "oracle_real": _oracle_queries(ids, real, vecs.shape[1]) if real else None,
            "units": units,
            "unit_name": unit_name,
            "oracle_real_source": source if real else None,
        }
    return out


def _calibrate(
    ev: Any,
    reference: Any,
    data: _AttackData,
    config: AttackRunConfig,
    attacked: torch.Tensor,
    report: AttackReport,
    what: str = "evaluator",
) -> Any:
    """Calibrate the evaluator's thresholds at ``calibration_fars`` on its own held-out identities
    (`attacks.evaluator.calibrate_evaluator`; `_AttackData.calibration_set`: its held-out range, the
    identities right after its training ones when it names none, or a folder's calibration identities),
    attach them to ``reference`` and return them (None: it failed, flagged in ``report.failures`` under
    ``what``)."""
    from attacks.evaluator import calibrate_evaluator

    try:
        ids, per, span = data.calibration_set(ev)
        clash = ids[torch.isin(ids, torch.cat([attacked, data.public]))]
        if clash.numel():
            report.failures.append(
                f"{what} calibration: held-out identities {clash[:5].tolist()} are attacked or public ones"
            )
            return None
        cal = calibrate_evaluator(
            ev, data.render(ids, per, 0), config.calibration_fars, device=config.device, identities=span
        )
    except ValueError as exc:
        report.failures.append(f"{what} calibration: {exc}")
        return None
    if data.calibration is not None and what == "evaluator":
        report.notes.append(
            f"face folder calibration: {ids.numel()} of the evaluators' {data.calibration.numel()} calibration "
            f"identities x {per} image(s) ({config.calibration_images_per_identity} asked; identities holding "
            "fewer are left out)"
        )
    reference.calibration = cal
    for t in cal.thresholds:
        if not t.supported:
            who = "" if what == "evaluator" else f"{what}: "
            report.notes.append(
                f"{who}success at FAR={t.target_far:g} not supported: {t.num_impostor} impostor pairs "
                f"(needs >= {t.min_impostors})"
            )
    return cal


def _train_evaluator(
    run_dir: Path,
    gt: GroundTruth,
    data: _AttackData,
    config: AttackRunConfig,
    members: torch.Tensor,
    distractors: torch.Tensor,
    cache: Path | None,
    second: bool = False,
    report: AttackReport | None = None,
) -> Any:
    """Train (or load from ``cache``) an independent evaluator from φ0's recipe in the run's config
    (`attacks.evaluator.evaluator_config`) on identities disjoint from everything attacked, public or
    φ0's: the evaluator, of `evaluator_architecture_for`'s architecture (φ0's when it gives None);
    ``second``: the second evaluator, of φ0's architecture, on identities of its own
    (``second_evaluator_identity_offset``). On a face folder: on the evaluators' folder identities
    (`_folder_evaluator_config`). Raises ValueError without φ0's config."""
    from attacks.evaluator import evaluator_config, train_evaluator

    phi0 = _phi0_config(run_dir)
    arch = None if second else evaluator_architecture_for(config.evaluator_architecture, phi0.backbone)
    if data.folder is not None:
        ev_cfg = _folder_evaluator_config(phi0, data, arch, None if second else report)
        excluded = torch.cat([members, distractors, data.public])
        return train_evaluator(ev_cfg, excluded, cache_dir=cache, device=config.device, progress=config.progress)
    if second:
        ev_cfg = evaluator_config(phi0, identity_offset=config.second_evaluator_identity_offset)
    else:
        ev_cfg = evaluator_config(phi0, identity_offset=config.evaluator_identity_offset, architecture=arch)
    excluded = torch.cat(
        [
            members,
            distractors,
            torch.arange(config.public_offset, config.public_offset + config.public_identities),
            torch.arange(*phi0.train_identities),
        ]
    )
    return train_evaluator(ev_cfg, excluded, cache_dir=cache, device=config.device, progress=config.progress)


def _folder_evaluator_config(phi0: Any, data: _AttackData, architecture: str | None, report: Any) -> Any:
    """The `PretrainConfig` of an evaluator on a face folder (`attacks.evaluator.folder_evaluator_config`):
    φ0's recipe on ``data``'s evaluator training identities, its own metrics on the calibration ones,
    as many images per identity as every one of them has (up to φ0's counts). With ``report``, notes
    the images per identity and the identities it shares with φ0's pre-training."""
    from attacks.evaluator import folder_evaluator_config
    from federated_core.pretrain import FolderSpec

    train, held = data.evaluator_train, data.calibration
    if train is None or held is None or train.numel() < 2 or held.numel() < 2:
        n = 0 if train is None or held is None else train.numel() + held.numel()
        raise ValueError(
            f"the face folder leaves {n} identities for the independent evaluator (2 to train, 2 to calibrate "
            "needed): add identities to the split's public part, or pass an evaluator"
        )
    folder = data.folder
    kept, per_train = _even_images(folder, train, int(phi0.train_images_per_identity))
    held_kept, per_eval = _even_images(folder, held, int(phi0.eval_images_per_identity))
    cfg = folder_evaluator_config(phi0, FolderSpec.of(folder), kept.tolist(), held_kept.tolist(), per_train, per_eval,
                                  architecture=architecture)  # fmt: skip
    if report is not None:
        shared = 0
        if isinstance(phi0.data, FolderSpec) and phi0.data.fingerprint == folder.fingerprint():
            shared = int(torch.isin(kept, phi0.train_ids()).sum())
        report.notes.append(
            f"face folder evaluator: {kept.numel()} training identities x {per_train} image(s) (φ0 asked "
            f"{phi0.train_images_per_identity}; {train.numel() - kept.numel()} of its {train.numel()} identities "
            f"hold fewer and are left out), {shared} of them also in φ0's pre-training; own metrics on "
            f"{held_kept.numel()} of its calibration identities x {per_eval} image(s)"
        )
    return cfg


def _even_images(folder: Any, ids: torch.Tensor, asked: int) -> tuple[torch.Tensor, int]:
    """``(identities kept, images each)`` for a set that needs the same number of images of every
    identity (a pre-training set, calibration pairs) from a folder whose identities hold different
    numbers: ``asked`` images, or fewer where most identities hold fewer -- at most the lower median of
    their counts, so at least half of ``ids`` are kept -- and the identities holding fewer left out."""
    counts = sorted(folder.images_available(i) for i in ids.tolist())
    if not counts:
        return ids, asked
    per = min(asked, counts[(len(counts) - 1) // 2])
    keep = [i for i in ids.tolist() if folder.images_available(i) >= per]
    return torch.tensor(keep, dtype=torch.int64), per


def _phi0_config(run_dir: Path) -> Any:
    """φ0's `PretrainConfig` from the run's config (the recipe the evaluators derive from)."""
    from federated_core.pretrain import PretrainConfig

    run_cfg = _run_config(run_dir)
    if "pretrain" not in run_cfg:
        raise ValueError(
            f"{str(run_dir / 'config.json')!r} holds no φ0 pre-training config to derive the evaluator from; "
            "pass an evaluator"
        )
    return PretrainConfig.from_dict(run_cfg["pretrain"])


def _reference(
    ev: Any, gt: GroundTruth, render: FaceSource, members: torch.Tensor, gallery_faces: Any, config: AttackRunConfig
) -> Any:
    """Ground truth of the clients' identities in the evaluator's space: their training images
    (regenerated), and the evaluator-space gallery of the attacker's gallery identities."""
    from attacks.evaluator import build_reference

    parts = []
    for party in sorted(gt.identities):
        spec = gt.data_spec.get("clients", {}).get(party, {})
        per = int(
            spec.get("images_per_identity", max(1, gt.num_images.get(party, 1) // max(1, len(gt.identities[party]))))
        )
        parts.append(render(torch.tensor(gt.identities[party]), per, int(spec.get("start_index", 0))))
    from federated_core.data.faceset import FaceSet

    reference_faces = FaceSet.concat(parts)
    return build_reference(ev, reference_faces, gallery_faces, device=config.device)


@dataclass
class _InversionTarget:
    """One attacked kind as the inversion sees it: the vectors that stand for a known identity
    (at most ``max_inverted``), their identity sets, and the ceiling inputs of those rows."""

    kind: str
    vectors: torch.Tensor
    ids: list[frozenset[int]]
    extra: dict[str, Any]  # oracle, oracle_real (rows aligned with vectors), units, unit_name


def _inversion_targets(
    vectors: dict, ceilings: dict[str, dict[str, Any]] | None, config: AttackRunConfig, report: AttackReport
) -> list[_InversionTarget]:
    """The rows of each attacked kind the inversions invert (a note for a kind with none)."""
    out = []
    for kind, (vecs, ids, _when) in vectors.items():
        keep = [i for i, s in enumerate(ids) if s][: config.max_inverted]
        if not keep:
            report.notes.append(f"inversion of {kind!r}: no vector stands for a known identity")
            continue
        c = (ceilings or {}).get(kind, {})
        extra: dict[str, Any] = {
            name: None if c.get(name) is None else c[name][keep] for name in ("oracle", "oracle_real")
        }
        if c.get("units") is not None:
            extra.update(units=[c["units"][i] for i in keep], unit_name=c["unit_name"])
        out.append(_InversionTarget(kind, vecs[keep], [ids[i] for i in keep], extra))
    return out


def _decoder_config(model: Any, public: Any, config: AttackRunConfig) -> Any:
    """The `DecoderConfig` of the attack: architecture and budget from ``config``, the objective with
    its held-out identities and patience stop (the latter only where held-out identities exist)."""
    from attacks.inversion import DecoderConfig

    n_ids = len(torch.unique(torch.as_tensor(public.labels)))
    holdout = config.decoder_holdout_fraction if n_ids >= 2 else 0.0
    return DecoderConfig(
        embedding_dim=int(model.embedding_dim),
        resolution=int(public.resolution),
        base_channels=config.decoder_base_channels,
        epochs=config.decoder_epochs,
        batch_size=config.decoder_batch_size,
        lr_step_epochs=config.decoder_lr_step_epochs,
        seed=config.seed,
        objective=config.decoder_objective,
        holdout_fraction=holdout,
        patience=config.decoder_patience if holdout > 0 else 0,
    )


def _train_inversion_decoder(
    model: Any, public: Any, config: AttackRunConfig, out: Path | None, report: AttackReport
) -> Any:
    """Train the decoder on the public faces embedded by the observed ``model``; its training
    record (objective, per-epoch curve, convergence stop) goes to ``report.decoder``."""
    from attacks.inversion import train_decoder

    dcfg = _decoder_config(model, public, config)
    ck = None if out is None else out / "decoder.safetensors"
    if ck is not None and ck.is_file():
        ck.unlink()  # a decoder belongs to one observed model: never resume another's
    trained = train_decoder(model, public, dcfg, checkpoint=ck, device=config.device, progress=config.progress)
    report.decoder = {
        "objective": dcfg.objective,
        "epoch_budget": dcfg.epochs,
        "epochs_done": len(trained.curve),
        "best_epoch": trained.best_epoch,
        "best_heldout_feature_cosine": None
        if trained.best_epoch is None
        else trained.curve[trained.best_epoch - 1].get("heldout_feature_cosine"),
        "stopped_early": trained.stopped_early,
        "heldout_identities": len(trained.heldout_identity_ids),
        "patience": dcfg.patience,
        "weights": "best held-out epoch" if trained.best_epoch is not None else "last epoch",
        "curve": trained.curve,
        "config": dcfg.to_dict(),
    }
    return trained.decoder


def _inversion(
    model: Any,
    vectors: dict,
    reference: Any,
    data: _AttackData,
    config: AttackRunConfig,
    out: Path | None,
    report: AttackReport,
    ceilings: dict[str, dict[str, Any]] | None = None,
    second: Any | None = None,
) -> list[Any]:
    """The decoder's inversion of every attacked kind (`attacks.inversion.invert_and_score`); beside
    it, with ``config.whitebox``, the white-box inversion of the same vectors scored the same way
    and compared with it (`_whitebox_beside`); with a ``second`` reference (another evaluator),
    the two evaluators' agreement on both attacks' reconstructions."""
    from attacks.inversion import invert_and_score

    public = data.public_faces()
    decoder = _train_inversion_decoder(model, public, config, out, report)
    mean_face = public.images.float().div(255.0).mean(0)
    results = []
    for target in _inversion_targets(vectors, ceilings, config, report):
        try:
            r = invert_and_score(
                decoder,
                target.vectors,
                target.ids,
                reference,
                observer=config.observer,
                kind=target.kind,
                grid_path=_grid_path(out, "inversion", config.observer, target.kind),
                device=config.device,
                seed=config.seed,
                n_bootstrap=max(10, config.n_bootstrap),
                **target.extra,
            )
        except ValueError as exc:
            report.failures.append(f"inversion of {target.kind}: {exc}")
            continue
        results.append(r)
        scored = _ScoredTargets.of(target, decoder, reference, config)
        images = {"decoder": scored.decoder_images}
        if config.whitebox:
            wb = _whitebox_beside(model, decoder, scored, mean_face, reference, config, out, report)
            if wb is not None:
                images["whitebox"] = wb
        if second is not None:
            _agreement(reference, second, target.kind, images, scored.ids, report)
    return results


def _grid_path(out: Path | None, prefix: str, observer: str, kind: str) -> Path | None:
    """Where an inversion's image grid goes (None without an output folder)."""
    return None if out is None else out / f"{prefix}_{observer.replace(':', '-')}_{kind}.png"


@dataclass
class _ScoredTargets:
    """The rows of one kind that `invert_and_score` scored (those standing for an identity with
    reference images, by its own rule), the identities each is scored against, their ceiling
    inputs, and the decoder's reconstructions of them exactly as it scored them."""

    target: _InversionTarget
    keep: list[int]
    ids: list[frozenset[int]]
    units: list[Any]
    decoder_images: torch.Tensor

    @classmethod
    def of(cls, target: _InversionTarget, decoder: Any, reference: Any, config: AttackRunConfig) -> _ScoredTargets:
        """The scored rows of ``target`` (`attacks.inversion`'s own rule) and the decoder's images of them."""
        from attacks.inversion import _scorable_observations, invert

        keep, ids = _scorable_observations(target.kind, target.ids, reference, [])
        units = target.extra.get("units")
        unit_list = [i if units is None else units[i] for i in keep]
        return cls(target, keep, ids, unit_list, invert(decoder, target.vectors[keep], device=config.device))

    def rows(self, name: str) -> torch.Tensor | None:
        """The ceiling input ``name`` (``oracle``, ``oracle_real``) of the scored rows, or None."""
        q = self.target.extra.get(name)
        return None if q is None else q[self.keep]


def _whitebox_config(config: AttackRunConfig) -> Any:
    """The `WhiteBoxConfig` of the attack (its budget by scale: `AttackRunConfig.whitebox_*`)."""
    from attacks.whitebox import WhiteBoxConfig

    return WhiteBoxConfig(
        iterations=config.whitebox_iterations,
        restarts=config.whitebox_restarts,
        tv_weight=float(config.whitebox_tv_weight),
        init=config.whitebox_init,
        seed=config.seed,
        progress=config.progress,
    )


@dataclass
class _WhiteBoxAttacker:
    """The white-box attacker of one observed model: its budget, start (the attacker's mean public
    face, or the decoder's guess) and the evaluator that scores it (the decoder's)."""

    model: Any
    config: Any  # WhiteBoxConfig
    mean_face: torch.Tensor
    decoder: Any | None
    reference: Any
    device: str

    def images(self, queries: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """``(WhiteBoxResult, its images on the 8-bit grid)``: the images are rounded to what a
        stored PNG holds, so the stored reconstructions reproduce their scores."""
        from attacks.whitebox import whitebox_invert

        run = whitebox_invert(self.model, queries, self.config, self.mean_face, self.decoder, self.device)
        return run, (run.images * 255).round() / 255

    def successes(
        self, queries: torch.Tensor, ids: list[frozenset[int]], names: list[str]
    ) -> tuple[dict[str, np.ndarray], torch.Tensor]:
        """The per-row success metrics ``names`` of the attack on ``queries`` (rows aligned with
        ``ids``) and its images; rows without a query (NaN) score NaN and have NaN images, as in
        the decoder's ceilings."""
        from attacks.inversion import _successes

        ok = [i for i in range(queries.shape[0]) if bool(torch.isfinite(queries[i]).all())]
        out = {m: np.full(queries.shape[0], np.nan) for m in names}
        r = self.reference.evaluator.resolution if self.decoder is None else self.decoder.resolution
        images = torch.full((queries.shape[0], 3, r, r), float("nan"))
        if ok:
            _run, x = self.images(queries[ok])
            images = torch.full((queries.shape[0], *x.shape[1:]), float("nan"))
            images[ok] = x.cpu()
            for metric, values in _successes(self.reference.score(x, [ids[i] for i in ok])).items():
                if metric in out:
                    out[metric][ok] = values
        return out, images


def _whitebox_beside(
    model: Any,
    decoder: Any,
    scored: _ScoredTargets,
    mean_face: torch.Tensor,
    reference: Any,
    config: AttackRunConfig,
    out: Path | None,
    report: AttackReport,
) -> torch.Tensor | None:
    """White-box inversion (`attacks.whitebox`) of the rows the decoder's inversion scored, scored
    by the same evaluator (`IdentityReference.score`, with `attacks.inversion`'s success metrics and
    ceilings: null = as many seeded random unit vectors as the decoder's null, oracle = the true
    class centers), and compared with the decoder on the same vectors by the evaluator's identity
    similarity, paired per target with a bootstrap over units (`compare_attacks`). The result goes
    to ``report.whitebox``, the comparison to ``report.inversion_comparison``; returns its images
    (None when it failed: flagged in ``report.failures``)."""
    from attacks.inversion import _inversion_ceilings, _successes
    from attacks.metrics import random_unit_vectors
    from attacks.whitebox import compare_attacks

    t0 = time.perf_counter()
    kind, n = scored.target.kind, len(scored.keep)
    unit_name = scored.target.extra.get("unit_name", "observation")
    attacker = _WhiteBoxAttacker(
        model, _whitebox_config(config), mean_face, decoder if config.whitebox_init == "decoder" else None,
        reference, config.device,
    )  # fmt: skip
    notes = [f"white-box optimisation inversion ({_budget_text(attacker.config)}): a lower bound"]
    try:
        run, images = attacker.images(scored.target.vectors[scored.keep])
        scores = reference.score(images, scored.ids)
        raw = _successes(scores)
        dim = scored.target.vectors.shape[1]
        null, null_images = attacker.successes(random_unit_vectors(n, dim, config.seed + 7_777), scored.ids, list(raw))
        oracle = scored.rows("oracle")
        vs, oracle_images = (None, None) if oracle is None else attacker.successes(oracle, scored.ids, list(raw))
        if oracle is None:
            notes.append("no true-center oracle: the white-box success has a null but no ceiling")
        ceilings = _inversion_ceilings(
            raw, null, [vs, None], scored.units, unit_name, 0.95, max(10, config.n_bootstrap), config.seed, notes
        )
        comparison = compare_attacks(
            {"decoder": scored.decoder_images, "whitebox": images},
            lambda x: reference.identity_similarity(x, scored.ids),
            units=scored.units,
            unit_name=unit_name,
            n_bootstrap=max(10, config.n_bootstrap),
            seed=config.seed,
        )
    except ValueError as exc:
        report.failures.append(f"white-box inversion of {kind}: {exc}")
        return None
    grid = _grid_path(out, "inversion_whitebox", config.observer, kind)
    shown = {"attack": images, "oracle: true W": oracle_images, "null: random": null_images}
    report.whitebox.append(_whitebox_result(scored, shown, scores, ceilings, notes, grid, reference, config.observer))
    report.inversion_comparison.append(_comparison_row(kind, run, comparison))
    report.seconds["whitebox"] = report.seconds.get("whitebox", 0.0) + time.perf_counter() - t0
    return images


def _budget_text(wcfg: Any) -> str:
    """The white-box budget in words, for notes."""
    return (
        f"{wcfg.iterations} Adam steps x {wcfg.restarts} restart(s) per vector from the {wcfg.init.replace('_', ' ')}, "
        f"TV {wcfg.tv_weight:g}, against the observed model"
    )


def _whitebox_result(
    scored: _ScoredTargets,
    shown: dict[str, torch.Tensor | None],
    scores: Any,
    ceilings: dict[str, Any],
    notes: list[str],
    grid: Path | None,
    reference: Any,
    observer: str,
    max_grid: int = 8,
) -> Any:
    """The white-box attack's `InversionResult` (the same record as the decoder's): scores, ceilings,
    its reconstructions (``shown["attack"]``) and the mean faces of their identities, and under
    ``grid`` the scored grid (`attacks.inversion.write_scored_grid`) of the first ``max_grid``
    targets: real images, the attack's, the oracle's and the null's images."""
    from attacks.inversion import inversion_result, write_scored_grid

    images = shown.get("attack")
    if images is None:
        raise ValueError("the white-box result needs the attack's images (shown['attack'])")
    faces = torch.stack([reference.mean_face(s, images.shape[-1]) for s in scored.ids])
    rows = {label: x[:max_grid] for label, x in shown.items() if x is not None}
    path = None if grid is None else str(write_scored_grid(grid, reference, scored.ids[:max_grid], rows))
    return inversion_result(
        observer, scored.target.kind, len(scored.keep), scores, images, faces, path, notes, ceilings
    )


def _comparison_row(kind: str, run: Any, comparison: Any) -> dict[str, Any]:
    """One kind's white-box record (budget, cosine reached on the observed model; no timings) and
    its comparison with the decoder, with the difference signed as white-box minus decoder."""
    s = comparison.summary()
    lo, hi = comparison.interval
    flip = comparison.stronger == "decoder" or (
        comparison.stronger is None and s["means"]["decoder"] > s["means"]["whitebox"]
    )
    settings = {
        k: run.settings[k] for k in ("iterations", "restarts", "steps_per_target", "tv_weight", "init", "bound")
    }
    return {
        "kind": kind,
        "whitebox": {
            **settings,
            "mean_cosine": float(run.cosine.mean()),
            "mean_init_cosine": float(run.init_cosine.mean()),
        },
        "comparison": {
            **s,
            "score": "the evaluator's identity similarity of each reconstruction to its true identity",
            "signed_difference": float(s["means"]["whitebox"] - s["means"]["decoder"]),
            "signed_interval": [-hi, -lo] if flip else [lo, hi],
        },
    }


def _agreement(
    reference: Any,
    second: Any,
    kind: str,
    images: dict[str, torch.Tensor],
    ids: list[frozenset[int]],
    report: AttackReport,
) -> None:
    """Both evaluators on each attack's reconstructions of ``kind`` (`evaluator_agreement`: pass/fail
    at each one's own calibrated thresholds, agreement, Cohen's kappa, Spearman), to
    ``report.evaluator_agreement``."""
    from attacks.evaluator import evaluator_agreement

    for attack, x in images.items():
        try:
            a = evaluator_agreement(reference, second, x, ids)
        except ValueError as exc:
            report.failures.append(f"evaluator agreement on the {attack} inversion of {kind}: {exc}")
            continue
        report.evaluator_agreement.append({"kind": kind, "attack": attack, **a.to_dict()})


def agreement_scalars(row: dict[str, Any]) -> dict[str, Any]:
    """Scalars of one `evaluator_agreement` record: the second evaluator's success at each FAR, the
    pass/fail agreement, Cohen's kappa and the 2×2 counts per FAR, and the Spearman correlation."""
    out: dict[str, Any] = {
        "evaluator_spearman": row["spearman"],
        "evaluator_reconstructions": row["num_reconstructions"],
    }
    for p in row["at_far"]:
        far = f"{float(p['far']):g}"
        out[f"second_evaluator_success@far={far}"] = p["success"][1]
        out[f"evaluator_agreement@far={far}"] = p["agreement"]
        out[f"evaluator_kappa@far={far}"] = p["kappa"]
        for name, count in p["counts"].items():
            out[f"evaluator_{name}@far={far}"] = count
    return out


def _gradient(
    view: ObserverView,
    gt: GroundTruth,
    render: FaceSource,
    reference: Any,
    config: AttackRunConfig,
    run_dir: Path,
    report: AttackReport,
) -> list[Any]:
    """The simulated probes (`attacks.gradient.run_gradient_probe`, server only): the worst-case
    clients first, each at the initial and the trained broadcast model, per local-step count and
    DP-SGD noise; labels as `_probe_label_source` says, with the granted-labels row beside
    recovered ones. A probe that raises is flagged in ``report.failures``."""
    from attacks.gradient import run_gradient_probe
    from federated_core.engine.messages import SERVER

    if config.observer == OUTSIDER:
        report.notes.append("gradient inversion: an outsider observes no update (only the released model)")
        return []
    if config.observer != SERVER:
        report.notes.append(
            f"gradient inversion: {config.observer!r} observes only aggregated backbones (FedAvg of all participants); "
            "a single client's update is seen by the server only — run with --observer server"
        )
        return []
    broadcasts = [m for m in view.messages if m.kind == "backbone" and m.sender == SERVER]
    if not broadcasts:
        report.notes.append("gradient inversion: the server sent no backbone (nothing to simulate an update from)")
        return []
    models = {
        name: backbone_from_state(m.tensors, m.meta.get("spec", {}))
        for name, m in (("initial", broadcasts[0]), ("trained", broadcasts[-1]))
    }
    fed = _local_protocol(run_dir)
    local_lr = float(fed.get("lr", 0.05))
    if "lr" not in fed:
        report.notes.append("simulated gradient probes: the run states no local learning rate; simulated with 0.05")
    uploads_centers = "class_centers" in view.kinds()
    # worst case first: the clients with the fewest identities (one-identity clients if any)
    parties = sorted(gt.identities, key=lambda p: (len(gt.identities[p]), p))[: config.gradient_clients]
    results = []
    for party in parties:
        ids = gt.identities[party][:1] if len(gt.identities[party]) == 1 else gt.identities[party][:2]
        spec = gt.data_spec.get("clients", {}).get(party, {})
        per = max(1, math.ceil(config.gradient_images / len(ids)))
        trained = int(spec.get("images_per_identity", per))
        if gt.is_folder and per > trained:  # a folder's next images are held-out or attack images, or none
            report.notes.append(
                f"simulated gradient probe of {party}: {per} image(s) per identity asked, the client trained on "
                f"{trained}: the probe uses those"
            )
            per = trained
        faces = render(torch.tensor(ids), per, int(spec.get("start_index", 0)))
        faces = faces.subset(torch.arange(min(len(faces), config.gradient_images)))
        n_classes = len(set(faces.labels.tolist()))
        plan: list[tuple[str, int, float | None]] = [
            (state, steps, None) for state in models for steps in config.gradient_local_steps
        ]
        plan += [("trained", 1, sigma) for sigma in config.gradient_dp_noise_multipliers]
        for state, steps, sigma in plan:
            model = models[state]
            cfg = _probe_config(model, len(faces), n_classes == 1, steps, sigma, uploads_centers, local_lr, config)
            try:
                r = run_gradient_probe(cfg, faces, trained_backbone=model, reference=reference)
            except ValueError as exc:
                report.failures.append(f"gradient probe {party} ({state}, {steps} steps, DP-SGD σ={sigma}): {exc}")
                continue
            for row in (r, r.granted):
                if row is not None:
                    row.config.update(client=party, model_state=state)
            results.append(r)
    return results


def _probe_config(
    model: Any,
    num_images: int,
    one_identity: bool,
    steps: int,
    sigma: float | None,
    head_observed: bool,
    local_lr: float,
    config: AttackRunConfig,
) -> Any:
    """The `GradientProbeConfig` of one simulated probe: the client's local settings (``steps``
    local steps of SGD at ``local_lr``, DP-SGD at ``sigma``; a one-identity client trains against
    fixed extra negatives), the attacker's labels (`_probe_label_source`, with the granted-labels
    row beside recovered ones) and the attack's budget and priors."""
    from attacks.gradient import GradientProbeConfig

    return GradientProbeConfig(
        # backbone_from_state builds through build_backbone: the attributes are set
        backbone=cast(dict[str, Any], model.build_config)["name"],
        embedding_dim=int(cast(int, model.embedding_dim)),
        resolution=int(cast(int, model.resolution)),
        model_state="trained",
        head="cosface",
        extra_negatives=8 if one_identity else 0,
        num_images=num_images,
        batch_size=max(1, num_images // steps) if steps > 1 else num_images,
        local_steps=steps,
        local_lr=local_lr,
        label_source=_probe_label_source(head_observed, num_images),
        head_observed=head_observed,
        granted_labels_row=config.gradient_granted_labels_row and head_observed,
        bn_prior_weight=float(config.gradient_bn_prior_weight),
        iterations=config.gradient_iterations,
        restarts=config.gradient_restarts,
        tv_weight=config.gradient_tv_weight,
        seed=config.seed,
        dp_noise_multiplier=sigma,
        dp_max_grad_norm=config.gradient_dp_max_grad_norm,
        device=config.device,
        progress=config.progress,
    )


def _probe_label_source(head_observed: bool, num_images: int) -> str:
    """The simulated probe's labels as the attacker can get them: where the head's update is observed,
    recovered from it — LLG's counts (Wainakh et al. 2022) for a batch of several images, iDLG
    (Zhao et al. 2020) for one image, whose count the attacker knows (one image, one label: the
    batch-size bound); otherwise granted (``"known"``: a backbone-only update carries no head
    gradient, so the probe is the granted-labels upper bound on this attacker)."""
    if not head_observed:
        return "known"
    return "llg" if num_images > 1 else "idlg"


def _gradient_logged(
    view: ObserverView,
    gt: GroundTruth,
    data: _AttackData,
    reference: Any,
    config: AttackRunConfig,
    run_dir: Path,
    out: Path | None,
    report: AttackReport,
) -> list[Any]:
    """Invert the backbone updates clients actually uploaded (`attacks.logged_update`): the
    worst-case clients first (fewest identities), their first and/or last round. With
    ``gradient_logged_null`` every reconstruction is also scored against the real images of all
    the clients that were not attacked (the null over clients, the unit of this attack). Then,
    per ``gradient_logged_aggregate``, the aggregate of a round's updates (`_gradient_aggregate`):
    all the server learns under secure aggregation."""
    from federated_core.engine.messages import SERVER

    if config.observer != SERVER or not config.gradient_logged_rounds:
        return []  # the notes of `_gradient` say why a client or an outsider sees no single update
    fed = _local_protocol(run_dir)
    if "lr" not in fed:
        report.failures.append(
            "gradient inversion of logged updates: the run folder states no local learning rate "
            "(checkpoint/config.json or config.json): the protocol the attack simulates is unknown"
        )
        return []
    senders = {u.sender for u in view.backbone_updates(required=False)}
    parties = sorted((p for p in gt.identities if p in senders), key=lambda p: (len(gt.identities[p]), p))
    ctx = _LoggedAttack(view, gt, _ClientTrainingFaces(gt, data.render), reference, config, fed, out, report)
    results = []
    for party in parties[: config.gradient_clients]:
        results += _gradient_logged_client(ctx, party)
    mode = config.gradient_logged_aggregate
    if mode == "always" or (mode == "auto" and not parties):
        results += _gradient_aggregate(ctx, data)
    elif not parties:
        report.notes.append("gradient inversion: no client backbone update in the wire log")
    return results


def _logged_kwargs(fed: Mapping[str, Any]) -> dict[str, Any]:
    """The local protocol's settings `invert_logged_update` takes (lr, weight decay, schedule)."""
    return {
        "local_lr": float(fed["lr"]),
        "weight_decay": float(fed.get("weight_decay", 0.0)),
        "local_epochs": fed.get("local_epochs"),
        "batch_size": fed.get("batch_size"),
        "momentum": float(fed.get("momentum", 0.0)),
    }


@dataclass
class _LoggedAttack:
    """What every logged-update inversion of one attack run shares: the server's view, the ground
    truth and the clients' training faces, the evaluator's reference, the settings, the local
    protocol, the output folder and the report."""

    view: ObserverView
    gt: GroundTruth
    client_faces: _ClientTrainingFaces
    reference: Any
    config: AttackRunConfig
    fed: Mapping[str, Any]
    out: Path | None
    report: AttackReport


def _gradient_logged_client(ctx: _LoggedAttack, party: str) -> list[Any]:
    """``party``'s logged updates of the rounds ``gradient_logged_rounds`` names, inverted."""
    from attacks.logged_update import invert_logged_update

    view, gt, client_faces, reference, config, fed, out, report = (
        ctx.view, ctx.gt, ctx.client_faces, ctx.reference, ctx.config, ctx.fed, ctx.out, ctx.report,
    )  # fmt: skip
    ids = gt.identities[party]
    faces = client_faces(party)
    others = [p for p in sorted(gt.identities) if p != party and gt.identities[p]]
    null_faces = {p: client_faces(p) for p in others} if config.gradient_logged_null else None
    results, done_rounds = [], set()
    for which in config.gradient_logged_rounds:
        cfg = _logged_probe_config(party, which, config)
        try:
            r = invert_logged_update(
                view,
                cfg,
                faces,
                granted_classes=len(ids),
                reference=reference,
                client_identities=ids,
                null_faces=null_faces,
                null_identities={p: gt.identities[p] for p in others},
                **_logged_kwargs(fed),
            )
        except ValueError as exc:
            report.failures.append(f"gradient inversion of {party}'s logged update ({which} round): {exc}")
            continue
        if r.round in done_rounds:
            continue  # first == last when the client uploaded once
        done_rounds.add(r.round)
        _attach_logged_grid(r, party, out)
        results.append(r)
    return results


def _gradient_aggregate(ctx: _LoggedAttack, data: _AttackData) -> list[Any]:
    """Invert the aggregate of the rounds ``gradient_logged_rounds`` names (`attacks.logged_update`
    with ``client="aggregate"``): the difference of consecutive broadcasts, matched as one step
    on the union of the participants' data, scored against the participants' images and, with
    ``gradient_logged_null``, against groups of non-member identities (`_aggregate_null_groups`)."""
    from attacks.logged_update import AGGREGATE, invert_logged_update, participants, pick_update

    view, gt, client_faces, reference, config, fed, out, report = (
        ctx.view, ctx.gt, ctx.client_faces, ctx.reference, ctx.config, ctx.fed, ctx.out, ctx.report,
    )  # fmt: skip
    if config.gradient_logged_epoch_prior != "none":
        report.notes.append(
            f"gradient inversion of the aggregate: one-step model (epoch prior {config.gradient_logged_epoch_prior!r} "
            "models one client's schedule, not a mix of several)"
        )
    results, done_rounds = [], set()
    for which in config.gradient_logged_rounds:
        cfg = _logged_probe_config(AGGREGATE, which, config)
        try:
            update = pick_update(view, cfg)
            parties = participants(view, update)
            known = [p for p in parties if gt.identities.get(p)]
            if len(known) < len(parties):
                raise ValueError(f"participants {sorted(set(parties) - set(known))[:3]} have no ground truth to score")
            if not known:
                raise ValueError(f"the broadcast of round {update.base_round} went to no client")
            faces = FaceSet.concat([client_faces(p) for p in known])
            ids = sorted({int(i) for p in known for i in gt.identities[p]})
            nulls = _aggregate_null_groups(faces, data, config, report) if config.gradient_logged_null else None
            r = invert_logged_update(
                view,
                cfg,
                faces,
                granted_classes=len(ids),
                reference=reference,
                client_identities=ids,
                null_faces=nulls,
                num_samples=len(faces),
                **_logged_kwargs(fed),
            )
        except ValueError as exc:
            report.failures.append(f"gradient inversion of the aggregate ({which} round): {exc}")
            continue
        if r.round in done_rounds:
            continue
        done_rounds.add(r.round)
        r.participants = known
        _attach_logged_grid(r, AGGREGATE, out)
        results.append(r)
    return results


def _aggregate_null_groups(
    participant_faces: FaceSet, data: _AttackData, config: AttackRunConfig, report: AttackReport
) -> dict[str, FaceSet] | None:
    """Up to ``gradient_logged_null_groups`` groups of distractor identities (never trained on),
    each as many identities as the participants, rendered with their (rounded mean) images per
    identity from index 0: the aggregate's null (`attacks.logged_update.score_against_groups`)."""
    k = int(torch.unique(participant_faces.labels).numel())
    per = max(1, round(len(participant_faces) / k))
    pool = data.distractors[torch.randperm(len(data.distractors), generator=torch.Generator().manual_seed(config.seed))]
    if data.folder is not None:  # a face folder: only distractors with the participants' image count
        enough = torch.tensor([data.folder.images_available(int(i)) >= per for i in pool], dtype=torch.bool)
        pool = pool[enough] if len(pool) else pool
    groups = min(config.gradient_logged_null_groups, len(pool) // k)
    if groups < 1:
        report.notes.append(
            f"gradient inversion of the aggregate: no null ({len(pool)} distractor identities with {per} images, "
            f"fewer than the participants' {k} identities)"
        )
        return None
    nulls = {f"non-members:{g}": data.render(pool[g * k : (g + 1) * k], per, 0) for g in range(groups)}
    short = {name: len(faces) for name, faces in nulls.items() if len(faces) < k * per}
    if short:  # fewer images than the participants' per identity: a lower nearest-image max, a kinder null
        report.notes.append(
            f"gradient inversion of the aggregate: {len(short)} null group(s) hold fewer than {k * per} images "
            f"({', '.join(f'{n}: {c}' for n, c in list(short.items())[:3])}); the permutation p is then optimistic"
        )
    return nulls


@dataclass
class _ClientTrainingFaces:
    """Each client's training images, regenerated from the ground truth's data spec on first use."""

    gt: GroundTruth
    render: FaceSource
    rendered: dict[str, Any] = field(default_factory=dict)

    def __call__(self, party: str) -> Any:
        """The FaceSet of ``party``'s training images (rendered once)."""
        if party not in self.rendered:
            spec = self.gt.data_spec.get("clients", {}).get(party, {})
            ids = self.gt.identities[party]
            n = self.gt.num_images.get(party, len(ids))
            per = int(spec.get("images_per_identity", max(1, n // max(1, len(ids)))))
            self.rendered[party] = self.render(torch.tensor(ids), per, int(spec.get("start_index", 0)))
        return self.rendered[party]


def _logged_probe_config(party: str, which: str, config: AttackRunConfig) -> Any:
    """The `LoggedUpdateProbeConfig` of ``party``'s ``which`` ("first"/"last") logged update (the
    aggregate's: always the one-step model, an epoch prior models one client's schedule)."""
    from attacks.logged_update import AGGREGATE, LoggedUpdateProbeConfig

    return LoggedUpdateProbeConfig(
        client=party,
        round=which,
        dummies=config.gradient_logged_dummies,
        iterations=config.gradient_logged_iterations,
        restarts=config.gradient_logged_restarts,
        tv_weight=config.gradient_tv_weight,
        epoch_prior="none" if party == AGGREGATE else config.gradient_logged_epoch_prior,
        epoch_prior_weight=config.gradient_logged_epoch_prior_weight,
        seed=config.seed,
        device=config.device,
        progress=config.progress,
    )


def _attach_logged_grid(r: Any, party: str, out: Path | None) -> None:
    """Save the originals-over-reconstructions grid of a logged-update inversion under ``out``
    and record its path in ``r.grid_path`` (None without ``out``)."""
    from attacks.inversion import save_image_grid

    r.grid_path = None
    if out is not None:
        path = out / f"gradient_logged_{party.replace(':', '-')}_round{r.round}.png"
        save_image_grid(
            torch.from_numpy(r.nearest_originals).float() / 255,
            torch.from_numpy(r.reconstructions).float() / 255,
            path,
        )
        r.grid_path = str(path)
