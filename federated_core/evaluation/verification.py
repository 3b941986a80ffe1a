"""1:1 verification metrics over pair scores.

Conventions: ``scores`` are similarities (higher = more likely the same identity); ``is_same``
flags genuine pairs (True) and impostor pairs (False). A pair is accepted at threshold ``t`` when
``score >= t``. TAR (true accept rate) is the fraction of genuine pairs accepted, FAR (false
accept rate) the fraction of impostor pairs accepted. Inputs may be numpy arrays, torch tensors
or sequences; results are Python floats / numpy arrays.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, overload

import numpy as np
from scipy.stats import rankdata

from federated_core.evaluation._inputs import (
    check_count,
    check_rate,
    require_both_classes,
    scores_and_labels,
    to_numpy,
)


def roc(scores: Any, is_same: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC curve over every distinct threshold.

    Returns:
        ``(far, tar, thresholds)``: ``thresholds`` starts with ``+inf`` (nothing accepted) and then
        lists every distinct score in decreasing order; ``far[i]`` and ``tar[i]`` are the rates at
        ``score >= thresholds[i]``. This is ``sklearn.metrics.roc_curve(is_same, scores,
        drop_intermediate=False)`` (checked in the tests).
    """
    s, y = scores_and_labels(scores, is_same)
    num_genuine, num_impostor = require_both_classes(y)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # last index of each run of equal scores: all tied pairs are accepted together
    group_end = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.shape[0] - 1]
    true_accepts = np.cumsum(y_sorted)[group_end]
    false_accepts = (group_end + 1) - true_accepts
    far = np.r_[0.0, false_accepts / num_impostor]
    tar = np.r_[0.0, true_accepts / num_genuine]
    thresholds = np.r_[np.inf, s_sorted[group_end]]
    return far, tar, thresholds


def auroc(scores: Any, is_same: Any) -> float:
    """Area under the ROC curve: the probability that a random genuine pair scores higher than a
    random impostor pair, ties counting 1/2 (Mann–Whitney U / (n_genuine · n_impostor))."""
    s, y = scores_and_labels(scores, is_same)
    num_genuine, num_impostor = require_both_classes(y)
    ranks = rankdata(s, method="average")
    u = ranks[y].sum() - num_genuine * (num_genuine + 1) / 2.0
    return float(u / (num_genuine * num_impostor))


def max_false_accepts(num_impostors: int, far: float) -> int:
    """Largest k with ``k / num_impostors <= far`` (exact in floating point)."""
    k = int(np.floor(far * num_impostors))
    while (k + 1) / num_impostors <= far:
        k += 1
    while k > 0 and k / num_impostors > far:
        k -= 1
    return k


def supported_fars(num_impostors: int, fars: Iterable[float]) -> list[float]:
    """The targets in ``fars`` that ``num_impostors`` impostor pairs can support.

    A target FAR is supported when at least one false accept is allowed, i.e. ``far >= 1 /
    num_impostors``; below that the only achievable FAR is 0 and the estimate is meaningless
    (the usual rule of thumb asks for many more impostors than 1/far; this is the hard floor).
    """
    num_impostors = check_count("num_impostors", num_impostors, 1)
    checked = [check_rate("fars", far) for far in fars]
    return [far for far in checked if far >= 1.0 / num_impostors]


def tar_at_far(scores: Any, is_same: Any, far: float) -> float:
    """The largest TAR over all thresholds whose FAR is ``<= far`` (no interpolation).

    Let ``k`` be the largest number of false accepts with ``k / n_impostor <= far`` and ``τ`` the
    ``(k+1)``-th largest impostor score. Accepting ``score > τ`` admits at most ``k`` impostors
    (exactly ``k`` unless impostor scores tie at ``τ``, in which case all the tied ones are
    rejected together), and no threshold with FAR ``<= far`` accepts more genuine pairs. This
    equals the maximum of ``tar[i]`` over the points of `roc` with ``far[i] <= far``.

    Raises:
        ValueError: ``far`` outside ``(0, 1)``, or below ``1 / n_impostor`` (unsupported by the
            pair count: see `supported_fars`), or inputs without genuine or impostor pairs.
    """
    far = check_rate("far", far)
    s, y = scores_and_labels(scores, is_same)
    num_genuine, num_impostor = require_both_classes(y)
    if far < 1.0 / num_impostor:
        raise ValueError(
            f"far={far:g} is not supported by {num_impostor} impostor pairs: the smallest supported "
            f"target is 1/{num_impostor} = {1.0 / num_impostor:.3g} (use more impostor pairs)"
        )
    k = max_false_accepts(num_impostor, far)
    impostor_desc = np.sort(s[~y])[::-1]
    tau = impostor_desc[k] if k < num_impostor else -np.inf
    return float(np.count_nonzero(s[y] > tau) / num_genuine)


