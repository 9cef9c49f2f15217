"""A small headless-Chromium driver over the DevTools protocol (CDP), for screenshots and tests.

No Playwright or Selenium: Chromium is started with ``--remote-debugging-port=0`` and a fresh
profile folder, the port is read from ``DevToolsActivePort`` in that folder, and the page is driven
over a WebSocket (the ``websockets`` package's synchronous client) with ``Page.navigate``,
``Runtime.evaluate`` and ``Page.captureScreenshot``. WebGL runs on the CPU through SwiftShader.

Example::

    with Browser(size=(960, 640)) as b:
        b.navigate("http://127.0.0.1:8000/")
        b.wait_for("window.facerigViewer && window.facerigViewer.ready")
        png = b.screenshot()                 # bytes
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# flags found to work in containers without a display or a GPU: without the background-networking
# ones Chromium can hang on refused connections; SwiftShader gives WebGL on the CPU.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                  "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run", "--no-default-browser-check",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or the page failed (the message says which)."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable: ``$FACERIG_CHROMIUM`` if set, else the first of
    chromium, chromium-browser, google-chrome on PATH; None when there is none."""
    env = os.environ.get("FACERIG_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in _NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page, driven over CDP. Use as a context manager.

    Args:
        size: (width, height) of the page viewport in CSS pixels (device scale factor 1, so
            screenshots have exactly this many pixels).
        executable: Chromium to run (default :func:`find_chromium`).
        timeout: seconds to wait for Chromium to start and for each protocol reply.
    """

    def __init__(self, size: tuple[int, int] = (1280, 800), executable: str | None = None, timeout: float = 30.0):
        from websockets.sync.client import connect

        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("no Chromium found: install it (Debian: apt-get install -y chromium) "
                               "or set FACERIG_CHROMIUM to its path")
        self.size = (int(size[0]), int(size[1]))
        self.timeout = float(timeout)
        self._profile = tempfile.mkdtemp(prefix="facerig-chromium-")
        self._log = open(Path(self._profile) / "chromium.log", "wb")
        self._proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self._profile}", f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self._ws = None
        self._id = 0
        self.console: list[str] = []  # console messages and uncaught exceptions of the page
        self.requests: list[str] = []  # URLs the page requested (Network.requestWillBeSent)
        try:
            port = self._wait_port()
            page = self._page_target(port)
            # unbounded queue: the page's network events must never stall the protocol replies
            opts = dict(max_size=None, max_queue=None, open_timeout=self.timeout, close_timeout=2)
            try:  # websockets >= 15 honours proxy settings: never use one for this local connection
                conn = connect(page, proxy=None, **opts)
            except TypeError:
                conn = connect(page, **opts)
            self._ws = conn.__enter__()  # (closed in close())
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send("Network.enable")
            self.send("Emulation.setDeviceMetricsOverride",
                      width=self.size[0], height=self.size[1], deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    # -- start-up ---------------------------------------------------------------------------------
    def _wait_port(self) -> int:
        f = Path(self._profile) / "DevToolsActivePort"
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.timeout:
            if self._proc.poll() is not None:
                raise BrowserError(f"Chromium exited at start (status {self._proc.returncode}): {self._tail()}")
            try:
                lines = f.read_text().split()
                if lines:
                    return int(lines[0])
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise BrowserError(f"Chromium did not open its DevTools port in {self.timeout:.0f} s: {self._tail()}")

    def _page_target(self, port: int) -> str:
        t0 = time.monotonic()
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
        while time.monotonic() - t0 < self.timeout:
            with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as r:
                targets = json.loads(r.read())
            pages = [t for t in targets if t.get("type") == "page" and "webSocketDebuggerUrl" in t]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise BrowserError("Chromium opened no page")

    def _tail(self) -> str:
        try:
            self._log.flush()
            return (Path(self._profile) / "chromium.log").read_text(errors="replace")[-800:].strip()
        except OSError:
            return ""

    # -- protocol ---------------------------------------------------------------------------------
    def send(self, method: str, **params) -> dict:
        """Send one CDP command and return its ``result``; events that arrive meanwhile are kept
        in :attr:`console` when they are console messages or exceptions."""
        self._id += 1
        mid = self._id
        self._ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        t0 = time.monotonic()
        while True:
            left = self.timeout - (time.monotonic() - t0)
            if left <= 0:
                raise BrowserError(f"no reply to {method} in {self.timeout:.0f} s")
            msg = json.loads(self._ws.recv(timeout=left))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error'].get('message', msg['error'])}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg: dict) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled":
            self.console.append(f"console.{p.get('type')}: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Network.requestWillBeSent":
            self.requests.append(p.get("request", {}).get("url", ""))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.console.append("exception: " + str(d.get("exception", {}).get("description", d.get("text"))))

    def navigate(self, url: str) -> None:
        """Load ``url`` in the page (returns when navigation starts; use :meth:`wait_for`)."""
        r = self.send("Page.navigate", url=url)
        if r.get("errorText"):
            raise BrowserError(f"cannot load {url}: {r['errorText']}")

    def evaluate(self, expression: str):
        """Evaluate a JavaScript expression in the page (promises are awaited); returns its value
        (JSON-serialisable values only)."""
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError(f"page error: {d.get('exception', {}).get('description', d.get('text'))}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None, poll: float = 0.05):
        """Evaluate ``expression`` until it is truthy and return its value; raises
        :class:`BrowserError` (with the page's console) after ``timeout`` seconds."""
        timeout = self.timeout if timeout is None else timeout
        t0 = time.monotonic()
        while True:
            v = self.evaluate(expression)
            if v:
                return v
            if time.monotonic() - t0 > timeout:
                raise BrowserError(f"timed out after {timeout:.0f} s waiting for {expression!r}; page console: "
                                   + (" | ".join(self.console[-8:]) or "(empty)"))
            time.sleep(poll)

    def screenshot(self, format: str = "png", quality: int = 90, clip: tuple[float, float, float, float] | None = None
                   ) -> bytes:
        """Capture the viewport (or ``clip`` = (x, y, width, height) CSS pixels) as PNG or JPEG
        bytes."""
        params = {"format": format, "captureBeyondViewport": False}
        if format == "jpeg":
            params["quality"] = int(quality)
        if clip is not None:
            x, y, w, h = clip
            params["clip"] = {"x": x, "y": y, "width": w, "height": h, "scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])

    def screenshot_array(self, clip=None):
        """The viewport (or ``clip``) as an (H, W, 3) uint8 RGB NumPy array."""
        import io

        import numpy as np
        from PIL import Image
        return np.asarray(Image.open(io.BytesIO(self.screenshot("png", clip=clip))).convert("RGB"))

    # -- shutdown ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the page connection, stop Chromium and delete its profile folder."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._ws is not None:  # after Chromium is gone: no closing handshake to wait for
            try:
                self._ws.close()
            except Exception:
                pass
            self._ws = None
        self._log.close()
        for _ in range(10):  # Chromium's helper processes may still write a file just after it exits
            shutil.rmtree(self._profile, ignore_errors=True)
            if not os.path.exists(self._profile):
                break
            time.sleep(0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if self._proc.poll() is None:
                self.close()
        except Exception:
            pass
