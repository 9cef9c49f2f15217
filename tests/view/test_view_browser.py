"""The viewer in a real browser: headless Chromium loads the page `facerig view` serves for a rig
built here; the checks read screenshots (no mocks of the browser)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from conftest import JAW_FRAME, SKIN_LEFT, SKIN_RIGHT, preview_level

BACKGROUND = np.array([0x2A, 0x2D, 0x34])  # the page's scene background


def _load(browser, url):
    browser.navigate(url)
    browser.wait_for("window.facerigViewer && (facerigViewer.ready || facerigViewer.error)")
    assert browser.evaluate("facerigViewer.error") is None, browser.console
    browser.evaluate("facerigViewer.rendered()")


def _canvas(browser):
    return browser.screenshot_array(clip=browser.evaluate("facerigViewer.canvasRect()")).astype(np.int32)


def _face_mask(img):
    """Pixels that are not the scene background."""
    return np.abs(img - BACKGROUND).sum(-1) > 40


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


@pytest.fixture(scope="module")
def neutral(browser, server):
    """The canvas at frame 0 (all weights 0), loaded with ?weights=jawOpen=0&frame=0."""
    _load(browser, server.page_url(weights={"jawOpen": 0}, frame=0))
    return _canvas(browser)


@pytest.fixture(scope="module")
def opened(browser, server, neutral):
    """The canvas with jawOpen = 1 (every other weight 0), set through the page's API."""
    browser.evaluate("facerigViewer.setWeights({jawOpen: 1}, 'zero')")
    return _canvas(browser)


def test_page_draws_the_textured_face_offline(browser, server, neutral):
    img = neutral
    H, W = img.shape[:2]
    assert H > 300 and W > 300
    # the corners are background, the middle is the face: skin-coloured (r > g > b, not dark)
    for y, x in ((5, 5), (5, W - 6), (H - 6, 5), (H - 6, W - 6)):
        assert np.abs(img[y, x] - BACKGROUND).max() <= 3
    mid = img[int(H * 0.4):int(H * 0.6), int(W * 0.4):int(W * 0.6)].reshape(-1, 3)
    r, g, b = mid.T
    skin = (r > g + 10) & (g > b) & (r > 90)
    assert skin.mean() > 0.8
    # the texture is drawn, the right way round: its lighter half (u < 0.5) is the face's left in the picture
    mask = _face_mask(img)
    assert 0.05 < mask.mean() < 0.6
    cx, cy = _centroid(mask)
    ys, xs = np.nonzero(mask)
    left = img[ys[xs < cx - 10], xs[xs < cx - 10]].mean(0)
    right = img[ys[xs > cx + 10], xs[xs > cx + 10]].mean(0)
    assert left.sum() > 1.25 * right.sum()
    want = np.array(SKIN_LEFT, float) / np.array(SKIN_RIGHT, float)
    assert np.allclose(left / right, want, rtol=0.25)  # the texture's colour ratio, whatever the light
    # the download button fetches the glb as an attachment named after the rig folder
    assert browser.evaluate("document.getElementById('download').href") == server.base_url + "rig.glb?download=1"
    assert browser.evaluate("document.getElementById('download').textContent").startswith("Download talk.glb (")
    # nothing came from outside the local server (three.js is package data)
    assert browser.requests and all(u.startswith((server.base_url, "blob:" + server.base_url[:-1], "data:"))
                                    for u in browser.requests), browser.requests


def test_jaw_open_changes_the_mouth_region(browser, neutral, opened):
    mask = _face_mask(neutral)
    ys, xs = np.nonzero(mask)
    y0, y1 = ys.min(), ys.max()
    changed = np.abs(opened - neutral).max(-1) > 40
    assert changed.sum() > 0.01 * mask.sum()
    cy = np.nonzero(changed)[0]
    # the change is in the lower part of the face (the mouth and chin); inside the upper 45% of the face
    # (brows, eyes; away from the outline, which the opening jaw widens a little) nothing changes
    assert np.median(cy) > y0 + 0.6 * (y1 - y0)
    inner = binary_erosion(mask, iterations=12)
    assert (changed & inner)[: int(y0 + 0.45 * (y1 - y0))].sum() == 0
    assert (changed & inner)[int(y0 + 0.6 * (y1 - y0)):].sum() > 0.1 * changed.sum()  # the mouth opens
    # the slider shows the value, and the page reports it
    assert browser.evaluate("facerigViewer.weights().jawOpen") == 1
    assert browser.evaluate("document.querySelector('input[aria-label=jawOpen]').value") == "1"


