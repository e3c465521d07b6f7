"""The HTML report renders in a headless browser with every image decoded."""

import re

import numpy as np

from heliostat import viz
from heliostat.report import Section, render_html, write_report


def _sections():
    rng = np.random.default_rng(5)
    pos = rng.uniform(-100, 100, (20, 2)) + [0, 150]
    before = rng.uniform(1, 4, 20)
    return [
        Section(
            "Field",
            ["Pointing error per heliostat."],
            [("summary", [{"what": "median before [mrad]", "value": float(np.median(before))}])],
            [("field map", viz.field_map_png(pos, before, before / 5))],
        ),
        Section(
            "Frames",
            figures=[
                (
                    "frame",
                    viz.frame_png(rng.normal(100, 5, (64, 80)), (40.0, 30.0), (40.5, 30.2), "f"),
                )
            ],
        ),
        Section(
            "Residuals",
            figures=[("hist", viz.histogram_png({"before": before, "after": before / 5}))],
        ),
        Section(
            "Ledger",
            figures=[("balance", viz.balance_png(np.linspace(0, 10, 50), {"US": 0.01}, 0.5))],
        ),
    ]


def test_report_is_self_contained():
    page = render_html("Demo <report>", _sections())
    assert "Demo &lt;report&gt;" in page
    assert page.count("data:image/png;base64,") == 4
    assert not re.search(r'src="(https?:|file:|/)', page)  # nothing fetched from outside


def test_report_renders_in_headless_chromium(tmp_path, render_dom):
    path = write_report(tmp_path / "report.html", "Demo report", _sections())
    dom = render_dom(path)
    assert 'data-render="ok"' in dom and 'data-images="4"' in dom


def test_browser_check_catches_a_broken_image(tmp_path, render_dom):
    # The check must be able to fail: a corrupt PNG is reported by its caption.
    path = write_report(
        tmp_path / "bad.html",
        "Broken",
        [Section("x", figures=[("corrupt figure", b"\x89PNG\r\n\x1a\nnot really a png")])],
    )
    dom = render_dom(path)
    assert 'data-render="error: image not decoded: corrupt figure"' in dom
