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
  the last = trained state) on real client images, and invert it. Only the server observes a
  single client's update; a client observes aggregates, an outsider no update (both noted).
  The backbone updates clients actually uploaded are inverted too (`attacks.logged_update`), and
  the same reconstructions are scored against the clients that were *not* attacked: a null over
  clients with an exact permutation p-value (the unit is the client update, never a dummy).
  Inverting Gradients follows breaching's recipe (TV 0.2, signed Adam, step decay, restarts);
  every gradient result is a lower bound on what an attacker with its stated knowledge can do.

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
from typing import Any, Callable, cast

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

__all__ = ["ATTACKS", "AttackRunConfig", "AttackReport", "run_attacks", "FaceSource"]

ATTACKS = ("knn", "inversion", "gradient", "membership")
# Renders a FaceSet: (identities, images_per_identity, start_index) -> FaceSet.
FaceSource = Callable[[torch.Tensor, int, int], Any]


@dataclass(frozen=True)
class AttackRunConfig:
    """Sizes of the attacker's resources and of the attacks (defaults: demo scale, CPU)."""

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
    gradient_simulated: bool = True
    membership_nonmembers: int = 2000  # >= 1000: TPR at FPR 1e-2 supported; 1e-3 needs 10,000
    membership_shadows: int = 64
    membership_query_images: int = 2
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

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """JSON-able summary: scalars of every result, small arrays as lists. With ``relative_to``
        (the folder the file is written to): paths relative to it and no timings, so the file is
        the same bytes wherever and however fast it ran (the timings go to `timings_dict`)."""
        doc = self._summary_dict()
        if relative_to is None:
            return {**doc, "seconds": self.seconds}
        doc["run_dir"] = os.path.relpath(self.run_dir, relative_to)
        for key in ("inversion", "gradient_logged"):
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
            "inversion": [_jsonable({**r.summary(), "grid": r.grid_path, "notes": r.notes}) for r in self.inversion],
            "gradient": [
                _jsonable({**r.summary(), "client": r.config.get("client"), "threat_model": r.threat_model})
                for r in self.gradient
            ],
            "gradient_logged": [
                _jsonable({**r.summary(), "threat_model": r.threat_model, "grid": r.grid_path, "notes": r.notes})
                for r in self.gradient_logged
            ],
            "membership": [r.to_dict() for r in self.membership],
            "notes": self.notes,
            "failures": self.failures,
        }

    def table(self) -> str:
        """A plain-text table of the headline numbers."""
        lines = [f"attacks by {self.observer!r} on {self.run_dir}"]
        if self.knn:
            lines += _knn_table(self.knn)
        if self.inversion:
            lines += _inversion_table(self.inversion)
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


