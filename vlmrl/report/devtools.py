"""Drive headless Chromium over the DevTools protocol, for pages that are used rather than only looked at.

Chromium is started with ``--remote-debugging-pipe``: protocol messages are NUL-terminated JSON on file
descriptors 3 (to the browser) and 4 (from it), so no port is opened and no websocket library is needed.
:class:`Chromium` starts the browser and opens pages; a :class:`Page` navigates, runs JavaScript, clicks,
reloads, reads paint timings and takes screenshots. Used by the label page's browser test and its benchmark.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from vlmrl.report.browser import HEADLESS_FLAGS, find_chromium
from vlmrl.runs import write_bytes


class DevToolsError(RuntimeError):
    """The browser answered with an error, went away, or did not answer in time."""


class Chromium:
    """A headless Chromium with a throw-away profile, driven through a pipe; a context manager.

    Args:
        width: window width in pixels.
        height: window height in pixels.
        timeout: seconds any one command or page load may take.
    """

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 30.0):
        binary = find_chromium()
        if binary is None:
            raise FileNotFoundError("no Chromium found; install it (apt-get install -y chromium) or set VLMRL_CHROMIUM")
        self.timeout = float(timeout)
        self._profile = tempfile.TemporaryDirectory(prefix="vlmrl-devtools-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: the protocol's descriptors 3 and 4
            a, b = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        cmd = [
            binary,
            *HEADLESS_FLAGS,
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--window-size={int(width)},{int(height)}",
            f"--user-data-dir={self._profile.name}",
            "about:blank",
        ]
        self._proc = subprocess.Popen(
            cmd,
            preexec_fn=wire_pipes,  # only dup2 runs in the child
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = itertools.count(1)
        self._buffer = b""
        self._events: list[dict[str, Any]] = []

    # ---- protocol ------------------------------------------------------------------------------------------
    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DevToolsError(f"Chromium did not answer within {self.timeout:g} s")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise DevToolsError(f"Chromium exited (code {self._proc.poll()})")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept for :meth:`wait_for`."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise DevToolsError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def wait_for(self, method: str, session: str | None = None, since: int = 0) -> dict[str, Any]:
        """The first event ``method`` (of ``session``) at or after position ``since`` of the event log."""
        deadline = time.monotonic() + self.timeout
        pos = since
        while True:
            while pos < len(self._events):
                event = self._events[pos]
                pos += 1
                if event.get("method") == method and (session is None or event.get("sessionId") == session):
                    return event.get("params", {})
            reply = self._read(deadline)
            if "method" in reply:
                self._events.append(reply)

    @property
    def event_count(self) -> int:
        """Events seen so far (a mark for :meth:`wait_for`)."""
        return len(self._events)

    # ---- pages ---------------------------------------------------------------------------------------------
    def new_page(self) -> Page:
        """Open a blank tab and attach to it."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        self.send("Page.enable", session=session)
        self.send("Runtime.enable", session=session)
        return page

    def close(self) -> None:
        """Close the browser and remove its profile."""
        if self._proc.poll() is None:
            try:
                self.send("Browser.close")
            except (DevToolsError, OSError):
                pass
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Page:
    """One tab of a :class:`Chromium`."""

    def __init__(self, browser: Chromium, session: str):
        self.browser, self.session = browser, session

    def _until_loaded(self, action: str, params: dict | None = None) -> None:
        mark = self.browser.event_count
        self.browser.send(action, params, self.session)
        self.browser.wait_for("Page.loadEventFired", self.session, since=mark)

    def navigate(self, url: str) -> None:
        """Open ``url`` and wait until the page has loaded."""
        mark = self.browser.event_count
        result = self.browser.send("Page.navigate", {"url": url}, self.session)
        if result.get("errorText"):
            raise DevToolsError(f"could not open {url}: {result['errorText']}")
        self.browser.wait_for("Page.loadEventFired", self.session, since=mark)

    def reload(self) -> None:
        """Reload and wait until loaded."""
        self._until_loaded("Page.reload", {"ignoreCache": True})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            self.session,
        )
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression[:60]!r} raised: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def click(self, selector: str) -> None:
        """Click the first element matching ``selector`` with a real mouse press, and wait for the page it opens."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        if box is None:
            raise DevToolsError(f"nothing on the page matches {selector!r}")
        x, y = box
        mark = self.browser.event_count
        for kind in ("mousePressed", "mouseReleased"):
            self.browser.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
                self.session,
            )
        self.browser.wait_for("Page.loadEventFired", self.session, since=mark)

    def images_loaded(self) -> int:
        """Wait until every image of the page has loaded or failed; returns how many decoded (lazy ones too)."""
        return self.evaluate(
            "(async () => { const imgs = [...document.images]; imgs.forEach(i => { i.loading = 'eager'; });"
            " await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));"
            " return imgs.filter(i => i.naturalWidth > 0).length; })()"
        )

    def url(self) -> str:
        """The address shown."""
        return str(self.evaluate("location.href"))

    def first_contentful_paint_ms(self, wait_ms: int = 5000) -> float | None:
        """Milliseconds from the start of navigation to the first paint of content (``None``: none within
        ``wait_ms``); a buffered PerformanceObserver, since headless Chromium reports the entry late.
        """  # noqa: D205
        return self.evaluate(
            "new Promise(done => { setTimeout(() => done(null), WAIT);"
            " new PerformanceObserver(list => { for (const e of list.getEntries())"
            " if (e.name === 'first-contentful-paint') done(e.startTime); })"
            ".observe({type: 'paint', buffered: true}); })".replace("WAIT", str(int(wait_ms)))
        )

    def screenshot(self, path: str | os.PathLike, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole page, or the window)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            width, height = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params.update(
                captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
            )
        data = self.browser.send("Page.captureScreenshot", params, self.session)["data"]
        return write_bytes(Path(path), base64.b64decode(data))
