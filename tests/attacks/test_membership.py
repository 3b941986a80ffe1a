"""LiRA membership inference (attacks.membership): known answers, support rule, input checks.

Known answers come from computations independent of the module: closed-form Gaussian
log-likelihoods written out by hand, the Neyman–Pearson TPR of two Gaussians, and a vectorised
numpy Monte Carlo of the release game.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import brentq
from scipy.stats import binomtest, norm

from attacks.membership import (
    lira_scores,
    membership_game,
    membership_statistic,
    shadow_statistics,
    tpr_at_fpr,
)


def _hand_logpdf(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)


def _rates(result):
    return {k: v["tpr"] for k, v in result["at_fpr"].items()}


# ------------------------------------------------------------------ statistic
def test_membership_statistic_is_atanh_of_max_cosine_to_the_normalised_mean_query():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((3, 8))
    rel = rng.standard_normal((5, 8))
    t = (q / np.linalg.norm(q, axis=1, keepdims=True)).mean(0)
    t /= np.linalg.norm(t)
    cos = (rel / np.linalg.norm(rel, axis=1, keepdims=True)) @ t
    got = membership_statistic(torch.from_numpy(q), torch.from_numpy(rel).float())
    assert got == pytest.approx(np.arctanh(cos.max()), abs=1e-6)  # release given in float32
    # the release row equal to the template: cosine 1 is clipped, the statistic stays finite (~14.2)
    same = membership_statistic(torch.from_numpy(q), torch.from_numpy(t[None]))
    assert same == pytest.approx(np.arctanh(1 - 1e-12), rel=1e-3)


# ------------------------------------------------------------------ LiRA against the closed form
def test_lira_scores_equal_the_hand_computed_gaussian_log_likelihood_ratio():
    rng = np.random.default_rng(1)
    ins = rng.normal(1.0, 0.7, (4, 6))
    outs = rng.normal(-0.5, 0.4, (4, 9))
    obs = np.array([1.3, -0.2, 0.4, 3.0])
    mi, si = ins.mean(1), np.sqrt(((ins - ins.mean(1, keepdims=True)) ** 2).sum(1) / 5)
    mo, so = outs.mean(1), np.sqrt(((outs - outs.mean(1, keepdims=True)) ** 2).sum(1) / 8)

    online = lira_scores(obs, ins, outs)
    assert online == pytest.approx(_hand_logpdf(obs, mi, si) - _hand_logpdf(obs, mo, so), rel=1e-12)
    assert online == pytest.approx(norm.logpdf(obs, mi, si) - norm.logpdf(obs, mo, so), rel=1e-12)

    # global (pooled within-target) variance per side: Σ (s - μ_t)² / (T (n - 1))
    pi = math.sqrt(((ins - mi[:, None]) ** 2).sum() / (4 * 5))
    po = math.sqrt(((outs - mo[:, None]) ** 2).sum() / (4 * 8))
    fixed = lira_scores(obs, ins, outs, fixed_variance=True)
    assert fixed == pytest.approx(_hand_logpdf(obs, mi, pi) - _hand_logpdf(obs, mo, po), rel=1e-12)

    # offline: -log Pr[Z > s], Z ~ N(μ_out, σ_out²); monotone in Carlini's 1 - Pr[Z > s]
    offline = lira_scores(obs, None, outs, online=False)
    tail = np.array([0.5 * math.erfc((x - m) / (s * math.sqrt(2))) for x, m, s in zip(obs, mo, so)])
    assert offline == pytest.approx(-np.log(tail), rel=1e-9)
    assert np.argsort(offline).tolist() == np.argsort(norm.cdf(obs, mo, so)).tolist()


def test_zero_shadow_variance_is_floored_not_infinite():
    ins, outs = np.full((2, 4), 1.0), np.full((2, 4), 0.0)
    s = lira_scores([1.0, 0.0], ins, outs, min_std=1e-3)
    # at s = μ_in: log N(0; 0, 1e-3) - log N(1; 0, 1e-3) = 0.5 / 1e-6
    assert s == pytest.approx([0.5e6, -0.5e6], rel=1e-9)


# ------------------------------------------------------------------ TPR at FPR, threshold and interval
def test_tpr_at_fpr_threshold_counts_and_exact_interval_on_a_hand_example():
    neg = np.arange(1000.0)  # FPR 1e-2 allows k = 10 false positives: threshold just above 989
    pos = np.array([989.0, 990.0, 995.0, 1000.0, 5.0])
    res = tpr_at_fpr(pos, neg, fprs=(1e-2,))
    r = res["at_fpr"]["0.01"]
    assert r["supported"] and r["unsupported_reason"] is None
    assert (r["true_positives"], r["false_positives"]) == (3, 10)  # 989 ties the cut: counted as non-member
    assert r["tpr"] == 0.6 and r["achieved_fpr"] == 0.01
    ci = binomtest(3, 5).proportion_ci(0.95, method="exact")
    assert r["tpr_ci"] == pytest.approx((ci.low, ci.high), abs=1e-10)
    # AUROC = Mann–Whitney: P(pos > neg) + ½ P(tie)
    wins = sum((p > neg).sum() + 0.5 * (p == neg).sum() for p in pos) / (5 * 1000)
    assert res["auroc"] == pytest.approx(wins, abs=1e-12)


def test_support_rule_refuses_fpr_that_the_non_members_cannot_carry():
    rng = np.random.default_rng(2)
    res = tpr_at_fpr(rng.normal(3, 1, 100), rng.normal(0, 1, 500), fprs=(1e-3, 1e-2, 1e-1))
    low = res["at_fpr"]["0.001"]
    assert low["supported"] is False
    assert low["tpr"] is None and low["tpr_ci"] is None and low["threshold"] is None
    assert "500 non-members" in low["unsupported_reason"] and "10000" in low["unsupported_reason"]
    assert res["at_fpr"]["0.01"]["supported"] is False  # needs 1000
    assert res["at_fpr"]["0.1"]["supported"] is True and res["at_fpr"]["0.1"]["tpr"] is not None
    # the boundary: ceil(10 / 1e-2) = 1000 non-members
    assert tpr_at_fpr([1.0], np.arange(999.0), (1e-2,))["at_fpr"]["0.01"]["supported"] is False
    assert tpr_at_fpr([1.0], np.arange(1000.0), (1e-2,))["at_fpr"]["0.01"]["supported"] is True


# ------------------------------------------------------------------ per-target calibration pays off
def test_lira_matches_neyman_pearson_and_beats_a_global_threshold_when_difficulty_varies():
    """Statistics drawn directly from Gaussians: OUT ~ N(μ_t, σ²), IN ~ N(μ_t + Δ, σ²), with μ_t
    uniform on [-3, 3] (targets of different difficulty). The per-target likelihood ratio is the
    same increasing function of (s - μ_t) / σ for every target, so at FPR α the optimal TPR is
    Φ(Δ/σ - Φ⁻¹(1 - α)) = 0.953 at α = 1e-2 and 0.819 at 1e-3 (Δ/σ = 4). One global threshold τ
    on s instead solves mean_t Pr[N(μ_t, σ²) > τ] = α, giving TPR mean_t Pr[N(μ_t + Δ, σ²) > τ]."""
    rng = np.random.default_rng(1)
    n_members, n_non, n_shadows, delta, sigma = 1000, 10_000, 64, 2.0, 0.5
    mu = rng.uniform(-3, 3, n_members + n_non)
    member = np.arange(len(mu)) < n_members
    obs = rng.normal(mu + delta * member, sigma)
    ins = rng.normal(mu[:, None] + delta, sigma, (len(mu), n_shadows))
    outs = rng.normal(mu[:, None], sigma, (len(mu), n_shadows))

    grid = np.linspace(-3, 3, 20_001)  # the uniform μ_t, integrated on a grid
    for alpha, key in ((1e-3, "0.001"), (1e-2, "0.01")):
        oracle = norm.sf(norm.isf(alpha) - delta / sigma)
        tau = brentq(lambda t, a=alpha: norm.sf((t - grid) / sigma).mean() - a, -10, 10)
        global_expected = norm.sf((tau - grid - delta) / sigma).mean()
        for online in (True, False):  # equal variances: offline's tail test is the same ordering
            game = membership_game(obs, ins if online else None, outs, member, online=online, fixed_variance=True)
            r, g = game["at_fpr"][key], game["global_threshold"]["at_fpr"][key]
            assert r["supported"] and r["tpr_ci"][0] <= oracle <= r["tpr_ci"][1]
            assert g["tpr_ci"][0] <= global_expected <= g["tpr_ci"][1]
            assert r["tpr_ci"][0] > g["tpr_ci"][1]  # LiRA better beyond both intervals
        # per-target variances from 64 shadows: two more noisy parameters per target cost a little power
        per_target = membership_game(obs, ins, outs, member)["at_fpr"][key]
        assert oracle - 0.04 <= per_target["tpr"] <= per_target["tpr_ci"][1]
    assert _rates(game["global_threshold"]) == pytest.approx({"0.001": 0.191, "0.01": 0.287})
    assert game["null"]["at_fpr"]["0.01"]["tpr_ci"][0] <= 0.01 <= game["null"]["at_fpr"]["0.01"]["tpr_ci"][1]


# ------------------------------------------------------------------ the release game end to end
D, OTHERS, NOISE, QUERIES, QUERY_NOISE = 32, 2, 0.05, 3, 0.3


def _unit(g: torch.Generator, n: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, D, generator=g, dtype=torch.float64), dim=1)


def _simulator(center: torch.Tensor, signal: bool):
    """A client's released center: the mean of OTHERS random identity centers (plus the target's
    center when included and ``signal``), plus Gaussian noise — a DPLC-like single-row release."""

    def simulate(include_target: bool, g: torch.Generator) -> torch.Tensor:
        rows = _unit(g, OTHERS)
        if include_target and signal:
            rows = torch.cat([rows, center[None]])
        return rows.mean(0, keepdim=True) + NOISE * torch.randn(1, D, generator=g, dtype=torch.float64)

    return simulate


def _release_game(signal: bool, n_members: int, n_non: int, n_shadows: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    member = np.arange(n_members + n_non) < n_members
    obs, ins, outs = [], [], []
    for is_member in member:
        center = _unit(g, 1)[0]
        queries = center + QUERY_NOISE / math.sqrt(D) * torch.randn(QUERIES, D, generator=g, dtype=torch.float64)
        simulate = _simulator(center, signal)
        obs.append(membership_statistic(queries, simulate(bool(is_member), g)))
        i, o = shadow_statistics(queries, simulate, n_shadows, g)
        ins.append(i)
        outs.append(o)
    return np.array(obs), np.array(ins), np.array(outs), member


def _reference_tpr(alpha: float, n: int = 50_000, seed: int = 123) -> float:
    """The same game in plain numpy, many draws of the statistic with the target IN and OUT. Every
    target is a uniformly random direction and everything else is isotropic, so all targets have
    the same IN / OUT distributions and the best test at FPR α thresholds the statistic at the
    OUT distribution's 1 - α quantile: the TPR an attacker knowing both distributions reaches."""
    r = np.random.default_rng(seed)
    c = r.standard_normal((n, D))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    q = c[:, None, :] + QUERY_NOISE / math.sqrt(D) * r.standard_normal((n, QUERIES, D))
    t = (q / np.linalg.norm(q, axis=2, keepdims=True)).mean(1)
    t /= np.linalg.norm(t, axis=1, keepdims=True)

    def stat(include: bool) -> np.ndarray:
        o = r.standard_normal((n, OTHERS, D))
        rel = (o / np.linalg.norm(o, axis=2, keepdims=True)).sum(1) + (c if include else 0.0)
        rel = rel / (OTHERS + include) + NOISE * r.standard_normal((n, D))
        return np.arctanh((rel * t).sum(1) / np.linalg.norm(rel, axis=1))

    s_in, s_out = stat(True), stat(False)
    return float((s_in > np.quantile(s_out, 1 - alpha)).mean())


