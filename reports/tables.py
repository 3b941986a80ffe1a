"""The report's tables as plain text cells, shared by the HTML, Markdown and notebook renderers.

Cells are *unescaped* text (a `Cell` adds a style hint); each renderer escapes for its format, so
the HTML page, ``report.md`` and a notebook's ``_repr_html_`` always carry the same numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reports.schema import AuditResult, MethodResult
from reports.selection import headline_utility_metric, metric_sort_key
from reports.verdict import UNIT_WORDS

__all__ = [
    "Cell",
    "Table",
    "fmt_number",
    "fmt_epsilon",
    "fmt_bytes",
    "verdict",
    "summary_table",
    "utility_table",
    "privacy_table",
    "audits_table",
    "per_party_table",
    "attacks_table",
    "attack_label",
    "decoder_curve_key",
    "decoder_curve_of",
    "is_upper_bound",
    "is_whitebox",
    "communication_table",
    "fidelity_table",
    "seeds_table",
    "key_value_table",
    "flatten",
    "method_tables",
    "result_tables",
]


@dataclass(frozen=True)
class Cell:
    """A cell with a style hint: ``level`` in {"", "good", "warn", "bad", "muted", "name"};
    ``detail``: a second, quieter line (a method's description)."""

    text: str
    level: str = ""
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.text}\n{self.detail}" if self.detail else self.text


@dataclass
class Table:
    """A titled table; ``anchor`` is its id in the HTML page; ``note`` a line below it."""

    title: str
    anchor: str
    headers: list[str]
    rows: list[list[str | Cell]] = field(default_factory=list)
    note: str = ""
    align_numbers: bool = True


def fmt_number(x: Any, digits: int = 3) -> str:
    """Numbers for people: None -> "—", NaN -> "n/a", inf -> "∞", values in [-1, 1] with
    ``digits`` decimals (2 significant digits below 10^-digits, so 3e-4 stays visible), others
    with 4 significant digits (thousands separated from 10^4 on)."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, str):
        return x
    v = float(x)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == int(v) and abs(v) < 1e15 and isinstance(x, int):
        return f"{int(v):,}" if abs(v) >= 1e4 else str(int(v))
    if 0 < abs(v) < 10**-digits:
        return f"{v:.2g}"
    if abs(v) <= 1:
        return f"{v:.{digits}f}"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def fmt_epsilon(x: Any) -> str:
    """Epsilons: 3 significant digits, inf as ∞."""
    if x is None:
        return "—"
    v = float(x)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞"
    return f"{v:.3g}"


def fmt_bytes(x: Any) -> str:
    v = float(x)
    if not math.isfinite(v):
        return fmt_number(v)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.3g} {unit}"
    return f"{v:.0f} B"


def verdict(m: MethodResult) -> Cell:
    """The method's verdict by the one rule table of `reports.verdict` (recorded in results since
    schema 1.2; recomputed for older documents), with its rule as the detail line."""
    from reports.verdict import verdict_of

    v = m.privacy.verdict or verdict_of(m).to_dict()
    return Cell(v["text"], v["level"], detail=f"rule {v['rule']}")


def guarantee_cell(m: MethodResult) -> str | Cell:
    """Each guarantee with scope, unit, δ and status; ε per person; flags count."""
    if not m.privacy.guarantees:
        return m.privacy.guarantee or "—"
    lines = []
    for g in m.privacy.guarantees:
        eps = min((float(v) for v in g["epsilon"].values()), default=math.inf)
        unit = UNIT_WORDS.get(g.get("unit") or "", "unit not stated")
        if g["status"] == "none":
            lines.append(f"{g['scope']}: none")
        else:
            lines.append(f"{g['scope']}: {g['status']} ({fmt_epsilon(eps)}, {g['delta']:.2g}) {unit}")
    pp = m.privacy.per_person
    if pp:
        eps = min((float(v) for v in pp["epsilon"].values()), default=math.inf)
        bound = "no finite bound" if math.isinf(eps) else f"({fmt_epsilon(eps)}, {float(pp['delta']):.2g})"
        lines.append(f"per person: {bound}")
    bad = any(g["status"] in ("refuted", "none") for g in m.privacy.guarantees)
    return Cell("\n".join(lines), "bad" if bad else "")


def _observed(m: MethodResult) -> str:
    if not m.observers:
        return "—"
    return "\n".join(f"{party}: {', '.join(kinds) if kinds else '—'}" for party, kinds in m.observers.items())


def _metric_columns(maps: Sequence[dict[str, float]]) -> list[str]:
    return sorted({k for d in maps for k in d}, key=metric_sort_key)


ATTACK_FAMILIES = ("knn", "inversion", "gradient", "membership")

# The decoder's training curve rides in its inversion findings' metrics, one key per (field, epoch).
DECODER_CURVE_PREFIX = "decoder_curve."
DECODER_CURVE_FIELDS = ("heldout_feature_cosine", "heldout_l1", "l1", "feature_loss", "d_loss", "g_adv_loss")


def decoder_curve_key(name: str, epoch: int) -> str:
    """The metric key of training-curve field ``name`` at ``epoch`` (1-based)."""
    return f"{DECODER_CURVE_PREFIX}{name}@epoch={epoch}"


def decoder_curve_of(a: Any) -> dict[str, list[tuple[int, float]]]:
    """An inversion finding's decoder training curve: field -> [(epoch, value), ...] by epoch
    (empty without one)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for key, value in a.metrics.items():
        if not key.startswith(DECODER_CURVE_PREFIX) or "@epoch=" not in key:
            continue
        name, epoch = key.removeprefix(DECODER_CURVE_PREFIX).split("@epoch=", 1)
        try:
            out.setdefault(name, []).append((int(epoch), float(value)))
        except ValueError:
            continue
    return {k: sorted(v) for k, v in out.items()}


