"""A self-contained HTML report (images embedded as data URIs, no external resources).

The page carries a small script that marks ``<body data-render="ok">`` once every image
has decoded, or ``data-render="error: ..."`` naming the first that did not; a headless
browser check reads that attribute (``tests/test_report.py``).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Section:
    """One report section: a heading, paragraphs, key/value tables and figures (PNG)."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, Sequence[Mapping[str, Any]]]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;border-bottom:1px solid #ccc;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ddd;
padding:.25rem .6rem;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child
{text-align:left}figure{display:inline-block;margin:.5rem}figcaption{font-size:.85rem;
color:#555}img{max-width:100%}
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
        out.append(f"<h2>{html.escape(s.title)}</h2>")
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
        for caption, png in s.figures:
            b64 = base64.b64encode(png).decode("ascii")
            alt = html.escape(caption, quote=True)
            out.append(
                f'<figure><img alt="{alt}" src="data:image/png;base64,{b64}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
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