def test_orbit_camera_turns_the_view(browser, server, neutral):
    """Dragging on the view (real mouse events through the browser) orbits the camera around the head."""
    _load(browser, server.page_url(weights={"jawOpen": 0}, frame=0))
    x, y, w, h = browser.evaluate("facerigViewer.canvasRect()")
    cx, cy = x + w / 2, y + h / 2
    browser.send("Input.dispatchMouseEvent", type="mousePressed", x=cx, y=cy, button="left", buttons=1, clickCount=1)
    for k in range(1, 11):
        browser.send("Input.dispatchMouseEvent", type="mouseMoved", x=cx + 12 * k, y=cy, button="left", buttons=1)
    browser.send("Input.dispatchMouseEvent", type="mouseReleased", x=cx + 120, y=cy, button="left", buttons=0,
                 clickCount=1)
    browser.evaluate("new Promise(r => setTimeout(r, 300))")  # let the damped orbit settle
    browser.evaluate("facerigViewer.rendered()")
    turned = _canvas(browser)
    # the head turned: the picture changed, the face is still drawn, narrower, with the same weights
    assert np.abs(turned - neutral).mean() > 2.0
    m0, m1 = _face_mask(neutral), _face_mask(turned)
    assert m1.mean() > 0.05
    width = lambda m: np.ptp(np.nonzero(m.any(0))[0])  # noqa: E731
    assert width(m1) < 0.97 * width(m0)
    assert browser.evaluate("facerigViewer.weights().jawOpen") == 0