def is_whitebox(a: Any) -> bool:
    """Whether an inversion finding is the white-box optimisation attack (it states its budget)."""
    return a.attack == "inversion" and "whitebox_iterations" in a.metrics


def is_upper_bound(a: Any) -> bool:
    """Whether a finding is an upper-bound companion row (e.g. a gradient probe given the true
    labels), not a result of the attacker it describes."""
    return float(a.metrics.get("upper_bound", 0.0)) == 1.0


def attack_label(a: Any) -> str:
    """The attack column's text: the family, with the variant where a family has several."""
    if is_whitebox(a):
        return f"{a.attack} (white-box)"
    if is_upper_bound(a):
        return f"{a.attack} (labels granted: upper bound)"
    return str(a.attack)


def strongest_per_family(m: MethodResult) -> dict[str, Any]:
    """family -> its strongest finding on an observed kind: by normalised success where the attack
    reports one (ceiling and floor), else by raw success (comparison rows and upper-bound rows
    excluded; the decoder and the white-box inversion are one family: the same evaluator, gallery
    and targets, so the same chance level)."""
    from reports.schema import COMPARISON_KINDS

    out: dict[str, Any] = {}
    for a in m.attacks:
        if a.target_kind in COMPARISON_KINDS or a.success_metric is None or not math.isfinite(a.success):
            continue
        if is_upper_bound(a):
            continue
        norm = a.metrics.get(f"normalised_{ceiling_name(a)}")
        key = (0 if norm is None or not math.isfinite(float(norm)) else 1, float(norm or 0.0), a.success)
        best = out.get(a.attack)
        if best is None or key > best[0]:
            out[a.attack] = (key, a)
    order = [f for f in ATTACK_FAMILIES if f in out] + sorted(f for f in out if f not in ATTACK_FAMILIES)
    return {f: out[f][1] for f in order}


def attack_families_cell(m: MethodResult) -> str | Cell:
    """One line per attack family: raw rate with its evidence, target, and oracle / null /
    normalised where the attack has them."""
    lines = []
    for family, a in strongest_per_family(m).items():
        variant = " (white-box)" if is_whitebox(a) else ""
        line = f"{family}{variant}: {fmt_number(a.success)} {a.success_metric}{_evidence(a)} on {a.target_kind}"
        name = ceiling_name(a)
        if f"oracle_{name}" in a.metrics:
            line += f"; oracle {_with_ci(a, 'oracle_' + name)}, null {_with_ci(a, 'null_' + name)}, normalised " + (
                _with_ci(a, "normalised_" + name) if f"normalised_{name}" in a.metrics else "n/a"
            )
        lines.append(line)
    return Cell("\n".join(lines)) if lines else "—"


