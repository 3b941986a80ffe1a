"""Empirical privacy auditing: lower bounds on epsilon from a distinguishing game.

The game (Jagielski, Ullman & Oprea 2020; Nasr et al. 2021): run a mechanism M many times on
each of two neighbouring datasets D0 and D1, score every output with a test statistic (higher
means "looks like D1") and guess D1 when the score exceeds a threshold t. A false positive is a
D0 run guessed as D1, a false negative a D1 run guessed as D0.

The statistic. If M is (epsilon, delta)-DP, every test satisfies (Kairouz, Oh & Viswanath 2015)

    FPR + e^eps FNR >= 1 - delta   and   FNR + e^eps FPR >= 1 - delta,

so eps >= max(log((1 - delta - FNR)/FPR), log((1 - delta - FPR)/FNR)). The right-hand side
decreases in FPR and FNR, so plugging in one-sided Clopper-Pearson *upper* bounds FPR_hat, FNR_hat
gives a lower bound on eps that holds with the stated confidence. `confidence` is the joint
confidence: each rate's bound is taken at 1 - (1 - confidence)/2 (a union bound over the two),
and over the K thresholds tried when the threshold is searched on the same scores (Bonferroni,
1 - (1 - confidence)/(2K)). The bound is clamped at 0.

Choosing the threshold on the scores that are then used for the bound invalidates the interval.
`audit_scores` therefore either chooses it on a separate split of the trials (``"split"``, the
default, as jax_privacy's ``Split`` strategy) or corrects for the search (``"bonferroni"``, as
jax_privacy's ``CanaryScoreAuditor`` does over all observed thresholds; pass a fixed
``thresholds`` grid chosen before seeing the scores for a correction that is strictly valid).

Gaussian DP estimator (Nasr et al. 2023): if the mechanism is mu-GDP, every test obeys
FNR >= Phi(Phi^-1(1 - FPR) - mu), so mu >= Phi^-1(1 - FPR) - Phi^-1(FNR); with the same upper
bounds this gives mu_lb, and epsilon_gdp is the epsilon of mu_lb-GDP at delta. It is much more
sample-efficient but is a lower bound only under the assumption that the mechanism's trade-off
curve is Gaussian (true for the Gaussian mechanism; an estimate otherwise).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
from scipy.special import betaincinv, ndtri

from accountants._validation import (
    check_delta,
    check_finite_real,
    check_int,
    check_open_unit,
)
from accountants.mechanisms import gdp_epsilon

THRESHOLD_STRATEGIES = ("split", "bonferroni")


# --------------------------------------------------------------------------------------------
# Clopper-Pearson
# --------------------------------------------------------------------------------------------


def clopper_pearson_upper(successes: int | np.ndarray, trials: int, confidence: float) -> float | np.ndarray:
    """One-sided Clopper-Pearson upper bound: P(p <= bound) >= confidence for Binomial(trials, p).

    bound = Beta^-1(confidence; k + 1, n - k), and 1 when k = n.
    """
    trials = check_int("trials", trials, 1)
    confidence = check_open_unit("confidence", confidence)
    k = np.asarray(successes)
    if np.any(k < 0) or np.any(k > trials):
        raise ValueError(f"successes must be integers in [0, {trials}]; got {successes!r}")
    k = k.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = np.where(k < trials, betaincinv(k + 1.0, np.maximum(trials - k, 1e-300), confidence), 1.0)
    return float(bound) if bound.ndim == 0 else bound


def clopper_pearson_lower(successes: int | np.ndarray, trials: int, confidence: float) -> float | np.ndarray:
    """One-sided Clopper-Pearson lower bound: Beta^-1(1 - confidence; k, n - k + 1), 0 when k = 0."""
    trials = check_int("trials", trials, 1)
    confidence = check_open_unit("confidence", confidence)
    k = np.asarray(successes)
    if np.any(k < 0) or np.any(k > trials):
        raise ValueError(f"successes must be integers in [0, {trials}]; got {successes!r}")
    k = k.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = np.where(k > 0, betaincinv(np.maximum(k, 1e-300), trials - k + 1.0, 1.0 - confidence), 0.0)
    return float(bound) if bound.ndim == 0 else bound


# --------------------------------------------------------------------------------------------
# bounds from counts
# --------------------------------------------------------------------------------------------


def _eps_from_rates(fpr_ub: np.ndarray, fnr_ub: np.ndarray, delta: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(
            1.0 - delta - fnr_ub > 0, np.log(np.maximum(1.0 - delta - fnr_ub, 1e-300)) - np.log(fpr_ub), -np.inf
        )
        second = np.where(
            1.0 - delta - fpr_ub > 0, np.log(np.maximum(1.0 - delta - fpr_ub, 1e-300)) - np.log(fnr_ub), -np.inf
        )
    return np.maximum(np.maximum(first, second), 0.0)


def _mu_from_rates(fpr_ub: np.ndarray, fnr_ub: np.ndarray) -> np.ndarray:
    # mu >= Phi^-1(1 - FPR) - Phi^-1(FNR); symmetric in the roles of D0 and D1 (same value)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = ndtri(1.0 - fpr_ub) - ndtri(fnr_ub)
    return np.maximum(np.nan_to_num(mu, nan=0.0, posinf=np.inf, neginf=0.0), 0.0)


def _check_counts(false_positives: Any, false_negatives: Any, trials: Any) -> tuple[int, int, int]:
    trials = check_int("trials", trials, 1)
    false_positives = check_int("false_positives", false_positives, 0, trials)
    false_negatives = check_int("false_negatives", false_negatives, 0, trials)
    return false_positives, false_negatives, trials


def epsilon_lower_bound(
    false_positives: int, false_negatives: int, trials: int, delta: float, confidence: float = 0.95
) -> float:
    """Lower bound on epsilon from one fixed test (threshold chosen without looking at these runs).

    eps_lb = max(log((1 - delta - FNR_hat)/FPR_hat), log((1 - delta - FPR_hat)/FNR_hat)), clipped at 0,
    with FPR_hat, FNR_hat the one-sided Clopper-Pearson upper bounds at 1 - (1 - confidence)/2 each,
    so that the bound holds with probability >= `confidence` (Jagielski et al. 2020; Nasr et al. 2021).

    Args:
        false_positives: D0 runs guessed as D1, in [0, trials].
        false_negatives: D1 runs guessed as D0, in [0, trials].
        trials: runs on each of the two datasets (>= 1).
        delta: the delta of the claim being audited, in (0, 1).
        confidence: joint confidence level, in (0, 1).
    """
    false_positives, false_negatives, trials = _check_counts(false_positives, false_negatives, trials)
    delta = check_delta(delta)
    confidence = check_open_unit("confidence", confidence)
    per_rate = 1.0 - (1.0 - confidence) / 2.0
    fpr = np.asarray(clopper_pearson_upper(false_positives, trials, per_rate))
    fnr = np.asarray(clopper_pearson_upper(false_negatives, trials, per_rate))
    return float(_eps_from_rates(fpr, fnr, delta))


def gdp_mu_lower_bound(false_positives: int, false_negatives: int, trials: int, confidence: float = 0.95) -> float:
    """mu_lb = Phi^-1(1 - FPR_hat) - Phi^-1(FNR_hat) (Nasr et al. 2023), clamped at 0."""
    false_positives, false_negatives, trials = _check_counts(false_positives, false_negatives, trials)
    confidence = check_open_unit("confidence", confidence)
    per_rate = 1.0 - (1.0 - confidence) / 2.0
    fpr = np.asarray(clopper_pearson_upper(false_positives, trials, per_rate))
    fnr = np.asarray(clopper_pearson_upper(false_negatives, trials, per_rate))
    return float(_mu_from_rates(fpr, fnr))


def gdp_epsilon_lower_bound(
    false_positives: int, false_negatives: int, trials: int, delta: float, confidence: float = 0.95
) -> float:
    """The Gaussian-DP estimate of epsilon (Nasr et al. 2023): the epsilon at delta of mu_lb-GDP."""
    delta = check_delta(delta)
    mu = gdp_mu_lower_bound(false_positives, false_negatives, trials, confidence)
    return 0.0 if mu == 0 else gdp_epsilon(mu, delta)


# --------------------------------------------------------------------------------------------
# scores -> bounds with an honest threshold choice
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditResult:
    """Result of a distinguishing game (or of `audit_scores`)."""

    epsilon_lb: float
    """Clopper-Pearson lower bound on epsilon (valid with probability >= confidence)."""
    epsilon_gdp: float
    """Gaussian-DP estimate (a lower bound if the mechanism is Gaussian-shaped)."""
    mu_lb: float
    delta: float
    confidence: float
    strategy: str
    threshold: float
    threshold_gdp: float
    false_positives: int
    false_negatives: int
    evaluation_trials: int
    """runs per dataset the bound was computed on."""
    calibration_trials: int
    """runs per dataset used only to choose the threshold (``"split"``)."""
    num_thresholds: int
    """thresholds the confidence was corrected for (1 unless ``"bonferroni"``)."""
    trials: int
    """total runs per dataset."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sorted_scores(name: str, scores: Any) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} must contain at least one score")
    if np.any(np.isnan(array)):
        raise ValueError(f"{name} must not contain NaN (use -inf/+inf for outputs with no score)")
    return np.sort(array)


