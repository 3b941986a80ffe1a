"""Figures: data selection computed independently, files written, pixels where it matters."""

from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from PIL import Image
from reports_helpers import small_result

from reports import figures as F
from reports.sample import occupancy_ratio
from reports.schema import AttackFinding, AuditResult, MethodResult, PrivacySummary
from reports.selection import headline_utility_metric, metric_sort_key


def _png_pixels(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def test_save_figure_writes_png_and_svg(tmp_path):
    fig = F.epsilon_rounds_figure({"rdp": {"rounds": [1, 2, 3], "epsilon": [0.5, 0.8, 1.0]}})
    png = F.save_figure(fig, tmp_path / "figs", "eps")
    assert png == tmp_path / "figs" / "eps.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    root = ET.parse(tmp_path / "figs" / "eps.svg").getroot()
    assert root.tag.endswith("svg")
    # Deterministic files: saving again gives the same bytes.
    first_svg = (tmp_path / "figs" / "eps.svg").read_bytes()
    F.save_figure(fig, tmp_path / "figs", "eps")
    assert (tmp_path / "figs" / "eps.svg").read_bytes() == first_svg
    with pytest.raises(ValueError, match="figure name must use only"):
        F.save_figure(fig, tmp_path, "../evil")
    with pytest.raises(ValueError, match="formats must be a non-empty subset"):
        F.save_figure(fig, tmp_path, "x", formats=("gif",))


def test_headline_metric_prefers_the_lowest_supported_far():
    r = small_result()
    # tar@far=1e-3 is NaN for both methods, so 1e-2 is the lowest FAR finite everywhere.
    assert headline_utility_metric(r) == "tar@far=1e-2"
    r.methods[1].utility["tar@far=1e-2"] = math.nan
    assert headline_utility_metric(r) == "accuracy"
    assert headline_utility_metric(AuditResult(software={})) is None
    assert sorted(["auroc", "tar@far=1e-3", "x", "accuracy", "tar@far=1e-1"], key=metric_sort_key) == \
        ["accuracy", "tar@far=1e-1", "tar@far=1e-3", "auroc", "x"]


def test_frontier_points_match_a_hand_computation():
    r = small_result()
    r.methods.append(MethodResult("local", utility={"tar@far=1e-2": 0.3}, privacy=PrivacySummary(
        formal_epsilon={"basic": 0.0})))
    attack = {p.label: (p.x, p.y) for p in F.frontier_points(r, "attack")}
    # privacyface: one attack (0.2); fedgc: max(0.9, 0.6); local: no attack -> left out.
    assert attack == {"privacyface": (0.2, 0.5), "fedgc": (0.9, 0.55)}
    eps = {p.label: (p.x, p.y) for p in F.frontier_points(r, "epsilon")}
    assert eps == {"privacyface": (2.5, 0.5), "fedgc": (math.inf, 0.55), "local": (0.0, 0.3)}
    with pytest.raises(ValueError, match="x must be 'attack' or 'epsilon'"):
        F.frontier_points(r, "utility")


def test_frontier_figure_places_zero_and_infinity_at_the_edges():
    points = [F.FrontierPoint("a", 0.0, 0.3), F.FrontierPoint("b", 2.5, 0.5), F.FrontierPoint("c", math.inf, 0.55)]
    fig = F.frontier_figure(points, "eps", "tar", log_x=True)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    xs = sorted(float(c.get_offsets()[0][0]) for c in ax.collections)
    assert xs == [0.1, 2.5, 100.0]  # a decade below 10^0 and above 10^1
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "0" and labels[-1] == "∞\nno guarantee"
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["a", "b", "c"]


def _gids(ax, prefix):
    return {c.get_gid().split(":", 1)[1]: tuple(map(float, c.get_offsets()[0]))
            for c in ax.collections if (c.get_gid() or "").startswith(prefix)}


def test_epsilon_frontier_of_a_result_one_point_per_method_and_infinity_marked(tmp_path):
    r = small_result()
    r.methods.append(MethodResult("fedpe", utility={"tar@far=1e-2": 0.45}, privacy=PrivacySummary(
        formal_epsilon={"rdp": 0.0, "basic": 0.0})))
    r.methods.append(MethodResult("no-accounting", utility={"tar@far=1e-2": 0.4}))  # no ε at all: left out
    points = F.frontier_points(r, "epsilon")
    assert {p.label: p.lower_bound for p in points if not math.isnan(p.lower_bound)} == {"privacyface": 3.1}
    # a per-release audit never shares the axis of an ε composed over the run
    per_release = small_result()
    per_release.methods[0].privacy.empirical[0].scope = "one release"
    assert all(math.isnan(p.lower_bound) for p in F.frontier_points(per_release, "epsilon"))
    fig = F.frontier_figure(points, "ε", "tar@far=1e-2", log_x=True, omitted=["no-accounting"])
    ax = fig.axes[0]
    formal = _gids(ax, "point:")
    assert set(formal) == {"privacyface", "fedgc", "fedpe"}  # one point per method with an ε
    ticks = dict(zip([t.get_text() for t in ax.get_xticklabels()], ax.get_xticks()))
    # finite values 2.5 (formal) and 3.1 (lower bound) span the decade [1, 10]: 0 at 0.1, ∞ at 100
    assert formal["fedgc"] == (ticks[F.INFINITY_TICK], 0.55) == (100.0, 0.55)
    assert formal["fedpe"] == (ticks["0"], 0.45) == (0.1, 0.45)
    assert formal["privacyface"] == (2.5, 0.5)
    assert _gids(ax, "lower-bound:") == {"privacyface": (3.1, 0.5)}  # the audit's bound, on its row
    assert "no-accounting" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["formal ε (tightest)",
                                                                  "empirical ε lower bound (audit)"]
    drawn = F.render_all_figures(r, tmp_path / "figs")
    assert drawn["frontier_epsilon"] == tmp_path / "figs" / "frontier_epsilon.png"
    assert drawn["frontier_epsilon"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    svg = (tmp_path / "figs" / "frontier_epsilon.svg").read_text()
    assert ET.fromstring(svg).tag.endswith("svg") and "no guarantee" in svg
    assert {f"point:{m}" for m in ("privacyface", "fedgc", "fedpe")} <= set(re.findall(r'id="([^"]+)"', svg))
    assert "lower-bound:privacyface" in svg


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=25))
def test_spread_labels_terminates_and_separates(points):
    fx = np.array([p[0] for p in points])
    fy = np.array([p[1] for p in points])
    gap, width = 0.045, 0.2
    out = F._spread_labels(fx, fy, gap, width)
    assert np.all(out >= fy - 1e-12)
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            if abs(fx[i] - fx[j]) < width:
                assert abs(out[i] - out[j]) >= gap * (1 - 1e-6)


