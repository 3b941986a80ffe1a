"""report.html in a real headless browser (Debian's chromium): it loads without errors and a
screenshot is not blank. A control page proves the checks can fail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reports_helpers import small_result

from reports.html import write_report

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1200, 1600)
# Console messages (script errors, CSP-blocked loads) and failed loads as chromium logs them.
PROBLEM_MARKERS = ("Uncaught", ":CONSOLE", "Failed to load resource", "net::ERR_")


def _require_chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run the test set-up step (scripts/setup.sh installs Debian's chromium, "
                    "`apt-get install -y chromium`); the browser test cannot run without it")
    return CHROMIUM


def _screenshot(page: Path, tmp_path: Path) -> tuple[np.ndarray, str]:
    shot = tmp_path / f"{page.stem}.png"
    cmd = [str(_require_chromium()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           f"--window-size={WINDOW[0]},{WINDOW[1]}", "--enable-logging=stderr", "--v=0", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert shot.is_file(), f"chromium wrote no screenshot:\n{proc.stderr[-3000:]}"
    return np.asarray(Image.open(shot).convert("L"), dtype=float), proc.stderr


def _problems(stderr: str, page: Path) -> list[str]:
    return [line for line in stderr.splitlines() if any(m in line for m in PROBLEM_MARKERS)]


def _dark_fraction(pixels: np.ndarray) -> float:
    """Share of dark pixels (text, lines, images), leaving out the scrollbar strip on the right."""
    return float(np.mean(pixels[:, :-24] < 160))


def _is_blank(pixels: np.ndarray) -> bool:
    return _dark_fraction(pixels) < 0.002


def _count_colour(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> int:
    return int(np.sum(np.all(np.abs(rgb.astype(int) - np.array(colour)) <= tol, axis=-1)))


@pytest.mark.browser
def test_report_loads_cleanly_and_renders(tmp_path):
    # One method, so that the first inlined figure starts within the 1200 x 1600 screenshot.
    result = small_result(scenario={"note": "<script>alert(1)</script>", "x": '"onload=alert(2)'})
    result.methods = result.methods[1:]
    page = write_report(result, tmp_path / "out")
    assert list((tmp_path / "out" / "figures").glob("*.png")), "the report should carry figures"
    pixels, stderr = _screenshot(page, tmp_path)
    assert pixels.shape == (WINDOW[1], WINDOW[0])
    assert _problems(stderr, page) == []
    assert not _is_blank(pixels), f"screenshot looks blank ({_dark_fraction(pixels):.4%} dark pixels)"
    rgb = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"))
    assert _count_colour(rgb, (0x1F, 0x4E, 0x8C)) > 500  # the header's colour: the inline CSS applied
    # Matplotlib draws axes and tick labels in pure black; the page's darkest colour is #1d2330.
    # So near-black pixels mean the inlined data: image decoded and was drawn.
    assert _count_colour(rgb, (0, 0, 0), tol=8) > 500


@pytest.mark.browser
def test_the_checks_catch_errors_and_blank_pages(tmp_path):
    """Control: our page's security policy blocks an injected script and an outside image, and
    chromium reports both; an empty page is recognised as blank."""
    result = small_result()
    page = write_report(result, tmp_path / "out", figures=False)
    text = page.read_text(encoding="utf-8")
    body_start = text.index("<main>")
    text = (text[:body_start] + '<main><script>throw new Error("boom")</script><img src="missing.png"></main>'
            + "</body></html>")
    page.write_text(text, encoding="utf-8")
    pixels, stderr = _screenshot(page, tmp_path)
    problems = _problems(stderr, page)
    assert any("Content Security Policy" in p or "Uncaught" in p for p in problems), stderr[-2000:]
    assert any("missing.png" in p for p in problems), stderr[-2000:]
    assert _is_blank(pixels)


def test_a_missing_chromium_fails_with_the_set_up_hint(monkeypatch, tmp_path):
    import test_reports_browser as this

    monkeypatch.setattr(this, "CHROMIUM", tmp_path / "no-chromium-here")
    with pytest.raises(pytest.fail.Exception, match="run the test set-up step"):
        this._require_chromium()
