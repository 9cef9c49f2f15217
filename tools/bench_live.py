#!/usr/bin/env python
"""Benchmark of ``facerig live`` on the development videos (``../shared/data/videos``).

Each clip (the first ``--seconds`` of cap12_edit 400x300 at 25 fps, franck 360x288 at 24 fps,
carphone 176x144 at 30 fps) is played through the live capture path (:class:`facerig.live.LiveTracker`
on the file in real time: the capture thread paces it at its native frame rate and hands over the
newest frame; frames the tracker misses are dropped) at its own size and upscaled to 640x480
(written once as an mp4v file, then played the same way). Variants per size: the default
``--photometric auto`` (the photometric step when the frame stays inside the 50 ms latency budget),
``always`` (the photometric step on every processed frame) and, at the native size, ``auto`` with
the person's rig (``--rig``: the identity of an offline ``facerig rig`` of the same clip) and
``fast`` (``--fast``: every frame handed over, none dropped, the photometric step on each: the
processing capacity).

Printed per run: processed frames/s (steady state: frames after the first / time from the first
output to the last), dropped frames (% of the frames the source delivered), latency capture ->
weights out p50 / p95 (ms), the latency's drift (median of the last third minus the first third:
a growing backlog would show here), per-stage ms (landmarks: MediaPipe wall time in its thread;
solve, light, photometric: CPU time of the solving thread), the fraction of frames with the
photometric step, the process's CPU time per processed frame (all threads: decoding, MediaPipe,
the solve; warm-up included) and the cores it kept busy (CPU s / wall s); and the Pearson correlation of the weights over the processed frames with

* MediaPipe Face Landmarker's blendshapes (``../shared/data/mediapipe/face_landmarker_v2.task``,
  video mode, every frame) for jawOpen, eyeBlink L/R, mouthSmile L/R and the mean over the shapes
  that move (MediaPipe's std > 0.05 over the clip; names mapped X_L -> XLeft),
* the offline ``facerig rig`` of the same clip (default options) for the same shapes and the mean
  over the shapes that move in the rig (std > 0.02).

Targets (issue 16, the 2-core machine, photometric step on): >= 30 processed frames/s on 400x300
and 640x480 sources played in real time, p95 latency <= 50 ms, no growing backlog; correlation with
MediaPipe >= 0.8 for jawOpen and both blinks, >= 0.7 for both smiles.

Run:  FACERIG_SHARED_DATA=/path/to/shared/data .venv/bin/python tools/bench_live.py [--seconds 30]
      [--clips cap12_edit,franck,carphone_pristine] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = ("jawOpen", "eyeBlink_L", "eyeBlink_R", "mouthSmile_L", "mouthSmile_R")


def data_dir() -> Path:
    return Path(os.environ.get("FACERIG_SHARED_DATA", REPO.parent / "shared" / "data"))


def mp_name(name: str) -> str:
    """The model's name -> MediaPipe's ARKit name (eyeBlink_L -> eyeBlinkLeft)."""
    if name.endswith("_L"):
        return name[:-2] + "Left"
    if name.endswith("_R"):
        return name[:-2] + "Right"
    return name


def mediapipe_blendshapes(video: Path, task: Path, n: int):
    """(T, 52) MediaPipe Face Landmarker blendshape scores of the first n frames (NaN rows without a face), names."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions
    from mediapipe.tasks.python.vision import FaceLandmarker, FaceLandmarkerOptions, RunningMode

    from facerig.video import VideoReader

    opts = FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(task)), running_mode=RunningMode.VIDEO,
                                 output_face_blendshapes=True, num_faces=1)
    rows, names = [], None
    with FaceLandmarker.create_from_options(opts) as lm, VideoReader(video, stop=n) as vr:
        for i, rgb in vr:
            res = lm.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb),
                                      int(round(1000 * i / vr.source_fps)))
            if res.face_blendshapes:
                cats = res.face_blendshapes[0]
                names = names or [c.category_name for c in cats]
                rows.append([c.score for c in cats])
            else:
                rows.append(None)
    K = len(names or [])
    return np.array([r if r is not None else [np.nan] * K for r in rows], np.float64), names or []


def offline_rig(video: Path, n: int, out: Path):
    """``facerig rig`` (default options, no preview) of the first n frames: (T, K) weights, rig folder."""
    from facerig.rig import RigOptions, build_rig

    rig = build_rig(video, out, stop=n, options=RigOptions(preview=False, texture_size=0))
    return rig.weights, out


