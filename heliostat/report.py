"""A self-contained HTML report (images embedded as data URIs, no external resources).

The page carries a small script that marks ``<body data-render="ok">`` once every image
has decoded, or ``data-render="error: ..."`` naming the first that did not; a headless
browser check reads that attribute (``tests/test_report.py``).

A section may hold one :class:`DataTable`: rows embedded as JSON and drawn a page at a
time by the page's own script (no library, no network), sortable by any column (click
its heading), filtered by a status and by words (``after>2 linear`` keeps the linear
heliostats pointing more than 2 mrad off after calibration), paged, and exported as CSV.
Its state lives in the address (``report.html#hs:status=refused&sort=after_mrad``), so
a link can open the table on a group of heliostats (:func:`groups_html` makes them).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote


@dataclass
class Section:
    """One report section: a heading, paragraphs, key/value tables and figures (PNG)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, Sequence[Mapping[str, Any]]]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)
    #: HTML fragments built by this module's helpers (:func:`groups_html`), shown after
    #: the paragraphs; never user text unescaped.
    blocks: list[str] = field(default_factory=list)
    data_table: DataTable | None = None


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a :class:`DataTable`.

    Attributes
    ----------
    key, label : str
        Name in the data and heading shown.
    num : bool
        Numbers (sorted numerically, largest first on the first click; ``null`` last).
    digits : int
        Decimals shown for numbers.
    title : str
        Tooltip of the heading.
    css : str
        Class of the column's cells (``"wide"``: long text, at least 16 em wide;
        ``"small"``: small print).
    """

    key: str
    label: str
    num: bool = False
    digits: int = 2
    title: str = ""
    css: str = ""


@dataclass(frozen=True, slots=True)
class DataTable:
    """A table for thousands of rows: sorted, filtered and paged in the page.

    Attributes
    ----------
    caption : str
    columns : sequence of Column
        The first column names the row (shown as the first row's id in the page's
        ``data-first`` attribute); one column may be ``status``.
    rows : sequence of sequence
        One value per column: str, int, float (non-finite shown as "–") or None.
    status_order : sequence of str
        Statuses worst first: the order of the status filter and of the status sort.
    """

    caption: str
    columns: Sequence[Column]
    rows: Sequence[Sequence[Any]]
    status_order: Sequence[str] = ()


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;border-bottom:1px solid #ccc;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ddd;
padding:.25rem .6rem;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child
{text-align:left}figure{display:inline-block;margin:.5rem}figcaption{font-size:.85rem;
color:#555}img{max-width:100%}
#hs{max-width:none}#hs table{font-size:.82rem;width:100%}#hs th{cursor:pointer;text-align:left;
user-select:none;white-space:nowrap}#hs th[aria-sort=ascending]::after{content:" ▲"}
#hs th[aria-sort=descending]::after{content:" ▼"}#hs td{text-align:left;vertical-align:top}
#hs td.num{text-align:right;white-space:nowrap}#hs td.wide{min-width:16em}
#hs td.small{font-size:.72rem;min-width:12em}.hs-scroll{overflow-x:auto}
.hs-bar{display:flex;flex-wrap:wrap;gap:.5rem;
align-items:center;margin:.4rem 0}.hs-bar input{min-width:18rem}td.st-corrected{color:#1a7f37}
td[class^=st-]{font-weight:600;white-space:nowrap}td.st-fit-failed,td.st-refused,
td.st-not-observed,td.st-not-delivered{color:#b00020}td.st-check,td.st-unidentifiable
{color:#9a6700}li.todo{margin:.6rem 0}.ids{font-family:ui-monospace,monospace;font-size:.85rem}
body.wide{max-width:1600px;padding:0 1rem}
"""

_CHECK_JS = """
window.addEventListener('load', function () {
  var bad = Array.prototype.filter.call(document.images, function (im) {
    return !(im.complete && im.naturalWidth > 0);
  });
  document.body.setAttribute('data-render',
    bad.length ? 'error: image not decoded: ' + bad[0].alt : 'ok');
  document.body.setAttribute('data-images', String(document.images.length));
});
"""


