"""The papers' claims, checked on an audit's own runs: one row per claim, with a verdict.

Each claim (`CLAIMS`) compares two variants of the audit on one metric: ``treatment − control``
per seed, for instance FedGC − FedPE on TAR@FAR=1e-3 of unseen identities. The unit of replication
is the seed (`privaudit.comparisons`): the row gives the per-seed differences, their mean and 95%
Student-t interval over seeds, the exact sign-flip p (Holm-corrected across the claims checked)
and the smallest difference this many seeds could detect. The verdict reads the interval:

* ``greater`` / ``less``: ``reproduced`` when the interval excludes 0 on the claimed side,
  ``contradicted`` when it excludes 0 on the other side, else ``inconclusive (could detect ≥ X)``;
* ``equivalent`` (|difference| ≤ ``margin``): ``reproduced`` when the interval lies inside
  ±margin, ``contradicted`` when it lies wholly outside, else inconclusive.

A claim whose variants the audit did not run, or whose setting differs (FedFace's one identity
per client), is listed as ``not run`` with what it needs. One seed gives no interval: the verdict
is then ``inconclusive (1 seed: no interval)``, never a reading of one number. The intervals are
per claim (95% each); ``p_holm`` is the family-wise view across the claims checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from privaudit.comparisons import ALPHA, detectable_difference, holm, sign_flip_p, t_interval

Relation = Literal["greater", "less", "equivalent"]
VERDICTS = ("reproduced", "contradicted", "inconclusive", "not run")
GENERIC = "tar@far=0.001"  # unseen-identity verification, the papers' headline protocol


@dataclass(frozen=True)
class Claim:
    """One claim of a paper as a comparison of two variants of an audit.

    ``treatment`` and ``control`` are variant keys (`privaudit.scenario.MethodSpec.key`);
    ``metric`` a per-seed metric (`privaudit.comparisons.per_seed_values`): a generic utility key,
    ``personal:<protocol key>`` or ``attack:<family>``; ``partition`` the federation partition the
    claim's setting needs (None: any)."""

    key: str
    statement: str
    treatment: str
    control: str
    metric: str
    relation: Relation
    margin: float = 0.0
    partition: str | None = None


CLAIMS: tuple[Claim, ...] = (
    Claim("fedgc>fedpe", "FedGC > FedPE on unseen-identity verification", "fedgc", "fedpe", GENERIC, "greater"),
    Claim(
        "fedgc-softmax>fedgc-cos",
        "FedGC's softmax regulariser > the cosine regulariser",
        "fedgc",
        "fedgc-cos",
        GENERIC,
        "greater",
    ),
    Claim("fedfr>fedavg:generic", "FedFR > FedAvg, generic protocol", "fedfr", "fedfr-fedavg", GENERIC, "greater"),
    Claim(
        "fedfr>fedavg:personalised",
        "FedFR > FedAvg, personalised protocol",
        "fedfr",
        "fedfr-fedavg",
        "personal:fedfr:tar@far=0.01",
        "greater",
    ),
    Claim(
        "fedfr:hn>fedavg",
        "FedFR ablation: + hard-negative global data > FedAvg",
        "fedfr-hn",
        "fedfr-fedavg",
        GENERIC,
        "greater",
    ),
    Claim(
        "fedfr:contrastive>hn",
        "FedFR ablation: + contrastive > + hard negatives",
        "fedfr-contrastive",
        "fedfr-hn",
        GENERIC,
        "greater",
    ),
    Claim(
        "fedfr:dfc>contrastive",
        "FedFR ablation: + DFC (full FedFR) > + contrastive, personalised",
        "fedfr",
        "fedfr-contrastive",
        "personal:fedfr:tar@far=0.01",
        "greater",
    ),
    Claim(
        "fedfs>finetune",
        "FedFS personalised model > FedAvg + local fine-tuning",
        "fedfs",
        "fedavg-finetune",
        "personal:fedfs:auroc",
        "greater",
        partition="one-identity",
    ),
    Claim(
        "privacyface:phat>phi", "PrivacyFace φ+p̂ > φ (utility)", "privacyface", "privacyface-phi", GENERIC, "greater"
    ),
    Claim(
        "privacyface:phat~p",
        "PrivacyFace φ+p̂ ≈ φ+p (utility, within 0.05)",
        "privacyface",
        "privacyface-nonoise",
        GENERIC,
        "equivalent",
        margin=0.05,
    ),
    Claim(
        "privacyface:phat<W:attack",
        "p̂ leaks far less than W (k-NN identity attack)",
        "privacyface",
        "shared-centers",
        "attack:knn",
        "less",
    ),
    Claim(
        "privacyface:phat>random",
        "φ+p̂ > φ + data-independent random directions (our control)",
        "privacyface",
        "privacyface-random",
        GENERIC,
        "greater",
    ),
    Claim(
        "fedface>fedavg:one-identity",
        "FedFace > FedAvg with one identity per client",
        "fedface",
        "fedpe",
        GENERIC,
        "greater",
        partition="one-identity",
    ),
)