def _gradient_table(gradient: list[Any]) -> list[str]:
    """The simulated gradient-inversion probes' section of `AttackReport.table`: one row per probe."""
    lines = [
        "  gradient inversion probes (Inverting Gradients):",
        f"    {'client':10s} {'state':8s} {'imgs':>4s} {'steps':>5s} {'DP σ':>5s} {'PSNR':>6s} {'SSIM':>6s} {'id-sim':>7s} {'(imp.)':>7s} {'rank-1':>7s} {'labels':>6s}",
    ]
    for r in gradient:
        s = r.summary()
        sigma = "—" if s["dp_noise_multiplier"] is None else f"{s['dp_noise_multiplier']:g}"
        lines.append(
            f"    {r.config.get('client', ''):10s} {s['model_state']:8s} {s['num_images']:4d} {s['local_steps']:5d} {sigma:>5s} "
            f"{s['psnr']:6.2f} {s['ssim']:6.3f} {_f(s['identity_similarity'])} {_f(s['impostor_identity_similarity'])} {_f(s['rank1'])} "
            f"{s['label_accuracy']:6.2f}"
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
        "against the clients not attacked; p: exact permutation p-value over the K clients, at least 1/K)"
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


def _synthetic_source(gt: GroundTruth) -> FaceSource:
    gen = gt.generator()

    def render(ids: torch.Tensor, per_identity: int, start_index: int) -> Any:
        return gen.make_set(torch.as_tensor(ids, dtype=torch.int64), per_identity, start_index=start_index)

    return render


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_attacks(
    run_dir: str | Path,
    config: AttackRunConfig,
    out_dir: str | Path | None = None,
    faces: FaceSource | None = None,
    evaluator: Any | None = None,
    cache_dir: str | Path | None = None,
) -> AttackReport:
    """Run ``config.attacks`` from ``config.observer``'s position on the run in ``run_dir``.

    ``faces`` renders images of any identity (default: the run's synthetic generator from its
    ground truth); ``evaluator`` (an `attacks.evaluator.Evaluator`) skips training one;
    ``cache_dir`` keeps the trained evaluator (default ``out_dir/cache``) so that attacks on
    several runs share it.
    """
    run_dir = Path(run_dir)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    gt = load_ground_truth(run_dir)
    view = observer_view(run_dir, config.observer)
    render = faces if faces is not None else _synthetic_source(gt)
    report = AttackReport(str(run_dir), config.observer, dataclasses.asdict(config))
    members = _target_members(gt, config, report)
    distractors, gallery_faces = _attacker_gallery(members, render, config)
    observed = _observed_targets(view, gt, config, report)
    vectors, observed_model = observed.vectors, observed.model
    identity_groups = {
        **_identity_groups(render(members, 1, config.gallery_start_index)),
        **_identity_groups(gallery_faces),
    }
    t0 = time.perf_counter()
    ceilings: dict[str, dict[str, Any]] = {}
    if observed_model is not None and vectors:
        ceilings = _ceiling_inputs(gt, vectors, observed.sources, observed_model, render, config, report)
    report.seconds["ceilings"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if "knn" in config.attacks and observed_model is not None and vectors:
        truth = _KnnTargets(members, identity_groups)
        _knn_attacks(observed_model, gallery_faces, vectors, truth, ceilings, config, report)
    report.seconds["knn"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if "membership" in config.attacks and observed_model is not None and observed.releases:
        report.membership = _membership_attacks(observed_model, observed, gt, render, config, report)
    report.seconds["membership"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    reference = None
    gradient_possible = "gradient" in config.attacks and config.observer == "server"
    if ("inversion" in config.attacks and vectors and observed_model is not None) or gradient_possible:
        cache = Path(cache_dir) if cache_dir is not None else (None if out is None else out / "cache")
        reference = _evaluator_reference(run_dir, gt, render, config, members, distractors, evaluator, cache, report)
    report.seconds["evaluator"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if "inversion" in config.attacks and vectors and observed_model is not None:
        report.inversion = _inversion(observed_model, vectors, reference, render, config, out, report, ceilings)
    report.seconds["inversion"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if "gradient" in config.attacks:
        report.gradient_logged = _gradient_logged(view, gt, render, reference, config, run_dir, out, report)
        if config.gradient_simulated:
            report.gradient = _gradient(view, gt, render, reference, config, run_dir, report)
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


def _attacker_gallery(members: torch.Tensor, render: FaceSource, config: AttackRunConfig) -> tuple[torch.Tensor, Any]:
    """The distractor identities and the attacker's gallery images (a seeded fraction of the
    members plus the distractors, at unseen image indices; PrivacyFace A.2.4)."""
    rng = np.random.default_rng(config.seed)
    n_in = max(1, int(round(config.gallery_member_fraction * len(members))))
    in_gallery = torch.from_numpy(np.sort(rng.choice(members.numpy(), size=n_in, replace=False)))
    distractors = torch.arange(config.distractor_offset, config.distractor_offset + config.gallery_distractors)
    gallery_faces = render(
        torch.cat([in_gallery, distractors]), config.gallery_images_per_identity, config.gallery_start_index
    )
    return distractors, gallery_faces


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
    model: Any, observed: _ObservedTargets, gt: GroundTruth, render: FaceSource, config: AttackRunConfig, report: Any
) -> list[Any]:
    """The membership game (`attacks.membership_attack`) on every observed kind it can simulate,
    with the attacker's public identities as shadow class centers and the true ``W_k`` as the oracle."""
    from attacks.membership_attack import MembershipConfig, membership_attack

    public = torch.arange(config.public_offset, config.public_offset + config.public_identities)
    faces = render(public, config.public_images_per_identity, 0)
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
        nonmembers=config.membership_nonmembers,
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
    render: FaceSource,
    config: AttackRunConfig,
    members: torch.Tensor,
    distractors: torch.Tensor,
    evaluator: Any | None,
    cache: Path | None,
    report: AttackReport,
) -> Any:
    """The independent evaluator (given, or trained) and the clients' reference in its space, its
    thresholds calibrated at fixed FARs (`_calibrate`)."""
    ev = evaluator if evaluator is not None else _train_evaluator(run_dir, gt, config, members, distractors, cache)
    # rank-1 scoring needs every client identity in the gallery (the attacker's gallery holds
    # only a fraction of them): the same distractors, all members, unseen image indices
    scoring_gallery = render(
        torch.cat([members, distractors]), config.gallery_images_per_identity, config.gallery_start_index
    )
    reference = _reference(ev, gt, render, members, scoring_gallery, config)
    report.evaluator = ev.description
    report.failures.extend(f"evaluator cache failed its checksum and was retrained: {p}" for p in ev.cache_problems)
    _calibrate(ev, reference, render, config, torch.cat([members, distractors]), report)
    return reference


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
    render: FaceSource,
    identities: list[int],
    config: AttackRunConfig,
) -> dict[int, torch.Tensor]:
    """The observed model's normalised mean embedding of ``oracle_images_per_identity`` unseen
    images of each identity (indices from ``oracle_start_index``)."""
    from federated_core.models import embed

    faces = render(
        torch.tensor(identities, dtype=torch.int64), config.oracle_images_per_identity, config.oracle_start_index
    )
    emb = embed(model, faces, device=config.device)
    uniq, inverse = torch.unique(faces.labels.to(torch.int64), return_inverse=True)
    sums = torch.zeros(len(uniq), emb.shape[1]).index_add_(0, inverse, emb)
    return {int(i): row for i, row in zip(uniq.tolist(), torch.nn.functional.normalize(sums, dim=1))}


def _ceiling_inputs(
    gt: GroundTruth,
    vectors: dict,
    sources: dict[str, list[str]],
    model: Any,
    render: FaceSource,
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
    clash = _oracle_index_clash(gt, config)
    if clash is not None:
        report.failures.append(f"real-image oracle: {clash}")
    elif wanted:
        try:
            real = _real_templates(model, render, wanted, config)
        except ValueError as exc:
            report.failures.append(f"real-image oracle: {exc}")
    source = (
        f"observed model's mean embedding of {config.oracle_images_per_identity} unseen image(s) per identity "
        f"(indices from {config.oracle_start_index}); a cluster averages its identities'"
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
    ev: Any, reference: Any, render: FaceSource, config: AttackRunConfig, attacked: torch.Tensor, report: AttackReport
) -> None:
    """Calibrate the evaluator's thresholds at ``calibration_fars`` on its own held-out identities
    (`attacks.evaluator.calibrate_evaluator`; default: the identities right after its training
    ones when it names none) and attach them to ``reference``."""
    from attacks.evaluator import calibrate_evaluator

    span = ev.eval_identities or (ev.train_identities[1], ev.train_identities[1] + config.calibration_identities)
    n = min(config.calibration_identities, span[1] - span[0])
    ids = torch.arange(span[0], span[0] + n)
    public = torch.arange(config.public_offset, config.public_offset + config.public_identities)
    clash = ids[torch.isin(ids, torch.cat([attacked, public]))]
    if clash.numel():
        report.failures.append(
            f"evaluator calibration: held-out identities {clash[:5].tolist()} are attacked or public ones"
        )
        return
    try:
        cal = calibrate_evaluator(
            ev,
            render(ids, config.calibration_images_per_identity, 0),
            config.calibration_fars,
            device=config.device,
            identities=(int(span[0]), int(span[0] + n)),
        )
    except ValueError as exc:
        report.failures.append(f"evaluator calibration: {exc}")
        return
    reference.calibration = cal
    report.calibration = cal.to_dict()
    for t in cal.thresholds:
        if not t.supported:
            report.notes.append(
                f"success at FAR={t.target_far:g} not supported: {t.num_impostor} impostor pairs "
                f"(needs >= {t.min_impostors})"
            )


def _train_evaluator(
    run_dir: Path,
    gt: GroundTruth,
    config: AttackRunConfig,
    members: torch.Tensor,
    distractors: torch.Tensor,
    cache: Path | None,
) -> Any:
    from attacks.evaluator import evaluator_config, train_evaluator
    from federated_core.pretrain import PretrainConfig

    run_cfg = _run_config(run_dir)
    if "pretrain" not in run_cfg:
        raise ValueError(
            f"{str(run_dir / 'config.json')!r} holds no φ0 pre-training config to derive the evaluator from; "
            "pass an evaluator"
        )
    phi0 = PretrainConfig.from_dict(run_cfg["pretrain"])
    ev_cfg = evaluator_config(phi0, identity_offset=config.evaluator_identity_offset)
    excluded = torch.cat(
        [
            members,
            distractors,
            torch.arange(config.public_offset, config.public_offset + config.public_identities),
            torch.arange(*phi0.train_identities),
        ]
    )
    return train_evaluator(ev_cfg, excluded, cache_dir=cache, device=config.device, progress=config.progress)


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


def _inversion(
    model: Any,
    vectors: dict,
    reference: Any,
    render: FaceSource,
    config: AttackRunConfig,
    out: Path | None,
    report: AttackReport,
    ceilings: dict[str, dict[str, Any]] | None = None,
) -> list[Any]:
    from attacks.inversion import DecoderConfig, invert_and_score, train_decoder

    public = render(
        torch.arange(config.public_offset, config.public_offset + config.public_identities),
        config.public_images_per_identity,
        0,
    )
    dcfg = DecoderConfig(
        embedding_dim=int(model.embedding_dim),
        resolution=int(public.resolution),
        base_channels=config.decoder_base_channels,
        epochs=config.decoder_epochs,
        batch_size=config.decoder_batch_size,
        lr_step_epochs=config.decoder_lr_step_epochs,
        seed=config.seed,
    )
    ck = None if out is None else out / "decoder.safetensors"
    if ck is not None and ck.is_file():
        ck.unlink()  # a decoder belongs to one observed model: never resume another's
    decoder = train_decoder(model, public, dcfg, checkpoint=ck, device=config.device, progress=config.progress).decoder
    results = []
    for kind, (vecs, ids, _when) in vectors.items():
        keep = [i for i, s in enumerate(ids) if s][: config.max_inverted]
        if not keep:
            report.notes.append(f"inversion of {kind!r}: no vector stands for a known identity")
            continue
        grid = None if out is None else out / f"inversion_{config.observer.replace(':', '-')}_{kind}.png"
        c = (ceilings or {}).get(kind, {})
        extra: dict[str, Any] = {
            name: None if c.get(name) is None else c[name][keep] for name in ("oracle", "oracle_real")
        }
        if c.get("units") is not None:
            extra.update(units=[c["units"][i] for i in keep], unit_name=c["unit_name"])
        try:
            results.append(
                invert_and_score(
                    decoder,
                    vecs[keep],
                    [ids[i] for i in keep],
                    reference,
                    observer=config.observer,
                    kind=kind,
                    grid_path=grid,
                    device=config.device,
                    seed=config.seed,
                    n_bootstrap=max(10, config.n_bootstrap),
                    **extra,
                )
            )
        except ValueError as exc:
            report.failures.append(f"inversion of {kind}: {exc}")
    return results


def _gradient(
    view: ObserverView,
    gt: GroundTruth,
    render: FaceSource,
    reference: Any,
    config: AttackRunConfig,
    run_dir: Path,
    report: AttackReport,
) -> list[Any]:
    from attacks.gradient import GradientProbeConfig, run_gradient_probe
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
    fed = _run_config(run_dir).get("federated", {})
    local_lr = float(fed.get("lr", 0.05))
    uploads_centers = "class_centers" in view.kinds()
    # worst case first: the clients with the fewest identities (one-identity clients if any)
    parties = sorted(gt.identities, key=lambda p: (len(gt.identities[p]), p))[: config.gradient_clients]
    results = []
    for party in parties:
        ids = gt.identities[party][:1] if len(gt.identities[party]) == 1 else gt.identities[party][:2]
        spec = gt.data_spec.get("clients", {}).get(party, {})
        per = max(1, math.ceil(config.gradient_images / len(ids)))
        faces = render(torch.tensor(ids), per, int(spec.get("start_index", 0)))
        faces = faces.subset(torch.arange(min(len(faces), config.gradient_images)))
        n_classes = len(set(faces.labels.tolist()))
        plan: list[tuple[str, int, float | None]] = [
            (state, steps, None) for state in models for steps in config.gradient_local_steps
        ]
        plan += [("trained", 1, sigma) for sigma in config.gradient_dp_noise_multipliers]
        for state, steps, sigma in plan:
            model = models[state]
            cfg = GradientProbeConfig(
                # backbone_from_state builds through build_backbone: the attributes are set
                backbone=cast(dict[str, Any], model.build_config)["name"],
                embedding_dim=int(cast(int, model.embedding_dim)),
                resolution=int(cast(int, model.resolution)),
                model_state="trained",
                head="cosface",
                extra_negatives=8 if n_classes == 1 else 0,
                num_images=len(faces),
                batch_size=max(1, len(faces) // steps) if steps > 1 else len(faces),
                local_steps=steps,
                local_lr=local_lr,
                label_source="idlg" if uploads_centers and n_classes > 1 else "known",
                head_observed=uploads_centers,
                iterations=config.gradient_iterations,
                restarts=config.gradient_restarts,
                tv_weight=config.gradient_tv_weight,
                seed=config.seed,
                dp_noise_multiplier=sigma,
                dp_max_grad_norm=config.gradient_dp_max_grad_norm,
                device=config.device,
                progress=config.progress,
            )
            try:
                r = run_gradient_probe(cfg, faces, trained_backbone=model, reference=reference)
            except ValueError as exc:
                report.failures.append(f"gradient probe {party} ({state}, {steps} steps, DP-SGD σ={sigma}): {exc}")
                continue
            r.config["client"] = party
            r.config["model_state"] = state
            results.append(r)
    return results


def _gradient_logged(
    view: ObserverView,
    gt: GroundTruth,
    render: FaceSource,
    reference: Any,
    config: AttackRunConfig,
    run_dir: Path,
    out: Path | None,
    report: AttackReport,
) -> list[Any]:
    """Invert the backbone updates clients actually uploaded (`attacks.logged_update`): the
    worst-case clients first (fewest identities), their first and/or last round. With
    ``gradient_logged_null`` every reconstruction is also scored against the real images of all
    the clients that were not attacked (the null over clients, the unit of this attack)."""
    from attacks.logged_update import invert_logged_update
    from federated_core.engine.messages import SERVER

    if config.observer != SERVER or not config.gradient_logged_rounds:
        return []  # the notes of `_gradient` say why a client or an outsider sees no single update
    fed = _run_config(run_dir).get("federated", {})
    senders = {u.sender for u in view.backbone_updates(required=False)}
    parties = sorted((p for p in gt.identities if p in senders), key=lambda p: (len(gt.identities[p]), p))
    if not parties:
        report.notes.append("gradient inversion: no client backbone update in the wire log")
        return []
    client_faces = _ClientTrainingFaces(gt, render)
    results = []
    for party in parties[: config.gradient_clients]:
        ids = gt.identities[party]
        faces = client_faces(party)
        others = [p for p in sorted(gt.identities) if p != party and gt.identities[p]]
        null_faces = {p: client_faces(p) for p in others} if config.gradient_logged_null else None
        done_rounds: set[int] = set()
        for which in config.gradient_logged_rounds:
            cfg = _logged_probe_config(party, which, config)
            try:
                r = invert_logged_update(
                    view,
                    cfg,
                    faces,
                    granted_classes=len(ids),
                    local_lr=float(fed.get("lr", 0.05)),
                    weight_decay=float(fed.get("weight_decay", 0.0)),
                    local_epochs=fed.get("local_epochs"),
                    batch_size=fed.get("batch_size"),
                    reference=reference,
                    client_identities=ids,
                    null_faces=null_faces,
                    null_identities={p: gt.identities[p] for p in others},
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
    """The `LoggedUpdateProbeConfig` of ``party``'s ``which`` ("first"/"last") logged update."""
    from attacks.logged_update import LoggedUpdateProbeConfig

    return LoggedUpdateProbeConfig(
        client=party,
        round=which,
        dummies=config.gradient_logged_dummies,
        iterations=config.gradient_logged_iterations,
        restarts=config.gradient_logged_restarts,
        tv_weight=config.gradient_tv_weight,
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