def test_occupancy_ratio_matches_closed_forms():
    rho = np.linspace(0.0, math.pi, 13)
    # d = 2: an arc of half-angle rho covers rho / pi of the circle.
    np.testing.assert_allclose(occupancy_ratio(rho, 2), rho / math.pi, atol=1e-12)
    # d = 3: Archimedes, a cap of angle rho covers (1 - cos rho) / 2 of the sphere.
    np.testing.assert_allclose(occupancy_ratio(rho, 3), (1 - np.cos(rho)) / 2, atol=1e-12)
    with pytest.raises(ValueError, match=r"rho must be in \[0.0, 3.14159"):
        occupancy_ratio(np.array([4.0]), 3)
    fig = F.occupancy_figure({"3": {"rho": rho.tolist(), "ratio": ((1 - np.cos(rho)) / 2).tolist()}})
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 12  # the ratio 0 at rho = 0 is not drawn
    assert any("not drawn" in t.get_text() for t in ax.texts)


def test_roc_figure_uses_log_fpr_and_keeps_points():
    fig = F.roc_figure({"server": {"fpr": [0.0, 0.001, 0.1, 1.0], "tpr": [0.0, 0.2, 0.6, 1.0]}})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    line = ax.lines[0]
    np.testing.assert_allclose(line.get_xdata(), [0.0005, 0.001, 0.1, 1.0])
    np.testing.assert_allclose(line.get_ydata(), [0.0, 0.2, 0.6, 1.0])
    with pytest.raises(ValueError, match="same length"):
        F.roc_figure({"bad": {"fpr": [0.0, 1.0], "tpr": [1.0]}})