def summary_table(methods: Sequence[MethodResult], metric: str | None) -> Table:
    """The first table: per method, what leaks to whom, formal epsilon, empirical bound, utility."""
    rows: list[list[str | Cell]] = []
    for m in methods:
        tight = m.privacy.tightest()
        formal = "—" if tight is None else f"{fmt_epsilon(tight[1])} ({tight[0]})"
        everything = m.privacy.tightest_all()
        if everything is not None and math.isfinite(everything[1]) and tight is not None and everything != tight:
            formal += f"\nall uploads: {fmt_epsilon(everything[1])} ({everything[0]})"  # DP-SGD backbone
        finite = [e for e in (tight, everything) if e is not None and math.isfinite(e[1]) and e[1] > 0]
        if finite and m.privacy.delta is not None:
            formal += f"\nδ = {m.privacy.delta:.2g}"
        audit = m.privacy.max_lower_bound()
        if audit is None:
            empirical: str | Cell = "—"
        else:
            empirical = Cell(
                f"≥ {fmt_epsilon(audit.epsilon_lower_bound)}" + ("\nrefutes the claim" if audit.refutes_claim else ""),
                "bad" if audit.refutes_claim else "",
                detail=audit.name,
            )
        attack = attack_families_cell(m)
        utility = "—" if metric is None else fmt_number(m.utility.get(metric))
        fidelity = f"\nfidelity: {m.fidelity['preset']}" if m.fidelity else ""
        if m.fidelity and m.fidelity.get("deviations"):
            fidelity += f" (deviates in {', '.join(sorted(m.fidelity['deviations']))})"
        problems = f"\n{len(m.flags)} flag(s): see Flags" if m.flags else ""
        rows.append(
            [
                Cell(m.name, "name", m.description + fidelity + problems),
                ", ".join(m.shares) or "nothing",
                _observed(m),
                guarantee_cell(m),
                formal,
                empirical,
                attack,
                utility,
                verdict(m),
            ]
        )
    headers = [
        "method",
        "leaves a client",
        "observed by (party: kinds)",
        "guarantee",
        "formal ε (tightest)",
        "empirical ε lower bound",
        "attacks per family (success)",
        metric or "utility",
        "verdict",
    ]
    return Table(
        "Summary",
        "summary",
        headers,
        rows,
        "Formal ε: of the class information a client uploads, the smallest over the accountants (∞ = no "
        'guarantee); "all uploads": the same with the backbone included, shown where it is finite '
        "(DP-SGD). Empirical bound: the largest lower bound any distinguishing game proved. Attacks: per "
        "family, the strongest attack on something a party observed (by normalised success where the attack "
        "has a ceiling and a floor, else by raw rate): rates of different families have different chance "
        "levels and are never compared with each other.",
    )


def utility_table(methods: Sequence[MethodResult], personalised: bool = False) -> Table | None:
    maps = [m.personalised_utility if personalised else m.utility for m in methods]
    columns = _metric_columns(maps)
    if not columns:
        return None
    rows: list[list[str | Cell]] = [
        [m.name, *(_utility_cell(m, d, c, personalised) for c in columns)] for m, d in zip(methods, maps)
    ]
    if personalised:
        models = [str(m.params.get("personalised_model")) for m in methods if m.params.get("personalised_model")]
        header = ["method"] + (["model"] if models else []) + columns
        if models:
            rows = [[r[0], str(m.params.get("personalised_model", "—"))] + r[1:] for r, m in zip(rows, methods)]
        return Table(
            "Utility (personalised protocols)",
            "utility-personalised",
            header,
            rows,
            "Per-client protocols (FedFR, FedFS) on held-out images of each client's own identities, "
            "averaged over clients; model: what each client evaluates with (its personalised model where "
            "the method has one, else the global model). n/a = not supported.",
        )
    return Table(
        "Utility (generic protocol)",
        "utility",
        ["method"] + columns,
        rows,
        "Open-set 1:1 verification and 1:N identification on identity-disjoint test identities. "
        "[low, high]: 95% interval over test identities (cluster bootstrap: identities resampled, not "
        "pairs, which share identities); on a verification protocol of your own (<file>/accuracy) over "
        "the file's folds (t interval). n/a = not supported at this number of pairs.",
    )


def _utility_cell(m: MethodResult, values: dict[str, float], metric: str, personalised: bool) -> str:
    """A utility number with its interval over test identities, where the run recorded one."""
    if metric not in values:
        return "—"
    text = fmt_number(values.get(metric))
    interval = None if personalised else m.utility_intervals.get("intervals", {}).get(metric)
    if interval is None and not personalised:  # a verification protocol of the user's: over its folds
        interval = m.utility_intervals.get("protocols", {}).get("intervals", {}).get(metric)
    if interval is not None and len(interval) == 2:
        text += f" [{fmt_number(interval[0])}, {fmt_number(interval[1])}]"
    return text


