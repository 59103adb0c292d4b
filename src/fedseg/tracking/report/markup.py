"""The report's HTML building blocks: the page, a section, a table, an embedded image.

Every text that comes from the run (site names, messages, the plan) is escaped here, in
:func:`table` and :func:`page`; section bodies add only fixed markup around them. Numbers
are right-aligned with 3 decimals (NaN and None print as ``-``), text is left-aligned.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1150px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
img{max-width:100%;display:block;margin:.6em 0}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
.alarm{color:#b00;font-weight:600}.note{color:#666;font-size:.9em}
"""


def page(title: str, note: str, sections: Sequence[str]) -> str:
    """The whole document: head with the CSS, ``title`` as h1, a ``note`` line, sections."""
    t = html.escape(title)
    head = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>fedseg report: {t}</title><style>{CSS}</style></head><body>",
        f"<h1>fedseg run report: {t}</h1>",
        f"<p class='note'>{html.escape(note)}</p>",
    ]
    return "\n".join([*head, *sections, "</body></html>"])


def section(sid: str, title: str, *body: str) -> str:
    """``<section id=SID>`` with an h2 ``title`` and the ``body`` parts, one per line."""
    return "\n".join([f"<section id='{sid}'><h2>{title}</h2>", *body, "</section>"])


def img(png: bytes, alt: str) -> str:
    """An <img> tag with the PNG embedded as a data URI."""
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table of escaped cells; numbers right-aligned, text left-aligned."""

    def cell(tag: str, v: object) -> str:
        cls = "" if isinstance(v, int | float) or tag == "th" else ' class="l"'
        return f"<{tag}{cls}>{html.escape(fmt(v))}</{tag}>"

    out = ["<table><tr>", *(cell("th", h) for h in head), "</tr>"]
    for r in rows:
        out += ["<tr>", *(cell("td", v) for v in r), "</tr>"]
    out.append("</table>")
    return "".join(out)


def fmt(v: object) -> str:
    """A cell's text: ``-`` for None and NaN, 3 decimals for floats."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.3f}"
    return str(v)
