"""facerig.live: capture (newest-frame hand-over, drops), the tracking loop, recordings, streaming, the CLI.

Everything runs on the shipped 48-frame sample clip (a file source: no camera exists here)."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from facerig.assets import asset_path
from facerig.cli import main
from facerig.live import (LIVE_LINK_HEADER, CodeFilter, LiveOptions, LiveTracker, UdpSender, WebSocketServer,
                          live_link_timecode, live_link_values, open_source)
from facerig.live.source import SourceError
from facerig.model import load_model
from facerig.rig import TRACKING_COLUMNS, tracking_csv_header
from facerig.video import VideoReader

SAMPLE = asset_path("sample_face.mp4")
NAMES = list(load_model("default").expression_names)


# ------------------------------------------------------------------------------------------ smoothing
def test_code_filter_follows_the_one_euro_equations():
    """The weights' filter against the One-Euro recursion written out (Casiez et al. 2012):
    dx_hat = lp(dx/dt, a(d_cutoff)); fc = min_cutoff + beta |dx_hat|; x_hat = lp(x, a(fc)),
    a(fc) = 1 / (1 + 1 / (2 pi fc dt)); the pose in units of 10 cm for translations."""
    rng = np.random.default_rng(0)
    T, K = 60, 4
    t = np.cumsum(rng.uniform(0.02, 0.05, T))
    x = np.clip(0.5 + 0.4 * np.sin(6 * t)[:, None] * np.arange(1, K + 1) / K + 0.03 * rng.normal(size=(T, K)), 0, 1)
    trans = np.stack([np.sin(t), np.cos(t), 50 + 5 * t], 1)
    mc, beta, dc, pmc, pbeta = 2.0, 3.0, 1.0, 1.5, 0.7
    f = CodeFilter(mc, beta, pmc, pbeta)

    def alpha(fc, dt):
        return 1.0 / (1.0 + 1.0 / (2 * math.pi * fc * dt))

    xh, dxh = x[0].copy(), np.zeros(K)
    ph, dph = np.r_[np.zeros(3), trans[0] / 10], np.zeros(6)
    w0, _, tr0 = f(x[0], np.zeros(3), trans[0], t[0])
    np.testing.assert_allclose(w0, x[0])
    np.testing.assert_allclose(tr0, trans[0])
    for k in range(1, T):
        dt = t[k] - t[k - 1]
        dxh = alpha(dc, dt) * (x[k] - xh) / dt + (1 - alpha(dc, dt)) * dxh
        a = alpha(mc + beta * np.abs(dxh), dt)
        xh = a * x[k] + (1 - a) * xh
        p = np.r_[np.zeros(3), trans[k] / 10]
        dph = alpha(dc, dt) * (p - ph) / dt + (1 - alpha(dc, dt)) * dph
        ap = alpha(pmc + pbeta * np.abs(dph), dt)
        ph = ap * p + (1 - ap) * ph
        w, r, tr = f(x[k], np.zeros(3), trans[k], t[k])
        np.testing.assert_allclose(w, np.clip(xh, 0, 1), atol=1e-12)
        np.testing.assert_allclose(tr, ph[3:] * 10, atol=1e-12)
    # smoothing is real: the output's frame-to-frame steps are smaller than the input's
    assert np.abs(np.diff(xh)).sum() < np.abs(np.diff(x[-2:], axis=0)).sum() * 10


# ------------------------------------------------------------------------------------------ sources
def test_file_source_lossless_and_realtime_drops():
    with open_source(SAMPLE, realtime=False) as src:
        idx = [f.index for f in src]
    assert idx == list(range(48)) and src.dropped == 0

    # real time at 96 fps (0.5 s) with a consumer taking ~one frame in 8: the rest are dropped, not queued
    src = open_source(SAMPLE, realtime=True, fps=96.0)
    taken, lat = [], []
    with src:
        while True:
            f = src.get()
            if f is None:
                break
            taken.append(f.index)
            lat.append(time.perf_counter() - f.captured)
            time.sleep(0.08)
    assert src.frames_read == 48
    assert len(taken) + src.dropped == 48
    assert src.dropped >= 24
    assert taken == sorted(taken) and taken[-1] >= 40  # always the newest frame
    assert np.median(lat) < 0.05  # a taken frame is about one source period old, not a backlog


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        open_source(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot read video"):
        open_source(bad)
    with pytest.raises(SourceError, match="realtime"):
        open_source("rtsp://127.0.0.1:1/none", realtime=False)


# ------------------------------------------------------------------------------------------ tracking
def test_track_every_frame_and_slow_consumer_drops():
    lt = LiveTracker(SAMPLE, LiveOptions(realtime=False, photometric="always"))
    frames = list(lt.frames())
    assert [f.index for f in frames] == list(range(48))
    assert all(f.found for f in frames) and lt.stats["photometric"] == 48 and lt.stats["dropped"] == 0
    W = np.stack([f.weights for f in frames])
    assert W.shape == (48, 53) and W.min() >= 0 and W.max() <= 1
    assert W.std(0).max() > 0.05  # the sample talks: some weights move
    assert all(np.isfinite(f.landmark_error) and f.landmark_error < 5 for f in frames)
    assert all(f.latency_ms > 0 and set(f.stages_ms) >= {"landmarks", "solve", "light", "photometric"}
               for f in frames)
    # the same clip in real time (24 fps, 2 s) with a deliberately slow consumer (0.15 s a frame):
    # frames are dropped (counted, never queued) and every frame is either processed or dropped
    lt = LiveTracker(SAMPLE, LiveOptions(realtime=True, fps=24.0, photometric="off"))
    got = []
    for f in lt.frames():
        got.append(f)
        time.sleep(0.15)
    assert 1 <= len(got) <= 16 and lt.stats["dropped"] >= 32
    assert len(got) + lt.stats["dropped"] == lt.source.frames_read == 48
    assert [f.index for f in got] == sorted(f.index for f in got)


# ------------------------------------------------------------------------------------------ CLI + files
def test_cli_headless_records_valid_files(tmp_path, capsys):
    out = tmp_path / "out"
    ll = tmp_path / "take.csv"
    assert main(["live", str(SAMPLE), "--headless", "--fast", "-q", "-o", str(out), "--live-link-csv", str(ll)]) == 0
    text = capsys.readouterr().out
    assert "processed 48 frames" in text and "p95" in text
    with open(out / "tracking.csv") as fh:
        rows = list(csv.reader(fh))
    assert ",".join(rows[0]) + "\n" == tracking_csv_header(NAMES)
    assert rows[0][:len(TRACKING_COLUMNS)] == list(TRACKING_COLUMNS) and rows[0][len(TRACKING_COLUMNS):] == NAMES
    body = np.array(rows[1:], dtype=object)
    assert len(body) == 48 and [int(r[1]) for r in body] == list(range(48))
    W = np.array([[float(v) for v in r[len(TRACKING_COLUMNS):]] for r in body])
    assert W.min() >= 0 and W.max() <= 1
    with VideoReader(out / "overlay.mp4") as vr:
        n = sum(1 for _ in vr)
        assert n == 48 and vr.size == (288, 288)
    summ = json.loads((out / "live.json").read_text())
    assert summ["frames"] == 48 and summ["faces"] == 48 and summ["dropped"] == 0
    assert summ["latency_ms_p95"] >= summ["latency_ms_p50"] > 0 and summ["names"] == NAMES
    assert set(summ["stage_ms"]) >= {"landmarks", "solve", "light"}
    with open(ll) as fh:
        lrows = list(csv.reader(fh))
    assert tuple(lrows[0]) == LIVE_LINK_HEADER and len(LIVE_LINK_HEADER) == 63
    assert len(lrows) == 49 and all(r[1] == "61" and len(r) == 63 for r in lrows[1:])
    # the Live Link columns are the tracked weights: EyeBlinkLeft = eyeBlink_L, JawOpen = jawOpen
    L = np.array([[float(v) for v in r[2:54]] for r in lrows[1:]])
    np.testing.assert_allclose(L[:, LIVE_LINK_HEADER.index("JawOpen") - 2], W[:, NAMES.index("jawOpen")], atol=2e-4)
    np.testing.assert_allclose(L[:, LIVE_LINK_HEADER.index("EyeBlinkLeft") - 2], W[:, NAMES.index("eyeBlink_L")],
                               atol=2e-4)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_cli_bad_source_and_no_face_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["live", str(tmp_path / "missing.mp4"), "--headless", "-o", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err and not out.exists()
    from facerig.io import write_image

    blank = tmp_path / "blank"
    for i in range(4):
        write_image(blank / f"{i:03d}.png", np.full((120, 160, 3), 90, np.uint8))
    ll = tmp_path / "ll.csv"
    assert main(["live", str(blank), "--headless", "--fast", "-q", "-o", str(out), "--live-link-csv", str(ll)]) == 2
    assert "no face" in capsys.readouterr().err
    assert not out.exists() and not ll.exists() and not list(tmp_path.glob(".*"))


def test_sigint_stops_cleanly_with_playable_files(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # the sample played in real time at 6 fps (8 s): interrupted after the first status line
    p = subprocess.Popen([sys.executable, "-m", "facerig", "live", str(SAMPLE), "--headless", "--fps", "6",
                          "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        t0 = time.time()
        line = ""
        while time.time() - t0 < 60:
            line = p.stderr.readline()
            if line.startswith("frame ") or not line:
                break
        assert line.startswith("frame "), line
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, stderr
    assert "processed" in stdout
    summ = json.loads((out / "live.json").read_text())
    assert 0 < summ["frames"] < 48
    with open(out / "tracking.csv") as fh:
        assert len(fh.read().splitlines()) == summ["frames"] + 1
    with VideoReader(out / "overlay.mp4") as vr:
        assert sum(1 for _ in vr) == summ["frames"]


# ------------------------------------------------------------------------------------------ streaming
def test_udp_stream_received_by_a_real_socket(capsys):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10.0)
    port = rx.getsockname()[1]
    try:
        assert main(["live", str(SAMPLE), "--headless", "--fast", "-q", "--udp", str(port), "--max-frames", "12"]) == 0
        msgs = [json.loads(rx.recv(65536).decode("utf-8")) for _ in range(12)]
    finally:
        rx.close()
    assert [m["frame"] for m in msgs] == list(range(12))
    for m in msgs:
        assert m["type"] == "frame" and m["face"] is True
        assert list(m["weights"]) == NAMES and all(0 <= v <= 1 for v in m["weights"].values())
        assert len(m["rotation"]) == 3 and len(m["translation"]) == 3 and m["translation"][2] > 10
        assert {"t", "yaw", "pitch", "roll", "latency_ms"} <= set(m)
    assert msgs[-1]["t"] == pytest.approx(11 / 12, abs=1e-3)


def test_websocket_stream_received_by_a_real_client():
    from websockets.asyncio.client import connect

    lt = LiveTracker(SAMPLE, LiveOptions(realtime=False, photometric="off"))
    server = WebSocketServer(0, lt.names, lt.fps)
    connected = threading.Event()

    def produce():
        connected.wait(10)
        try:
            for k, f in enumerate(lt.frames()):
                server.send(f.message(lt.names))
                if k == 9:
                    break
        finally:
            server.close()

    async def receive():
        async with connect(f"ws://127.0.0.1:{server.port}/live") as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            connected.set()
            msgs = []
            async for raw in ws:
                msgs.append(json.loads(raw))
                if msgs[-1]["type"] == "end":
                    break
            return hello, msgs

    th = threading.Thread(target=produce)
    th.start()
    hello, msgs = asyncio.run(asyncio.wait_for(receive(), 60))
    th.join(30)
    assert hello == {"type": "hello", "names": NAMES, "fps": 12.0}
    assert [m["type"] for m in msgs] == ["frame"] * 10 + ["end"]
    assert [m["frame"] for m in msgs[:-1]] == list(range(10))
    assert all(list(m["weights"]) == NAMES for m in msgs[:-1])


def test_udp_sender_validates_port():
    with pytest.raises(ValueError, match="port"):
        UdpSender(0)


# ------------------------------------------------------------------------------------------ Live Link
def test_live_link_mapping_and_timecode():
    w = np.zeros(len(NAMES))
    w[NAMES.index("eyeBlink_L")] = 0.7
    w[NAMES.index("browInnerUp_L")], w[NAMES.index("browInnerUp_R")] = 0.2, 0.6
    w[NAMES.index("jawLeft")] = 0.3
    w[NAMES.index("mouthSmile_R")] = 0.9
    v = live_link_values(w, NAMES)
    col = {n: v[i] for i, n in enumerate(LIVE_LINK_HEADER[2:54])}
    assert col["EyeBlinkLeft"] == 0.7 and col["EyeBlinkRight"] == 0
    assert col["BrowInnerUp"] == pytest.approx(0.4) and col["JawLeft"] == 0.3 and col["JawRight"] == 0
    assert col["MouthSmileRight"] == 0.9 and col["TongueOut"] == 0
    assert sum(col.values()) == pytest.approx(0.7 + 0.4 + 0.3 + 0.9)
    # every ARKit column but TongueOut comes from the model's names
    ones = live_link_values(np.ones(len(NAMES)), NAMES)
    assert list(ones).count(0.0) == 1
    assert live_link_timecode(0.0, 30) == "00:00:00:00.000"
    assert live_link_timecode(3725.5, 30) == "01:02:05:15.000"
    assert live_link_timecode(1.05, 20) == "00:00:01:01.000"
    assert live_link_timecode(1.075, 20) == "00:00:01:01.500"


def test_euler_angles_of_the_head_pose():
    from facerig.live import LiveFrame

    def frame(rot):
        return LiveFrame(0, 0.0, 0.0, True, np.zeros(53), np.asarray(rot, float), np.zeros(3), np.zeros((9, 3)),
                         None, 0.0, 0.0, {}, False, 0, np.zeros((2, 2, 3), np.uint8))

    assert frame([0, 0.3, 0]).euler_degrees() == pytest.approx((math.degrees(0.3), 0, 0), abs=1e-9)
    assert frame([0.2, 0, 0]).euler_degrees() == pytest.approx((0, math.degrees(0.2), 0), abs=1e-9)
    assert frame([0, 0, -0.1]).euler_degrees() == pytest.approx((0, 0, math.degrees(-0.1)), abs=1e-9)
    m = frame([0.1, 0.2, 0.05]).message(NAMES)
    assert set(m) == {"type", "frame", "t", "face", "weights", "rotation", "translation", "yaw", "pitch", "roll",
                      "latency_ms"}


# ------------------------------------------------------------------------------------------ identity
def test_online_identity_is_estimated_then_frozen():
    lt = LiveTracker(SAMPLE, LiveOptions(realtime=False, photometric="off", identity="online", identity_seconds=1.0,
                                         identity_keyframes=1))
    base_mean = lt.decoder.model.mean.clone()
    states = [lt.identity_state for _ in lt.frames()]
    assert states[0] == "collecting" and states[-1] == "frozen" and lt.stats["identity_keyframes"] == 1
    assert lt.stats["faces"] == 48
    m = lt.decoder.model
    assert m.n_identity == 0  # the personalised model: identity folded into its mean
    # a different neutral than the default face (cm), of a plausible size
    d = (m.mean.double() - base_mean.double()).norm(dim=-1)
    assert 0.05 < float(d.mean()) < 2.0


def test_rig_folder_identity_round_trip(tmp_path):
    """--rig: rig.json's identity and albedo give the personalised neutral base.shape(identity); focal
    follows the source's size."""
    import torch

    from facerig.rig import personalise

    base = load_model("default").to(dtype=torch.float64)
    rng = np.random.default_rng(1)
    ident = 0.5 * rng.normal(size=base.n_identity)
    alb = 0.3 * rng.normal(size=base.n_albedo)
    meta = {"identity": ident.tolist(), "albedo": alb.tolist(), "focal_px": 1000.0, "image_size": [576, 576],
            "model": "default"}
    (tmp_path / "rig.json").write_text(json.dumps(meta))
    lt = LiveTracker(SAMPLE, LiveOptions(realtime=False), rig=tmp_path)
    assert lt.identity_state == "rig" and lt.focal == pytest.approx(500.0)  # 288 px frames: half the size
    with torch.no_grad():
        neutral = base.shape(torch.as_tensor(ident)[None])[0]
    np.testing.assert_allclose(lt.decoder.model.mean.double().numpy(), neutral.numpy(), atol=1e-4)
    pm = personalise(base, ident, alb)[0]
    np.testing.assert_allclose(lt.decoder.model.expression_basis.double().numpy(),
                               pm.expression_basis.numpy(), atol=1e-4)
    with pytest.raises(SourceError, match="facerig rig"):
        LiveTracker(SAMPLE, rig=tmp_path / "nothing")