_TABLE_JS = r"""
(function () {
  var box = document.getElementById('hs');
  if (!box) return;
  var spec = JSON.parse(document.getElementById('hs-data').textContent);
  var cols = spec.columns, rows = spec.rows, rank = {};
  spec.status_order.forEach(function (s, i) { rank[s] = i; });
  var si = cols.findIndex(function (c) { return c.key === 'status'; });
  var text = rows.map(function (r) { return r.join('\u0001').toLowerCase(); });
  var st = {q: '', status: '', sort: -1, dir: 1, page: 0, size: 50};
  var $ = function (k) { return box.querySelector('[data-hs="' + k + '"]'); };
  var q = $('q'), sel = $('status'), size = $('size'), info = $('info');
  var thead = box.querySelector('thead tr'), tbody = box.querySelector('tbody');
  var view = [];
  cols.forEach(function (c, i) {
    var th = document.createElement('th');
    th.textContent = c.label;
    th.title = c.title || '';
    th.setAttribute('data-col', c.key);
    th.addEventListener('click', function () {
      if (st.sort === i) st.dir = -st.dir; else { st.sort = i; st.dir = c.num ? -1 : 1; }
      st.page = 0; update();
    });
    thead.appendChild(th);
  });
  function cmpNum(a, b) {
    var an = a === null || a === undefined, bn = b === null || b === undefined;
    if (an || bn) return an === bn ? 0 : (an ? 1 : -1);
    return a < b ? -1 : a > b ? 1 : 0;
  }
  // Filter words: free text (all must occur), or column<op>number such as after>2.
  function parse(s) {
    return s.trim().toLowerCase().split(/\s+/).filter(Boolean).map(function (w) {
      var m = /^([a-z_]+)(<=|>=|<|>|=)(-?[0-9.]+)$/.exec(w);
      if (m) {
        var k = cols.findIndex(function (c) { return c.num && c.key.indexOf(m[1]) === 0; });
        if (k >= 0) return {col: k, op: m[2], v: parseFloat(m[3])};
      }
      return {t: w};
    });
  }
  function test(w, r, i) {
    if (w.t !== undefined) return text[i].indexOf(w.t) >= 0;
    var x = r[w.col];
    if (x === null) return false;
    return w.op === '>' ? x > w.v : w.op === '<' ? x < w.v : w.op === '>=' ? x >= w.v :
      w.op === '<=' ? x <= w.v : x === w.v;
  }
  function compute() {
    var ws = parse(st.q), idx = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (st.status && r[si] !== st.status) continue;
      var ok = true;
      for (var j = 0; j < ws.length && ok; j++) ok = test(ws[j], r, i);
      if (ok) idx.push(i);
    }
    if (st.sort >= 0) {
      var k = st.sort, num = cols[k].num, d = st.dir;
      idx.sort(function (a, b) {
        var x = rows[a][k], y = rows[b][k], c;
        if (num) { c = cmpNum(x, y); if (x === null || y === null) return c || a - b; }
        else if (k === si) c = (rank[x] || 0) - (rank[y] || 0);
        else c = String(x).localeCompare(String(y), undefined, {numeric: true});
        return c * d || a - b;
      });
    }
    view = idx;
  }
  function fmt(v, c) {
    if (v === null || v === undefined) return '–';
    if (!c.num) return String(v);
    return c.digits === 0 ? String(v) : v.toFixed(c.digits === undefined ? 2 : c.digits);
  }
  function draw() {
    var pages = Math.max(1, Math.ceil(view.length / st.size));
    st.page = Math.min(Math.max(st.page, 0), pages - 1);
    var lo = st.page * st.size, hi = Math.min(lo + st.size, view.length);
    var frag = document.createDocumentFragment();
    for (var n = lo; n < hi; n++) {
      var r = rows[view[n]], tr = document.createElement('tr');
      for (var k = 0; k < cols.length; k++) {
        var td = document.createElement('td');
        td.textContent = fmt(r[k], cols[k]);
        td.className = cols[k].num ? 'num' : cols[k].css || '';
        if (k === si) td.className = 'st-' + String(r[k]).replace(/ /g, '-');
        tr.appendChild(td);
      }
      frag.appendChild(tr);
    }
    tbody.textContent = '';
    tbody.appendChild(frag);
    Array.prototype.forEach.call(thead.children, function (th, i) {
      var s = i !== st.sort ? 'none' : st.dir > 0 ? 'ascending' : 'descending';
      th.setAttribute('aria-sort', s);
    });
    info.textContent =
      (view.length ? 'rows ' + (lo + 1) + '–' + hi + ' of ' + view.length : 'no rows match') +
      (view.length !== rows.length ? ' (filtered from ' + rows.length + ')' : '') +
      '; page ' + (st.page + 1) + ' of ' + pages;
    box.setAttribute('data-rows', rows.length);
    box.setAttribute('data-matched', view.length);
    box.setAttribute('data-page', st.page + 1);
    box.setAttribute('data-pages', pages);
    box.setAttribute('data-first', hi > lo ? rows[view[lo]][0] : '');
  }
  function hash() {
    var h = 'hs:q=' + encodeURIComponent(st.q) + '&status=' + encodeURIComponent(st.status) +
      '&sort=' + (st.sort >= 0 ? cols[st.sort].key : '') + '&dir=' + st.dir +
      '&page=' + (st.page + 1) + '&size=' + st.size;
    if (location.hash.slice(1) !== h) history.replaceState(null, '', '#' + h);
  }
  function update() { compute(); draw(); hash(); }
  function fromHash() {
    var h = location.hash.slice(1);
    if (h.indexOf('hs:') !== 0) return false;
    h.slice(3).split('&').forEach(function (kv) {
      var p = kv.split('='), v = decodeURIComponent(p.slice(1).join('='));
      if (p[0] === 'q') st.q = v;
      else if (p[0] === 'status') st.status = v;
      else if (p[0] === 'sort') st.sort = cols.findIndex(function (c) { return c.key === v; });
      else if (p[0] === 'dir') st.dir = v === '-1' ? -1 : 1;
      else if (p[0] === 'page') st.page = (parseInt(v, 10) || 1) - 1;
      else if (p[0] === 'size') st.size = parseInt(v, 10) || 50;
    });
    q.value = st.q; sel.value = st.status; size.value = String(st.size);
    return true;
  }
  st.sort = si;
  q.addEventListener('input', function () { st.q = q.value; st.page = 0; update(); });
  sel.addEventListener('change', function () { st.status = sel.value; st.page = 0; update(); });
  size.addEventListener('change', function () {
    st.size = parseInt(size.value, 10); st.page = 0; update();
  });
  $('first').addEventListener('click', function () { st.page = 0; draw(); hash(); });
  $('prev').addEventListener('click', function () { st.page--; draw(); hash(); });
  $('next').addEventListener('click', function () { st.page++; draw(); hash(); });
  $('last').addEventListener('click', function () { st.page = 1e9; draw(); hash(); });
  $('csv').addEventListener('click', function () {
    var esc = function (v) {
      v = v === null ? '' : String(v);
      return /[",\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
    };
    var lines = [cols.map(function (c) { return esc(c.key); }).join(',')];
    view.forEach(function (i) { lines.push(rows[i].map(esc).join(',')); });
    var a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([lines.join('\n') + '\n'], {type: 'text/csv'}));
    a.download = 'heliostats.csv';
    document.body.appendChild(a); a.click(); a.remove();
  });
  // a link to a view ("show them in the table") brings the table into sight
  window.addEventListener('hashchange', function () {
    if (fromHash()) { compute(); draw(); box.scrollIntoView(); }
  });
  var linked = fromHash();
  size.value = String(st.size);
  compute(); draw();  // the address changes only when the reader changes the view
  if (linked) box.scrollIntoView();
  box.setAttribute('data-ready', 'ok');
})();
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def render_html(title: str, sections: Sequence[Section], subtitle: str = "") -> str:
    """The report as one HTML string."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>",
        f"<script>{_CHECK_JS}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if subtitle:
        out.append(f"<p>{html.escape(subtitle)}</p>")
    for s in sections:
        anchor = re.sub(r"[^a-z0-9]+", "-", s.title.lower()).strip("-")
        out.append(f'<section id="{anchor}"><h2>{html.escape(s.title)}</h2>')
        out.extend(f"<p>{html.escape(p)}</p>" for p in s.paragraphs)
        for caption, rows in s.tables:
            if not rows:
                continue
            cols = list(rows[0])
            out.append(f"<table><caption>{html.escape(caption)}</caption><tr>")
            out.extend(f"<th>{html.escape(str(c))}</th>" for c in cols)
            out.append("</tr>")
            for r in rows:
                cells = "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols)
                out.append(f"<tr>{cells}</tr>")
            out.append("</table>")
        out.extend(s.blocks)
        if s.data_table is not None:
            out.append(_data_table_html(s.data_table))
        for caption, png in s.figures:
            b64 = base64.b64encode(png).decode("ascii")
            alt = html.escape(caption, quote=True)
            out.append(
                f'<figure><img alt="{alt}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        out.append("</section>")
    if any(s.data_table is not None for s in sections):
        out[3] = out[3].replace("<body>", '<body class="wide">')
        out.append(f"<script>{_TABLE_JS}</script>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(
    path: str | Path, title: str, sections: Sequence[Section], subtitle: str = ""
) -> Path:
    """Write the report; returns its path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(title, sections, subtitle), encoding="utf-8")
    return p


def _json_cell(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    return v


def _data_table_html(t: DataTable) -> str:
    """The table's frame (controls, empty body) and its rows as JSON for the script."""
    import json

    keys = [c.key for c in t.columns]
    if len(set(keys)) != len(keys):
        raise ValueError(f"DataTable {t.caption!r}: duplicate column keys in {keys}")
    for i, r in enumerate(t.rows):
        if len(r) != len(keys):
            raise ValueError(
                f"DataTable {t.caption!r}: row {i} has {len(r)} values for {len(keys)} columns"
            )
    data = {
        "columns": [
            {
                "key": c.key,
                "label": c.label,
                "num": c.num,
                "digits": c.digits,
                "title": c.title,
                "css": c.css,
            }
            for c in t.columns
        ],
        "rows": [[_json_cell(v) for v in r] for r in t.rows],
        "status_order": list(t.status_order),
    }
    # inside <script>: "</script" would end the element early and "<!--" change how it
    # is parsed; JSON reads \u003c as "<"
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    counts: dict[str, int] = {}
    if "status" in keys:
        k = keys.index("status")
        for r in t.rows:
            counts[str(r[k])] = counts.get(str(r[k]), 0) + 1
    order = [x for x in t.status_order if x in counts] + sorted(
        x for x in counts if x not in t.status_order
    )
    opts = "".join(
        f'<option value="{html.escape(x, quote=True)}">{html.escape(x)} ({counts[x]})</option>'
        for x in order
    )
    status = (
        f'<label>status <select data-hs="status"><option value="">all ({len(t.rows)})</option>'
        f"{opts}</select></label>"
        if counts
        else '<select data-hs="status" hidden><option value=""></option></select>'
    )
    sizes = "".join(
        f'<option value="{n}"{" selected" if n == 50 else ""}>{n}</option>'
        for n in (25, 50, 100, 500)
    )
    return (
        f'<div id="hs" data-ready="no">'
        f'<div class="hs-bar"><input data-hs="q" type="search" placeholder="filter: words, or '
        f'after&gt;2, before&lt;5, observations&lt;6" aria-label="filter">{status}'
        f'<label>rows per page <select data-hs="size">{sizes}</select></label>'
        f'<button data-hs="first">«</button><button data-hs="prev">‹ previous</button>'
        f'<button data-hs="next">next ›</button><button data-hs="last">»</button>'
        f'<span data-hs="info"></span><button data-hs="csv">download CSV of these rows'
        f"</button></div>"
        f'<div class="hs-scroll"><table><caption>{html.escape(t.caption)}</caption>'
        f"<thead><tr></tr></thead><tbody></tbody></table></div>"
        f"<noscript><p>The table needs JavaScript; the same records are in summary.json "
        f"(key <code>heliostats</code>).</p></noscript>"
        f'<script type="application/json" id="hs-data">{payload}</script></div>'
    )


def groups_html(groups: Sequence[Mapping[str, Any]], shown: int = 12) -> str:
    """A numbered "what to do next" list.

    Parameters
    ----------
    groups : sequence of mapping
        Each with ``title``, ``action`` (str), ``status`` (the table's status to link to,
        or "") and ``items``: (heliostat id, what to do for it) pairs, worst first.
    shown : int
        Items listed openly per group; the rest fold into a "the other N" element.
    """
    if not groups:
        return "<p>Nothing to do: every heliostat is corrected and confirmed.</p>"
    out = ["<ol>"]
    for g in groups:
        link = ""
        if g.get("status"):
            href = "#hs:status=" + quote(str(g["status"]), safe="")
            link = f' <a href="{html.escape(href, quote=True)}">show them in the table</a>'
        items = [
            f'<li><span class="ids">{html.escape(str(h))}</span>: {html.escape(str(w))}</li>'
            for h, w in g["items"]
        ]
        body = "<ul>" + "".join(items[:shown]) + "</ul>"
        same = {str(w) for _, w in g["items"]}
        if len(items) > 1 and len(same) == 1:  # one step for all: say it once
            ids = ", ".join(str(h) for h, _ in g["items"])
            body = f'<p>{html.escape(same.pop())}:</p><p class="ids">{html.escape(ids)}</p>'
        elif len(items) > shown:
            body += (
                f"<details><summary>the other {len(items) - shown}</summary><ul>"
                + "".join(items[shown:])
                + "</ul></details>"
            )
        out.append(
            f'<li class="todo"><strong>{html.escape(str(g["title"]))}</strong>. '
            f"{html.escape(str(g['action']))}{link}{body}</li>"
        )
    out.append("</ol>")
    return "".join(out)
