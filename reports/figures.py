"""Figures of an audit (matplotlib, Agg; no pyplot, so no global figure state).

Every ``*_figure`` function takes plain data (or an `AuditResult`) and returns a
`matplotlib.figure.Figure`, which a notebook displays as is; `save_figure` writes it as PNG and
SVG; `render_all_figures` draws every figure whose data is present in a result.

* privacy-utility frontiers, one labelled point per method variant, y = the headline utility
  metric (TAR at the lowest FAR every method supports): x = best attack success, and x = formal
  epsilon of the class information a method shares (log axis; 0 and "inf / no guarantee" at marked
  positions beyond the finite values, never at a made-up finite value; empirical epsilon lower
  bounds of the audits as hollow markers on the same row);
* epsilon versus rounds, one curve per accountant (and per method);
* occupancy ratio versus the cluster margin rho for several dimensions d (PrivacyFace Fig. 3);
* distributions of cos(p, p_hat) versus epsilon, rho and Q (PrivacyFace Fig. 4);
* ROC curves of the membership views, log-scaled FPR;
* image grids: real images above their reconstructions (inversion, gradient inversion);
* utility per method (bar charts) and utility per round.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from reports.schema import AuditResult, MethodResult
from reports.selection import headline_utility_metric, method_family, metric_sort_key
from reports.tables import decoder_curve_of, is_whitebox, strongest_per_family

__all__ = [
    "FIGURE_CAPTIONS",
    "INFINITY_TICK",
    "FrontierPoint",
    "new_figure",
    "save_figure",
    "headline_utility_metric",
    "frontier_points",
    "frontier_figure",
    "epsilon_rounds_figure",
    "occupancy_figure",
    "cos_distribution_figure",
    "roc_figure",
    "membership_roc_figure",
    "decoder_curve_figure",
    "image_grid_figure",
    "figure_caption",
    "write_image_grid",
    "utility_figure",
    "utility_per_round_figure",
    "render_all_figures",
]

FIGURE_CAPTIONS = {
    "frontier_attack": "Privacy-utility frontier: the k-NN identity attack's success on each method's most "
    "revealing observed kind (x; one attack family, so that rates with different chance levels are not mixed) "
    "versus utility (y). "
    "Up and to the left is better. Bars: 95% intervals — over seeds where the audit ran several, else "
    "utility over test identities (cluster bootstrap) and attack success over the attack's units.",
    "frontier_attack_inversion": "Privacy-utility frontier for the embedding-inversion family: the success of "
    "each method's strongest inversion of an observed kind (x) versus utility (y). Its own chance level: never "
    "compare its x with the k-NN frontier's.",
    "frontier_attack_gradient": "Privacy-utility frontier for the gradient-inversion family: the success of each "
    "method's strongest inversion of an observed update (x) versus utility (y).",
    "frontier_attack_membership": "Privacy-utility frontier for membership inference: offline LiRA's TPR at the "
    "lowest FPR the non-member count supports, on each method's most revealing observed kind (x, interval over "
    "clients), versus utility (y). An uninformed attacker scores its FPR.",
    "frontier_epsilon": "Privacy-utility frontier: formal epsilon of the class information each method shares "
    "(x, tightest accountant, log scale; 0 = no class information leaves a client, "
    "∞ = no guarantee, both at marked positions) versus utility (y); ε over the whole run, "
    "at the scenario's δ, in the unit each method's guarantee states. Hollow markers: an "
    "empirical lower bound of the same scope (whole run) where one exists; per-release "
    "audits are in the audits table, not on this axis.",
    "utility": "Utility per method (generic protocol).",
    "personalised_utility": "Utility per method (personalised protocols).",
    "utility_per_round": "Utility after each round.",
    "epsilon_vs_rounds": "Cumulative epsilon versus rounds, per accountant.",
    "epsilon_per_round_methods": "Cumulative formal epsilon of each method versus rounds, per accountant.",
    "occupancy": "Occupancy ratio of a cluster of margin rho on the unit sphere, for several dimensions d "
    "(PrivacyFace Thm. 1, Fig. 3).",
    "cos_p_phat": "Distributions of cos(p, p_hat) between a cluster center and its noisy release (PrivacyFace Fig. 4).",
    "membership_roc": "ROC curves of the membership views (log FPR): can an observer tell a member identity "
    "from a non-member?",
    "decoder_curve": "Training of each method's inversion decoder on the attacker's public identities, per epoch "
    "(one line per observed model): the feature cosine cos(F(G(v)), v) through the observed model F and the pixel "
    "L1 on public identities held out of training (the patience stop watches the cosine; training L1 dashed), and "
    "the discriminator's and the generator's adversarial losses of the GAN objective (G dashed). A decoder that "
    "has not converged gives a weaker attack: its success is a lower bound.",
}

INFINITY_TICK = "∞\nno guarantee"
_PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]


def _t(text: Any) -> str:
    """Text for matplotlib: '$' would start mathtext, so it is escaped."""
    return str(text).replace("$", r"\$")


def new_figure(width: float = 7.0, height: float = 4.2) -> Figure:
    """A figure with an Agg canvas and constrained layout (no pyplot involved).

    It carries a ``_repr_png_``, so a notebook shows it as an image even when pyplot's inline
    backend was never loaded.
    """
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    fig._repr_png_ = lambda: _png_bytes(fig)  # type: ignore[attr-defined]  # IPython's display hook; not in the stub
    return fig


def _png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(
    fig: Figure, folder: str | os.PathLike[str], name: str, dpi: int = 110, formats: Sequence[str] = ("png", "svg")
) -> Path:
    """Write ``folder/name.png`` and ``folder/name.svg`` (deterministic metadata); returns the PNG path
    (or the first format's path when PNG is not among ``formats``)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise ValueError(f"figure name must use only letters, digits, '_', '-', '.', got {name!r}")
    unknown = sorted(set(formats) - {"png", "svg", "pdf"})
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of ['png', 'svg', 'pdf'], got {list(formats)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context({"svg.hashsalt": "privaudit", "svg.fonttype": "none"}):
        for fmt in formats:
            path = folder / f"{name}.{fmt}"
            metadata: dict[str, str | None] = (
                {"Date": None} if fmt in ("svg", "pdf") else {"Software": "privaudit reports (matplotlib)"}
            )
            if fmt == "pdf":
                metadata["CreationDate"] = None
                del metadata["Date"]
            fig.savefig(path, format=fmt, dpi=dpi, metadata=metadata)
            paths.append(path)
    return folder / f"{name}.png" if "png" in formats else paths[0]


def _styles(names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Colour per method family (``privacyface-nonoise`` -> ``privacyface``), marker per variant."""
    families: dict[str, list[str]] = {}
    for n in names:
        families.setdefault(method_family(n), []).append(n)
    out = {}
    for i, members in enumerate(families.values()):
        for j, n in enumerate(members):
            out[n] = (_PALETTE[i % len(_PALETTE)], _MARKERS[j % len(_MARKERS)])
    return out


@dataclass(frozen=True)
class FrontierPoint:
    """One method variant on the privacy-utility plane."""

    label: str
    x: float
    y: float
    family: str = ""
    lower_bound: float = math.nan  # x = epsilon only: the largest empirical epsilon lower bound (NaN: none)
    # 95% intervals (NaN: none): y over seeds where the audit ran several, else over test identities;
    # x (attack success) over the attack's own units, or over seeds
    x_low: float = math.nan
    x_high: float = math.nan
    y_low: float = math.nan
    y_high: float = math.nan


FRONTIER_ATTACK_FAMILY = "knn"
FRONTIER_FAMILIES = ("knn", "inversion", "gradient", "membership")
_FAMILY_AXIS = {
    "knn": "k-NN identity attack: top-1 of the strongest observed kind",
    "inversion": "embedding inversion: success of the strongest observed kind",
    "gradient": "gradient inversion: success of the strongest observed update",
    "membership": "membership inference (LiRA): TPR at the lowest supported FPR, strongest observed kind",
}


def _seed_summary(result: AuditResult, method: str, metric: str) -> tuple[float, float, float] | None:
    """(mean, low, high) over seeds of ``metric`` for ``method`` (None: one seed, or not recorded)."""
    row = result.repeats.get("summary", {}).get(method, {}).get(metric) if result.repeats else None
    if not row or not all(isinstance(row.get(k), (int, float)) for k in ("mean", "ci_low", "ci_high")):
        return None
    values = float(row["mean"]), float(row["ci_low"]), float(row["ci_high"])
    return values if all(math.isfinite(v) for v in values) else None


def _utility_with_interval(result: AuditResult, m: MethodResult, metric: str) -> tuple[float, float, float]:
    """y, its low and high: the mean and t interval over seeds, else the value and its interval
    over test identities (`MethodResult.utility_intervals`), else no interval."""
    seeds = _seed_summary(result, m.name, metric)
    if seeds is not None:
        return seeds
    y = float(m.utility.get(metric, math.nan))
    interval = m.utility_intervals.get("intervals", {}).get(metric) if m.utility_intervals else None
    if interval is not None and len(interval) == 2:
        return y, float(interval[0]), float(interval[1])
    return y, math.nan, math.nan


def _attack_with_interval(result: AuditResult, m: MethodResult, family: str) -> tuple[float, float, float]:
    """x, its low and high for ``family``'s strongest observed attack: over seeds where recorded,
    else the attack's own interval of its success metric."""
    seeds = _seed_summary(result, m.name, f"attack:{family}")
    if seeds is not None:
        return seeds
    finding = strongest_per_family(m).get(family)
    if finding is None:
        return math.nan, math.nan, math.nan
    interval = finding.intervals.get(finding.success_metric or "")
    low, high = (float(interval[0]), float(interval[1])) if interval is not None else (math.nan, math.nan)
    return float(finding.success), low, high


def frontier_points(
    result: AuditResult, x: str = "attack", utility_metric: str | None = None, family: str = FRONTIER_ATTACK_FAMILY
) -> list[FrontierPoint]:
    """Points of the frontier: ``x="attack"`` uses the success of each method's strongest attack
    of one ``family`` (default k-NN identity) on an observed kind, with its interval;
    ``x="epsilon"`` its tightest formal epsilon over the run (``inf`` for no guarantee, kept), with
    the largest positive empirical lower bound of its whole-run audits as ``lower_bound``
    (per-release audits are left off this axis: their scope differs). y is the utility metric
    with its interval (`_utility_with_interval`); with several seeds both axes are means over
    seeds with t intervals. Methods without a value on either axis are left out."""
    if x not in ("attack", "epsilon"):
        raise ValueError(f"x must be 'attack' or 'epsilon', got {x!r}")
    if family not in FRONTIER_FAMILIES:
        raise ValueError(f"family must be one of {FRONTIER_FAMILIES}, got {family!r}")
    metric = utility_metric or headline_utility_metric(result)
    if metric is None:
        return []
    points = []
    for m in result.methods:
        y, y_low, y_high = _utility_with_interval(result, m, metric)
        lower = x_low = x_high = math.nan
        if x == "attack":  # one family only: rates of different families are never ranked (DESIGN §8)
            xv, x_low, x_high = _attack_with_interval(result, m, family)
        else:
            tight = m.privacy.tightest()
            xv = math.nan if tight is None else tight[1]
            # a lower bound shares the axis only with an ε of the same scope (the whole run): a
            # per-release bound beside a composed ε would compare different quantities
            whole_run = [a for a in m.privacy.empirical if a.scope == "whole run"]
            audit = max(whole_run, key=lambda a: float(a.epsilon_lower_bound)) if whole_run else None
            if audit is not None and math.isfinite(audit.epsilon_lower_bound) and audit.epsilon_lower_bound > 0:
                lower = float(audit.epsilon_lower_bound)
        if math.isnan(y) or math.isnan(xv):
            continue
        points.append(FrontierPoint(m.name, xv, y, method_family(m.name), lower, x_low, x_high, y_low, y_high))
    return points


def _spread_labels(fx: np.ndarray, fy: np.ndarray, gap: float = 0.045, width: float = 0.2) -> np.ndarray:
    """Label heights (axes fraction) pushed apart so that labels of nearby points do not overlap:
    greedy, bottom to top, a label moves up until it clears every label already placed within
    ``width`` horizontally."""
    placed: list[tuple[float, float]] = []
    out = np.empty_like(fy)
    for i in np.argsort(fy, kind="stable"):
        y = float(fy[i])
        # Each pass moves y strictly up past one blocking label, so at most len(placed) passes.
        for _ in range(len(placed) + 1):
            blocking = [py for px, py in placed if abs(px - fx[i]) < width and abs(py - y) < gap * (1 - 1e-9)]
            if not blocking:
                break
            y = max(blocking) + gap
        placed.append((float(fx[i]), y))
        out[i] = y
    return out


def frontier_figure(
    points: Sequence[FrontierPoint],
    x_label: str,
    y_label: str,
    title: str = "",
    log_x: bool = False,
    omitted: Sequence[str] = (),
) -> Figure:
    """Scatter of labelled points (labels pushed apart where points crowd).

    With ``log_x`` (the epsilon frontier) the axis is logarithmic, and x = 0 and x = inf get their
    own positions a decade beyond the finite values, marked by dashed lines and the tick labels
    "0" and "∞ / no guarantee"; a point's finite positive ``lower_bound`` is drawn as a hollow
    marker on the point's row, joined to it by a dotted line. ``omitted`` names methods left out
    for lack of a value (noted under the axis). Each point's artist has the gid
    ``"point:<label>"``, each lower bound ``"lower-bound:<label>"``.
    """
    fig = new_figure(7.2, 4.8)
    ax = fig.add_subplot()
    styles = _styles([p.label for p in points])
    xs = np.array([p.x for p in points], dtype=float)
    ys = np.array([p.y for p in points], dtype=float)
    lows = np.array([p.lower_bound for p in points], dtype=float) if log_x else np.full(len(points), np.nan)
    lows = np.where(np.isfinite(lows) & (lows > 0), lows, np.nan)
    positions = xs.copy()
    if log_x:
        positions = _frontier_log_x_axis(ax, xs, lows)
    else:
        ax.set_xlim(-0.03, 1.03)
    if len(points):
        pad = max(0.02, 0.08 * float(np.ptp(ys)))
        ax.set_ylim(float(ys.min()) - pad, float(ys.max()) + 3 * pad)
    _draw_frontier_points(ax, points, positions, lows, styles)
    if np.isfinite(lows).any():
        _lower_bound_legend(ax)
    if len(points):
        _annotate_frontier_labels(ax, points, positions, ys)
    if omitted:
        x_label = f"{x_label}\n(not shown, no value: {', '.join(omitted)})"
    ax.set_xlabel(_t(x_label))
    ax.set_ylabel(_t(y_label))
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(_t(title))
    if not points:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#777")
    return fig


def _frontier_log_x_axis(ax: Any, xs: np.ndarray, lows: np.ndarray) -> np.ndarray:
    """Set up the log x axis (decade ticks, x = 0 and x = inf a decade beyond the finite values,
    dashed edge lines) and return each point's x position on it."""
    from matplotlib.ticker import FixedLocator, NullLocator

    both = np.concatenate([xs, lows])
    finite = both[np.isfinite(both) & (both > 0)]
    k_lo = math.floor(math.log10(finite.min())) if finite.size else 0
    k_hi = math.ceil(math.log10(finite.max())) if finite.size else 0
    if k_hi == k_lo:
        k_hi += 1
    lo, hi = 10.0 ** (k_lo - 1), 10.0 ** (k_hi + 1)
    positions = np.where(xs == 0, lo, np.where(np.isinf(xs), hi, xs))
    ax.set_xscale("log")
    decades = [10.0**k for k in range(k_lo, k_hi + 1)]
    ticks = [lo] + decades + [hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ticks, ["0"] + [f"{d:g}" for d in decades] + [INFINITY_TICK])
    for edge in (lo, hi):
        ax.axvline(edge, color="#999", ls="--", lw=0.8, zorder=1)
    ax.set_xlim(lo / 2.5, hi * 2.5)
    return positions


def _draw_frontier_points(
    ax: Any,
    points: Sequence[FrontierPoint],
    positions: np.ndarray,
    lows: np.ndarray,
    styles: dict[str, tuple[str, str]],
) -> None:
    """Scatter each point (gid ``point:<label>``) and, where it has one, its hollow lower bound
    (gid ``lower-bound:<label>``) joined to it by a dotted line."""
    for p, px, low in zip(points, positions, lows):
        color, marker = styles[p.label]
        _error_bars(ax, p, px, color)
        ax.scatter(
            [px],
            [p.y],
            color=color,
            marker=marker,
            s=55,
            zorder=3,
            edgecolor="black",
            linewidth=0.5,
            gid=f"point:{p.label}",
        )
        if not np.isnan(low):
            ax.plot([low, px], [p.y, p.y], color=color, ls=":", lw=0.9, zorder=2)
            ax.scatter(
                [low],
                [p.y],
                facecolor="none",
                edgecolor=color,
                marker=marker,
                s=55,
                linewidth=1.2,
                zorder=3,
                gid=f"lower-bound:{p.label}",
            )


def _error_bars(ax: Any, p: FrontierPoint, px: float, color: str) -> None:
    """The point's 95% intervals as error bars (gid ``interval:<label>``): y always where known, x
    only on the linear attack axis (an ε has no sampling interval)."""
    y_err = [[p.y - p.y_low], [p.y_high - p.y]] if math.isfinite(p.y_low) and math.isfinite(p.y_high) else None
    x_err = None
    if px == p.x and math.isfinite(p.x_low) and math.isfinite(p.x_high):
        x_err = [[p.x - p.x_low], [p.x_high - p.x]]
    if y_err is None and x_err is None:
        return
    bars = ax.errorbar([px], [p.y], xerr=x_err, yerr=y_err, fmt="none", ecolor=color, elinewidth=0.9, capsize=2.5)
    for collection in bars.lines[2]:  # the bar lines (LineCollections), findable by gid
        collection.set_gid(f"interval:{p.label}")


def _lower_bound_legend(ax: Any) -> None:
    """Legend telling the formal epsilon (filled marker) from the audit's empirical lower bound (hollow)."""
    from matplotlib.lines import Line2D

    ax.legend(
        handles=[
            Line2D([], [], ls="", marker="o", color="#777", markeredgecolor="black", label="formal ε (tightest)"),
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                markerfacecolor="none",
                color="#777",
                label="empirical ε lower bound (audit)",
            ),
        ],
        fontsize=7,
        loc="lower right",
    )


def _annotate_frontier_labels(ax: Any, points: Sequence[FrontierPoint], positions: np.ndarray, ys: np.ndarray) -> None:
    """Label every point, labels pushed apart (`_spread_labels`) and joined to a moved point by a thin line."""
    to_axes = ax.transAxes.inverted()
    disp = ax.transData.transform(np.column_stack([positions, ys]))
    frac = to_axes.transform(disp)
    label_y = _spread_labels(frac[:, 0], frac[:, 1])
    for p, (fx, fy), ly in zip(points, frac, label_y):
        moved = abs(ly - fy) > 1e-9
        ax.annotate(
            _t(p.label),
            (fx, fy),
            xycoords="axes fraction",
            xytext=(fx + 0.015, ly + 0.012),
            textcoords="axes fraction",
            fontsize=8,
            va="bottom",
            arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.6} if moved else None,
        )


def _finite_series(xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def epsilon_rounds_figure(
    curves: Mapping[str, Mapping[str, Sequence[float]]], title: str = "", delta: float | None = None
) -> Figure:
    """Cumulative epsilon versus rounds: ``curves`` maps a label (an accountant, or "method ·
    accountant") to {"rounds": [...], "epsilon": [...]}. Non-finite epsilons are not drawn."""
    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    linestyles = ["-", "--", ":", "-."]
    for i, (label, c) in enumerate(curves.items()):
        x, y = _finite_series(c["rounds"], c["epsilon"])
        if x.size == 0:
            continue
        ax.plot(
            x,
            y,
            marker="o",
            ms=3,
            ls=linestyles[(i // len(_PALETTE)) % 4],
            color=_PALETTE[i % len(_PALETTE)],
            label=_t(label),
        )
    ax.set_xlabel("round")
    ax.set_ylabel("ε" + (f" (δ = {delta:g})" if delta is not None else ""))
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, ncols=1 if len(ax.lines) <= 8 else 2)
    else:
        ax.text(0.5, 0.5, "no finite epsilon", transform=ax.transAxes, ha="center", va="center", color="#777")
    if title:
        ax.set_title(_t(title))
    return fig


def _dim_key(k: str) -> tuple[int, float, str]:
    try:
        return (0, float(k), k)
    except ValueError:
        return (1, 0.0, k)


def figure_caption(name: str, result: AuditResult | None = None) -> str:
    """The caption of figure ``name``: `FIGURE_CAPTIONS`, plus what the result's analyses say
    about how that figure's data was made (``analyses.extra[name]`` when it is text)."""
    caption = FIGURE_CAPTIONS.get(name, name)
    note = None if result is None else result.analyses.extra.get(name)
    return f"{caption} Here: {note}." if isinstance(note, str) and note else caption


def occupancy_figure(occupancy: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """Occupancy ratio (log y) versus rho, one curve per dimension d (PrivacyFace Fig. 3).
    Ratios of 0 cannot be drawn on the log axis and are noted."""
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    dropped = 0
    for i, d in enumerate(sorted(occupancy, key=_dim_key)):
        x, y = _finite_series(occupancy[d]["rho"], occupancy[d]["ratio"])
        order = np.argsort(x)
        x, y = x[order], y[order]
        dropped += int(np.sum(y <= 0))
        ax.plot(x[y > 0], y[y > 0], color=_PALETTE[i % len(_PALETTE)], label=_t(f"d = {d}"))
    ax.set_yscale("log")
    if ax.lines:
        ax.set_ylim(top=2.0)  # a ratio is at most 1: no decades above it
    ax.set_xlabel("cluster margin ρ (radians)")
    ax.set_ylabel("occupancy ratio")
    ax.grid(True, which="both", alpha=0.25)
    if ax.lines:
        ax.legend(fontsize=8)
    if dropped:
        ax.text(
            0.01,
            0.01,
            f"{dropped} ratio(s) equal to 0 not drawn (log axis)",
            transform=ax.transAxes,
            fontsize=7,
            color="#555",
        )
    return fig


def cos_distribution_figure(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Box plots of cos(p, p_hat), one per record, coloured by rho; each tick names the
    parameters that vary across records (epsilon, rho, Q, calibration)."""
    recs = sorted(
        records,
        key=lambda r: (
            str(r.get("calibration", "")),
            int(r["queries"]),
            float(r["rho"]),
            float(r["epsilon"]),
            str(r.get("label", "")),
        ),
    )
    fig = new_figure(max(6.0, 0.55 * len(recs) + 2.0), 4.4)
    ax = fig.add_subplot()
    varying = [
        k for k in ("epsilon", "rho", "queries", "calibration", "label") if len({str(r.get(k, "")) for r in recs}) > 1
    ]
    symbols = {"epsilon": "ε", "rho": "ρ", "queries": "Q", "calibration": "", "label": ""}
    rhos = sorted({float(r["rho"]) for r in recs})
    data, labels, colors = [], [], []
    for r in recs:
        vals = np.asarray(r["values"], dtype=float)
        data.append(vals[np.isfinite(vals)])
        parts = []
        for k in varying or ["epsilon", "rho"]:
            v = r.get(k, "")
            parts.append(f"{symbols[k]}={v:g}" if isinstance(v, (int, float)) and symbols[k] else _t(v))
        labels.append("\n".join(parts))
        colors.append(_PALETTE[rhos.index(float(r["rho"])) % len(_PALETTE)])
    if data:
        box = ax.boxplot(data, patch_artist=True, widths=0.6, showfliers=True, flierprops={"markersize": 2})
        for patch, c in zip(box["boxes"], colors):
            patch.set_facecolor(c)
            patch.set_alpha(0.55)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
        if len(rhos) > 1:
            ax.legend(
                handles=[
                    Patch(color=_PALETTE[i % len(_PALETTE)], alpha=0.55, label=f"ρ = {r:g}") for i, r in enumerate(rhos)
                ],
                fontsize=7,
                loc="lower right",
            )
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#777")
    ax.set_ylabel("cos(p, p̂)")
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="#999", lw=0.6)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _draw_roc(ax: Any, curves: Mapping[str, Mapping[str, Sequence[float]]], floor: float) -> None:
    for i, (label, c) in enumerate(curves.items()):
        fpr = np.asarray(c["fpr"], dtype=float)
        tpr = np.asarray(c["tpr"], dtype=float)
        if fpr.shape != tpr.shape:
            raise ValueError(f"ROC {label!r}: fpr and tpr must have the same length, got {fpr.size} and {tpr.size}")
        ax.step(
            np.maximum(fpr, floor),
            tpr,
            where="post",
            color=_PALETTE[i % len(_PALETTE)],
            ls=["-", "--", ":", "-."][(i // len(_PALETTE)) % 4],
            label=_t(label),
        )
    grid = np.logspace(math.log10(floor), 0, 100)
    ax.plot(grid, grid, color="#999", ls=":", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, which="major", alpha=0.3)


def _roc_floor(curves: Sequence[Mapping[str, Sequence[float]]]) -> float:
    positive = [float(v) for c in curves for v in c["fpr"] if float(v) > 0]
    return max(min(positive) / 2, 1e-6) if positive else 1e-3


def roc_figure(curves: Mapping[str, Mapping[str, Sequence[float]]], title: str = "") -> Figure:
    """ROC curves {"fpr", "tpr"} on a log FPR axis; FPR = 0 is drawn at the axis' left edge."""
    fig = new_figure(6.0, 4.6)
    ax = fig.add_subplot()
    floor = _roc_floor(list(curves.values()))
    _draw_roc(ax, curves, floor)
    ax.set_xlabel(f"false positive rate (log; FPR = 0 drawn at {floor:.1g})")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(_t(title))
    return fig


def membership_roc_figure(methods: Sequence[MethodResult]) -> Figure | None:
    """One panel per method with the ROC curves of its attacks (None when no attack has one)."""
    panels = [
        (m, {f"{a.observer}: {a.attack} on {a.target_kind}": a.roc for a in m.attacks if a.roc is not None})
        for m in methods
    ]
    panels = [(m, c) for m, c in panels if c]
    if not panels:
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(4.2 * ncols, 3.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    floor = _roc_floor([c for _, cs in panels for c in cs.values()])
    for ax, (m, curves) in zip(axes.flat, panels):
        _draw_roc(ax, curves, floor)
        ax.set_title(_t(m.name), fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.remove()
        elif i + ncols >= len(panels):  # nothing below it
            ax.set_xlabel("FPR (log)")
        if i % ncols == 0 and i < len(panels):
            ax.set_ylabel("TPR")
    return fig


_CURVE_PANELS = (
    ("held-out feature cosine", (("heldout_feature_cosine", "-"),)),
    ("pixel L1 (held-out; training dashed)", (("heldout_l1", "-"), ("l1", "--"))),
    ("adversarial loss (D; G dashed)", (("d_loss", "-"), ("g_adv_loss", "--"))),
)


def decoder_curve_figure(methods: Sequence[MethodResult]) -> Figure | None:
    """The inversion decoder's training curve per epoch, one line per method (its observed model):
    held-out feature cosine, held-out and training L1, D's and G's adversarial losses (a panel is
    left out when no method measured it). The curve is read from the first decoder inversion
    finding of each method that carries one (`reports.tables.decoder_curve_of`); None: none does."""
    curves = {}
    for m in methods:
        found = next(
            (
                c
                for a in m.attacks
                if a.attack == "inversion" and not is_whitebox(a)
                for c in [decoder_curve_of(a)]
                if c
            ),
            None,
        )
        if found:
            curves[m.name] = found
    if not curves:
        return None
    panels = [(t, fields) for t, fields in _CURVE_PANELS if any(f in c for c in curves.values() for f, _ls in fields)]
    fig = new_figure(4.0 * len(panels) + 1.0, 3.8)
    styles = _styles(list(curves))
    for i, (title, fields) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for name, curve in curves.items():
            color, marker = styles[name]
            for field_name, linestyle in fields:
                x, y = _finite_series(
                    [e for e, _v in curve.get(field_name, [])], [v for _e, v in curve.get(field_name, [])]
                )
                if x.size:
                    label = _t(name) if linestyle == "-" else None
                    ax.plot(x, y, color=color, marker=marker, ms=3, ls=linestyle, label=label)
        ax.set_title(_t(title), fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        fontsize=7,
        ncols=_legend_columns(list(handles), fig),
        frameon=False,
    )
    return fig


def _check_images(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 images [N, C, H, W], got dtype {a.dtype}")
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be uint8 images [N, C, H, W] with C in (1, 3), got shape {a.shape}")
    return a


def image_grid_figure(
    real: Any, reconstructions: Any, max_images: int = 8, title: str = "", column_titles: Sequence[str] | None = None
) -> Figure:
    """Real images (top row) above their reconstructions (one row per reconstruction set).

    ``real``: uint8 [N, C, H, W] (numpy or torch on CPU); ``reconstructions``: one array of the
    same shape, or a mapping label -> array; at most ``max_images`` columns are drawn.
    """
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    real_a = _check_images(real, "real")
    recs = dict(reconstructions) if isinstance(reconstructions, Mapping) else {"reconstruction": reconstructions}
    if not recs:
        raise ValueError("reconstructions must hold at least one image set")
    rows = [("real", real_a)]
    for label, arr in recs.items():
        a = _check_images(arr, f"reconstructions[{label!r}]")
        if a.shape != real_a.shape:
            raise ValueError(f"reconstructions[{label!r}] must have the shape of real {real_a.shape}, got {a.shape}")
        rows.append((str(label), a))
    n = min(real_a.shape[0], max_images)
    if n == 0:
        raise ValueError("real must hold at least one image")
    if column_titles is not None and len(column_titles) < n:
        raise ValueError(f"column_titles needs at least {n} entries, got {len(column_titles)}")
    fig = new_figure(0.95 * n + 0.9, 1.0 * len(rows) + (0.35 if title else 0.1))
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (label, arr) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            img = arr[c].transpose(1, 2, 0)
            ax.imshow(
                img[..., 0] if img.shape[2] == 1 else img,
                cmap="gray" if img.shape[2] == 1 else None,
                vmin=0,
                vmax=255,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(_t(label), fontsize=8)
            if r == 0 and column_titles is not None:
                ax.set_title(_t(column_titles[c]), fontsize=7)
    if title:
        fig.suptitle(_t(title), fontsize=9)
    return fig


def write_image_grid(
    path: str | os.PathLike[str], real: Any, reconstructions: Any, max_images: int = 8, title: str = ""
) -> Path:
    """Save `image_grid_figure` as one PNG at ``path`` (what `AttackFinding.image_grid` points to)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    fig = image_grid_figure(real, reconstructions, max_images=max_images, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110, metadata={"Software": "privaudit reports (matplotlib)"})
    return path


def _legend_columns(labels: Sequence[str], fig: Figure, fontsize: float = 8.0, most: int = 5) -> int:
    """Legend columns that fit the figure's width (a legend wider than the figure collapses the
    constrained layout): about 0.6 em per character plus the handle and padding per column."""
    longest = max((len(t) for t in labels), default=1)
    column = 0.6 * fontsize * longest + 3.5 * fontsize
    fits = int((fig.get_figwidth() * 72 - 20) // column)
    return max(1, min(most, len(labels), fits))


def utility_figure(
    utilities: Mapping[str, Mapping[str, float]], metrics: Sequence[str] | None = None, title: str = ""
) -> Figure:
    """Grouped bars: one cluster per method, one bar per metric; NaN (unsupported) is marked n/a."""
    names = list(utilities)
    if metrics is None:
        metrics = sorted({k for u in utilities.values() for k in u}, key=metric_sort_key)
    fig = new_figure(min(11.0, max(6.0, 0.75 * len(names) + 1.5)), 4.6)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(metrics))
    handles = []
    for j, metric in enumerate(metrics):
        xs = np.arange(len(names)) + (j - (len(metrics) - 1) / 2) * width
        vals = np.array([float(utilities[n].get(metric, math.nan)) for n in names])
        ok = np.isfinite(vals)
        color = _PALETTE[j % len(_PALETTE)]
        ax.bar(xs[ok], vals[ok], width=width * 0.95, color=color)
        handles.append(Patch(color=color, label=_t(metric) + ("" if ok.any() else " (n/a)")))
        for x in xs[~ok]:
            ax.text(x, 0.01, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color="#777")
    ax.set_xticks(range(len(names)), [_t(n) for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("value")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if metrics:
        ax.legend(
            handles=handles,
            fontsize=8,
            ncols=_legend_columns([str(h.get_label()) for h in handles], fig),
            loc="lower left",
            bbox_to_anchor=(0, 1.01),
            frameon=False,
        )
    if title:
        ax.set_title(_t(title))
    return fig


def utility_per_round_figure(methods: Sequence[MethodResult], metric: str) -> Figure:
    """``metric`` after each round, one line per method."""
    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    styles = _styles([m.name for m in methods])
    for m in methods:
        ys = [float(r.get(metric, math.nan)) for r in m.utility_per_round]
        x, y = _finite_series(list(range(1, len(ys) + 1)), ys)
        if x.size:
            color, marker = styles[m.name]
            ax.plot(x, y, color=color, marker=marker, ms=4, label=_t(m.name))
    ax.set_xlabel("round")
    ax.set_ylabel(_t(metric))
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, ncols=1 if len(ax.lines) <= 8 else 2)
    return fig


def render_all_figures(
    result: AuditResult, folder: str | os.PathLike[str], formats: Sequence[str] = ("png", "svg")
) -> dict[str, Path]:
    """Draw and save every figure whose data the result holds; returns name -> PNG path
    (names are keys of `FIGURE_CAPTIONS`). Figures without data are skipped."""
    out: dict[str, Path] = {}

    def put(name: str, fig: Figure | None) -> None:
        if fig is not None:
            out[name] = save_figure(fig, folder, name, formats=formats)

    metric = headline_utility_metric(result)
    if metric is not None:
        series = [("frontier_attack", "attack", "knn", _FAMILY_AXIS["knn"])]
        series += [(f"frontier_attack_{f}", "attack", f, _FAMILY_AXIS[f]) for f in FRONTIER_FAMILIES[1:]]
        series.append(
            (
                "frontier_epsilon",
                "epsilon",
                "knn",
                "formal ε of the shared class information (tightest accountant, log)",
            )
        )
        for name, axis, family, label in series:
            points = frontier_points(result, axis, metric, family)
            if points:
                shown = {p.label for p in points}
                omitted = [m.name for m in result.methods if m.name not in shown]
                put(name, frontier_figure(points, label, metric, log_x=axis == "epsilon", omitted=omitted))
    utilities = {m.name: m.utility for m in result.methods if m.utility}
    if utilities:
        put("utility", utility_figure(utilities))
    personal = {m.name: m.personalised_utility for m in result.methods if m.personalised_utility}
    if personal:
        put("personalised_utility", utility_figure(personal))
    with_rounds = [m for m in result.methods if m.utility_per_round]
    if with_rounds:
        counts: dict[str, int] = {}
        for m in with_rounds:
            for r in m.utility_per_round:
                for k, v in r.items():
                    if math.isfinite(float(v)):
                        counts[k] = counts.get(k, 0) + 1
        if counts:
            chosen = metric if metric in counts else max(sorted(counts), key=lambda k: counts[k])
            put("utility_per_round", utility_per_round_figure(with_rounds, chosen))
    a = result.analyses
    if a.epsilon_vs_rounds:
        put("epsilon_vs_rounds", epsilon_rounds_figure(a.epsilon_vs_rounds))
    per_method: dict[str, dict[str, Sequence[float]]] = {}
    for m in result.methods:
        for acc, eps in m.privacy.epsilon_per_round.items():
            if any(math.isfinite(float(e)) for e in eps):
                per_method[f"{m.name} · {acc}"] = {"rounds": list(range(1, len(eps) + 1)), "epsilon": eps}
    if per_method:
        deltas = {m.privacy.delta for m in result.methods if m.privacy.epsilon_per_round}
        put(
            "epsilon_per_round_methods",
            epsilon_rounds_figure(per_method, delta=next(iter(deltas)) if len(deltas) == 1 else None),
        )
    if a.occupancy:
        put("occupancy", occupancy_figure(a.occupancy))
    if a.cos_p_phat:
        put("cos_p_phat", cos_distribution_figure(a.cos_p_phat))
    put("membership_roc", membership_roc_figure(result.methods))
    put("decoder_curve", decoder_curve_figure(result.methods))
    return out
