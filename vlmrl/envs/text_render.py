"""Draw a text screen (title, body, highlighted lines) into an RGB frame.

Text environments have no camera; their "frame" is the text a player would read, drawn as an image so that
videos, image labelers and VLM rewards see the same thing as text rewards do.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (18, 20, 28)
FOREGROUND = (230, 230, 230)
TITLE = (255, 210, 90)
HIGHLIGHT = (120, 220, 140)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels (no system font needed)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def wrap_lines(text: str, width_chars: int) -> list[str]:
    """Wrap ``text`` to ``width_chars`` columns, keeping its own line breaks (empty lines included)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(paragraph, width=width_chars) or [""])
    return lines


def draw_text_screen(
    text: str,
    *,
    title: str = "",
    highlight: Sequence[str] = (),
    height: int = 256,
    width: int = 256,
    font_size: int = 11,
) -> np.ndarray:
    r"""Render a screen of text as an image (cached: the same screen is drawn once, returned read-only).

    Args:
        text: body text; its line breaks are kept, long lines are wrapped. Lines that do not fit are cut and
            the last visible line becomes ``...``.
        title: optional first line, drawn in a different colour.
        highlight: extra lines drawn in a third colour under the body (e.g. the admissible commands).
        height: frame height in pixels.
        width: frame width in pixels.
        font_size: glyph height in pixels.

    Returns:
        ``uint8 (height, width, 3)`` frame, read-only (copy it before drawing on it).

    Example:
        >>> frame = draw_text_screen("Target: 3\nCurrent: 1", title="NumberLine", height=64, width=128)
        >>> frame.shape, frame.dtype.name
        ((64, 128, 3), 'uint8')
    """
    return _draw_cached(text, title, tuple(highlight), int(height), int(width), int(font_size))


@lru_cache(maxsize=512)  # ~60 MB of 160x256 screens
def _draw_cached(
    text: str, title: str, highlight: tuple[str, ...], height: int, width: int, font_size: int
) -> np.ndarray:
    frame = _draw(text, title, highlight, height, width, font_size)
    frame.flags.writeable = False
    return frame


def _draw(text: str, title: str, highlight: Sequence[str], height: int, width: int, font_size: int) -> np.ndarray:
    """Draw one text screen (uncached); see :func:`draw_text_screen`."""
    if height < 16 or width < 16:
        raise ValueError(f"text screen of {height}x{width} is too small to read: use height, width >= 16")
    font = _font(font_size)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    margin = 4
    line_height = font_size + 3
    char_width = max(1.0, float(font.getlength("n")))
    width_chars = max(4, int((width - 2 * margin) / char_width))
    rows: list[tuple[str, tuple[int, int, int]]] = []
    if title:
        rows += [(line, TITLE) for line in wrap_lines(title, width_chars)]
    rows += [(line, FOREGROUND) for line in wrap_lines(text, width_chars)]
    for extra in highlight:
        rows += [(line, HIGHLIGHT) for line in wrap_lines(extra, width_chars)]
    max_rows = max(1, (height - 2 * margin) // line_height)
    if len(rows) > max_rows:
        rows = rows[: max_rows - 1] + [("...", FOREGROUND)]
    for i, (line, colour) in enumerate(rows):
        draw.text((margin, margin + i * line_height), line, fill=colour, font=font)
    return np.asarray(image, dtype=np.uint8).copy()