def test_planted_release_game_reaches_the_independently_computed_tpr():
    obs, ins, outs, member = _release_game(signal=True, n_members=300, n_non=1000, n_shadows=16, seed=5)
    # 16 shadows per side: Carlini et al.'s small-shadow fix (one pooled variance per side)
    game = membership_game(obs, ins, outs, member, fixed_variance=True)
    expected = _reference_tpr(1e-2)
    assert expected == pytest.approx(0.817, abs=0.01)  # the signal is strong: 4 in 5 members found at 1% FPR
    r = game["at_fpr"]["0.01"]
    assert r["supported"] and r["tpr_ci"][0] <= expected <= r["tpr_ci"][1]
    assert r["tpr"] == pytest.approx(0.80)
    assert game["at_fpr"]["0.001"]["supported"] is False  # 1000 non-members carry 1e-2, not 1e-3
    assert (game["num_members"], game["num_nonmembers"], game["unit"]) == (300, 1000, "identity")
    assert game["auroc"] > 0.98
    null = game["null"]["at_fpr"]["0.01"]
    assert null["tpr_ci"][0] <= 0.01 <= null["tpr_ci"][1] and null["tpr"] < 0.05


def test_release_independent_of_membership_gives_tpr_equal_to_fpr():
    obs, ins, outs, member = _release_game(signal=False, n_members=300, n_non=1000, n_shadows=8, seed=6)
    game = membership_game(obs, ins, outs, member, fixed_variance=True)
    r = game["at_fpr"]["0.01"]
    assert r["achieved_fpr"] <= 0.01
    assert r["tpr_ci"][0] <= 0.01 <= r["tpr_ci"][1]
    assert r["tpr"] == pytest.approx(0.01)
    assert game["auroc"] == pytest.approx(0.5, abs=0.04)  # 300 × 1000: AUROC's s.e. under the null ≈ 0.019