def _fold_ids(n: int, folds: int, fold_ids: Any) -> np.ndarray:
    if fold_ids is not None:
        return _check_fold_ids(fold_ids, n)
    folds = check_count("folds", folds, 2)
    if n < folds:
        raise ValueError(f"folds={folds} needs at least {folds} pairs, got {n}")
    # contiguous blocks, sizes differing by at most one (np.array_split), as LFW's 10 sets
    return np.repeat(np.arange(folds), [len(b) for b in np.array_split(np.arange(n), folds)])


def _check_fold_ids(fold_ids: Any, n: int) -> np.ndarray:
    ids = to_numpy(fold_ids)
    if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"fold_ids must be an integer array of shape ({n},), got dtype {ids.dtype} shape {ids.shape}")
    if np.unique(ids).shape[0] < 2:
        raise ValueError(f"fold_ids must name at least 2 folds, got {np.unique(ids).tolist()}")
    return ids


def best_threshold(scores: np.ndarray, is_same: np.ndarray) -> float:
    """The threshold that maximises accuracy of ``score >= t`` on the given pairs.

    Candidates: ``+inf`` (reject all), every midpoint between consecutive distinct scores, and
    ``-inf`` (accept all). Among equally accurate candidates the largest threshold is chosen (the
    first maximum in decreasing order).
    """
    order = np.argsort(-scores, kind="stable")
    s_sorted, y_sorted = scores[order], is_same[order]
    group_end = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.shape[0] - 1]
    true_accepts = np.r_[0, np.cumsum(y_sorted)[group_end]]
    accepted = np.r_[0, group_end + 1]
    false_accepts = accepted - true_accepts
    num_impostor = int((~is_same).sum())
    correct = true_accepts + (num_impostor - false_accepts)
    best = int(np.argmax(correct))  # index 0: accept nothing
    if best == 0:
        return float(np.inf)
    if best == len(group_end):
        return float(-np.inf)
    upper, lower = s_sorted[group_end[best - 1]], s_sorted[group_end[best - 1] + 1]
    return float((upper + lower) / 2.0)


@overload
def verification_accuracy(
    scores: Any, is_same: Any, folds: int = ..., return_std: Literal[False] = ..., fold_ids: Any = ...
) -> float: ...
@overload
def verification_accuracy(
    scores: Any, is_same: Any, folds: int = ..., *, return_std: Literal[True], fold_ids: Any = ...
) -> tuple[float, float]: ...
@overload
def verification_accuracy(
    scores: Any, is_same: Any, folds: int = ..., return_std: bool = ..., fold_ids: Any = ...
) -> float | tuple[float, float]: ...
def verification_accuracy(
    scores: Any, is_same: Any, folds: int = 10, return_std: bool = False, fold_ids: Any = None
) -> float | tuple[float, float]:
    """1:1 verification accuracy by the LFW protocol (Huang et al. 2007, "unrestricted" setting).

    The pairs are split into ``folds`` contiguous blocks (in the order given, as LFW's 10 sets of
    pairs.txt; pass ``fold_ids`` to use your own split). For each block, the threshold that
    maximises accuracy on the other blocks (`best_threshold`) is applied to the held-out block;
    the result is the mean (and, with ``return_std``, the population standard deviation) of the
    held-out accuracies. Pairs should be in random order (as `make_verification_pairs` returns
    them) so that every block holds both classes.
    """
    s, y = scores_and_labels(scores, is_same)
    require_both_classes(y)
    ids = _fold_ids(s.shape[0], folds, fold_ids)
    accuracies = []
    for fold in np.unique(ids):
        test = ids == fold
        threshold = best_threshold(s[~test], y[~test])
        accuracies.append(float(np.mean((s[test] >= threshold) == y[test])))
    mean = float(np.mean(accuracies))
    if return_std:
        return mean, float(np.std(accuracies))
    return mean