def test_image_grid_shows_the_real_and_reconstructed_pixels(tmp_path):
    real = np.zeros((3, 3, 8, 8), dtype=np.uint8)
    real[:, 0] = 255  # pure red
    recon = np.zeros_like(real)
    recon[:, 2] = 255  # pure blue
    fig = F.image_grid_figure(real, recon)
    assert len(fig.axes) == 6
    px = _png_pixels(fig).reshape(-1, 3).astype(int)
    red = np.sum((px[:, 0] > 240) & (px[:, 1] < 15) & (px[:, 2] < 15))
    blue = np.sum((px[:, 2] > 240) & (px[:, 0] < 15) & (px[:, 1] < 15))
    assert red > 100 and blue > 100 and abs(red - blue) < 0.2 * red
    path = F.write_image_grid(tmp_path / "g" / "grid.png", real, {"a": recon, "b": real}, max_images=2)
    assert Image.open(path).size[0] > 0
    with pytest.raises(ValueError, match="dtype float32"):
        F.image_grid_figure(real.astype(np.float32), recon)
    with pytest.raises(ValueError, match="must have the shape of real"):
        F.image_grid_figure(real, recon[:2])
    with pytest.raises(ValueError, match=r"with C in \(1, 3\)"):
        F.image_grid_figure(real[:, :2], recon[:, :2])
    with pytest.raises(ValueError, match="must end in .png"):
        F.write_image_grid(tmp_path / "g.jpg", real, recon)


def test_utility_and_cos_figures():
    fig = F.utility_figure({"a": {"accuracy": 0.8, "auroc": math.nan}, "b": {"accuracy": 0.7, "auroc": 0.9}})
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == [0.7, 0.8, 0.9]  # the NaN bar is not drawn ...
    assert [t.get_text() for t in ax.texts] == ["n/a"]  # ... but marked
    records = [{"epsilon": e, "rho": 1.3, "queries": 1, "values": [0.1 * e, 0.2 * e, 0.3 * e]} for e in (1.0, 3.0)]
    fig = F.cos_distribution_figure(records)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["ε=1", "ε=3"]  # only the varying parameter is named


def test_utility_figure_legend_fits_many_long_metric_names():
    import warnings

    names = [f"fedfr:tar@far={f:g}" for f in (0.1, 0.01, 1e-3)] + ["fedfr:auroc", "fedfr:rank1",
                                                                    "fedfs:auroc [aggregated]"]
    fig = F.utility_figure({m: {k: 0.5 for k in names} for m in ("fedpe", "fedfr", "fedfs")})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _png_pixels(fig)
    assert not [w for w in caught if "constrained_layout" in str(w.message)]
    ax = fig.axes[0]
    assert ax.get_position().width > 0.5  # the axes keep most of the figure's width
    assert len(ax.get_legend().get_texts()) == len(names)


def test_figures_escape_mathtext_dollars():
    fig = F.utility_figure({"$x^2$ method": {"accuracy": 0.5}})
    _png_pixels(fig)  # a mathtext parse error would raise here
    assert fig.axes[0].get_xticklabels()[0].get_text() == r"\$x^2\$ method"


