"""Membership inference at low false-positive rates: LiRA with attacker-simulated shadow releases.

Threat. A client releases vectors (class centers ``W_k``, PrivacyFace's DP-sanitised cluster
centers ``p̂``; the release mechanism is public). The attacker holds a few query images' embeddings
of a candidate identity and asks: was this identity in the client's data behind the release?
A single global threshold on "max cosine to any released vector" ignores that some identities
sit close to many others (high cosine even when absent) and some far from all; at FPR 1e-3 it finds
nothing. The likelihood-ratio attack (LiRA) of Carlini, Chien, Nasr, Song, Terzis & Tramèr (2022),
"Membership Inference Attacks From First Principles" (IEEE S&P), calibrates each target separately:

1. `shadow_statistics`: the attacker re-runs the public release mechanism ``n_shadows`` times with
   the target IN and ``n_shadows`` times OUT (the shadow "models" of Carlini et al. §IV are cheap
   here: a release is a mean of features, or a DPLC release with fresh noise), and computes the
   membership statistic (`membership_statistic`) on each.
2. `lira_scores`: fits a Gaussian to the IN and to the OUT statistics of every target and scores
   the statistic observed on the real release by the log likelihood ratio (online LiRA), or by the
   one-sided tail of the OUT Gaussian alone (offline LiRA); both from §IV and Algorithm 1.
3. `tpr_at_fpr` / `membership_game`: TPR at fixed low FPRs with thresholds chosen on the
   non-member scores, Clopper–Pearson intervals (`attacks.metrics.clopper_pearson`, which wraps the
   one implementation in `accountants.audit`), an explicit support rule, AUROC, the uncalibrated
   global-threshold baseline and the null (shuffled membership) beside it (DESIGN §8).

The unit of analysis is the target identity. The Clopper–Pearson intervals treat targets as
independent trials, which holds when each target's observed release is drawn independently (one
target per client, or a simulated game); targets that share one real release are correlated and
need a cluster bootstrap over releases instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm

from attacks.metrics import clopper_pearson, roc_auc, tpr_at_fpr_point

__all__ = [
    "MIN_FALSE_POSITIVES",
    "membership_statistic",
    "shadow_statistics",
    "lira_scores",
    "tpr_at_fpr",
    "membership_game",
]

#: Support rule of `tpr_at_fpr`: an FPR is reported only when the non-members allow at least this
#: many false positives at it (``n_nonmembers >= ceil(MIN_FALSE_POSITIVES / fpr)``).
MIN_FALSE_POSITIVES = 10

# Cosines are clipped to [-1 + _COS_MARGIN, 1 - _COS_MARGIN] before atanh so that a released row
# identical to the query (cosine 1 in floating point) maps to a large finite statistic (~14.2).
_COS_MARGIN = 1e-12


# ------------------------------------------------------------------------------ the statistic
def _query_template(query_embeddings: torch.Tensor) -> torch.Tensor:
    """The target's template: the L2-normalised mean of its L2-normalised query embeddings (float64)."""
    q = torch.as_tensor(query_embeddings)
    if q.dim() == 1:
        q = q.unsqueeze(0)
    if q.dim() != 2 or q.shape[0] == 0 or q.shape[1] == 0:
        raise ValueError(f"query_embeddings must be a non-empty [q, d] array, got shape {tuple(q.shape)}")
    q = q.to(torch.float64)
    if not torch.isfinite(q).all():
        raise ValueError("query_embeddings must be finite, got NaN or inf entries")
    template = F.normalize(F.normalize(q, dim=1).mean(0), dim=0)
    if not template.norm() > 0:
        raise ValueError("query_embeddings average to the zero vector; the target has no direction")
    return template


def _check_release(release: Any, dim: int, where: str) -> torch.Tensor:
    if not isinstance(release, torch.Tensor):
        raise ValueError(f"{where} must be a torch.Tensor [m, d], got {type(release).__name__}")
    if release.dim() != 2 or release.shape[0] == 0 or release.shape[1] != dim:
        raise ValueError(f"{where} must be a non-empty [m, d={dim}] tensor, got shape {tuple(release.shape)}")
    if not torch.isfinite(release).all():
        raise ValueError(f"{where} must be finite, got NaN or inf entries")
    return release.to(torch.float64)


def _statistic(template: torch.Tensor, release: torch.Tensor) -> float:
    cos = (F.normalize(release, dim=1) @ template).max().clamp(-1 + _COS_MARGIN, 1 - _COS_MARGIN)
    return float(torch.atanh(cos))