ALL_UPLOADS = "all uploads (incl. backbone)"
CLASS_INFORMATION = ": class information"


def privacy_table(methods: Sequence[MethodResult]) -> Table | None:
    """ε per accountant of the class information, then, where any method has it (results of schema
    1.1 on), of all uploads, backbone included: columns ``ε (acc): class information`` and
    ``ε (acc): all uploads (incl. backbone)`` (plain ``ε (acc)`` for older results)."""
    accountants = sorted({k for m in methods for k in m.privacy.formal_epsilon})
    accountants_all = sorted({k for m in methods for k in m.privacy.formal_epsilon_all})
    if not methods:
        return None

    def cells(eps: dict[str, float], names: list[str]) -> list[str | Cell]:
        return [fmt_epsilon(eps[a]) if a in eps else "—" for a in names]

    rows: list[list[str | Cell]] = []
    for m in methods:
        info = m.privacy.guarantee_of("class information")
        rows.append(
            [
                m.name,
                guarantee_cell(m),
                "—" if info is None else UNIT_WORDS.get(info.get("unit") or "", "—"),
                "—" if info is None else info["status"],
                "—" if m.privacy.delta is None else f"{m.privacy.delta:.3g}",
            ]
            + cells(m.privacy.formal_epsilon, accountants)
            + cells(m.privacy.formal_epsilon_all, accountants_all)
            + [str(len(m.privacy.flags)) if m.privacy.flags else "0"]
        )
    note = "ε over the whole run at δ, one column per accountant (∞ = no guarantee)"
    if accountants_all:
        note += (
            f": first of the class information (every upload but the backbone), then of {ALL_UPLOADS}; "
            "a backbone sent without DP-SGD makes the latter ∞ (— = not computed)."
        )
    else:
        note += "."
    return Table(
        "Formal privacy (accountants)",
        "privacy",
        ["method", "guarantee", "unit (class information)", "status", "δ"]
        + [f"ε ({a}){CLASS_INFORMATION if accountants_all else ''}" for a in accountants]
        + [f"ε ({a}): {ALL_UPLOADS}" for a in accountants_all]
        + ["flags"],
        rows,
        note,
    )


def audits_table(methods: Sequence[MethodResult]) -> Table | None:
    """Each audit with the unit, scope and δ of the claim it tests and the deployed parameters."""
    rows: list[list[str | Cell]] = []
    for m in methods:
        for a in m.privacy.empirical:
            params = ", ".join(f"{k}={fmt_number(v)}" for k, v in a.parameters.items()) if a.parameters else ""
            rows.append(
                [
                    m.name,
                    a.name,
                    UNIT_WORDS.get(a.unit or "", "—"),
                    a.scope or "—",
                    "—" if a.delta is None else f"{a.delta:.2g}",
                    fmt_epsilon(a.claimed_epsilon),
                    Cell(fmt_epsilon(a.epsilon_lower_bound), "bad" if a.refutes_claim else ""),
                    f"{a.confidence:g}",
                    fmt_number(a.trials),
                    a.statistic or "—",
                    Cell("yes", "bad") if a.refutes_claim else Cell("no", "good"),
                    a.notes + (f" Deployed parameters: {params}." if params else ""),
                ]
            )
    if not rows:
        return None
    return Table(
        "Empirical privacy audits",
        "audits",
        [
            "method",
            "audit",
            "unit",
            "scope",
            "δ",
            "claimed ε",
            "ε lower bound",
            "confidence",
            "trials",
            "statistic",
            "refutes claim",
            "notes",
        ],
        rows,
        "Lower bounds proved by distinguishing games on neighbouring datasets: an experiment, "
        "not a promise. Each bound is about the scope it names (one release), at the δ shown, and is "
        "compared with the claim of that same scope, never with the ε composed over the run.",
    )


