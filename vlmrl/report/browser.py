"""Open a report in headless Chromium: screenshot it, and read back the page after its scripts ran.

Used by the browser test and by ``vlmrl report ... screenshot=true``. Chromium runs with a throw-away
profile, no sandbox (containers), no GPU and no background networking; ``--virtual-time-budget`` lets the
page's media load and its scripts run before the DOM is dumped or the screenshot is taken.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of Chromium: ``$VLMRL_CHROMIUM``, then the usual names on ``PATH``; ``None`` if absent."""
    env = os.environ.get("VLMRL_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


#: Flags of every headless Chromium vlmrl starts: no sandbox, GPU, network chatter, extensions or sound.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
)


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium found; install it (apt-get install -y chromium) or set VLMRL_CHROMIUM")
    with tempfile.TemporaryDirectory(prefix="vlmrl-chromium-") as profile:
        cmd = [binary, *HEADLESS_FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(page: str | os.PathLike, budget_ms: int = 5000, timeout: float = 60.0, width: int = 1280) -> str:
    """The DOM after ``budget_ms`` of virtual time (media loaded, scripts run) in a ``width``-wide window."""
    url = Path(page).resolve().as_uri()
    proc = _run([f"--virtual-time-budget={budget_ms}", f"--window-size={width},900", "--dump-dom", url], timeout)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium --dump-dom failed (exit {proc.returncode}): {proc.stderr[-500:]}")
    return proc.stdout


def screenshot(
    page: str | os.PathLike,
    out: str | os.PathLike,
    width: int = 1280,
    height: int | None = None,
    budget_ms: int = 5000,
    timeout: float = 60.0,
    max_height: int = 12000,
) -> Path:
    """Save a PNG of the page's top ``width x height`` pixels.

    ``height=None`` takes the whole page: it reads the page height our pages publish in
    ``<body data-page-height>`` (at most ``max_height``; 2400 for pages that do not publish it).
    """
    if height is None:
        m = re.search(r'data-page-height="(\d+)"', dump_dom(page, budget_ms, timeout, width))
        height = min(int(m[1]) + 16, max_height) if m else 2400
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    url = Path(page).resolve().as_uri()
    proc = _run(
        [
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            f"--screenshot={out}",
            url,
        ],
        timeout,
    )
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-500:]}")
    return out


def video_states(dom: str) -> list[str]:
    """The ``data-state`` of every ``<video>`` in a dumped DOM: ``loaded``, ``pending``, ``error:<code>``."""
    return [
        (re.search(r'data-state="([^"]*)"', tag) or [None, "missing"])[1] for tag in re.findall(r"<video\b[^>]*>", dom)
    ]
