"""The HTML report renders in a headless browser with every image decoded."""

import re

import numpy as np
import pytest

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


# --------------------------------------------------------------------------- data table
def _big_table(n: int = 10_000):
    """A table of ``n`` rows with known extremes: the page's sort, filter and paging are
    checked against the same operations done here in Python."""
    from heliostat.report import Column, DataTable

    rng = np.random.default_rng(20)
    statuses = ("fit failed", "refused", "corrected")
    status = rng.choice(statuses, n, p=[0.06, 0.01, 0.93])
    after = np.round(rng.lognormal(-0.7, 0.6, n), 3)
    after[rng.choice(n, 40, replace=False)] = np.nan  # not verified: sorted last, shown "–"
    ids = [f"H{i + 1:05d}" for i in range(n)]
    rows = [
        [
            h,
            s,
            None if not np.isfinite(a) else float(a),
            "check actuator 2" if s == "refused" else "",
        ]
        for h, s, a in zip(ids, status, after, strict=True)
    ]
    rows[7][3] = "<!--<script></script><b>not markup</b>"  # text, not the end of the data
    cols = [
        Column("heliostat", "heliostat"),
        Column("status", "status"),
        Column("after_mrad", "after [mrad]", num=True),
        Column("next_step", "next step", css="wide"),
    ]
    return DataTable("heliostats", cols, rows, statuses), ids, status, after


# The page is driven by its own controls: a click on a heading, typing into the filter,
# choosing a status, the paging buttons; the outcome of each step is read back from the
# table's data attributes and its first shown row.
_DRIVER = """
<script>
window.addEventListener('load', function () {
  var box = document.getElementById('hs'), out = {};
  function at(name) {
    out[name] = {rows: box.getAttribute('data-rows'), matched: box.getAttribute('data-matched'),
      page: box.getAttribute('data-page'), pages: box.getAttribute('data-pages'),
      first: box.getAttribute('data-first'),
      shown: box.querySelectorAll('tbody tr').length,
      cell: (box.querySelector('tbody tr td:nth-child(3)') || {}).textContent,
      lastcell: (box.querySelector('tbody tr:last-child td:nth-child(3)') || {}).textContent,
      size: box.querySelector('[data-hs="size"]').value};
  }
  function th(key) { return box.querySelector('th[data-col="' + key + '"]'); }
  function set(k, v, ev) {
    var el = box.querySelector('[data-hs="' + k + '"]'); el.value = v;
    el.dispatchEvent(new Event(ev));
  }
  function click(k) { box.querySelector('[data-hs="' + k + '"]').click(); }
  at('initial');
  th('after_mrad').click(); at('after_desc');
  th('after_mrad').click(); at('after_asc');
  click('last'); at('after_asc_last');
  set('status', 'refused', 'change'); at('refused');
  set('status', '', 'change'); set('q', 'after>1.5', 'input'); at('above');
  click('next'); at('above_page2');
  set('q', 'H00042', 'input'); at('one');
  set('q', 'not markup', 'input'); at('markup');
  set('q', '', 'input'); set('size', '500', 'change'); at('size500');
  out.hash = location.hash;
  out.bold = document.querySelectorAll('#hs tbody b').length;
  document.body.setAttribute('data-test', JSON.stringify(out));
});
</script>
"""


def _drive(tmp_path, render_dom, table, hash_=""):
    import html
    import json

    page = render_html("big", [Section("Heliostats", data_table=table)])
    path = tmp_path / "big.html"
    path.write_text(page.replace("</body>", _DRIVER + "</body>"), encoding="utf-8")
    dom = render_dom(f"{path.resolve()}{hash_}")
    assert 'data-ready="ok"' in dom, "the table script did not finish"
    return json.loads(html.unescape(dom.split('data-test="')[1].split('"')[0]))