def per_party_table(methods: Sequence[MethodResult], max_rows: int = 40) -> Table | None:
    """Each party's epsilon at its last recorded round (per method and accountant)."""
    rows: list[list[str | Cell]] = []
    total = 0
    for m in methods:
        last: dict[tuple[str, str], dict[str, Any]] = {}
        for row in m.privacy.per_party:
            key = (str(row.get("party")), str(row.get("accountant", "")))
            if key not in last or int(row.get("round", 0)) >= int(last[key].get("round", 0)):
                last[key] = row
        for (party, acc), row in last.items():
            total += 1
            if len(rows) < max_rows:
                rows.append([m.name, party, acc or "—", str(row.get("round", "—")), fmt_epsilon(row.get("epsilon"))])
    if not rows:
        return None
    note = "Each party's cumulative ε at the last round it was recorded (from the ledger)."
    if total > len(rows):
        note += f" Showing {len(rows)} of {total} rows; all rows are in results.json."
    return Table("Privacy per party", "per-party", ["method", "party", "accountant", "round", "ε"], rows, note)


# attack settings that are counts, not rates: shown as integers ("batch_size = 1", not "1.000")
COUNT_METRICS = frozenset(
    {
        "batch_size",
        "local_steps",
        "resolution",
        "num_images",
        "num_samples",
        "granted_classes",
        "negatives",
        "iterations",
        "num_observations",
        "num_identifiable",
        "num_gallery_identities",
        "num_member_identities_in_gallery",
        "restarts",
        "round",
    }
)


def _metric_value(key: str, value: Any) -> str:
    v = float(value)
    if key in COUNT_METRICS and math.isfinite(v) and v.is_integer():
        return f"{int(v):,}"
    return fmt_number(value)


def _metrics_text(a: Any) -> str:
    """Every metric of ``a`` with its interval, one per line; the decoder's curve as one summary line."""
    parts = []
    curve = decoder_curve_of(a)
    if curve:
        n = max(len(v) for v in curve.values())
        parts.append(f"decoder training curve: {n} epoch(s) (figure decoder_curve)")
    for k, v in a.metrics.items():
        if k.startswith(DECODER_CURVE_PREFIX):
            continue
        text = f"{k} = {_metric_value(k, v)}"
        if k in a.intervals:
            lo, hi = a.intervals[k]
            text += f" [{fmt_number(lo)}, {fmt_number(hi)}]"
        parts.append(text)
    for k, (lo, hi) in a.intervals.items():
        if k not in a.metrics:
            parts.append(f"{k} ∈ [{fmt_number(lo)}, {fmt_number(hi)}]")
    return "\n".join(parts) or "—"


def _evidence(a: Any) -> str:
    """What a success rate rests on: its confidence interval, the number of attacked vectors or
    images, and the chance level where the attack reports one (e.g. ``rank1_chance``)."""
    parts = []
    ci = a.intervals.get(a.success_metric)
    if ci is not None:
        parts.append(f"[{fmt_number(ci[0])}, {fmt_number(ci[1])}]")
    n = a.metrics.get("num_observations", a.metrics.get("num_images"))
    if n is not None and math.isfinite(float(n)):
        parts.append(f"n = {int(n)}")
    chance = a.metrics.get(f"{a.success_metric}_chance")
    if chance is not None and math.isfinite(float(chance)):
        parts.append(f"chance {fmt_number(chance)}")
    return f" ({', '.join(parts)})" if parts else ""


def _with_ci(a: Any, name: str) -> str:
    value = a.metrics.get(name)
    if value is None:
        return "—"
    ci = a.intervals.get(name)
    return fmt_number(value) + (f" [{fmt_number(ci[0])}, {fmt_number(ci[1])}]" if ci else "")


def ceiling_cells(a: Any) -> list[str | Cell]:
    """Raw success, its oracle (ceiling: the same attacker on true W_k; on real unseen images),
    its null (floor: random unit vectors) and the normalised success (raw − null)/(oracle − null)
    with its interval over units; "—" where the attack reports none."""
    if a.success_metric is None:
        return ["—"] * 3
    metric = ceiling_name(a)
    if f"oracle_{metric}" not in a.metrics:
        return ["—", "—", "—"]
    oracle = _with_ci(a, f"oracle_{metric}")
    if f"oracle_real_{metric}" in a.metrics:
        oracle += f"\nreal images: {_with_ci(a, f'oracle_real_{metric}')}"
    normalised = a.metrics.get(f"normalised_{metric}")
    units = a.metrics.get("units")
    shown = _with_ci(a, f"normalised_{metric}")
    if units is not None and math.isfinite(float(units)):
        shown += f"\n{int(units)} units"
    if normalised is None or math.isnan(float(normalised)):
        shown = "n/a: no dynamic range (oracle ≤ null, see notes)"
        if units is not None and math.isfinite(float(units)):
            shown += f"\n{int(units)} units"
    return [oracle, _with_ci(a, f"null_{metric}"), Cell(shown, "muted" if normalised is None else "")]