def membership_statistic(query_embeddings: torch.Tensor, release: torch.Tensor) -> float:
    """``atanh(max_j cos(q̄, r_j))``: the membership statistic of one target against one release.

    ``q̄`` is the L2-normalised mean of the target's L2-normalised query embeddings ``[q, d]`` (or
    one ``[d]`` embedding); ``r_j`` are the released rows ``[m, d]`` (an all-zero row has cosine 0).

    Why atanh. LiRA does not fit Gaussians to raw confidences ``p`` in (0, 1) but to their logit
    ``log(p / (1 - p))`` (Carlini et al. 2022, §IV), which is closer to Gaussian. A cosine ``c``
    lies in [-1, 1]; ``atanh(c) = ½ log((1 + c) / (1 - c))`` is half the logit of ``(1 + c) / 2``,
    i.e. LiRA's transform up to a factor that a Gaussian fit absorbs. It is also Fisher's
    z-transform, which makes a correlation coefficient approximately Gaussian with a variance that
    no longer depends on its mean, and it stretches the region near ``c = 1`` where a member's
    release sits instead of compressing it.
    """
    template = _query_template(query_embeddings)
    return _statistic(template, _check_release(release, template.shape[0], "release"))


def shadow_statistics(
    query_embeddings: torch.Tensor,
    simulate_release: Callable[[bool, torch.Generator], torch.Tensor],
    n_shadows: int,
    rng: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The attacker's shadow statistics of one target: ``(in_stats [n_shadows], out_stats [n_shadows])``.

    ``simulate_release(include_target, generator)`` re-runs the public release mechanism with the
    target's data included or not (e.g. a client's class center computed from features with and
    without the target identity, or a DPLC release with fresh noise) and returns the released rows
    ``[m, d]``; every randomness it needs must come from ``generator``. The shadows are drawn in the
    order IN, OUT, IN, OUT, ... from the one ``rng``, so the same seed gives the same statistics.
    Each statistic is `membership_statistic` (atanh of the max cosine). These are the samples from
    which Carlini et al. (2022), Algorithm 1, estimate ``μ_in, σ_in, μ_out, σ_out`` per target.
    """
    if isinstance(n_shadows, bool) or not isinstance(n_shadows, (int, np.integer)) or n_shadows < 2:
        raise ValueError(f"n_shadows must be an integer >= 2 (a variance needs two samples), got {n_shadows!r}")
    if not isinstance(rng, torch.Generator):
        raise ValueError(f"rng must be a torch.Generator, got {type(rng).__name__}")
    template = _query_template(query_embeddings)
    dim = template.shape[0]
    stats = np.empty((2, int(n_shadows)), dtype=np.float64)
    for i in range(int(n_shadows)):
        for side, include in enumerate((True, False)):
            where = f"simulate_release(include_target={include}) (shadow {i})"
            stats[side, i] = _statistic(template, _check_release(simulate_release(include, rng), dim, where))
    return stats[0], stats[1]


# ------------------------------------------------------------------------------ LiRA
def _finite_array(name: str, values: Any, ndim: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {arr.shape}")
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        where = tuple(int(i) for i in bad[0])
        raise ValueError(f"{name} must be finite, got {arr[where]} at index {where if ndim > 1 else where[0]}")
    return arr


def _shadow_matrix(name: str, values: Any, n_targets: int) -> np.ndarray:
    arr = _finite_array(name, values, 2)
    if arr.shape[0] != n_targets or arr.shape[1] < 2:
        raise ValueError(
            f"{name} must be [n_targets={n_targets}, n_shadows >= 2] (one row per target), got shape {arr.shape}"
        )
    return arr


def _gaussian_fit(stats: np.ndarray, fixed_variance: bool, min_std: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-target means and standard deviations (unbiased variances, ``ddof = 1``). With
    ``fixed_variance`` one pooled within-target variance for all targets:
    ``σ² = Σ_t Σ_i (s_ti − μ_t)² / (T (n − 1))``."""
    mu = stats.mean(axis=1)
    if fixed_variance:
        pooled = float(((stats - mu[:, None]) ** 2).sum() / (stats.shape[0] * (stats.shape[1] - 1)))
        var = np.full_like(mu, pooled)
    else:
        var = stats.var(axis=1, ddof=1)
    return mu, np.maximum(np.sqrt(var), min_std)