def test_render_all_figures_skips_what_is_absent(tmp_path, sample_report):
    folder = sample_report[0]
    names = {p.stem for p in (folder / "figures").glob("*.png")}
    assert names == set(F.FIGURE_CAPTIONS)  # the sample has data for every figure
    assert names == {p.stem for p in (folder / "figures").glob("*.svg")}
    assert F.render_all_figures(AuditResult(software={}), tmp_path / "none") == {}
    only_utility = AuditResult(software={}, methods=[MethodResult("a", utility={"accuracy": 0.5})])
    assert set(F.render_all_figures(only_utility, tmp_path / "u", formats=("png",))) == {"utility"}
    roc_only = AuditResult(software={}, methods=[MethodResult("a", attacks=[
        AttackFinding("knn", "server", "w", roc={"fpr": [0.0, 1.0], "tpr": [0.0, 1.0]})])])
    assert set(F.render_all_figures(roc_only, tmp_path / "r", formats=("png",))) == {"membership_roc"}


def test_figure_captions_carry_the_analyses_notes():
    from reports_helpers import small_result

    from reports.figures import FIGURE_CAPTIONS, figure_caption

    result = small_result()
    result.analyses.extra["cos_p_phat"] = "first query on client:0's centers"
    assert figure_caption("cos_p_phat", result) == FIGURE_CAPTIONS["cos_p_phat"] + " Here: first query on client:0's centers."
    assert figure_caption("occupancy", result) == FIGURE_CAPTIONS["occupancy"]
    assert figure_caption("occupancy") == FIGURE_CAPTIONS["occupancy"]


def test_frontier_points_carry_their_intervals_and_one_figure_per_attack_family(tmp_path):
    r = small_result()
    r.methods[0].utility_intervals = {"unit": "test identity", "intervals": {"tar@far=1e-2": [0.42, 0.58]}}
    knn = {p.label: p for p in F.frontier_points(r, "attack")}
    # privacyface: the k-NN attack's own interval on its success metric; the utility's over identities
    assert (knn["privacyface"].x_low, knn["privacyface"].x_high) == (0.1, 0.3)
    assert (knn["privacyface"].y_low, knn["privacyface"].y_high) == (0.42, 0.58)
    assert math.isnan(knn["fedgc"].x_low) and math.isnan(knn["fedgc"].y_low)  # none recorded: no bar
    inversion = {p.label: (p.x, p.y) for p in F.frontier_points(r, "attack", family="inversion")}
    assert inversion == {"fedgc": (0.6, 0.55)}  # only fedgc has an inversion finding
    with pytest.raises(ValueError, match="family must be one of"):
        F.frontier_points(r, "attack", family="dp-kmeans")
    fig = F.frontier_figure(list(knn.values()), "k-NN", "tar@far=1e-2")
    bars = {c.get_gid() for c in fig.axes[0].collections if (c.get_gid() or "").startswith("interval:")}
    assert bars == {"interval:privacyface"}
    figures = F.render_all_figures(r, tmp_path / "figs", formats=("png",))
    assert {"frontier_attack", "frontier_attack_inversion"} <= set(figures)
    assert "frontier_attack_gradient" not in figures  # no gradient finding in this result


def test_frontier_over_seeds_uses_means_and_t_intervals():
    r = small_result()
    r.repeats = {"summary": {
        "privacyface": {"tar@far=1e-2": {"mean": 0.47, "ci_low": 0.40, "ci_high": 0.54, "n": 3},
                        "attack:knn": {"mean": 0.25, "ci_low": 0.15, "ci_high": 0.35, "n": 3}},
        "fedgc": {"tar@far=1e-2": {"mean": 0.5, "ci_low": math.nan, "ci_high": math.nan, "n": 1}}}}
    points = {p.label: p for p in F.frontier_points(r, "attack")}
    p = points["privacyface"]
    assert (p.x, p.x_low, p.x_high, p.y, p.y_low, p.y_high) == (0.25, 0.15, 0.35, 0.47, 0.40, 0.54)
    # a non-finite seed interval falls back to the single result's value and its own interval
    assert (points["fedgc"].x, points["fedgc"].y) == (0.9, 0.55)