def ceiling_name(a: Any) -> str:
    """The name the oracle / null / normalised keys use for ``a``'s success metric (the inversion's
    ``mean_rank1`` is scored against ``oracle_rank1``, ...)."""
    return str(a.success_metric).removeprefix("mean_")


def attacks_table(methods: Sequence[MethodResult]) -> Table | None:
    """One row per attack finding (its variant named), with its ceilings, metrics and notes; the note
    explains the columns and, where a second evaluator scored the inversions, their agreement."""
    rows: list[list[str | Cell]] = []
    for m in methods:
        for a in m.attacks:
            rows.append(
                [
                    m.name,
                    attack_label(a),
                    a.observer,
                    a.target_kind or "—",
                    "—" if a.success_metric is None else f"{fmt_number(a.success)} ({a.success_metric})",
                    *ceiling_cells(a)[:3],
                    _metrics_text(a),
                    a.notes,
                ]
            )
    if not rows:
        return None
    return Table(
        "Attacks",
        "attacks",
        [
            "method",
            "attack",
            "observer",
            "target kind",
            "success (raw)",
            "oracle (ceiling)",
            "null (floor)",
            "normalised [95% CI]",
            "metrics [95% CI]",
            "notes",
        ],
        rows,
        "What each observer recovered from what it saw on the wire. Oracle: the same attacker given the "
        "true class centers W_k (and real unseen images) of the same identities; null: random unit "
        "vectors. Normalised = (raw − null)/(oracle − null), its interval a bootstrap over the independent "
        "units (source identities or clients). A low raw rate with a low oracle says the attack is "
        "blind here, not that the release is private. Inversion (white-box): the same vectors inverted by "
        "optimisation against the observed model, scored by the same evaluator; labels granted: the probe "
        "given the true labels, an upper bound beside the attacker's row. Every rate is a lower bound on what "
        "an attacker with that access can do." + _agreement_note(methods),
    )


def _genuine_accept(methods: Sequence[MethodResult], far: str) -> str:
    """`` (genuine accept on real pairs: first a, second b)`` at ``far`` from the first inversion
    finding that records both evaluators' calibrations ("" when none does)."""
    for a in (a for m in methods for a in m.attacks if a.attack == "inversion"):
        first = a.metrics.get(f"evaluator_genuine_accept@far={far}")
        second = a.metrics.get(f"second_evaluator_genuine_accept@far={far}")
        if first is not None and second is not None:
            return f" (real genuine pairs accepted: first {fmt_number(first)}, second {fmt_number(second)})"
    return ""


def _agreement_note(methods: Sequence[MethodResult]) -> str:
    """One sentence on the second evaluator (" ..." or ""): over every inversion finding that carries
    its verdicts, the pooled pass/fail agreement and Cohen's kappa per FAR and the range of the
    per-finding Spearman correlations of the two evaluators' identity similarities."""
    pooled: dict[str, list[float]] = {}
    spearman: list[float] = []
    findings = 0
    for a in (a for m in methods for a in m.attacks if a.attack == "inversion"):
        found = False
        for key in a.metrics:
            if key.startswith("evaluator_both_pass@far="):
                far = key.removeprefix("evaluator_both_pass@far=")
                names = ("both_pass", "a_only", "b_only", "neither")
                cells = [float(a.metrics.get(f"evaluator_{c}@far={far}", math.nan)) for c in names]
                if all(math.isfinite(c) for c in cells):
                    total = pooled.setdefault(far, [0.0, 0.0, 0.0, 0.0])
                    pooled[far] = [t + c for t, c in zip(total, cells)]
                    found = True
        rho = a.metrics.get("evaluator_spearman")
        if found and rho is not None and math.isfinite(float(rho)):
            spearman.append(float(rho))
        findings += found
    if not pooled:
        return ""
    parts = []
    for far, (both, a_only, b_only, neither) in sorted(pooled.items(), key=lambda kv: float(kv[0])):
        n = both + a_only + b_only + neither
        p_o, p_a, p_b = (both + neither) / n, (both + a_only) / n, (both + b_only) / n
        p_e = p_a * p_b + (1 - p_a) * (1 - p_b)
        kappa = "n/a" if p_e >= 1 else fmt_number((p_o - p_e) / (1 - p_e))
        parts.append(f"FAR {far}: agreement {fmt_number(p_o)}, κ {kappa}{_genuine_accept(methods, far)}")
    rho_text = (
        ""
        if not spearman
        else f"; Spearman of their identity similarities {fmt_number(min(spearman))}–{fmt_number(max(spearman))}"
    )
    n_rec = int(sum(pooled[next(iter(pooled))]))
    return (
        f" Second evaluator (φ0's architecture, its own identities and thresholds): on {n_rec} reconstructions "
        f"of {findings} inversion findings, pass/fail agreement with the first, pooled — {'; '.join(parts)}{rho_text} "
        "(no interval: the reconstructions are not all independent units)."
    )