def lira_scores(
    target_stat: Any,
    in_stats: Any,
    out_stats: Any,
    *,
    online: bool = True,
    fixed_variance: bool = False,
    min_std: float = 1e-6,
) -> np.ndarray:
    """Per-target LiRA scores (higher = more likely a member), Carlini et al. (2022) §IV, Alg. 1.

    Args:
        target_stat: ``[T]`` the statistic observed on the real release, one per target.
        in_stats, out_stats: ``[T, n]`` shadow statistics with the target IN / OUT (`shadow_statistics`).
            ``in_stats`` is not used (may be None) when ``online=False``.
        online: online LiRA — the log likelihood ratio of the two fitted Gaussians,
            ``log Λ = log N(s; μ_in, σ_in²) − log N(s; μ_out, σ_out²)``
            (Carlini et al. Alg. 1, the Gaussian form of ``Λ = p(s | Q_in) / p(s | Q_out)``).
            Offline LiRA (``False``): only the OUT Gaussian, the one-sided test
            ``Λ = 1 − Pr[Z > s], Z ~ N(μ_out, σ_out²)`` (their offline variant, §IV); returned as
            ``−log Pr[Z > s]``, a monotone transform of their Λ that does not saturate at 1 in floating point.
        fixed_variance: one global variance per side (IN, OUT), pooled over all targets' within-target
            deviations, instead of one per target: Carlini et al.'s fix when there are few shadows
            (§IV: with few shadows a per-target variance is too noisy).
        min_std: floor of every standard deviation (a deterministic mechanism gives zero variance;
            the floor turns the resulting infinite ratio into a very large finite one).

    Means and variances are the per-target sample mean and unbiased (``ddof = 1``) variance.
    """
    if not (isinstance(min_std, (int, float)) and math.isfinite(min_std) and min_std > 0):
        raise ValueError(f"min_std must be a finite number > 0, got {min_std!r}")
    obs = _finite_array("target_stat", np.atleast_1d(np.asarray(target_stat, dtype=np.float64)), 1)
    if obs.shape[0] == 0:
        raise ValueError("target_stat must hold at least one target, got 0")
    mu_out, sd_out = _gaussian_fit(_shadow_matrix("out_stats", out_stats, len(obs)), fixed_variance, min_std)
    if not online:
        return -np.asarray(norm.logsf(obs, loc=mu_out, scale=sd_out), dtype=np.float64)
    if in_stats is None:
        raise ValueError("in_stats is None, but online LiRA needs the IN shadow statistics (or pass online=False)")
    mu_in, sd_in = _gaussian_fit(_shadow_matrix("in_stats", in_stats, len(obs)), fixed_variance, min_std)
    return np.asarray(norm.logpdf(obs, mu_in, sd_in) - norm.logpdf(obs, mu_out, sd_out), dtype=np.float64)


# ------------------------------------------------------------------------------ evaluation
def _check_fprs(fprs: Sequence[float]) -> list[float]:
    out = []
    for f in fprs:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1:
            raise ValueError(f"fprs must lie in the open interval (0, 1), got {f!r}")
        out.append(float(f))
    if not out:
        raise ValueError("fprs must name at least one false-positive rate, got none")
    return out


def _rate_at(pos: np.ndarray, neg: np.ndarray, fpr: float, confidence: float) -> dict[str, Any]:
    """One FPR's entry of `tpr_at_fpr` (see there for the rule)."""
    need = int(math.ceil(MIN_FALSE_POSITIVES / fpr - 1e-9))
    entry: dict[str, Any] = {"target_fpr": fpr, "min_nonmembers": need, "supported": len(neg) >= need}
    if not entry["supported"]:
        entry.update(
            unsupported_reason=(
                f"{len(neg)} non-members allow {math.floor(fpr * len(neg) + 1e-9)} false positives at "
                f"FPR {fpr:g}; the threshold would rest on fewer than {MIN_FALSE_POSITIVES} non-member "
                f"scores, so at least {need} non-members are needed"
            ),
            tpr=None,
            tpr_ci=None,
            threshold=None,
            achieved_fpr=None,
            achieved_fpr_ci=None,
            true_positives=None,
            false_positives=None,
        )
        return entry
    tpr, threshold, achieved = tpr_at_fpr_point(pos, neg, fpr)
    tp, fp = int((pos >= threshold).sum()), int((neg >= threshold).sum())
    entry.update(
        unsupported_reason=None,
        tpr=tpr,
        tpr_ci=clopper_pearson(tp, len(pos), confidence),
        threshold=threshold,
        achieved_fpr=achieved,
        achieved_fpr_ci=clopper_pearson(fp, len(neg), confidence),
        true_positives=tp,
        false_positives=fp,
    )
    return entry