def _counts(sorted0: np.ndarray, sorted1: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fp(t) = #(s0 > t), fn(t) = #(s1 <= t)."""
    fp = sorted0.size - np.searchsorted(sorted0, thresholds, side="right")
    fn = np.searchsorted(sorted1, thresholds, side="right")
    return fp, fn


def _bounds_at(
    sorted0: np.ndarray, sorted1: np.ndarray, thresholds: np.ndarray, delta: float, per_rate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    fp, fn = _counts(sorted0, sorted1, thresholds)
    fpr = np.asarray(clopper_pearson_upper(fp, sorted0.size, per_rate), dtype=np.float64)
    fnr = np.asarray(clopper_pearson_upper(fn, sorted1.size, per_rate), dtype=np.float64)
    return _eps_from_rates(fpr, fnr, delta), _mu_from_rates(fpr, fnr), fp, fn


def _candidate_thresholds(*sorted_arrays: np.ndarray) -> np.ndarray:
    return np.unique(np.concatenate([np.array([-np.inf]), *sorted_arrays]))


@dataclass(frozen=True)
class _AuditScores:
    """The validated, sorted scores and claim of one `audit_scores` call."""

    sorted0: np.ndarray
    sorted1: np.ndarray
    delta: float
    confidence: float

    @property
    def total(self) -> int:
        """Runs per dataset (the smaller of the two)."""
        return min(self.sorted0.size, self.sorted1.size)

    @property
    def per_rate(self) -> float:
        """Confidence of each rate's bound: 1 - (1 - confidence)/2 (union bound over FPR and FNR)."""
        return 1.0 - (1.0 - self.confidence) / 2.0


def audit_scores(
    scores_0: Sequence[float] | np.ndarray,
    scores_1: Sequence[float] | np.ndarray,
    delta: float,
    confidence: float = 0.95,
    threshold: str | float = "split",
    split_fraction: float = 0.5,
    thresholds: Sequence[float] | None = None,
    seed: int | np.random.Generator = 0,
) -> AuditResult:
    """epsilon lower bounds from the scores of runs on D0 (`scores_0`) and D1 (`scores_1`).

    Args:
        scores_0, scores_1: test statistics (higher = "looks like D1") of the runs on each dataset.
        delta: delta of the audited claim, in (0, 1).
        confidence: joint confidence, in (0, 1).
        threshold: ``"split"`` (choose on a random `split_fraction` of the runs, bound on the rest),
            ``"bonferroni"`` (search all thresholds on all runs, confidence corrected for their
            number), or a number (a threshold fixed in advance; no correction needed).
        thresholds: with ``"bonferroni"``: a grid fixed in advance (default: every observed score,
            the jax_privacy convention).
        seed: seed or Generator for the random split.
    """
    delta = check_delta(delta)
    confidence = check_open_unit("confidence", confidence)
    scores = _AuditScores(_sorted_scores("scores_0", scores_0), _sorted_scores("scores_1", scores_1), delta, confidence)
    if not isinstance(threshold, str):
        return _audit_fixed(scores, threshold)
    if threshold not in THRESHOLD_STRATEGIES:
        raise ValueError(f"threshold must be one of {list(THRESHOLD_STRATEGIES)} or a number; got {threshold!r}")
    if threshold == "bonferroni":
        return _audit_bonferroni(scores, thresholds)
    return _audit_split(scores, split_fraction, seed)


def _audit_fixed(scores: _AuditScores, threshold: float) -> AuditResult:
    """A threshold fixed in advance: the bound on all runs, no correction."""
    fixed = check_finite_real("threshold", threshold)
    sorted0, sorted1 = scores.sorted0, scores.sorted1
    eps, mu, fp, fn = _bounds_at(sorted0, sorted1, np.array([fixed]), scores.delta, scores.per_rate)
    return _result(
        eps[0],
        mu[0],
        scores.delta,
        scores.confidence,
        "fixed",
        fixed,
        fixed,
        fp[0],
        fn[0],
        sorted0,
        sorted1,
        0,
        1,
        scores.total,
    )


def _audit_bonferroni(scores: _AuditScores, thresholds: Sequence[float] | None) -> AuditResult:
    """Search a threshold grid on all runs, each rate's confidence corrected for the grid's size."""
    grid = (
        _candidate_thresholds(scores.sorted0, scores.sorted1)
        if thresholds is None
        else np.unique(np.asarray(thresholds, dtype=np.float64))
    )
    if grid.size == 0 or np.any(np.isnan(grid)):
        raise ValueError("thresholds must be a non-empty sequence of numbers")
    corrected = 1.0 - (1.0 - scores.confidence) / (2.0 * grid.size)
    eps, mu, fp, fn = _bounds_at(scores.sorted0, scores.sorted1, grid, scores.delta, corrected)
    best, best_mu = int(np.argmax(eps)), int(np.argmax(mu))
    return _result(
        eps[best],
        mu[best_mu],
        scores.delta,
        scores.confidence,
        "bonferroni",
        grid[best],
        grid[best_mu],
        fp[best],
        fn[best],
        scores.sorted0,
        scores.sorted1,
        0,
        grid.size,
        scores.total,
    )


def _split_runs(
    scores: _AuditScores, split_fraction: float, seed: int | np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Randomly split each dataset's runs into a calibration and an evaluation part.

    Returns ``(cal0, cal1, ev0, ev1, calibration_trials)``, each part sorted."""
    split_fraction = check_open_unit("split_fraction", split_fraction)
    sorted0, sorted1 = scores.sorted0, scores.sorted1
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_int("seed", seed, 0))
    perm0 = rng.permutation(sorted0.size)
    perm1 = rng.permutation(sorted1.size)
    cut0 = int(sorted0.size * split_fraction)
    cut1 = int(sorted1.size * split_fraction)
    if min(cut0, cut1) < 1 or min(sorted0.size - cut0, sorted1.size - cut1) < 1:
        raise ValueError(
            f"split_fraction={split_fraction!r} leaves an empty calibration or evaluation part "
            f"for {sorted0.size} and {sorted1.size} runs"
        )
    cal0, ev0 = np.sort(sorted0[perm0[:cut0]]), np.sort(sorted0[perm0[cut0:]])
    cal1, ev1 = np.sort(sorted1[perm1[:cut1]]), np.sort(sorted1[perm1[cut1:]])
    return cal0, cal1, ev0, ev1, min(cut0, cut1)


def _audit_split(scores: _AuditScores, split_fraction: float, seed: int | np.random.Generator) -> AuditResult:
    """Choose the threshold on a calibration split of the runs and bound epsilon on the rest."""
    cal0, cal1, ev0, ev1, calibration = _split_runs(scores, split_fraction, seed)
    delta, per_rate = scores.delta, scores.per_rate
    grid = _candidate_thresholds(cal0, cal1)
    # choose with a search-corrected confidence on the calibration part: this penalises tail
    # thresholds that look good on few runs by chance (it does not affect the bound's validity)
    eps_cal, mu_cal, fp_cal, fn_cal = _bounds_at(
        cal0, cal1, grid, delta, 1.0 - (1.0 - scores.confidence) / (2.0 * grid.size)
    )
    choice = _central_best(grid, eps_cal + 1e-9 * np.minimum(mu_cal, 1e6), fp_cal, fn_cal)
    choice_mu = _central_best(grid, mu_cal, fp_cal, fn_cal)
    eps, _, fp, fn = _bounds_at(ev0, ev1, np.array([choice]), delta, per_rate)
    _, mu, _, _ = _bounds_at(ev0, ev1, np.array([choice_mu]), delta, per_rate)
    return _result(
        eps[0],
        mu[0],
        delta,
        scores.confidence,
        "split",
        choice,
        choice_mu,
        fp[0],
        fn[0],
        ev0,
        ev1,
        calibration,
        1,
        scores.total,
    )


def _central_best(grid: np.ndarray, objective: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    """The threshold maximising `objective`; among tied thresholds with the same counts (a gap
    between the two groups of scores) the middle of the gap, so held-out runs fall on the right side."""
    best = np.flatnonzero(objective >= objective.max() - 1e-12)
    first, last = int(best[0]), int(best[-1])
    if fp[first] == fp[last] and fn[first] == fn[last] and np.isfinite(grid[first]):
        following = grid[last + 1] if last + 1 < grid.size else grid[last]
        return float((grid[first] + following) / 2.0) if np.isfinite(following) else float(grid[last])
    return float(grid[int(best[best.size // 2])])


def _result(
    eps: float,
    mu: float,
    delta: float,
    confidence: float,
    strategy: str,
    threshold: float,
    threshold_gdp: float,
    fp: int,
    fn: int,
    eval0: np.ndarray,
    eval1: np.ndarray,
    calibration: int,
    num_thresholds: int,
    total: int,
) -> AuditResult:
    mu = float(mu)
    eps_gdp = 0.0 if mu == 0 else (math.inf if math.isinf(mu) else gdp_epsilon(mu, delta))
    return AuditResult(
        epsilon_lb=float(eps),
        epsilon_gdp=float(eps_gdp),
        mu_lb=mu,
        delta=delta,
        confidence=confidence,
        strategy=strategy,
        threshold=float(threshold),
        threshold_gdp=float(threshold_gdp),
        false_positives=int(fp),
        false_negatives=int(fn),
        evaluation_trials=int(min(eval0.size, eval1.size)),
        calibration_trials=int(calibration),
        num_thresholds=int(num_thresholds),
        trials=int(total),
    )


def run_distinguishing_game(
    mechanism: Callable[[Any, np.random.Generator], Any],
    dataset_0: Any,
    dataset_1: Any,
    statistic: Callable[[Any], float],
    trials: int,
    delta: float,
    confidence: float = 0.95,
    threshold: str | float = "split",
    split_fraction: float = 0.5,
    thresholds: Sequence[float] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> AuditResult:
    """Run `mechanism(dataset, rng)` `trials` times on each neighbouring dataset and bound epsilon.

    `statistic(output) -> float` scores an output (higher = "looks like dataset_1"; use -inf/+inf
    for outputs such as "nothing released"). Every run gets its own Generator derived from
    `seed`, so the game is reproducible. See `audit_scores` for the threshold strategies.
    """
    trials = check_int("trials", trials, 2)
    seed = check_int("seed", seed, 0)
    children = np.random.SeedSequence(seed).spawn(3)
    rng0, rng1 = np.random.default_rng(children[0]), np.random.default_rng(children[1])
    scores = [np.empty(trials), np.empty(trials)]
    iterator = range(trials)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="distinguishing game", unit="pair")
    for trial in iterator:
        scores[0][trial] = float(statistic(mechanism(dataset_0, rng0)))
        scores[1][trial] = float(statistic(mechanism(dataset_1, rng1)))
    return audit_scores(
        scores[0],
        scores[1],
        delta,
        confidence,
        threshold,
        split_fraction,
        thresholds,
        np.random.default_rng(children[2]),
    )
