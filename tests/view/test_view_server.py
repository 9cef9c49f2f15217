"""The viewer's server without a browser: routes, what it refuses (other files, other hosts,
writes), the video frames it decodes, the vendored three.js, and the CLI's errors."""

from __future__ import annotations

import http.client
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import FPS, FRAMES, PREVIEW_H, preview_level
from PIL import Image

from facerig.cli import main
from facerig.view import RigFileError, load_rig_info, parse_weights, serve
from facerig.view.server import STATIC

REPO = Path(__file__).resolve().parents[2]


def _get(server, path, method="GET", host=None):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    c.putrequest(method, path, skip_host=True)
    c.putheader("Host", host or f"127.0.0.1:{server.port}")
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict(r.getheaders()), body


def test_routes(server, rig_folder):
    status, head, body = _get(server, "/")
    assert status == 200 and b"static/viewer.js" in body and head["Content-Type"].startswith("text/html")
    status, head, body = _get(server, "/static/viewer.js")
    assert status == 200 and head["Content-Type"] == "text/javascript" and b"facerigViewer" in body
    status, head, body = _get(server, "/rig.glb")
    assert status == 200 and body == (rig_folder / "rig.glb").read_bytes() and "Content-Disposition" not in head
    status, head, body = _get(server, "/rig.glb?download=1")
    assert head["Content-Disposition"] == 'attachment; filename="talk.glb"'
    status, head, body = _get(server, "/rig.glb", method="HEAD")
    assert status == 200 and body == b"" and int(head["Content-Length"]) == (rig_folder / "rig.glb").stat().st_size
    info = json.loads(_get(server, "/info.json")[2])
    assert info["frames"] == FRAMES and info["fps"] == pytest.approx(FPS) and len(info["names"]) == 53
    assert info["names"][:2] == ["browDown_L", "browDown_R"] and info["ws_url"] is None
    assert info["download_name"] == "talk.glb" and info["glb_bytes"] == (rig_folder / "rig.glb").stat().st_size
    # preview.mp4 is source | fit | rig; the page shows the first two panels
    assert info["video"] == {"width": 128, "height": PREVIEW_H, "frames": FRAMES, "label": "source | fit (preview.mp4)"}


def test_video_frames_are_the_previews_frames(server):
    for t in (4, 1, 5, 0):  # out of order: the decoder restarts when it must
        status, head, body = _get(server, f"/video/{t}.jpg")
        assert status == 200 and head["Content-Type"] == "image/jpeg"
        img = np.asarray(Image.open(io.BytesIO(body)).convert("RGB")).astype(int)
        assert img.shape == (PREVIEW_H, 128, 3)
        assert np.abs(img[8:-8, 8:56] - preview_level(t)).max() < 20  # source panel: frame t's grey
        assert img[8:-8, 72:120, 1].mean() > 180 and img[8:-8, 72:120, 0].mean() < 30  # fit panel: green
    assert _get(server, f"/video/{FRAMES}.jpg")[0] == 404


@pytest.mark.parametrize("path", [
    "/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py", "/static/vendor/../../server.py",
    "/static/%2e%2e%2f%2e%2e%2fcli%2fview.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/../rig.json",
    "/rig.json", "/tracking.csv", "/preview.mp4", "/static/", "/static/vendor", "/video/../rig.json", "/video/-1.jpg",
    "/static/..\\server.py", "/static/%00viewer.js", "/%2e%2e/%2e%2e/etc/passwd"])
def test_nothing_but_the_rig_and_the_page_is_served(server, path):
    assert _get(server, path)[0] == 404


def test_localhost_only_and_read_only(server, rig_folder):
    assert server._http.server_address[0] == "127.0.0.1" and server.base_url.startswith("http://127.0.0.1:")
    # a page on another host name (DNS rebinding) cannot read the rig through the browser
    assert _get(server, "/rig.glb", host="evil.example:80")[0] == 403
    assert _get(server, "/", host=f"localhost:{server.port}")[0] == 200
    assert _get(server, "/rig.glb", method="POST")[0] == 405
    assert _get(server, "/rig.glb", method="DELETE")[0] == 405
    assert (rig_folder / "rig.glb").is_file()


def test_page_url_and_ws_url(rig_folder, tmp_path):
    import shutil
    shutil.copyfile(rig_folder / "rig.glb", tmp_path / "face.glb")
    with serve(tmp_path / "face.glb", ws_url="ws://127.0.0.1:8765/") as s:
        assert s.info.video is None and s.info.name == "face"  # a bare .glb: no preview beside it
        assert s.url == s.base_url + "?ws=ws://127.0.0.1:8765/"
        assert s.page_url(frame=2, weights={"jawOpen": 1}).endswith("frame=2&weights=jawOpen=1")
        assert json.loads(_get(s, "/info.json")[2])["ws_url"] == "ws://127.0.0.1:8765/"
    with pytest.raises(ValueError, match="ws_url"):
        serve(rig_folder, ws_url="http://example.com/")