def test_scrubbing_plays_the_recorded_animation_beside_its_video(browser, server, neutral, opened):
    _load(browser, server.page_url())  # playing from the start
    assert browser.evaluate("facerigViewer.mode") == "anim"
    for frame, want in ((0, neutral), (JAW_FRAME, opened)):
        browser.evaluate(f"facerigViewer.setFrame({frame})")
        browser.wait_for("(() => { const v = document.getElementById('video');"
                         f" return v.complete && v.src.endsWith('/video/{frame}.jpg'); }})()")
        browser.evaluate("facerigViewer.rendered()")
        assert np.abs(_canvas(browser) - want).mean() < 1.0
        # the video beside it shows the same frame: preview.mp4's source panel (grey) and fit panel (green)
        r = browser.evaluate("(() => { const b = document.getElementById('video').getBoundingClientRect();"
                             " return [b.x, b.y, b.width, b.height]; })()")
        assert r[2] > 20 and r[3] > 10
        vid = browser.screenshot_array(clip=r).astype(int)
        h, w = vid.shape[:2]
        src, fit = vid[h // 4:3 * h // 4, w // 8:3 * w // 8], vid[h // 4:3 * h // 4, 5 * w // 8:7 * w // 8]
        assert np.abs(src - preview_level(frame)).max() < 25
        assert fit[..., 1].mean() > 150 and fit[..., 0].mean() < 50
    assert browser.evaluate("document.getElementById('frameinfo').textContent").startswith(f"frame {JAW_FRAME} /")


def _ws_server(messages):
    """A real WebSocket server (facerig's live format) on 127.0.0.1: sends hello, then whatever
    ``messages['frame']`` holds every 40 ms while ``messages['send']`` is set, and an "end" message
    when ``messages['end']`` is set."""
    from websockets.sync.server import serve

    def handler(ws):
        ws.send(json.dumps({"type": "hello", "names": messages["names"], "fps": 25.0}))
        k = 0
        while not messages["stop"].is_set():
            if messages["end"].is_set():
                ws.send(json.dumps({"type": "end"}))
                messages["end"].clear()
            if messages["send"].is_set():
                ws.send(json.dumps({**messages["frame"], "frame": k, "t": k / 25}))
                k += 1
                messages["last"] = time.monotonic()
            time.sleep(0.04)

    srv = serve(handler, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"ws://127.0.0.1:{srv.socket.getsockname()[1]}/"


def test_live_weights_over_websocket_animate_the_rig(browser, server, neutral, opened):
    names = server.info.names
    zero = {n: 0.0 for n in names}
    msgs = {"names": names, "stop": threading.Event(), "send": threading.Event(), "end": threading.Event(), "last": 0.0,
            "frame": {"type": "frame", "face": True, "weights": {**zero, "jawOpen": 1.0},
                      "rotation": [0.0, 0.0, 0.0], "translation": [0.0, 0.0, 50.0],
                      "yaw": 0.0, "pitch": 0.0, "roll": 0.0, "latency_ms": 5.0}}
    srv, url = _ws_server(msgs)
    try:
        msgs["send"].set()
        _load(browser, server.page_url(ws_url=url, frame=0))
        browser.wait_for("facerigViewer.live.count >= 3", timeout=10)
        browser.evaluate("facerigViewer.rendered()")
        live = _canvas(browser)
        # the weights arrived: the live picture is the jawOpen = 1 picture, far from the neutral one
        assert np.abs(live - opened).mean() < 1.0
        assert np.abs(live - neutral).mean() > 1.0
        assert browser.evaluate("facerigViewer.mode") == "live"
        assert "live: frame" in browser.evaluate("document.getElementById('status').textContent")
        # the head pose arrives too: 2 cm right and 2 cm down in the camera frame move the face right and down
        x0, y0 = _centroid(_face_mask(live))
        msgs["frame"] = {**msgs["frame"], "translation": [2.0, 2.0, 50.0]}
        n = browser.evaluate("facerigViewer.live.count")
        browser.wait_for(f"facerigViewer.live.count >= {n + 3}", timeout=10)
        browser.evaluate("facerigViewer.rendered()")
        x1, y1 = _centroid(_face_mask(_canvas(browser)))
        assert x1 - x0 > 5 and y1 - y0 > 5
        # the data stops: after 2 s the page says so
        msgs["send"].clear()
        stopped = time.monotonic()
        assert browser.evaluate("document.getElementById('banner').hidden") is True
        browser.wait_for("!document.getElementById('banner').hidden", timeout=6)
        waited = time.monotonic() - msgs["last"]
        assert 1.9 < waited < 4.5, waited  # 2 s, plus the page's 0.25 s check and a loaded machine's delays
        assert browser.evaluate("document.getElementById('banner').textContent") == "no live data"
        assert time.monotonic() - stopped < 5
        assert "no data" in browser.evaluate("document.getElementById('status').textContent")
        # the source ends: the page says that instead
        msgs["end"].set()
        browser.wait_for("document.getElementById('banner').textContent == 'live source ended'", timeout=5)
    finally:
        msgs["stop"].set()
        srv.shutdown()



def test_cli_screenshot(browser, rig_folder, neutral, opened, tmp_path, capsys):
    """`facerig view RIG --screenshot` renders in its own headless Chromium: frame 3 of the recording
    (jaw open) and frame 0 with --weights jawOpen=1 both give the jaw-open picture."""
    from PIL import Image

    from facerig.cli import main

    x, y, w, h = (int(round(v)) for v in browser.evaluate("facerigViewer.canvasRect()"))
    shots = {}
    for name, extra in (("frame.png", ["--frame", str(JAW_FRAME)]), ("weights.jpg", ["--weights", "jawOpen=1"])):
        out = tmp_path / name
        assert main(["view", str(rig_folder), "--screenshot", str(out), "--size", "900x600", *extra]) == 0
        assert f"wrote {out}" in capsys.readouterr().out
        img = np.asarray(Image.open(out).convert("RGB")).astype(np.int32)
        assert img.shape == (600, 900, 3)
        shots[name] = img[y:y + h, x:x + w]
    assert np.abs(shots["frame.png"] - opened).mean() < 1.0
    assert np.abs(shots["weights.jpg"] - opened).mean() < 3.0  # JPEG
    assert np.abs(shots["frame.png"] - neutral).mean() > 1.0
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind
