"""A realistic-looking `AuditResult` with clearly labelled SAMPLE numbers (tests, demos, design).

The utility, attack and privacy numbers are *illustrative*, drawn from simple seeded models so
that every table and figure has something plausible to show; they were not measured. Two things
are real mathematics: the occupancy ratios (PrivacyFace Thm. 1: a cap of margin rho covers
``0.5 * I_{sin^2 rho}((d - 1) / 2, 1 / 2)`` of the unit sphere in R^d, with scipy's regularised
incomplete beta function) and the basic composition ``epsilon * rounds``.

    python -m reports.sample /tmp/report_sample     # writes results.json, report.html, report.md
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
from scipy import stats

from reports.schema import (
    Analyses,
    AttackFinding,
    AuditFinding,
    AuditResult,
    MethodResult,
    PrivacySummary,
    save_results,
    software_versions,
)

__all__ = ["sample_result", "occupancy_ratio", "write_sample"]

SAMPLE_NOTE = "SAMPLE data: every utility, attack and privacy number here is illustrative, not measured."

# name, description, shares, observers, base accuracy, attack strength (binormal separation)
_METHODS = [
    ("local", "each client trains alone; nothing shared", [], {}, 0.80, 0.0),
    (
        "fedpe",
        "FedAvg of backbones; class centers W stay local",
        ["backbone"],
        {"server": ["backbone"], "clients": ["backbone"]},
        0.86,
        0.6,
    ),
    (
        "shared-centers",
        "FedAvg; all class centers W broadcast as extra negatives",
        ["backbone", "class_centers"],
        {"server": ["backbone", "class_centers"], "clients": ["backbone", "class_centers"]},
        0.90,
        3.0,
    ),
    (
        "fedface",
        "FedAvg + spreadout regulariser on all W at the server",
        ["backbone", "class_centers"],
        {"server": ["backbone", "class_centers"], "clients": ["backbone"]},
        0.89,
        2.8,
    ),
    (
        "fedgc",
        "FedAvg + softmax-regulariser gradient step on W (FedGC Alg. 1)",
        ["backbone", "class_centers"],
        {"server": ["backbone", "class_centers"], "clients": ["backbone"]},
        0.895,
        2.9,
    ),
    (
        "fedfr",
        "FedAvg of backbone and public-class embeddings (FedFR)",
        ["backbone", "global_class_embeddings"],
        {"server": ["backbone", "global_class_embeddings"], "clients": ["backbone", "global_class_embeddings"]},
        0.885,
        1.0,
    ),
    (
        "fedfs",
        "pre-trained + global + personal models (FedFS)",
        ["backbone"],
        {"server": ["backbone"], "clients": ["backbone"]},
        0.87,
        0.6,
    ),
    (
        "privacyface",
        "FedAvg + DPLC noisy cluster centers p̂ (ε = 1, ρ = 1.3)",
        ["backbone", "noisy_cluster_centers"],
        {"server": ["backbone", "noisy_cluster_centers"], "clients": ["backbone", "noisy_cluster_centers"]},
        0.885,
        0.9,
    ),
    (
        "privacyface-nonoise",
        "PrivacyFace without noise (clusters p)",
        ["backbone", "cluster_centers"],
        {"server": ["backbone", "cluster_centers"], "clients": ["backbone", "cluster_centers"]},
        0.888,
        1.8,
    ),
    (
        "noisy-centers",
        "every class center W with Gaussian noise (naive)",
        ["backbone", "noisy_class_centers"],
        {"server": ["backbone", "noisy_class_centers"], "clients": ["backbone", "noisy_class_centers"]},
        0.84,
        0.3,
    ),
]

_ROUNDS = 10
_EPSILON = 1.0
_DELTA = 5e-5


def occupancy_ratio(rho: np.ndarray, dim: int) -> np.ndarray:
    """PrivacyFace Thm. 1's occupancy ratio over an array of ρ: `accountants.dplc.occupancy_ratio`
    (the one implementation) applied element-wise."""
    from accountants.dplc import occupancy_ratio as ratio

    rho = np.asarray(rho, dtype=float)
    return np.array([ratio(float(r), dim) for r in rho.reshape(-1)]).reshape(rho.shape)


def _roc(separation: float, points: int = 60) -> dict[str, list[float]]:
    """Binormal ROC: TPR = Phi(separation + Phi^-1(FPR))."""
    fpr = np.concatenate([[0.0], np.logspace(-4, 0, points - 1)])
    tpr = stats.norm.cdf(separation + stats.norm.ppf(np.clip(fpr, 1e-12, 1.0)))
    tpr[0] = 0.0
    return {"fpr": fpr.tolist(), "tpr": np.clip(tpr, 0.0, 1.0).tolist()}


def _faces(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    """Face-ish uint8 images [n, 3, size, size]: skin-coloured ellipse, eyes, mouth, background."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        bg = rng.uniform(40, 200, 3)
        skin = rng.uniform([150, 100, 70], [240, 190, 160])
        img = np.ones((size, size, 3)) * bg
        face = (xx / rng.uniform(0.55, 0.7)) ** 2 + ((yy - 0.05) / rng.uniform(0.75, 0.85)) ** 2 <= 1
        img[face] = skin
        for ex in (-0.3, 0.3):
            eye = (xx - ex) ** 2 + (yy + 0.2) ** 2 <= rng.uniform(0.006, 0.012)
            img[eye] = (30, 30, 40)
        mouth = (np.abs(yy - 0.45) < 0.05) & (np.abs(xx) < rng.uniform(0.2, 0.35))
        img[mouth] = (150, 40, 50)
        img += rng.normal(0, 6, img.shape)
        out[i] = np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return out


def _reconstruct(real: np.ndarray, rng: np.random.Generator, quality: float) -> np.ndarray:
    """A blurred, noisy, colour-shifted version of ``real`` (worse as quality drops)."""
    x = real.astype(float)
    k = max(1, int(round((1 - quality) * 6)))
    for _ in range(k):
        x = (x + np.roll(x, 1, 2) + np.roll(x, -1, 2) + np.roll(x, 1, 3) + np.roll(x, -1, 3)) / 5
    x = quality * x + (1 - quality) * x.mean(axis=(2, 3), keepdims=True) + rng.normal(0, 25 * (1 - quality), x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def _privacy(name: str, rng: np.random.Generator) -> PrivacySummary:
    """The SAMPLE privacy summary of method ``name``: nothing shared, DP noise, or no guarantee."""
    if name == "local":
        return PrivacySummary(delta=None, formal_epsilon={"basic": 0.0}, guarantee="nothing leaves a client")
    if name in ("privacyface", "noisy-centers"):
        return _dp_privacy(name)
    raw = {
        "shared-centers": "none: raw class centers reach the server and every client",
        "fedface": "none: raw class centers reach the server",
        "fedgc": "none: raw class centers reach the server (private from other clients only)",
        "fedfr": "none: public-class embeddings and backbones reach the server",
        "privacyface-nonoise": "none: exact cluster centers p reach everyone",
    }
    return PrivacySummary(
        delta=None,
        formal_epsilon={"basic": math.inf},
        guarantee=raw.get(name, "none: backbone updates reach the server"),
    )


def _dp_privacy(name: str) -> PrivacySummary:
    """SAMPLE privacy of a method adding DP noise (PrivacyFace's DPLC, or noisy class centers)."""
    per_round = _sample_epsilon_per_round()
    formal = {k: v[-1] for k, v in per_round.items()}
    flags = [
        "classic Gaussian calibration used at epsilon >= 1 (proven only for epsilon < 1); "
        "analytic Gaussian calibration also reported"
    ]
    if name == "privacyface":
        guarantee = "(ε, δ)-DP per client for the noisy clusters, as claimed by DPLC Thm. 2"
    else:
        guarantee = "(ε, δ)-DP per class center"
    return PrivacySummary(
        delta=_DELTA,
        formal_epsilon=formal,
        epsilon_per_round=per_round,
        per_party=_sample_per_party(per_round),
        empirical=_sample_empirical(name),
        flags=flags,
        guarantee=guarantee,
    )


def _sample_epsilon_per_round() -> dict[str, list[float]]:
    """Cumulative epsilon per round: basic composition ``epsilon * r``, the advanced composition
    theorem ``min(epsilon r, sqrt(2 r ln(1/delta)) epsilon + r epsilon (e^epsilon - 1))``, and an illustrative RDP curve."""
    rounds = np.arange(1, _ROUNDS + 1)
    return {
        "basic": (_EPSILON * rounds).tolist(),
        "advanced": [
            min(
                _EPSILON * r,
                math.sqrt(2 * r * math.log(1 / _DELTA)) * _EPSILON + r * _EPSILON * (math.exp(_EPSILON) - 1),
            )
            for r in rounds
        ],
        "rdp": (0.45 * _EPSILON * np.sqrt(rounds) * 2.2 + 0.02 * rounds).tolist(),
    }


def _sample_per_party(per_round: dict[str, list[float]]) -> list[dict[str, object]]:
    """Per client and round, the basic-composition epsilon (the per-party rows of a summary)."""
    rounds = np.arange(1, _ROUNDS + 1)
    return [
        {
            "party": f"client:{c}",
            "round": int(r),
            "epsilon": per_round["basic"][r - 1],
            "accountant": "basic",
            "delta": _DELTA,
        }
        for c in range(4)
        for r in rounds
    ]


def _sample_empirical(name: str) -> list[AuditFinding]:
    """SAMPLE empirical audits: the fixed-set mean (Thm. 2 as stated), plus end-to-end DPLC for PrivacyFace."""
    empirical = [
        AuditFinding(
            "fixed-set mean (Thm. 2 as stated)",
            _EPSILON,
            0.41,
            0.95,
            2000,
            "likelihood ratio of cos(p_hat, w*)",
            False,
            _DELTA,
            "SAMPLE",
        )
    ]
    if name == "privacyface":
        empirical.append(
            AuditFinding(
                "end-to-end DPLC (data-chosen S, threshold T)",
                _EPSILON,
                2.7,
                0.95,
                2000,
                "release / no-release and |S| scaling",
                True,
                _DELTA,
                "SAMPLE: selection of S and the threshold are not privatised",
            )
        )
    return empirical


def _attacks(
    name: str,
    shares: list[str],
    strength: float,
    rng: np.random.Generator,
    image_rng: np.random.Generator,
    folder: Path | None,
) -> list[AttackFinding]:
    """SAMPLE attack findings of a method: k-NN and inversion per shared center-like kind, a
    gradient inversion for FedPE, and an outsider's membership attack on the released model."""
    if not shares:
        return []
    center_kinds = [k for k in shares if k != "backbone"]
    out = []
    for kind in center_kinds:
        out.append(_knn_finding(kind, strength, rng))
        out.append(_inversion_finding(name, kind, strength, image_rng, folder))
        out.append(_whitebox_finding(kind, strength))
        out.append(_membership_finding(kind, strength))
    if name == "fedpe":
        out.append(_gradient_finding(image_rng, folder))
        out.append(_granted_gradient_finding())
    knn_membership = AttackFinding(
        "knn",
        "outsider",
        "backbone",
        metrics={"membership_auc": 0.5 + 0.03 * strength},
        notes="SAMPLE: an outsider sees only the released model",
    )
    out.append(knn_membership)
    return out


def _knn_finding(kind: str, strength: float, rng: np.random.Generator) -> AttackFinding:
    """The server's SAMPLE k-NN identity attack on ``kind`` (binormal ROC of separation ``strength``)."""
    top1 = float(np.clip(stats.norm.cdf(strength - 1.6) + rng.normal(0, 0.01), 0, 1))
    auc = float(stats.norm.cdf(strength / math.sqrt(2)))
    return AttackFinding(
        "knn",
        "server",
        kind,
        metrics={
            "top1_rate": top1,
            "topk_rate": min(1.0, top1 * 1.3 + 0.02),
            "membership_auc": auc,
            "tpr@fpr=1e-3": float(stats.norm.cdf(strength + stats.norm.ppf(1e-3))),
        },
        intervals={
            "top1_rate": (max(0.0, top1 - 0.04), min(1.0, top1 + 0.04)),
            "membership_auc": (max(0.0, auc - 0.03), min(1.0, auc + 0.03)),
        },
        roc=_roc(strength),
        success_metric="top1_rate",
        notes="SAMPLE",
    )


def _inversion_finding(
    name: str, kind: str, strength: float, image_rng: np.random.Generator, folder: Path | None
) -> AttackFinding:
    """The server's SAMPLE inversion of ``kind``, with its image grid written under ``folder`` if given."""
    quality = float(np.clip(0.25 + 0.22 * strength, 0.05, 0.95))
    grid = None
    if folder is not None:
        from reports.figures import write_image_grid

        real = _faces(image_rng, 6)
        grid_rel = f"grids/{name}_inversion_{kind}.png"
        write_image_grid(
            folder / grid_rel,
            real,
            _reconstruct(real, image_rng, quality),
            max_images=6,
            title=f"SAMPLE inversion of {kind} ({name})",
        )
        grid = grid_rel
    return AttackFinding(
        "inversion",
        "server",
        kind,
        metrics={
            "rank1": float(np.clip(quality - 0.2, 0, 1)),
            "identity_similarity": quality * 0.8,
            "ssim": quality * 0.5,
            "psnr": 10 + 8 * quality,
            **_sample_decoder_curve(quality),
            **_sample_agreement(quality),
        },
        image_grid=grid,
        success_metric="rank1",
        notes="SAMPLE: GAN decoder; evaluator: a MobileFaceNet; second evaluator: φ0's architecture",
    )


def _sample_decoder_curve(quality: float, epochs: int = 8) -> dict[str, float]:
    """SAMPLE training curve of a GAN decoder (saturating held-out cosine, falling L1; no random draws)."""
    from reports.tables import decoder_curve_key

    out = {}
    for e in range(1, epochs + 1):
        rise = 1 - math.exp(-e / 3)
        values = {
            "heldout_feature_cosine": quality * rise,
            "heldout_l1": 0.17 - 0.04 * rise,
            "l1": 0.18 - 0.05 * rise,
            "feature_loss": 1 - quality * rise,
            "d_loss": 0.6 * math.exp(-e / 2) + 0.05,
            "g_adv_loss": 2.5 + 0.2 * e,
        }
        out.update({decoder_curve_key(k, e): v for k, v in values.items()})
    return out


def _sample_agreement(quality: float, n: int = 20) -> dict[str, float]:
    """SAMPLE verdicts of a second evaluator on ``n`` reconstructions (2×2 counts per FAR, kappa, Spearman)."""
    out: dict[str, float] = {"evaluator_spearman": 0.5 + 0.3 * quality, "evaluator_reconstructions": float(n)}
    for far, share in (("0.001", 0.3), ("0.01", 0.5)):
        both = round(n * quality * share)
        counts = {"both_pass": both, "a_only": 1, "b_only": 1, "neither": n - both - 2}
        p_o, p_a, p_b = (both + counts["neither"]) / n, (both + 1) / n, (both + 1) / n
        p_e = p_a * p_b + (1 - p_a) * (1 - p_b)
        out.update({f"evaluator_{k}@far={far}": float(v) for k, v in counts.items()})
        out[f"evaluator_agreement@far={far}"] = p_o
        out[f"evaluator_kappa@far={far}"] = (p_o - p_e) / (1 - p_e)
        out[f"second_evaluator_success@far={far}"] = p_b
        out[f"evaluator_genuine_accept@far={far}"] = 2 * share * 0.5
        out[f"second_evaluator_genuine_accept@far={far}"] = 2 * share * 0.4
    return out


def _whitebox_finding(kind: str, strength: float) -> AttackFinding:
    """The server's SAMPLE white-box inversion of ``kind`` beside the decoder (no random draws)."""
    quality = float(np.clip(0.2 + 0.2 * strength, 0.05, 0.95))
    diff = quality * 0.8 - float(np.clip(0.25 + 0.22 * strength, 0.05, 0.95)) * 0.8
    return AttackFinding(
        "inversion",
        "server",
        kind,
        metrics={
            "rank1": float(np.clip(quality - 0.25, 0, 1)),
            "identity_similarity": quality * 0.8,
            "whitebox_iterations": 100.0,
            "whitebox_restarts": 2.0,
            "whitebox_minus_decoder_identity_similarity": diff,
            "comparison_resolved": 0.0,
            **_sample_agreement(quality),
        },
        intervals={"whitebox_minus_decoder_identity_similarity": (diff - 0.05, diff + 0.05)},
        success_metric="rank1",
        notes="SAMPLE: white-box optimisation inversion of the same vectors, a lower bound; "
        "vs the decoder: not resolved (the interval covers 0)",
    )


def _granted_gradient_finding() -> AttackFinding:
    """FedPE's SAMPLE probe given the true labels: the upper bound beside the attacker's row."""
    return AttackFinding(
        "gradient",
        "server",
        "backbone",
        metrics={"psnr": 18.1, "ssim": 0.45, "rank1": 0.5, "label_accuracy": 1.0, "upper_bound": 1.0},
        success_metric="rank1",
        notes="SAMPLE: the same probe given the true labels — an upper bound, not a result of this attacker",
    )


def _membership_finding(kind: str, strength: float) -> AttackFinding:
    """The server's SAMPLE membership game on ``kind`` (no random draws: the other sections'
    numbers do not move with it)."""
    tpr = float(np.clip(0.02 + 0.4 * strength, 0, 1))
    oracle = float(np.clip(tpr + 0.3, 0, 1))
    norm = (tpr - 0.01) / (oracle - 0.01)
    metrics = {
        "tpr@fpr=0.01": tpr,
        "oracle_tpr@fpr=0.01": oracle,
        "null_tpr@fpr=0.01": 0.01,
        "normalised_tpr@fpr=0.01": norm,
        "global_threshold_tpr@fpr=0.01": tpr / 2,
        "auroc": 0.5 + 0.4 * strength,
        "num_observations": 80.0,
        "nonmembers": 2000.0,
    }
    intervals = {
        "tpr@fpr=0.01": (max(0.0, tpr - 0.08), min(1.0, tpr + 0.08)),
        "normalised_tpr@fpr=0.01": (norm - 0.2, norm + 0.2),
    }
    return AttackFinding(
        "membership", "server", kind, metrics=metrics, intervals=intervals, success_metric="tpr@fpr=0.01",
        notes="SAMPLE: offline LiRA, 2,000 non-members (FPR 1e-3 unsupported)",
    )  # fmt: skip


def _gradient_finding(image_rng: np.random.Generator, folder: Path | None) -> AttackFinding:
    """FedPE's SAMPLE gradient inversion of one client's update, with its grid under ``folder`` if given."""
    psnr = 17.5
    grid = None
    if folder is not None:
        from reports.figures import write_image_grid

        real = _faces(image_rng, 4)
        grid = "grids/fedpe_gradient_client0.png"
        write_image_grid(
            folder / grid,
            real,
            {"1 step": _reconstruct(real, image_rng, 0.8), "3 steps": _reconstruct(real, image_rng, 0.5)},
            title="SAMPLE gradient inversion, client 0",
        )
    return AttackFinding(
        "gradient",
        "server",
        "backbone",
        metrics={"psnr": psnr, "ssim": 0.41, "rank1": 0.5, "label_accuracy": 1.0},
        image_grid=grid,
        success_metric="rank1",
        notes="SAMPLE: one client's single update, 2 images",
    )


def sample_result(folder: str | os.PathLike[str] | None = None, seed: int = 0) -> AuditResult:
    """An `AuditResult` with every section filled with SAMPLE numbers.

    With ``folder``, the attacks' image grids are written under ``folder/grids/`` (their paths in
    the result are relative to ``folder``); without it, ``image_grid`` stays None.
    """
    rng = np.random.default_rng([seed, 0])
    image_rng = np.random.default_rng([seed, 1])  # separate, so the numbers do not depend on ``folder``
    base = None if folder is None else Path(folder)
    methods = [_sample_method(row, rng, image_rng, base) for row in _METHODS]
    analyses = _sample_analyses(rng)
    return AuditResult(
        title="SAMPLE audit — illustrative numbers, not measured",
        methods=methods,
        scenario=_sample_scenario(seed),
        analyses=analyses,
        flags=[SAMPLE_NOTE],
        software=software_versions(),
        timings={"data": 4.1, "pretrain": 95.0, "methods": 240.5, "attacks": 120.2, "report": 6.3},
        created="2025-01-01T00:00:00+00:00",
    )


def _sample_method(
    row: tuple, rng: np.random.Generator, image_rng: np.random.Generator, base: Path | None
) -> MethodResult:
    """One `_METHODS` row as a `MethodResult` with SAMPLE utility, privacy and attacks."""
    name, description, shares, observers, acc, strength = row
    utility, far = _sample_utility(acc, rng)
    personal = (
        {}
        if name not in ("fedfr", "fedfs", "local")
        else {"client_tar@far=1e-2": float(far[1e-2] + 0.05), "client_auroc": float(min(0.999, acc + 0.09))}
    )
    per_round = [
        {"accuracy": float(acc - 0.09 * math.exp(-r / 2.5) + rng.normal(0, 0.003))} for r in range(1, _ROUNDS + 1)
    ]
    bytes_up = 0.0 if not shares else 4 * (180_000 + 512 * (60 if len(shares) > 1 else 0))
    return MethodResult(
        name=name,
        description=description,
        shares=list(shares),
        observers=dict(observers),
        utility=utility,
        personalised_utility=personal,
        utility_per_round=per_round,
        bytes_per_round={
            "client_upload": bytes_up,
            "server_broadcast": bytes_up * (4 if len(shares) > 1 else 1),
        },
        privacy=_privacy(name, rng),
        attacks=_attacks(name, shares, strength, rng, image_rng, base),
        params={"epsilon": _EPSILON, "rho": 1.3} if name in ("privacyface", "noisy-centers") else {},
    )


def _sample_utility(acc: float, rng: np.random.Generator) -> tuple[dict[str, float], dict[float, float]]:
    """SAMPLE global utility around accuracy ``acc`` (TAR at FAR 1e-1 and 1e-2), and those TARs by FAR."""
    far = {f: float(np.clip(acc - 0.1 - 0.22 * (-math.log10(f) - 1) + rng.normal(0, 0.01), 0, 1)) for f in (1e-1, 1e-2)}
    utility = {
        "accuracy": float(acc + rng.normal(0, 0.004)),
        "auroc": float(min(0.999, acc + 0.07)),
        "tar@far=1e-1": far[1e-1],
        "tar@far=1e-2": far[1e-2],
        "tar@far=1e-3": math.nan,
    }  # unsupported at the sample's pair count
    return utility, far


def _sample_analyses(rng: np.random.Generator) -> Analyses:
    """Occupancy ratios (PrivacyFace Thm. 1, computed), SAMPLE cos(p, p_hat) draws and epsilon versus rounds."""
    rho = np.linspace(0.8, 1.6, 41)
    occupancy = {str(d): {"rho": rho.tolist(), "ratio": occupancy_ratio(rho, d).tolist()} for d in (64, 128, 256, 512)}
    cos = []
    for eps, r, q in [(1.0, 1.1, 1), (1.0, 1.2, 1), (1.0, 1.3, 1), (1.0, 1.4, 1), (0.33, 1.3, 1), (3.0, 1.3, 1)]:
        centre = 0.95 - 0.5 * (r - 1.1) / eps**0.5
        values = np.tanh(np.arctanh(np.clip(centre, -0.99, 0.99)) + rng.normal(0, 0.25 / eps**0.5, 300))
        cos.append({"epsilon": eps, "rho": r, "queries": q, "values": values.tolist(), "calibration": "analytic"})
    rounds: list[float] = list(range(1, _ROUNDS + 1))
    return Analyses(
        occupancy=occupancy,
        cos_p_phat=cos,
        epsilon_vs_rounds={
            "basic": {"rounds": rounds, "epsilon": [_EPSILON * r for r in rounds]},
            "rdp": {"rounds": rounds, "epsilon": [0.99 * math.sqrt(r) + 0.02 * r for r in rounds]},
        },
        extra={"note": "occupancy ratios computed from PrivacyFace Thm. 1; everything else is SAMPLE"},
    )


def _sample_scenario(seed: int) -> dict[str, object]:
    """The SAMPLE scenario block (demo scale, synthetic data, every method and attack)."""
    return {
        "name": "SAMPLE scenario",
        "scale": "demo",
        "seed": seed,
        "device": "cpu",
        "data": {"kind": "synthetic", "resolution": 32, "identities": 400, "images_per_identity": 12},
        "partition": {"kind": "by_group", "clients": 4},
        "methods": [m[0] for m in _METHODS],
        "dp": {"epsilon": _EPSILON, "delta": _DELTA, "rho": 1.3, "cluster_size": 512},
        "attacks": ["knn", "inversion", "gradient"],
    }


def write_sample(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the sample's ``results.json``, ``report.html``, ``report.md`` and figures to ``folder``."""
    from reports.html import write_report

    folder = Path(folder)
    result = sample_result(folder, seed=seed)
    save_results(result, folder)
    return write_report(result, folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the SAMPLE report (illustrative numbers).")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_sample(args.folder, args.seed))


if __name__ == "__main__":
    main()