def communication_table(methods: Sequence[MethodResult]) -> Table | None:
    columns = sorted({k for m in methods for k in m.bytes_per_round})
    if not columns:
        return None
    rows: list[list[str | Cell]] = [
        [m.name, *(fmt_bytes(m.bytes_per_round[c]) if c in m.bytes_per_round else "—" for c in columns)]
        for m in methods
    ]
    return Table("Communication per round", "communication", ["method"] + columns, rows)


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts/lists -> (dotted key path, value text) rows; lists of scalars stay on one row."""
    rows: list[tuple[str, str]] = []
    if isinstance(obj, dict):
        if not obj and prefix:
            rows.append((prefix, "{}"))
        for k, v in obj.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        for i, v in enumerate(obj):
            rows += flatten(v, f"{prefix}[{i}]")
    else:
        rows.append((prefix or "(value)", _value_text(obj)))
    return rows


def _value_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return fmt_number(v, 6) if not math.isfinite(v) else repr(v)
    if isinstance(v, list):
        return (
            "["
            + ", ".join(_value_text(x) if not isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in v)
            + "]"
        )
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def key_value_table(
    title: str,
    anchor: str,
    data: dict[str, Any],
    headers: tuple[str, str] = ("key", "value"),
    max_rows: int = 400,
    note: str = "",
) -> Table | None:
    rows_kv = flatten(data)
    if not data:
        return None
    rows: list[list[str | Cell]] = [[k, v] for k, v in rows_kv[:max_rows]]
    if len(rows_kv) > max_rows:
        note = (note + " " if note else "") + f"Showing {max_rows} of {len(rows_kv)} entries; all are in results.json."
    return Table(title, anchor, list(headers), rows, note, align_numbers=False)


def fidelity_table(methods: Sequence[MethodResult]) -> Table | None:
    """How faithful each run is to its paper or official code (schema 1.2 on)."""
    rows: list[list[str | Cell]] = []
    for m in methods:
        if not m.fidelity:
            continue
        deviations = m.fidelity.get("deviations") or {}
        shown = "; ".join(
            f"{k}: preset {v.get('preset')!r}, used {v.get('used')!r}" if isinstance(v, dict) else f"{k}: {v}"
            for k, v in sorted(deviations.items())
        )
        rows.append(
            [
                m.name,
                m.fidelity["preset"],
                m.fidelity.get("note", ""),
                Cell(shown, "warn") if shown else Cell("none", "good"),
            ]
        )
    if not rows:
        return None
    return Table(
        "Fidelity to the papers",
        "fidelity",
        ["method", "preset", "what it means", "deviations"],
        rows,
        "default: this package's choices (no faithfulness claim); paper / official-code: the source's "
        "settings, with every explicit departure listed.",
        align_numbers=False,
    )


def method_tables(methods: Sequence[MethodResult], metric: str | None) -> list[Table]:
    """The per-method tables, in report order (absent ones skipped)."""
    tables = [
        summary_table(methods, metric),
        utility_table(methods),
        utility_table(methods, personalised=True),
        privacy_table(methods),
        audits_table(methods),
        per_party_table(methods),
        attacks_table(methods),
        communication_table(methods),
        fidelity_table(methods),
    ]
    return [t for t in tables if t is not None]


def _num_or_nan(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) else math.nan  # JSON-decoded NaN may be absent


def seeds_table(result: AuditResult, metric: str | None) -> Table | None:
    """Paired comparisons over seeds (``result.repeats``) on the headline metric and each attack
    family's success: mean difference with its t interval, the Holm-corrected sign-flip p, "not significant"
    wherever the interval covers 0 or p ≥ 0.05, and what this number of seeds could detect."""
    rep = result.repeats
    if not rep:
        return None
    rows: list[list[str | Cell]] = []
    for c in rep.get("comparisons", []):
        if c["metric"] != metric and not str(c["metric"]).startswith("attack:"):
            continue
        low, high = _num_or_nan(c.get("ci_low")), _num_or_nan(c.get("ci_high"))
        verdict = Cell("significant", "warn") if c.get("significant") else Cell("not significant", "muted")
        rows.append(
            [
                c["method"],
                c["metric"],
                f"{fmt_number(_num_or_nan(c.get('mean')))} [{fmt_number(low)}, {fmt_number(high)}]",
                fmt_number(_num_or_nan(c.get("p_holm"))),
                fmt_number(_num_or_nan(c.get("min_attainable_p"))),
                verdict,
                fmt_number(_num_or_nan(c.get("detectable"))),
            ]
        )
    if not rows:
        return None
    seeds = rep.get("seeds", [])
    return Table(
        f"Comparisons over {len(seeds)} seeds (baseline {rep.get('baseline')})",
        "seeds",
        [
            "method",
            "metric",
            "mean difference [95% t CI]",
            "p (sign-flip, Holm)",
            "smallest attainable p",
            "verdict",
            "detectable difference (80% power)",
        ],
        rows,
        f"Paired by seed ({', '.join(map(str, seeds))}): each method minus the baseline on the same seed. "
        "Significant only when the Holm-corrected p < 0.05 and the interval excludes 0; with n seeds the "
        "exact sign-flip test cannot go below 2/2^n, so a few seeds can only say 'not significant'.",
    )


CLAIM_LEVELS = {"reproduced": "good", "contradicted": "bad", "inconclusive": "warn", "not run": "muted"}


def claims_table(result: AuditResult) -> Table | None:
    """The papers' claims checked on this audit (``result.claims``, `privaudit.claims`): the
    paper's number and setting, the measured treatment − control with its interval over seeds,
    and the verdict."""
    if not result.claims:
        return None
    rows: list[list[str | Cell]] = []
    for c in result.claims:
        paper = " ".join(x for x in (str(c.get("paper_where", "")), str(c.get("paper_result", ""))) if x)
        n_float = _num_or_nan(c.get("n"))
        n = int(n_float) if math.isfinite(n_float) else 0
        if c.get("verdict") == "not run":
            measured = "—"
        else:
            low, high = _num_or_nan(c.get("ci_low")), _num_or_nan(c.get("ci_high"))
            measured = f"{fmt_number(_num_or_nan(c.get('mean')))} [{fmt_number(low)}, {fmt_number(high)}] (n = {n})"
        rows.append(
            [
                str(c.get("statement", c.get("claim", ""))),
                paper or "—",
                f"{c.get('treatment')} − {c.get('control')} on {c.get('metric')}",
                measured,
                fmt_number(_num_or_nan(c.get("p_holm"))) if "p_holm" in c else "—",
                Cell(str(c.get("verdict_text", c.get("verdict", ""))), CLAIM_LEVELS.get(str(c.get("verdict")), "")),
            ]
        )
    setting = next((str(c["setting"]) for c in result.claims if c.get("setting")), "")
    return Table(
        "Claims of the papers, checked on this audit",
        "claims",
        ["claim", "paper", "our comparison", "mean difference [95% t CI over seeds]", "p (sign-flip, Holm)", "verdict"],
        rows,
        f"Our setting: {setting}. Reproduced / contradicted only when the 95% interval over seeds excludes 0 "
        "(for ≈: lies within / outside the margin); otherwise inconclusive, with the smallest difference this "
        "many seeds could detect. The paper's numbers come from its own setting and are not comparable in size.",
    )


def result_tables(result: AuditResult) -> list[Table]:
    """Every table of the report: method tables, then timings (scenario and software come separately)."""
    tables = method_tables(result.methods, headline_utility_metric(result))
    seeds = seeds_table(result, headline_utility_metric(result))
    if seeds is not None:
        tables.insert(1, seeds)
    claims = claims_table(result)
    if claims is not None:
        tables.insert(2 if seeds is not None else 1, claims)
    if result.timings:
        rows: list[list[str | Cell]] = [[k, f"{float(v):.1f}"] for k, v in result.timings.items()]
        rows.append([Cell("total", "muted"), Cell(f"{sum(float(v) for v in result.timings.values()):.1f}", "muted")])
        tables.append(Table("Timings", "timings", ["stage", "seconds"], rows))
    return tables