# ------------------------------------------------------------------ determinism and input checks
def test_same_seed_same_numbers():
    center = _unit(torch.Generator().manual_seed(0), 1)[0]
    queries = center[None].repeat(2, 1)
    a = shadow_statistics(queries, _simulator(center, True), 4, torch.Generator().manual_seed(9))
    b = shadow_statistics(queries, _simulator(center, True), 4, torch.Generator().manual_seed(9))
    c = shadow_statistics(queries, _simulator(center, True), 4, torch.Generator().manual_seed(10))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    rng = np.random.default_rng(3)
    obs, ins, outs = rng.normal(size=40), rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    member = np.arange(40) < 10
    g1 = membership_game(obs, ins, outs, member, fprs=(0.25,), rng=7)
    g2 = membership_game(obs, ins, outs, member, fprs=(0.25,), rng=np.random.default_rng(7))
    assert g1["null"] == g2["null"] and g1["at_fpr"] == g2["at_fpr"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: lira_scores([0.0, np.nan], np.zeros((2, 3)), np.zeros((2, 3))), r"target_stat .*nan at index 1"),
        (lambda: lira_scores([0.0, 1.0], np.zeros((3, 3)), np.zeros((2, 3))), r"in_stats must be \[n_targets=2"),
        (lambda: lira_scores([0.0], np.zeros((1, 3)), np.zeros((1, 1))), r"out_stats .*shape \(1, 1\)"),
        (lambda: lira_scores([0.0], np.zeros((1, 3)), [[0.0, np.inf]]), r"out_stats .*inf at index \(0, 1\)"),
        (lambda: lira_scores([0.0], None, np.zeros((1, 3))), r"in_stats is None"),
        (lambda: lira_scores([0.0], np.zeros((1, 3)), np.zeros((1, 3)), min_std=0.0), r"min_std .*0\.0"),
        (lambda: tpr_at_fpr([1.0], [0.0], fprs=(0.0,)), r"fprs .*got 0\.0"),
        (lambda: tpr_at_fpr([1.0], [0.0], fprs=(1.5,)), r"fprs .*got 1\.5"),
        (lambda: tpr_at_fpr([np.nan], [0.0]), r"member_scores .*nan"),
        (lambda: tpr_at_fpr([1.0], []), r"0 non-members"),
        (lambda: membership_game([0.0, 1.0], np.zeros((2, 2)), np.zeros((2, 2)), [1]), r"is_member .*\(1,\)"),
        (lambda: membership_game([0.0], np.zeros((1, 2)), np.zeros((1, 2)), [2]), r"is_member .*\[2\]"),
        (
            lambda: shadow_statistics(torch.ones(2, 4), lambda i, g: torch.ones(1, 4), 1, torch.Generator()),
            r"n_shadows .*got 1",
        ),
        (
            lambda: shadow_statistics(torch.ones(2, 4), lambda i, g: torch.ones(1, 5), 2, torch.Generator()),
            r"simulate_release\(include_target=True\) \(shadow 0\) .*\(1, 5\)",
        ),
        (
            lambda: shadow_statistics(torch.ones(2, 4), lambda i, g: torch.full((1, 4), np.nan), 2, torch.Generator()),
            r"simulate_release.* finite",
        ),
        (lambda: membership_statistic(torch.zeros(0, 4), torch.ones(1, 4)), r"query_embeddings .*\(0, 4\)"),
    ],
)
def test_bad_inputs_raise_value_errors_that_name_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