def tpr_at_fpr(
    member_scores: Any,
    nonmember_scores: Any,
    fprs: Sequence[float] = (1e-3, 1e-2),
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """TPR at each target FPR, thresholded on the non-member scores, with exact intervals and AUROC.

    Threshold: with ``k = floor(fpr · N)`` allowed false positives among the ``N`` non-members, the
    threshold sits just above the ``(k+1)``-th largest non-member score (`attacks.metrics.
    tpr_at_fpr_point`; a score tied with it counts as "non-member"), so the realised FPR is ≤ fpr.
    TPR and realised FPR carry two-sided Clopper–Pearson intervals at ``confidence``
    (`attacks.metrics.clopper_pearson`), conditional on the threshold.

    Support rule (one rule, the repo's `attacks.metrics.threshold_at_far` rule): an FPR is supported
    iff ``N >= ceil(10 / fpr)``, i.e. the threshold is an empirical ``1 − fpr`` quantile with
    ``k = floor(fpr · N) >= 10`` non-member scores allowed above it. Such a quantile resting on k
    exceedances has a relative error of about ``1 / sqrt(k)``; with k < 10 the realised FPR can be
    off by more than a third, and with k = 0 the threshold is just the largest non-member score.
    An unsupported FPR reports ``supported=False``, an ``unsupported_reason`` and ``None`` for every
    rate — never a number.

    Returns ``{"auroc", "num_members", "num_nonmembers", "confidence", "support_rule", "at_fpr"}``
    where ``at_fpr`` maps ``f"{fpr:g}"`` to ``{target_fpr, supported, unsupported_reason,
    min_nonmembers, tpr, tpr_ci, threshold, achieved_fpr, achieved_fpr_ci, true_positives,
    false_positives}``.
    """
    pos = _finite_array("member_scores", member_scores, 1)
    neg = _finite_array("nonmember_scores", nonmember_scores, 1)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"need member and non-member scores, got {len(pos)} members and {len(neg)} non-members")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    checked = _check_fprs(fprs)
    labels = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    auroc = roc_auc(np.concatenate([pos, neg]), labels)[3]
    return {
        "auroc": auroc,
        "num_members": int(len(pos)),
        "num_nonmembers": int(len(neg)),
        "confidence": float(confidence),
        "support_rule": f"non-members >= ceil({MIN_FALSE_POSITIVES} / fpr)",
        "at_fpr": {f"{f:g}": _rate_at(pos, neg, f, float(confidence)) for f in checked},
    }


def membership_game(
    observed_stats: Any,
    in_stats: Any,
    out_stats: Any,
    is_member: Any,
    *,
    online: bool = True,
    fixed_variance: bool = False,
    fprs: Sequence[float] = (1e-3, 1e-2),
    confidence: float = 0.95,
    rng: np.random.Generator | int = 0,
) -> dict[str, Any]:
    """Score a planted-membership game with LiRA and put the result beside its baseline and null.

    Args:
        observed_stats: ``[T]`` each target's statistic on its observed release (`membership_statistic`).
        in_stats, out_stats: ``[T, n]`` its shadow statistics (`shadow_statistics`); ``in_stats`` unused
            (may be None) when ``online=False``.
        is_member: ``[T]`` ground truth (the attacker never sees it): was the target in the release.
        online, fixed_variance: as `lira_scores`.
        rng: generator (or seed) of the null's label shuffle.

    Returns `tpr_at_fpr`'s dict for the LiRA scores plus ``attack`` (``"lira-online"`` /
    ``"lira-offline"``), ``fixed_variance``, ``unit`` (``"identity"``: one target identity is one
    trial), ``scores`` (``[T]`` LiRA scores), ``global_threshold`` (`tpr_at_fpr` of the raw observed
    statistic with one threshold for all targets: the uncalibrated attack LiRA replaces) and ``null``
    (`tpr_at_fpr` of the same LiRA scores under a uniformly random permutation of the membership
    labels: scores independent of membership, so its TPR ≈ FPR and its AUROC ≈ 0.5 — the floor).
    """
    labels = np.asarray(is_member)
    obs = _finite_array("observed_stats", observed_stats, 1)
    if labels.shape != obs.shape:
        raise ValueError(f"is_member must have one entry per target ({obs.shape[0]}), got shape {labels.shape}")
    if labels.dtype != bool and not set(np.unique(labels).tolist()) <= {0, 1}:
        raise ValueError(f"is_member must be boolean (or 0/1), got values {sorted(set(labels.tolist()))[:5]}")
    labels = labels.astype(bool)
    scores = lira_scores(obs, in_stats, out_stats, online=online, fixed_variance=fixed_variance)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    shuffled = gen.permutation(labels)
    result = tpr_at_fpr(scores[labels], scores[~labels], fprs, confidence=confidence)
    result.update(
        attack="lira-online" if online else "lira-offline",
        fixed_variance=bool(fixed_variance),
        unit="identity",
        scores=scores,
        global_threshold=tpr_at_fpr(obs[labels], obs[~labels], fprs, confidence=confidence),
        null=tpr_at_fpr(scores[shuffled], scores[~shuffled], fprs, confidence=confidence),
    )
    return result