def test_data_table_sorts_filters_and_pages_10000_rows_in_chromium(tmp_path, render_dom):
    table, ids, status, after = _big_table()
    got = _drive(tmp_path, render_dom, table)
    n = len(ids)
    # first view: every row, 50 a page, worst status first (the status order given)
    assert got["initial"]["rows"] == str(n) and got["initial"]["matched"] == str(n)
    assert got["initial"]["pages"] == str(-(-n // 50)) and got["initial"]["shown"] == 50
    assert got["initial"]["size"] == "50"  # the menu says what the page shows
    assert got["initial"]["first"] == ids[int(np.flatnonzero(status == "fit failed")[0])]
    # sorted by the error after: the largest first, then the smallest; unverified rows
    # (NaN) last either way, shown as a dash
    fin = np.isfinite(after)
    assert got["after_desc"]["first"] == ids[int(np.nanargmax(after))]
    assert got["after_desc"]["cell"] == f"{np.nanmax(after):.2f}"
    assert got["after_asc"]["first"] == ids[int(np.nanargmin(after))]
    assert got["after_asc_last"]["page"] == got["after_asc_last"]["pages"]
    assert got["after_asc_last"]["lastcell"] == "–"
    assert got["after_asc_last"]["cell"] == f"{np.sort(after[fin])[-(50 - (~fin).sum())]:.2f}"
    # filters: by status, and by a figure (after>1.5), paged
    assert got["refused"]["matched"] == str(int(np.sum(status == "refused")))
    n_above = int(np.sum(after[fin] > 1.5))
    assert got["above"]["matched"] == str(n_above) and n_above > 50
    big = np.where(after > 1.5, after, np.inf)
    assert got["above"]["first"] == ids[int(np.argmin(big))]  # still sorted, ascending
    assert got["above_page2"]["page"] == "2"
    assert got["one"]["matched"] == "1" and got["one"]["first"] == "H00042"
    # text that looks like markup is text: found by the filter, never parsed as HTML
    assert got["markup"]["matched"] == "1" and got["markup"]["first"] == ids[7]
    assert got["bold"] == 0
    assert got["size500"]["shown"] == 500 and got["size500"]["pages"] == str(-(-n // 500))
    # the view lives in the address
    assert "sort=after_mrad" in got["hash"] and "size=500" in got["hash"]


def test_data_table_opens_on_the_view_in_the_address(tmp_path, render_dom):
    # a link such as the "what to do next" list makes: refused ones, largest error first
    table, ids, status, after = _big_table()
    got = _drive(tmp_path, render_dom, table, "#hs:status=refused&sort=after_mrad&dir=-1")
    ref = np.flatnonzero((status == "refused") & np.isfinite(after))
    assert got["initial"]["matched"] == str(int(np.sum(status == "refused")))
    assert got["initial"]["first"] == ids[int(ref[np.argmax(after[ref])])]


def test_groups_name_every_heliostat_and_link_to_the_table():
    from heliostat.report import groups_html

    items = [(f"H{i}", f"needs {i} more visits <soon>") for i in range(15)]
    page = groups_html(
        [{"title": "fit failed: 15", "action": "a", "status": "fit failed", "items": items}]
    )
    assert page.count("<li><span") == 15 and "the other 3" in page
    assert 'href="#hs:status=fit%20failed"' in page and "&lt;soon&gt;" in page
    assert "Nothing to do" in groups_html([])


def test_colour_scales_show_the_spread_after_calibration():
    # 200 corrected heliostats at 0.005..1 mrad and two left at 15 mrad: a shared scale
    # would run to 15 and paint every corrected one in its bottom 7 %; the percentile
    # scale tops out inside the corrected range and counts what lies above it.
    v = np.r_[np.arange(1, 201) / 200.0, 15.0, 15.0, np.nan]
    top, above = viz.colour_scale_top(v, 98.0)
    fin = v[np.isfinite(v)]
    # the same percentile as numpy's (linear interpolation): equal to rounding
    assert top == pytest.approx(np.percentile(fin, 98.0), rel=1e-12)
    assert 0.9 < top <= 1.0 and above == int(np.sum(fin > top)) and above >= 2
    assert viz.colour_scale_top([np.nan, 0.0]) == (1.0, 0)  # nothing to scale
    with pytest.raises(ValueError, match="percentile"):
        viz.colour_scale_top(v, 120.0)
    with pytest.raises(ValueError, match=r"positions \(N, 2\|3\)"):
        viz.field_map_png(np.zeros((3, 2)), np.ones(3), np.ones(2))