def reencode(video: Path, n: int, size, path: Path) -> Path:
    import cv2

    from facerig.video import VideoReader, VideoWriter

    with VideoReader(video, stop=n) as vr, VideoWriter(path, vr.source_fps, size) as vw:
        for _, rgb in vr:
            vw.write(cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC))
    return path


def live_run(video: Path, photometric: str, rig=None, realtime: bool = True):
    from facerig.live import LiveOptions, LiveTracker

    lt = LiveTracker(video, LiveOptions(realtime=realtime, photometric=photometric), rig=rig)
    idx, W, lat, stages, outs = [], [], [], [], []
    c0, w0 = time.process_time(), time.perf_counter()
    for f in lt.frames():
        outs.append(time.perf_counter())
        idx.append(f.index)
        W.append(f.weights if f.found else np.full(len(lt.names), np.nan))
        lat.append(f.latency_ms)
        stages.append(f.stages_ms)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    n = len(idx)
    lat = np.asarray(lat)
    third = max(1, n // 3)
    res = {
        "size": f"{lt.size[0]}x{lt.size[1]}", "fps_source": lt.fps, "frames_read": lt.source.frames_read,
        "processed": n, "processed_fps": (n - 1) / (outs[-1] - outs[0]) if n > 1 else float("nan"),
        "dropped": lt.stats["dropped"], "dropped_pct": 100.0 * lt.stats["dropped"] / max(1, lt.source.frames_read),
        "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
        "drift": float(np.median(lat[-third:]) - np.median(lat[:third])),
        "photo_pct": 100.0 * lt.stats["photometric"] / max(1, n),
        "cpu_ms_per_frame": 1000.0 * cpu / max(1, n), "cores_used": cpu / wall if wall > 0 else float("nan"),
        "stage_ms": {k: float(np.median([s[k] for s in stages if k in s])) for k in
                     ("landmarks", "solve", "light", "photometric") if any(k in s for s in stages)},
    }
    return res, np.asarray(idx), np.asarray(W), lt.names


def corr(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 5 or a[ok].std() < 1e-9 or b[ok].std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def correlations(idx, W, names, ref, ref_names, move_std):
    """Per shape of SHAPES and the mean over moving shapes: Pearson r of W (processed frames) and ref[idx]."""
    out = {}
    col = {n: j for j, n in enumerate(ref_names)}
    R = ref[idx]
    pairs = [(k, col[mp_name(n)] if mp_name(n) in col else col.get(n)) for k, n in enumerate(names)]
    for s in SHAPES:
        k = names.index(s)
        j = dict(pairs)[k]
        out[s] = corr(W[:, k], R[:, j]) if j is not None else float("nan")
    moving = [corr(W[:, k], R[:, j]) for k, j in pairs if j is not None and np.nanstd(R[:, j]) > move_std]
    moving = [r for r in moving if np.isfinite(r)]
    out["moving"] = float(np.mean(moving)) if moving else float("nan")
    out["n_moving"] = len(moving)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="seconds of each clip (default 30)")
    ap.add_argument("--clips", default="cap12_edit,franck,carphone_pristine")
    ap.add_argument("--variants", default="auto,always,rig,fast",
                    help="comma list of auto, always, rig (auto with the offline rig's identity), fast (every "
                         "frame, as fast as possible, photometric step on each: the capacity)")
    ap.add_argument("--no-upscale", action="store_true", help="native sizes only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="cap12 only, 10 s")
    ap.add_argument("--out", default=str(REPO / "bench_out" / "live"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    data = data_dir()
    videos, task = data / "videos", data / "mediapipe" / "face_landmarker_v2.task"
    if not videos.is_dir():
        print(f"no development videos at {videos} (set FACERIG_SHARED_DATA)")
        return 1
    clips = ["cap12_edit"] if args.quick else args.clips.split(",")
    seconds = 10.0 if args.quick else args.seconds
    variants = args.variants.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    from facerig.video import VideoReader

    for clip in clips:
        video = videos / f"{clip}.mp4"
        with VideoReader(video) as vr:
            n = min(vr.frame_count, int(round(seconds * vr.source_fps)))
        t0 = time.perf_counter()
        mp_w, mp_names = mediapipe_blendshapes(video, task, n) if task.exists() else (None, [])
        print(f"{clip}: MediaPipe Face Landmarker on {n} frames in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        rig_w, rig_dir = offline_rig(video, n, out / f"rig_{clip}")
        print(f"{clip}: offline facerig rig in {time.perf_counter() - t0:.1f} s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            with VideoReader(video) as vr:  # the first n frames, re-encoded (mp4v) at the native size and at 640x480
                sources = [("native", reencode(video, n, vr.size, Path(tmp) / f"{clip}_cut.mp4"))]
            if not args.no_upscale:
                sources.append(("640x480", reencode(video, n, (640, 480), Path(tmp) / f"{clip}_640.mp4")))
            for label, src in sources:
                for var in variants:
                    if var in ("rig", "fast") and label != "native":
                        continue
                    photo = {"rig": "auto", "fast": "always"}.get(var, var)
                    res, idx, W, names = live_run(src, photo, rig=rig_dir if var == "rig" else None,
                                                  realtime=var != "fast")
                    res.update(clip=clip, source=label, variant=var)
                    if mp_w is not None:
                        res["mediapipe"] = correlations(idx, W, names, mp_w, mp_names, 0.05)
                    res["rig"] = correlations(idx, W, names, rig_w, names, 0.02)
                    rows.append(res)
                    print(json.dumps(res), flush=True)
                    if clip == clips[0] and label == "native" and var == variants[0] and mp_w is not None:
                        plot(out / "bench_live.png", idx, W, names, mp_w, mp_names, rig_w, res)
    (out / "bench_live.json").write_text(json.dumps(rows, indent=1))
    print_table(rows)
    return 0


def plot(path, idx, W, names, mp_w, mp_names, rig_w, res):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    t = idx / res["fps_source"]
    col = {n: j for j, n in enumerate(mp_names)}
    tt = np.arange(len(rig_w)) / res["fps_source"]
    for a, s in zip(ax, ("jawOpen", "eyeBlink_L", "mouthSmile_L")):
        a.plot(tt, mp_w[:, col[mp_name(s)]], lw=1, color="0.5", label="MediaPipe Face Landmarker")
        a.plot(tt, rig_w[:, names.index(s)], lw=1, color="C2", label="offline facerig rig")
        a.plot(t, W[:, names.index(s)], lw=1.2, color="C0", label="facerig live (processed frames)")
        a.set_ylabel(s)
    ax[0].legend(fontsize=8, loc="upper right")
    ax[-1].set_xlabel("time (s)")
    ax[0].set_title(f"{res['clip']} {res['size']} live ({res['variant']}): {res['processed_fps']:.1f} frames/s, "
                    f"p95 {res['p95']:.0f} ms, {res['dropped_pct']:.0f} % dropped")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def print_table(rows):
    print()
    print("| clip | size, fps | photometric | processed fps | dropped | latency p50 / p95 ms | drift ms | "
          "landmarks / solve / light / photo ms | photo % | CPU ms/frame, cores | r MediaPipe jaw, blink L/R, smile L/R, moving | "
          "r offline rig jaw, blink L/R, smile L/R, moving |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        st = r["stage_ms"]
        sm = " / ".join(f"{st[k]:.1f}" if k in st else "-" for k in ("landmarks", "solve", "light", "photometric"))

        def cs(c):
            if not c:
                return "-"
            return (", ".join(f"{c[s]:.2f}" for s in SHAPES) + f", {c['moving']:.2f} ({c['n_moving']})")

        var = {"auto": "auto", "always": "every frame", "rig": "auto, --rig",
               "fast": "every frame, --fast"}[r["variant"]]
        print(f"| {r['clip']} | {r['size']}, {r['fps_source']:.0f} | {var} | {r['processed_fps']:.1f} | "
              f"{r['dropped']} ({r['dropped_pct']:.0f} %) | {r['p50']:.0f} / {r['p95']:.0f} | {r['drift']:+.0f} | {sm} | "
              f"{r['photo_pct']:.0f} | {r.get('cpu_ms_per_frame', float('nan')):.0f}, {r.get('cores_used', float('nan')):.2f} | "
              f"{cs(r.get('mediapipe'))} | {cs(r.get('rig'))} |")


if __name__ == "__main__":
    sys.exit(main())