def test_bad_rigs(tmp_path, rig_folder):
    with pytest.raises(RigFileError, match="no such file"):
        load_rig_info(tmp_path / "missing")
    with pytest.raises(RigFileError, match="no rig.glb"):
        load_rig_info(tmp_path)
    (tmp_path / "x.obj").write_text("v 0 0 0\n")
    with pytest.raises(RigFileError, match="expected a .glb"):
        load_rig_info(tmp_path / "x.obj")
    (tmp_path / "bad.glb").write_bytes(b"not a gltf file at all")
    with pytest.raises(RigFileError, match="not a glTF"):
        load_rig_info(tmp_path / "bad.glb")
    with pytest.raises(RigFileError, match="--video"):
        load_rig_info(rig_folder, video=tmp_path / "nope.mp4")


def test_parse_weights():
    assert parse_weights("jawOpen=1, eyeBlink_L=0.5,") == {"jawOpen": 1.0, "eyeBlink_L": 0.5}
    for bad in ("jawOpen", "jawOpen=x", "=1"):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            parse_weights(bad)


def test_cli_errors(tmp_path, rig_folder, capsys):
    # all found before any browser starts
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    out = str(tmp_path / "shot.png")
    assert main(["view", str(rig_folder), "--screenshot", out, "--weights", "jawOpn=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown shape(s) jawOpn" in err and "jawOpen" in err
    assert main(["view", str(rig_folder), "--screenshot", out, "--frame", str(FRAMES)]) == 2
    assert f"0 <= frame < {FRAMES}" in capsys.readouterr().err
    assert main(["view", str(rig_folder), "--screenshot", str(tmp_path / "shot.gif")]) == 2
    assert "png or .jpg" in capsys.readouterr().err
    assert main(["view", str(rig_folder), "--screenshot", out, "--size", "big"]) == 2
    assert "--size" in capsys.readouterr().err
    assert main(["view", str(rig_folder), "--frame", "1"]) == 2
    assert "go with --screenshot" in capsys.readouterr().err
    assert not Path(out).exists()


def test_three_js_is_vendored_and_credited():
    """Every module the page imports is package data (no CDN); NOTICE credits the shipped version.
    The import map is relative to the page (/), whose static/ is facerig/view/static."""
    vendor = STATIC / "vendor"
    version = (vendor / "VERSION").read_text().split()[1]
    assert f"three.js {version}" in (REPO / "NOTICE").read_text()
    imap = json.loads(re.search(r'<script type="importmap">(.*?)</script>', (STATIC / "index.html").read_text(),
                                re.S).group(1))["imports"]
    assert (STATIC.parent / imap["three"]).is_file() and (STATIC.parent / imap["three/addons/"]).is_dir()
    seen, todo = set(), [STATIC / "viewer.js"]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        text = f.read_text(encoding="utf-8")
        if vendor not in f.parents:  # facerig's own code names no outside URL (the browser test checks requests)
            assert not re.search(r"""['"]https?://""", text), f
        for spec in re.findall(r"""(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]""", text):
            if spec == "three":
                target = STATIC.parent / imap["three"]
            elif spec.startswith("three/addons/"):
                target = STATIC.parent / imap["three/addons/"] / spec[len("three/addons/"):]
            else:
                target = (f.parent / spec).resolve()
            assert target.is_file(), (f, spec)
            todo.append(target)
    assert {p.name for p in seen} >= {"viewer.js", "three.module.min.js", "GLTFLoader.js", "OrbitControls.js",
                                      "BufferGeometryUtils.js"}
    assert "MIT License" in (vendor / "LICENSE-three.txt").read_text()


def test_cli_serves_until_interrupted(rig_folder):
    """`facerig view RIG` prints the URL of a free localhost port, serves the page there, and stops
    cleanly on Ctrl-C (SIGINT)."""
    import signal
    import subprocess
    import sys
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "facerig", "view", str(rig_folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        head = proc.stdout.readline()
        line = proc.stdout.readline()
        assert "53 shapes, 6 frames, video preview.mp4" in head
        url = re.search(r"open (http://127\.0\.0\.1:\d+/)", line).group(1)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as r:
            assert r.status == 200 and b"facerig view" in r.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_source_video_follows_tracking_csv(rig_folder, tmp_path):
    """--video shows the source clip; rig frame t shows tracking.csv's source_frame of row t."""
    import shutil
    folder = tmp_path / "rig"
    folder.mkdir()
    shutil.copyfile(rig_folder / "rig.glb", folder / "rig.glb")
    rows = ["frame,source_frame,time,face_found"] + [f"{t},{5 - t},{t / FPS},1" for t in range(FRAMES)]
    (folder / "tracking.csv").write_text("\n".join(rows) + "\n")
    with serve(folder, video=rig_folder / "preview.mp4") as s:
        info = json.loads(_get(s, "/info.json")[2])
        assert info["video"] == {"width": 176, "height": PREVIEW_H, "frames": FRAMES, "label": "preview.mp4"}
        for t in (0, 2, 5):  # reversed order in tracking.csv
            img = np.asarray(Image.open(io.BytesIO(_get(s, f"/video/{t}.jpg")[2])).convert("RGB")).astype(int)
            assert img.shape == (PREVIEW_H, 176, 3)  # the whole frame: no crop for a source video
            assert np.abs(img[8:-8, 8:56] - preview_level(5 - t)).max() < 20
