"""Building blocks of the static HTML pages: page shell, tables, embedded images and videos.

Pages load nothing from a network or server: styles and scripts are inline, plots are inline SVG, images
are ``data:`` URIs and videos are ``data:`` URIs up to a size budget (then a path relative to the page).
A small inline script marks every ``<video>`` with ``data-state="loaded"`` or ``"error:<code>"`` once the
browser has decoded its first frame (or failed to), which is what the browser test reads.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1180px;
 padding:18px 28px;color:#222;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin:.2em 0}
h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.6em}
.meta{color:#666;font-size:.9em}.caption{color:#555;font-size:.88em;margin:.3em 0 1em}
table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.plot svg{max-width:100%;height:auto}.videos{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0}figure video{width:360px;max-width:100%;background:#000;display:block}
figcaption{font-size:.85em;color:#444}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:.8em;max-height:480px}
.summary{background:#f3f7fb;border-left:4px solid #1f77b4;padding:8px 14px}.warn{color:#a15c00}
img.wide{max-width:100%}
"""

VIDEO_SCRIPT = """
(function(){
  var vids = document.querySelectorAll('video');
  function count(){
    var n = 0; vids.forEach(function(v){ if (v.dataset.state === 'loaded') n++; });
    document.body.dataset.videosLoaded = String(n);
    document.body.dataset.pageHeight = String(document.documentElement.scrollHeight);
  }
  vids.forEach(function(v){
    v.addEventListener('loadeddata', function(){ v.dataset.state = 'loaded'; count(); });
    v.addEventListener('error', function(){
      v.dataset.state = 'error:' + (v.error ? v.error.code : '?'); count();
    }, true);
    if (v.readyState >= 2) { v.dataset.state = 'loaded'; }
  });
  document.body.dataset.plots = String(document.querySelectorAll('.plot svg, .plot img').length);
  count();
})();
"""


def esc(value: object) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def fmt(value: object) -> str:
    """Numbers with 4 significant digits, everything else as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        return text if len(text) <= 400 else text[:400] + " ..."
    return str(value)


def page(title: str, body: str) -> str:
    """A complete HTML document with the inline style and the video-state script."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n<script>{VIDEO_SCRIPT}</script>\n</body></html>\n"
    )


def section(section_id: str, title: str, content: str) -> str:
    """A titled section with an anchor id."""
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>\n{content}\n</section>\n'


def plot(svg: str, caption: str = "") -> str:
    """An inline SVG plot with an optional caption."""
    cap = f'<p class="caption">{esc(caption)}</p>' if caption else ""
    return f'<div class="plot">{svg}</div>{cap}'


def _num_class(value: object) -> str:
    return "num" if isinstance(value, int | float) and not isinstance(value, bool) else ""


def key_value_table(rows: Iterable[tuple[str, object]]) -> str:
    """A two-column table of names and formatted values."""
    body = "".join(f'<tr><th>{esc(k)}</th><td class="{_num_class(v)}">{esc(fmt(v))}</td></tr>' for k, v in rows)
    return f"<table>{body}</table>"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A table with a header row; numbers right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{_num_class(c)}">{esc(fmt(c))}</td>' for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def data_uri(data: bytes, mime: str) -> str:
    """``data:`` URI of some bytes."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_img(png: bytes, alt: str) -> str:
    """An embedded PNG image."""
    return f'<div class="plot"><img class="wide" alt="{esc(alt)}" src="{data_uri(png, "image/png")}"></div>'


def video(src: str, caption: str) -> str:
    """A looping, muted, preloaded video with a caption; ``src`` is a data URI or a relative path."""
    return (
        '<figure><video controls muted loop playsinline preload="auto" data-state="pending" '
        f'src="{esc(src)}">'
        f"</video><figcaption>{esc(caption)}</figcaption></figure>"
    )
