"""Scores of what an attack recovered, measured against ground truth the attacker never saw.

Image similarity: PSNR and SSIM (Wang et al. 2004, "Image quality assessment: from error
visibility to structural similarity", Eq. 13 with an 11×11 Gaussian window, σ = 1.5, K1 = 0.01,
K2 = 0.03). Identity: cosine between the *independent* evaluation model's embedding of a
reconstruction and the true identity's mean embedding, and the rank-1 match of a reconstruction
against a gallery (a face version of breaching's "image identifiability precision").
Membership: ROC / AUC (scikit-learn) and the true-positive rate at a fixed false-positive rate with
a confidence interval (bootstrap over both classes, or Clopper–Pearson on the TPR at the chosen
threshold) — at low FPR the point estimate alone says little.

Ceilings and floors (DESIGN §8, "Attack rates"): `normalised_success` puts an attack's success
beside an oracle (the same attacker on the true, noise-free data: the ceiling) and a null (the
same attacker on random vectors: the floor), ``(raw - null) / (oracle - null)``, with a percentile
bootstrap over the *independent units* (a released vector's source identity or client), never
over correlated samples. `threshold_at_far` calibrates a verifier's similarity threshold at a
fixed false-accept rate on genuine / impostor scores and says whether the impostor count supports
that rate (about ``10 / far`` impostors or more).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "psnr",
    "ssim",
    "gaussian_window",
    "cosine_rows",
    "identity_similarity",
    "rank1_match",
    "TprAtFpr",
    "tpr_at_fpr",
    "tpr_at_fpr_point",
    "clopper_pearson",
    "roc_auc",
    "auc_bootstrap_ci",
    "match_reconstructions",
    "NormalisedSuccess",
    "normalised_success",
    "ceiling_summary",
    "random_unit_vectors",
    "FarThreshold",
    "threshold_at_far",
]


def _check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(x.shape)}")


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(range² / MSE)`` in dB ([N] float64).

    Identical images give ``inf``.
    """
    _check_images(x, y)
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-d Gaussian window of odd ``size`` (float64)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be an odd integer >= 1, got {size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(r**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Mean structural similarity per image ([N] float64), Eq. 13 of Wang et al. (2004).

    Local statistics use a separable Gaussian window over the *valid* region (no padding), the
    population (biased) variances, each channel separately; the map is averaged over channels and
    positions. Images smaller than the window use a window of the image size (still odd).
    """
    _check_images(x, y)
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    size = min(window_size, x.shape[-1], x.shape[-2])
    if size % 2 == 0:
        size -= 1
    win = gaussian_window(size, sigma).to(x.device)
    c = x.shape[1]
    wx = win.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    wy = win.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wx, groups=c), wy, groups=c)

    xd, yd = x.double(), y.double()
    mu_x, mu_y = blur(xd), blur(yd)
    sxx = blur(xd * xd) - mu_x**2
    syy = blur(yd * yd) - mu_y**2
    sxy = blur(xd * yd) - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return smap.flatten(1).mean(1)


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two ``[N, d]`` arrays."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"cosine_rows needs two [N, d] arrays of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return F.cosine_similarity(a.float(), b.float(), dim=1, eps=1e-12)


def identity_similarity(
    reconstruction_embeddings: torch.Tensor,
    identity_ids: torch.Tensor,
    reference_embeddings: torch.Tensor,
    reference_ids: torch.Tensor,
) -> torch.Tensor:
    """Cosine between each reconstruction's embedding and the mean embedding of its true identity.

    All embeddings must come from the same *independent* evaluation model (not the attacked one).
    ``reference_embeddings`` / ``reference_ids`` are real images of the identities (ground truth);
    the identity template is the normalised mean of the identity's normalised embeddings.
    """
    rec = F.normalize(reconstruction_embeddings.float(), dim=1)
    ref = F.normalize(reference_embeddings.float(), dim=1)
    if rec.shape[1] != ref.shape[1]:
        raise ValueError(f"embedding dimensions differ: reconstructions d={rec.shape[1]}, references d={ref.shape[1]}")
    ids = identity_ids.to(torch.int64).cpu()
    ref_ids = reference_ids.to(torch.int64).cpu()
    missing = sorted(set(ids.tolist()) - set(ref_ids.tolist()))
    if missing:
        raise ValueError(f"identity_ids {missing[:5]} have no reference embedding")
    uniq, inverse = torch.unique(ref_ids, return_inverse=True)
    templates = torch.zeros(len(uniq), ref.shape[1], dtype=ref.dtype, device=ref.device)
    templates.index_add_(0, inverse.to(ref.device), ref)
    templates = F.normalize(templates, dim=1)
    rows = torch.searchsorted(uniq, ids).to(ref.device)
    return (rec * templates[rows]).sum(1)


def rank1_match(
    query_embeddings: torch.Tensor,
    true_ids: torch.Tensor | list[set[int]],
    gallery_embeddings: torch.Tensor,
    gallery_ids: torch.Tensor,
    block_size: int = 4096,
) -> torch.Tensor:
    """Whether each query's nearest gallery image (cosine) belongs to its true identity.

    ``true_ids`` is one id per query, or a set of acceptable ids per query (a cluster center
    covering several identities). Returns a bool tensor ``[Q]``.
    """
    from attacks.search import topk_cosine

    if len(true_ids) != query_embeddings.shape[0]:
        raise ValueError(f"true_ids has {len(true_ids)} entries for {query_embeddings.shape[0]} queries")
    _, idx = topk_cosine(query_embeddings, gallery_embeddings, k=1, query_block=block_size)
    nearest = gallery_ids.to(torch.int64).cpu()[idx[:, 0].cpu()]
    if isinstance(true_ids, torch.Tensor):
        return nearest == true_ids.to(torch.int64).cpu()
    return torch.tensor([int(n) in s for n, s in zip(nearest.tolist(), true_ids)], dtype=torch.bool)


def match_reconstructions(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """Order of ``reconstructions`` that best matches ``originals`` (min total MSE; Hungarian).

    A batch reconstruction comes back in an arbitrary order; scores pair each original with one
    reconstruction first, as breaching and Geiping et al. do. Returns an index ``[N]`` such that
    ``reconstructions[index]`` lines up with ``originals``.
    """
    from scipy.optimize import linear_sum_assignment

    _check_images(reconstructions, originals)
    cost = torch.cdist(originals.flatten(1).double(), reconstructions.flatten(1).double()) ** 2
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    order = np.empty(len(rows), dtype=np.int64)
    order[rows] = cols
    return torch.from_numpy(order)


@dataclass
class TprAtFpr:
    """True-positive rate at a target false-positive rate, with a confidence interval.

    ``supported`` is False when the negatives are too few for the target (fewer than 1/fpr): the
    rate is then the one at zero false positives and says nothing about that FPR.
    """

    target_fpr: float
    tpr: float
    ci_low: float
    ci_high: float
    confidence: float
    method: str
    threshold: float
    achieved_fpr: float
    num_positives: int
    num_negatives: int
    supported: bool

    def to_dict(self) -> dict[str, float | int | bool | str]:
        return dict(self.__dict__)


def _validate_binary(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores ({scores.shape[0]}) and labels ({labels.shape[0]}) must have the same length")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    uniq = set(np.unique(labels).tolist())
    if not uniq <= {0, 1}:
        raise ValueError(f"labels must be 0/1 (or bool), got values {sorted(uniq)[:5]}")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        raise ValueError(
            f"labels need both classes, got {int(labels.sum())} positives and {int((~labels).sum())} negatives"
        )
    return scores, labels


def tpr_at_fpr_point(pos: np.ndarray, neg: np.ndarray, fpr: float) -> tuple[float, float, float]:
    """Largest TPR over thresholds whose FPR ≤ ``fpr`` (scores ≥ threshold are called positive).

    Returns ``(tpr, threshold, achieved_fpr)``. With ``k = floor(fpr · #neg)`` allowed false
    positives, the best threshold sits just above the (k+1)-th largest negative score; ties are
    counted against the attacker (a positive tied with that negative is not detected).
    """
    neg_sorted = np.sort(neg)[::-1]
    k = int(math.floor(fpr * len(neg) + 1e-9))
    if k >= len(neg):
        return 1.0, float(min(neg.min(), pos.min())), 1.0
    cut = neg_sorted[k]
    tpr = float(np.mean(pos > cut))
    achieved = float(np.mean(neg > cut))
    return tpr, float(np.nextafter(cut, np.inf)), achieved


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided binomial confidence interval for a proportion: the two
    one-sided bounds of `accountants.audit` (the one implementation) at (1 + confidence) / 2."""
    from accountants.audit import clopper_pearson_lower, clopper_pearson_upper

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials={trials}], got {successes}")
    one_sided = (1 + confidence) / 2
    return float(clopper_pearson_lower(successes, trials, one_sided)), float(
        clopper_pearson_upper(successes, trials, one_sided)
    )


def tpr_at_fpr(
    scores: np.ndarray,
    labels: np.ndarray,
    fpr: float,
    confidence: float = 0.95,
    method: str = "bootstrap",
    n_bootstrap: int = 200,
    seed: int = 0,
) -> TprAtFpr:
    """TPR at a fixed FPR with a confidence interval.

    ``method="bootstrap"``: percentile interval over ``n_bootstrap`` stratified resamples of
    positives and negatives (captures the uncertainty of the threshold too, which dominates at low
    FPR). ``method="clopper-pearson"``: exact binomial interval of the TPR at the chosen threshold
    (conditional on that threshold).
    """
    scores, labels = _validate_binary(scores, labels)
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if method not in ("bootstrap", "clopper-pearson"):
        raise ValueError(f"method must be 'bootstrap' or 'clopper-pearson', got {method!r}")
    pos, neg = scores[labels], scores[~labels]
    tpr, thr, achieved = tpr_at_fpr_point(pos, neg, fpr)
    if method == "clopper-pearson":
        low, high = clopper_pearson(int(round(tpr * len(pos))), len(pos), confidence)
    else:
        if n_bootstrap < 10:
            raise ValueError(f"n_bootstrap must be >= 10, got {n_bootstrap}")
        rng = np.random.default_rng(seed)
        stats = np.empty(n_bootstrap)
        for b in range(n_bootstrap):
            p = pos[rng.integers(0, len(pos), len(pos))]
            n = neg[rng.integers(0, len(neg), len(neg))]
            stats[b] = tpr_at_fpr_point(p, n, fpr)[0]
        alpha = 1 - confidence
        low, high = (float(v) for v in np.quantile(stats, [alpha / 2, 1 - alpha / 2]))
    return TprAtFpr(
        target_fpr=float(fpr),
        tpr=tpr,
        ci_low=low,
        ci_high=high,
        confidence=float(confidence),
        method=method,
        threshold=thr,
        achieved_fpr=achieved,
        num_positives=int(len(pos)),
        num_negatives=int(len(neg)),
        supported=bool(len(neg) * fpr >= 1.0),
    )


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """ROC curve (``fpr, tpr, thresholds``) and AUC, from scikit-learn."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores, labels = _validate_binary(scores, labels)
    fpr, tpr, thr = roc_curve(labels, scores)
    return fpr, tpr, thr, float(roc_auc_score(labels, scores))


def auc_bootstrap_ci(
    scores: np.ndarray, labels: np.ndarray, confidence: float = 0.95, n_bootstrap: int = 200, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC (stratified resamples of positives and negatives;
    AUC as the Mann–Whitney statistic, ties counting 1/2)."""
    from scipy.stats import rankdata

    scores, labels = _validate_binary(scores, labels)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_bootstrap < 10:
        raise ValueError(f"n_bootstrap must be >= 10, got {n_bootstrap}")
    pos, neg = scores[labels], scores[~labels]
    rng = np.random.default_rng(seed)
    stats = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        p = pos[rng.integers(0, len(pos), len(pos))]
        n = neg[rng.integers(0, len(neg), len(neg))]
        ranks = rankdata(np.concatenate([p, n]))
        stats[b] = (ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2) / (len(p) * len(n))
    alpha = 1 - confidence
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# ------------------------------------------------------------------ ceilings, floors, thresholds
@dataclass
class NormalisedSuccess:
    """An attack's success between its floor and its ceiling (DESIGN §8, "Attack rates").

    ``raw``, ``oracle`` and ``null`` are mean per-observation successes over the observations where
    all three are defined; ``normalised = (raw - null) / (oracle - null)`` (NaN when
    ``oracle - null <= 0``: the attack has no dynamic range there). Every ``*_ci`` is a percentile
    bootstrap over ``num_units`` independent units named ``unit_name`` (identities, clients, ...).
    """

    metric: str
    unit_name: str
    num_units: int
    num_observations: int
    raw: float
    oracle: float
    null: float
    normalised: float
    raw_ci: tuple[float, float]
    oracle_ci: tuple[float, float]
    null_ci: tuple[float, float]
    normalised_ci: tuple[float, float]
    confidence: float
    n_bootstrap: int
    notes: list[str]

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


_NAN2 = (float("nan"), float("nan"))


def _unit_sums(values: list[np.ndarray], units: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-unit observation counts and per-unit sums of each array (units coded 0..U-1)."""
    n_units = int(units.max()) + 1
    counts = np.bincount(units, minlength=n_units).astype(np.float64)
    return counts, [np.bincount(units, weights=v, minlength=n_units) for v in values]


def _percentile(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _aligned_observations(
    raw: np.ndarray,
    oracle: np.ndarray,
    null: np.ndarray,
    units: np.ndarray | Sequence[Any],
    confidence: float,
    n_bootstrap: int,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Check the settings and return ``[raw, oracle, null]`` as flat float arrays and the unit
    labels as strings, one entry per observation."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_bootstrap < 10:
        raise ValueError(f"n_bootstrap must be >= 10, got {n_bootstrap}")
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (raw, oracle, null)]
    labels = np.asarray([str(u) for u in units], dtype=object)
    if not all(len(a) == len(labels) for a in arrays):
        raise ValueError(
            f"raw, oracle, null and units must have one entry per observation, got lengths "
            f"{[len(a) for a in arrays]} and {len(labels)}"
        )
    return arrays, labels


def _bootstrap_unit_rates(
    counts: np.ndarray, sums: list[np.ndarray], n_bootstrap: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster bootstrap (whole units resampled with replacement): per replicate, the ratio
    estimates of the raw, oracle and null rates."""
    n_units = len(counts)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(n_bootstrap, n_units))
    weights = np.zeros((n_bootstrap, n_units))
    np.add.at(weights, (np.arange(n_bootstrap)[:, None], draws), 1.0)
    tot = weights @ counts
    rb, ob, zb = ((weights @ s) / tot for s in sums)
    return rb, ob, zb


def _normalised_interval(
    rb: np.ndarray,
    ob: np.ndarray,
    zb: np.ndarray,
    has_range: bool,
    metric: str,
    confidence: float,
    n_bootstrap: int,
    notes: list[str],
) -> tuple[float, float]:
    """Percentile interval of ``(raw - null) / (oracle - null)`` over the replicates with dynamic
    range; NaN when the point estimate has none or too many replicates lack it (noted)."""
    span = ob - zb
    defined = span > 0
    nb = np.where(defined, (rb - zb) / np.where(defined, span, 1.0), np.nan)
    dropped = int((~defined).sum())
    if not has_range:
        return _NAN2  # the point estimate is undefined already (noted by the caller)
    if dropped > (1 - confidence) / 2 * n_bootstrap:
        notes.append(
            f"{metric}: in {dropped} of {n_bootstrap} bootstrap replicates the oracle did not beat the null; "
            "normalised interval undefined"
        )
        return _NAN2
    if dropped:
        notes.append(f"{metric}: {dropped} of {n_bootstrap} bootstrap replicates without dynamic range dropped")
    return _percentile(nb[defined], confidence)


def normalised_success(
    raw: np.ndarray,
    oracle: np.ndarray,
    null: np.ndarray,
    units: np.ndarray | Sequence[Any],
    metric: str = "success",
    unit_name: str = "unit",
    confidence: float = 0.95,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> NormalisedSuccess:
    """``(raw - null) / (oracle - null)`` with a cluster (unit-level) bootstrap interval.

    Args:
        raw, oracle, null: per-observation success (0/1 or a score) of the attack on the observed
            vectors, on the ceiling's queries and on the floor's queries, aligned row by row (NaN:
            undefined for that observation; such rows are left out of all three).
        units: the independent unit of each observation (any hashable labels). The bootstrap
            resamples whole units with replacement (Davison & Hinkley 1997, §3.8), so observations
            that share a unit (a client's clusters, duplicates) never count as independent.

    The rates are ratio estimators ``sum over units / observations``; a replicate whose
    ``oracle - null <= 0`` has no normalised value and is dropped, and when more than
    ``(1 - confidence) / 2`` of them are dropped the interval is undefined (NaN), with a note.
    """
    arrays, labels = _aligned_observations(raw, oracle, null, units, confidence, n_bootstrap)
    ok = np.logical_and.reduce([np.isfinite(a) for a in arrays]) if len(labels) else np.zeros(0, bool)
    notes: list[str] = []
    if not ok.any():
        notes.append(f"{metric}: no observation has raw, oracle and null values; nothing to normalise")
        return NormalisedSuccess(
            metric, unit_name, 0, 0, *(float("nan"),) * 4, *(_NAN2,) * 4, confidence, n_bootstrap, notes
        )
    _, codes = np.unique(labels[ok], return_inverse=True)
    counts, sums = _unit_sums([a[ok] for a in arrays], codes)
    r, o, z = (float(s.sum() / counts.sum()) for s in sums)
    norm = (r - z) / (o - z) if o - z > 0 else float("nan")
    if not o - z > 0:
        notes.append(
            f"{metric}: no dynamic range — the oracle ({o:.3g}) does not beat the null ({z:.3g}), so "
            "the attacker cannot tell even the true vectors from noise; normalised success undefined"
        )
    n_units = len(counts)
    if n_units < 2:
        notes.append(f"{metric}: one {unit_name} only; no interval")
        return NormalisedSuccess(
            metric, unit_name, n_units, int(ok.sum()), r, o, z, norm, *(_NAN2,) * 4, confidence, n_bootstrap, notes
        )
    rb, ob, zb = _bootstrap_unit_rates(counts, sums, n_bootstrap, seed)
    norm_ci = _normalised_interval(rb, ob, zb, o - z > 0, metric, confidence, n_bootstrap, notes)
    return NormalisedSuccess(
        metric,
        unit_name,
        n_units,
        int(ok.sum()),
        r,
        o,
        z,
        norm,
        _percentile(rb, confidence),
        _percentile(ob, confidence),
        _percentile(zb, confidence),
        norm_ci,
        confidence,
        n_bootstrap,
        notes,
    )


def ceiling_summary(
    metric: str, vs_oracle: NormalisedSuccess | None, vs_oracle_real: NormalisedSuccess | None = None
) -> dict[str, object]:
    """Flat keys of a result's summary: ``oracle_<m>``, ``oracle_real_<m>``, ``null_<m>``,
    ``normalised_<m>`` (vs the true-center oracle), ``normalised_real_<m>`` (vs the real-image
    oracle), each with ``_ci``; ``<m>_unit_ci`` (the raw rate's interval over units), ``units``,
    ``unit_name``. Missing parts are NaN / None."""
    base = vs_oracle if vs_oracle is not None else vs_oracle_real
    out: dict[str, object] = {
        f"oracle_{metric}": float("nan") if vs_oracle is None else vs_oracle.oracle,
        f"oracle_{metric}_ci": _NAN2 if vs_oracle is None else vs_oracle.oracle_ci,
        f"oracle_real_{metric}": float("nan") if vs_oracle_real is None else vs_oracle_real.oracle,
        f"oracle_real_{metric}_ci": _NAN2 if vs_oracle_real is None else vs_oracle_real.oracle_ci,
        f"null_{metric}": float("nan") if base is None else base.null,
        f"null_{metric}_ci": _NAN2 if base is None else base.null_ci,
        f"normalised_{metric}": float("nan") if vs_oracle is None else vs_oracle.normalised,
        f"normalised_{metric}_ci": _NAN2 if vs_oracle is None else vs_oracle.normalised_ci,
        f"normalised_real_{metric}": float("nan") if vs_oracle_real is None else vs_oracle_real.normalised,
        f"normalised_real_{metric}_ci": _NAN2 if vs_oracle_real is None else vs_oracle_real.normalised_ci,
        f"{metric}_unit_ci": _NAN2 if base is None else base.raw_ci,
        "units": 0 if base is None else base.num_units,
        "unit_name": None if base is None else base.unit_name,
    }
    return out


def random_unit_vectors(n: int, d: int, seed: int) -> torch.Tensor:
    """``[n, d]`` float32 vectors uniform on the unit sphere (normalised isotropic Gaussians),
    seeded: the null queries of an attack on center-like vectors."""
    if n < 0 or d < 1:
        raise ValueError(f"n must be >= 0 and d >= 1, got n={n}, d={d}")
    g = torch.Generator().manual_seed(int(seed))
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).float()


@dataclass
class FarThreshold:
    """A verifier's similarity threshold at a target false-accept rate (accept: score ``>= threshold``).

    ``supported`` is False when the impostor pairs are fewer than ``min_impostors = ceil(10 /
    far)`` (fewer than ~10 expected false accepts: the threshold is then mostly noise).
    ``far_by_stratum`` gives the achieved FAR within each impostor stratum (e.g. same population
    group vs other groups) at that one threshold.
    """

    target_far: float
    threshold: float
    achieved_far: float
    genuine_accept_rate: float
    num_genuine: int
    num_impostor: int
    min_impostors: int
    supported: bool
    far_by_stratum: dict[str, float]
    num_by_stratum: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def threshold_at_far(
    genuine: np.ndarray,
    impostor: np.ndarray,
    far: float,
    strata: np.ndarray | None = None,
    expected_false_accepts: float = 10.0,
) -> FarThreshold:
    """The lowest threshold whose false-accept rate on ``impostor`` scores is at most ``far``.

    With ``k = floor(far · N)`` allowed false accepts the threshold sits just above the
    ``(k+1)``-th largest impostor score (as `tpr_at_fpr_point`; ties count as rejections), i.e.
    the empirical ``1 - far`` quantile of the impostor distribution. ``strata`` labels each
    impostor score (e.g. "same_group" / "other_group"); the achieved FAR is reported per stratum.
    """
    genuine = np.asarray(genuine, dtype=np.float64).ravel()
    impostor = np.asarray(impostor, dtype=np.float64).ravel()
    if not 0 < far < 1:
        raise ValueError(f"far must be in (0, 1), got {far}")
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError(f"need genuine and impostor scores, got {len(genuine)} and {len(impostor)}")
    if not (np.isfinite(genuine).all() and np.isfinite(impostor).all()):
        raise ValueError("genuine and impostor scores must be finite")
    _, thr, achieved = tpr_at_fpr_point(genuine, impostor, far)
    by, num = {}, {}
    if strata is not None:
        strata = np.asarray(strata).ravel()
        if strata.shape != impostor.shape:
            raise ValueError(f"strata must label every impostor score ({len(impostor)}), got {len(strata)}")
        for s in sorted(set(strata.tolist()), key=str):
            m = strata == s
            by[str(s)] = float(np.mean(impostor[m] >= thr))
            num[str(s)] = int(m.sum())
    need = int(math.ceil(expected_false_accepts / far - 1e-9))
    return FarThreshold(
        float(far),
        float(thr),
        achieved,
        float(np.mean(genuine >= thr)),
        len(genuine),
        len(impostor),
        need,
        bool(len(impostor) >= need),
        by,
        num,
    )
