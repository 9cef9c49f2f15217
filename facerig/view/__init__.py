"""A browser viewer for rigs and live capture (``facerig view``).

:func:`serve` starts a local HTTP server (127.0.0.1, a free port) for a page that shows a
``rig.glb`` with three.js: orbit camera, play / pause / scrub of the recorded animation beside the
source video, one slider per expression shape, a plot of the active weights over time, a download
button, and live animation from a WebSocket of per-frame weights and pose (``ws_url``).
:func:`screenshot` renders one view through headless Chromium (:mod:`facerig.view.browser`) and
writes it to a PNG/JPEG. three.js is package data (``static/vendor``, MIT; see NOTICE): nothing
is fetched from the network.
"""

from __future__ import annotations

from pathlib import Path

from facerig.view.browser import Browser, BrowserError, find_chromium
from facerig.view.server import RigFileError, RigInfo, ViewServer, load_rig_info, serve

__all__ = ["serve", "screenshot", "ViewServer", "RigInfo", "RigFileError", "load_rig_info", "Browser",
           "BrowserError", "find_chromium", "parse_weights"]


def parse_weights(text: str) -> dict[str, float]:
    """Parse ``"jawOpen=1,eyeBlink_L=0.5"`` into ``{"jawOpen": 1.0, "eyeBlink_L": 0.5}``
    (ValueError naming the bad item)."""
    out = {}
    for item in str(text).split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"weights: expected NAME=VALUE items separated by commas, got {item.strip()!r}") from None
    return out


def screenshot(rig, out, frame: int | None = None, weights: dict | None = None, size: tuple[int, int] = (1280, 720),
               video=None, timeout: float = 60.0) -> Path:
    """Render the viewer page for ``rig`` in headless Chromium and write the picture to ``out``
    (``.png``, or ``.jpg``/``.jpeg`` at quality 88), atomically.

    Args:
        frame: animation frame to show (default 0), paused, with the video frame beside it.
        weights: {shape name: value} set on top of that frame's weights (e.g. ``{"jawOpen": 1}``).
        size: (width, height) of the page in pixels (= the picture's size).
        video: as in :func:`serve`.
    Raises :class:`RigFileError` / ValueError for a bad rig, frame or shape name, and
    :class:`BrowserError` when Chromium is missing or the page fails.
    """
    from facerig.io import atomic_write

    out = Path(out)
    fmt = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"out: expected a .png or .jpg file name, got {out.name!r}")
    info = load_rig_info(rig, video=video)
    if frame is not None:
        if info.frames == 0 and frame != 0:
            raise ValueError(f"frame: the rig {info.glb} has no animation (only frame 0)")
        if not 0 <= int(frame) < max(info.frames, 1):
            raise ValueError(f"frame: expected 0 <= frame < {info.frames} (the rig's animation frames), got {frame}")
    unknown = [n for n in (weights or {}) if n not in info.names]
    if unknown:
        raise ValueError(f"weights: unknown shape(s) {', '.join(unknown)}; the rig has: {', '.join(info.names)}")
    server = ViewServer(info)
    try:
        with Browser(size=size, timeout=timeout) as b:
            b.navigate(server.page_url(frame=0 if frame is None else int(frame), weights=weights, play=False))
            b.wait_for("window.facerigViewer && (facerigViewer.ready || facerigViewer.error)", timeout=timeout)
            err = b.evaluate("facerigViewer.error")
            if err:
                raise BrowserError(f"the viewer page failed: {err}")
            b.evaluate("facerigViewer.rendered()")
            data = b.screenshot(fmt, quality=88)
    finally:
        server.close()
    atomic_write(out, data)
    return out
