"""report.html / report.md / notebook HTML: content, escaping, self-containment, structure."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image
from reports_helpers import small_result

from reports.html import render_html, write_report
from reports.markdown import escape_cell, render_markdown, summary_markdown
from reports.schema import AttackFinding, AuditResult, MethodResult, PrivacySummary

HOSTILE = '<script>alert(1)</script>'
ATTR = '"onload=alert(2)'
IMG = "<img src=x onerror=alert(3)>"


class _Collector(HTMLParser):
    """Tags, attributes, ids and text of a page, and a check that every element is closed."""

    VOID = {"meta", "img", "br", "hr", "input", "link", "wbr"}  # HTML void elements

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.ids: set[str] = set()
        self.stack: list[str] = []
        self.mismatches: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            self.attrs.append((tag, k, v))
            if k == "id":
                self.ids.add(v)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.mismatches.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Collector:
    c = _Collector()
    c.feed(page)
    c.close()
    return c


def hostile_result() -> AuditResult:
    r = small_result(scenario={"note": HOSTILE, "attr": ATTR, IMG: "key is hostile", "nested": {"x": [HOSTILE]}},
                     title=f"audit {HOSTILE}", flags=[f"flag {IMG}"])
    m = r.methods[1]
    m.description = ATTR
    m.observers = {f"client:{IMG}": [HOSTILE]}
    m.utility[f"metric{HOSTILE}"] = 0.5
    m.attacks[0].notes = f"note {ATTR}"
    m.privacy.guarantee = f"none {IMG}"
    r.methods.append(MethodResult(name=f"evil{HOSTILE}|x", shares=[ATTR],
                                  privacy=PrivacySummary(flags=[HOSTILE], formal_epsilon={f"acc{IMG}": 1.0})))
    r.software[f"pkg{HOSTILE}"] = ATTR
    r.timings[f"stage{IMG}"] = 1.0
    r.analyses.extra = {IMG: HOSTILE}
    return r


def test_all_text_from_the_result_is_escaped(tmp_path):
    page = render_html(hostile_result(), {})
    for raw in (HOSTILE, ATTR, IMG, "<script", "<img src=x"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;onload=alert(2)" in page
    parsed = _parse(page)
    assert "script" not in parsed.tags
    assert not [a for a in parsed.attrs if a[1].startswith("on")]  # no event-handler attribute
    text = "".join(parsed.text)
    assert HOSTILE in text and ATTR in text and IMG in text  # shown as text, not lost
    md = render_markdown(hostile_result())
    assert HOSTILE not in md and IMG not in md and "&lt;script&gt;" in md
    nb = hostile_result()._repr_html_() + hostile_result().methods[1]._repr_html_()
    assert HOSTILE not in nb and IMG not in nb and ATTR not in nb


def test_page_is_self_contained_and_well_formed(sample_report):
    folder, result, path = sample_report
    page = path.read_text(encoding="utf-8")
    parsed = _parse(page)
    assert parsed.mismatches == [] and parsed.stack == []
    assert "script" not in parsed.tags and "link" not in parsed.tags and "iframe" not in parsed.tags
    for tag, key, value in parsed.attrs:
        if key == "src":
            assert value.startswith("data:image/png;base64,"), (tag, value[:40])
        if key == "href":
            assert value.startswith("#") and value[1:] in parsed.ids, value  # in-page links only
    assert "http://" not in page and "https://" not in page and "url(" not in page
    images = [v for t, k, v in parsed.attrs if t == "img" and k == "src"]
    grids = sum(a.image_grid is not None for m in result.methods for a in m.attacks)
    assert len(images) == len(list((folder / "figures").glob("*.png"))) + grids
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:' in page


def test_summary_is_the_first_table_with_one_row_per_method(sample_report):
    _, result, path = sample_report
    page = path.read_text(encoding="utf-8")
    first_table = page[page.index("<table"):page.index("</table>")]
    assert page.index('id="summary"') < page.index("<table")
    rows = re.findall(r"<tr>(.*?)</tr>", first_table, flags=re.S)
    assert len(rows) == len(result.methods) + 1  # header + methods
    for m, row in zip(result.methods, rows[1:]):
        assert f'<span class="name">{m.name}</span>' in row
    fedgc = rows[1 + [m.name for m in result.methods].index("fedgc")]
    assert "∞ (basic)" in fedgc and "no guarantee: class information leaves without noise" in fedgc
    pf = result.method("privacyface")
    pf_row = rows[1 + result.methods.index(pf)]
    assert f"{pf.privacy.formal_epsilon['rdp']:.3g} (rdp)" in pf_row
    assert "≥ 2.7" in pf_row and "claim refuted by audit" in pf_row
    # Sections in the promised order: summary, flags, tables, figures, scenario, software.
    order = [page.index(f'id="{a}"') for a in ("summary", "flags", "utility", "privacy", "audits", "attacks",
                                                 "figures", "reconstructions", "scenario", "software")]
    assert order == sorted(order)


def test_flags_are_listed(sample_report):
    _, result, path = sample_report
    page = path.read_text(encoding="utf-8")
    section = page[page.index('id="flags"'):page.index('id="utility"')]
    items = re.findall(r"<li>(.*?)</li>", section)
    assert len(items) == len(result.all_flags()) == 4
    assert any("refutes the claimed epsilon" in i for i in items)
    assert any("classic Gaussian calibration used at epsilon &gt;= 1" in i for i in items)
    empty = render_html(small_result(methods=[], flags=[]), {})
    assert "No flags" in empty


def test_write_report_writes_html_markdown_and_figures(sample_report):
    folder, result, path = sample_report
    assert path == folder / "report.html"
    md = (folder / "report.md").read_text(encoding="utf-8")
    for png in (folder / "figures").glob("*.png"):
        assert f"(figures/{png.name})" in md
        assert png.with_suffix(".svg").is_file()
    assert "## Summary" in md and "## Flags" in md and "## Scenario" in md


def test_image_grids_outside_the_results_folder_are_not_read(tmp_path):
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(outside)
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "fake.png").write_text("not a png")
    r = small_result()
    r.methods[0].attacks = [AttackFinding("inversion", "server", "w", image_grid="../secret.png"),
                            AttackFinding("inversion", "server", "v", image_grid="fake.png"),
                            AttackFinding("inversion", "server", "u", image_grid="missing.png")]
    page = render_html(r, {}, base_dir=folder)
    assert "data:image/png" not in page
    assert page.count("is missing, outside the results folder or not a PNG") == 3
    assert "not inlined (no results folder given)" in render_html(r, {})
    # A figure path that is not a PNG is reported, not inlined.
    assert "figure utility: " in render_html(r, {"utility": folder / "fake.png"})


def _table_blocks(md: str) -> list[list[str]]:
    blocks, current = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    return blocks + ([current] if current else [])


def test_markdown_tables_escape_pipes_and_keep_their_shape():
    assert escape_cell("a|b") == "a\\|b"
    assert escape_cell("x\ny") == "x<br>y"
    assert escape_cell("<b>") == "&lt;b&gt;"
    assert escape_cell("a\\|b") == "a\\\\\\|b"
    md = render_markdown(hostile_result())
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;\\|x" in md
    blocks = _table_blocks(md)
    assert len(blocks) >= 6
    for block in blocks:
        counts = {len(re.findall(r"(?<!\\)\|", line.replace("\\\\", ""))) for line in block}
        assert len(counts) == 1, block  # every row has the header's number of cells
        assert set(block[1]) <= {"|", "-"}


def test_markdown_summary_matches_the_html_numbers(sample):
    md = summary_markdown(sample)
    lines = md.splitlines()
    assert len(lines) == 2 + len(sample.methods) + 2  # header, rule, rows, blank, note
    row = next(line for line in lines if line.startswith("| **privacyface**"))
    assert f"{sample.method('privacyface').privacy.formal_epsilon['rdp']:.3g} (rdp)" in row
    assert "**claim refuted by audit" in row and "rule R1" in row


def test_notebook_html_uses_the_same_tables():
    r = small_result()
    frag = r._repr_html_()
    parsed = _parse(frag)
    assert parsed.mismatches == [] and parsed.tags.count("table") == 2  # summary + utility
    assert "fedgc" in frag and "refutes the claimed epsilon" in frag
    one = r.methods[0]._repr_html_()
    assert _parse(one).mismatches == []
    for title in ("Utility (generic protocol)", "Formal privacy (accountants)", "Empirical privacy audits",
                  "Privacy per party", "Attacks"):
        assert title in one
    assert "0.500" in one and math.isnan(r.methods[0].utility["tar@far=1e-3"]) and "n/a" in one


def test_per_party_table_shows_each_partys_last_round():
    r = small_result()
    page = render_html(r, {})
    section = page[page.index('id="per-party"'):]
    section = section[:section.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)
    assert len(rows) == 2  # header + client:0 once
    assert re.findall(r">(\d+)<", rows[1]) == ["2", "10"]  # round 2, epsilon 10


def test_report_from_an_empty_result(tmp_path):
    path = write_report(AuditResult(software={}), tmp_path)
    page = Path(path).read_text(encoding="utf-8")
    assert _parse(page).mismatches == []
    assert (tmp_path / "report.md").is_file()
    assert not list((tmp_path / "figures").glob("*.png"))


def test_ipython_displays_results_as_html_and_figures_as_png():
    from IPython.core.formatters import DisplayFormatter

    from reports.figures import utility_figure

    formatter = DisplayFormatter()
    data, _ = formatter.format(small_result())
    assert "<table" in data["text/html"] and "fedgc" in data["text/html"]
    data, _ = formatter.format(small_result().methods[0])
    assert "<table" in data["text/html"]
    data, _ = formatter.format(utility_figure({"a": {"accuracy": 0.5}}))
    assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_number_formatting_by_hand():
    from reports.tables import flatten, fmt_bytes, fmt_epsilon, fmt_number

    assert [fmt_number(x) for x in (None, math.nan, math.inf, -math.inf, 0.12345, 0.0003, 0.0, 12.3456, 123456.7,
                                    2000, 25000, True)] == \
        ["—", "n/a", "∞", "-∞", "0.123", "0.0003", "0.000", "12.35", "123,457", "2000", "25,000", "yes"]
    assert [fmt_epsilon(x) for x in (math.inf, 3.33333, 10.0, 0.0, None)] == ["∞", "3.33", "10", "0", "—"]
    assert [fmt_bytes(x) for x in (512, 1500, 3_370_000, 2.5e9)] == ["512 B", "1.5 kB", "3.37 MB", "2.5 GB"]
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": "x"}], "f": math.inf, "g": None, "h": {}}) == [
        ("a.b", "1"), ("a.c", "[1, 2]"), ("d[0].e", "x"), ("f", "∞"), ("g", "null"), ("h", "{}")]


def test_personalised_table_names_the_model_each_method_evaluates_with():
    from reports.tables import utility_table

    result = small_result()
    result.methods[0].personalised_utility = {"fedfr:auroc": 0.9, "fedfs:auroc": 0.95}
    result.methods[0].params = {"personalised_model": "global"}
    result.methods[1].personalised_utility = {"fedfr:auroc": 0.8}
    result.methods[1].params = {"personalised_model": "local+dfc"}
    table = utility_table(result.methods, personalised=True)
    assert table.headers[:2] == ["method", "model"]
    assert [r[1] for r in table.rows] == ["global", "local+dfc"]
    assert "held-out images" in table.note
    html = render_html(result)
    assert "local+dfc" in html
    # a result without the model recorded keeps the plain layout
    for m in result.methods:
        m.params = {}
    assert utility_table(result.methods, personalised=True).headers[0:2] == ["method", "fedfr:auroc"]


def test_attack_settings_that_are_counts_print_as_integers():
    from reports.tables import attacks_table

    result = small_result()
    result.methods[0].attacks.append(AttackFinding("gradient", "server", "backbone_update",
                                                   metrics={"batch_size": 1.0, "num_samples": 1200.0, "rank1": 1.0,
                                                            "psnr": 9.25}, success_metric="rank1"))
    table = attacks_table(result.methods)
    column = table.headers.index("metrics [95% CI]")
    text = [r for r in table.rows if r[3] == "backbone_update"][0][column]
    assert "batch_size = 1\n" in text and "num_samples = 1,200" in text
    assert "rank1 = 1.000" in text and "psnr = 9.25" in text


def test_summary_best_attack_says_what_its_rate_rests_on():
    from reports.tables import summary_table

    result = small_result()
    result.methods[0].attacks = [AttackFinding("gradient", "server", "backbone_update",
                                               metrics={"rank1": 0.25, "rank1_chance": 0.019, "num_images": 8.0},
                                               success_metric="rank1"),
                                 AttackFinding("knn", "server", "noisy_cluster_centers",
                                               metrics={"top1": 0.1, "num_observations": 4.0},
                                               intervals={"top1": (0.006, 0.806)}, success_metric="top1")]
    cell = summary_table(result.methods, "accuracy").rows[0][6]
    # one line per family, never one "best" rate across families with different chance levels
    assert cell.text.split("\n") == ["knn: 0.100 top1 ([0.006, 0.806], n = 4) on noisy_cluster_centers",
                                     "gradient: 0.250 rank1 (n = 8, chance 0.019) on backbone_update"]
