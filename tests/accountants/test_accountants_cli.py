"""`privaudit account dplc` through privaudit.cli.main."""

from __future__ import annotations

import json
import math

import pytest

from privaudit.cli import main
from accountants import compute_epsilon, dplc_sensitivity, gaussian_sigma, occupancy_ratio, GaussianEvent, SelfComposedEvent


ARGS = ["account", "dplc", "--rho", "1.3", "--epsilon", "0.5", "--delta", "1e-5", "--cluster-size", "512"]


def test_json_output_has_the_nested_keys(capsys):
    assert main(ARGS + ["--dim", "128", "--queries", "2", "--rounds", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sensitivity"]["tight"] == pytest.approx(math.sqrt(2 - 2 * math.cos(2.6)) / 512)
    assert report["sensitivity"]["weak"] == pytest.approx(2 * math.sqrt(2 - 2 * math.cos(1.3)) / 512)
    assert report["sigma"]["classic"] == pytest.approx(report["sensitivity"]["tight"] * math.sqrt(2 * math.log(1.25e5)) / 0.5)
    assert report["sigma"]["analytic"] == pytest.approx(gaussian_sigma(dplc_sensitivity(1.3, 512), 0.5, 1e-5))
    assert report["occupancy_ratio"] == pytest.approx(occupancy_ratio(1.3, 128))
    assert report["releases"] == 6 and report["delta_total"] == pytest.approx(6e-5)
    assert report["claimed_total_epsilon"] == pytest.approx(3.0)
    multiplier = report["sigma"]["analytic"] / report["sensitivity"]["tight"]
    expected = compute_epsilon(SelfComposedEvent(GaussianEvent(multiplier), 6), 6e-5, "rdp").epsilon
    assert report["epsilon_total"]["analytic"]["rdp"] == pytest.approx(expected)
    for method in ("classic", "analytic"):
        values = report["epsilon_total"][method]
        assert values["gdp"] <= values["prv"] + 1e-9 <= values["rdp"] + 1e-9 <= values["basic"] + 1e-9
    assert report["warnings"] == []  # epsilon 0.5 is inside the classic range


def test_text_output_and_classic_warning(capsys):
    assert main(["account", "dplc", "--rho", "1.3", "--epsilon", "1", "--delta", "5e-5", "--cluster-size", "512"]) == 0
    out = capsys.readouterr().out
    assert "tight (Thm 2)" in out and "analytic" in out and "occupancy ratio" in out
    for name in ("basic", "advanced", "rdp", "prv", "gdp"):
        assert f"    {name}" in out
    assert "proven only for epsilon in (0, 1)" in out


@pytest.mark.parametrize("extra,needle", [
    (["--rho", "4"], "rho"),
    (["--epsilon", "0"], "--epsilon"),
    (["--delta", "1.5"], "--delta"),
    (["--cluster-size", "0"], "cluster_size"),
    (["--dim", "1"], "--dim"),
    (["--queries", "0"], "--queries"),
    (["--delta", "0.4", "--rounds", "3"], "total delta"),
])
def test_bad_input_exits_2_with_a_message(capsys, extra, needle):
    assert main(ARGS + extra) == 2
    err = capsys.readouterr().err
    assert needle in err


def test_argparse_errors_and_missing_target_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["account", "dplc", "--rho", "abc", "--epsilon", "1", "--delta", "1e-5", "--cluster-size", "5"])
    assert info.value.code == 2
    assert main(["account"]) == 2