def _verdict(claim: Claim, low: float, high: float, detectable: float) -> tuple[str, str]:
    """(verdict, text) from the 95% interval of treatment − control (module docstring)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "inconclusive", "inconclusive (1 seed: no interval)"
    could = (
        f"could detect ≥ {detectable:.3g}"
        if math.isfinite(detectable) and detectable > 0
        else "no spread to size a test"
    )
    if claim.relation == "equivalent":
        m = claim.margin
        if -m <= low and high <= m:
            return "reproduced", f"reproduced (interval within ±{m:g})"
        if low > m or high < -m:
            return "contradicted", f"contradicted (interval outside ±{m:g})"
        return "inconclusive", f"inconclusive (interval crosses ±{m:g}; {could})"
    sign = 1.0 if claim.relation == "greater" else -1.0
    lo, hi = sorted((sign * low, sign * high))
    if lo > 0:
        return "reproduced", "reproduced"
    if hi < 0:
        return "contradicted", "contradicted"
    return "inconclusive", f"inconclusive ({could})"


def _not_run(claim: Claim, why: str) -> dict[str, Any]:
    return {**_head(claim), "verdict": "not run", "verdict_text": f"not run: {why}", "n": 0.0}


def _head(claim: Claim) -> dict[str, Any]:
    from privaudit.claim_sources import PAPER_RESULTS

    paper = PAPER_RESULTS.get(claim.key, {})
    return {
        "claim": claim.key,
        "statement": claim.statement,
        "paper": paper.get("paper", ""),
        "paper_where": paper.get("where", ""),
        "paper_setting": paper.get("setting", ""),
        "paper_result": paper.get("result", ""),
        "treatment": claim.treatment,
        "control": claim.control,
        "metric": claim.metric,
        "relation": claim.relation,
        "margin": claim.margin,
    }


def _missing(claim: Claim, per_seed: Mapping[str, Mapping[str, Sequence[float]]], partition: str) -> str | None:
    """Why ``claim`` cannot be checked on these runs (None: it can)."""
    if claim.partition is not None and claim.partition != partition:
        return f"needs federation.partition = {claim.partition!r} (this audit: {partition!r})"
    absent = [v for v in (claim.treatment, claim.control) if v not in per_seed]
    if absent:
        return f"variant(s) {', '.join(absent)} not in this audit"
    lacking = [v for v in (claim.treatment, claim.control) if claim.metric not in per_seed[v]]
    if lacking:
        return f"no {claim.metric!r} for {', '.join(lacking)}"
    return None


def evaluate_claims(
    per_seed: Mapping[str, Mapping[str, Sequence[float]]],
    partition: str,
    setting: str,
    claims: Sequence[Claim] = CLAIMS,
) -> list[dict[str, Any]]:
    """One row per claim (module docstring) from ``per_seed`` (variant -> metric -> one value per
    seed); ``partition`` is the audit's federation partition, ``setting`` our setting in words."""
    rows: list[dict[str, Any]] = []
    p_values: list[float] = []
    checked: list[dict[str, Any]] = []
    for claim in claims:
        why = _missing(claim, per_seed, partition)
        if why is not None:
            rows.append({**_not_run(claim, why), "setting": setting})
            continue
        t_values = [float(v) for v in per_seed[claim.treatment][claim.metric]]
        c_values = [float(v) for v in per_seed[claim.control][claim.metric]]
        diffs = [a - b for a, b in zip(t_values, c_values)]
        if not diffs or not all(math.isfinite(d) for d in diffs):
            rows.append({**_not_run(claim, f"{claim.metric!r} is not finite on every seed"), "setting": setting})
            continue
        mean, low, high = t_interval(diffs)
        detectable = detectable_difference(diffs)
        verdict, text = _verdict(claim, low, high, detectable)
        if all(d == 0.0 for d in diffs):  # no spread and no difference: nothing to size a test with
            verdict, text = "inconclusive", "inconclusive (identical values in every seed: the variants did not differ)"
        row = {
            **_head(claim),
            "setting": setting,
            "treatment_values": t_values,
            "control_values": c_values,
            "differences": diffs,
            "mean": mean,
            "ci_low": low,
            "ci_high": high,
            "n": float(len(diffs)),
            "p_value": sign_flip_p(diffs) if len(diffs) > 1 else math.nan,
            "detectable": detectable,
            "verdict": verdict,
            "verdict_text": text,
        }
        rows.append(row)
        checked.append(row)
        p_values.append(row["p_value"])
    for row, adjusted in zip(checked, holm(p_values)):
        row["p_holm"] = adjusted
        row["family_wise_significant"] = bool(adjusted < ALPHA) if math.isfinite(adjusted) else False
    return rows


def setting_of(scenario: Mapping[str, Any], seeds: int) -> str:
    """Our setting in one line, from a results file's ``scenario`` dict."""
    f, d, p = scenario.get("federation", {}), scenario.get("data", {}), scenario.get("pretrain", {})
    return (
        f"{scenario.get('scale', '?')} scale, synthetic faces {d.get('resolution', '?')} px; φ0 on "
        f"{p.get('identities', '?')} public identities ({p.get('backbone', '?')}, d = {p.get('embedding_dim', '?')}); "
        f"{f.get('num_clients', '?')} clients × {f.get('identities_per_client', '?')} identities × "
        f"{f.get('images_per_identity', '?')} images ({f.get('partition', '?')}), {f.get('rounds', '?')} rounds; "
        f"{f.get('test_identities', '?')} unseen test identities; {seeds} seed{'s' if seeds != 1 else ''}"
    )
