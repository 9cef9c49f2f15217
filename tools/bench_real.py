#!/usr/bin/env python
"""Benchmark on real faces: 68-point NME on ``../shared/data/real_faces_dev`` (frames of three real
talking-face videos, iBUG-68 labels by dlib's shape predictor).

For every labelled frame (or the frames of the videos named by ``--videos``: hold data out by
video, never by frame, when an encoder was trained on some of them) it runs

- ``mediapipe 68``: MediaPipe Face Mesh's 468 points mapped to the iBUG-68 subset
  (:func:`facerig.landmarks.to_ibug68`), i.e. the detections the fitter starts from;
- ``reconstruct``: :func:`facerig.reconstruct` with ``refine=0`` (detect + crop + encode);
- ``reconstruct +N``: the same with N photometric refinement steps (``--refine``, default 5);
- ``fit_image``: :func:`facerig.fit_image` with its default options;

and scores NME = mean point error / distance between points 36 and 45 (outer eye corners), the
convention of the project's hidden real-face benchmark. A method that finds no face scores the
mean-shape NME of 1.0 on that frame and is counted in ``missed`` (none did at the time of writing).

``--face-width W`` rescales each frame (area interpolation) so that dlib's box is about W pixels
wide, to imitate the hidden set's small faces (mostly 37-90 px); the labels are scaled with it.
NME is also split by face size: small (box < 60 px) and large.

Times are per face, wall clock and process CPU, with ``--threads`` torch / OpenCV threads
(the default 1 and 2 measure both). On a shared machine the 1-thread CPU time is the better
estimate of idle-machine latency.

Run:  .venv/bin/python tools/bench_real.py [--threads 1,2] [--refine 5] [--face-width 0] [--limit N]
      [--methods mediapipe,reconstruct,refine,fit] [--videos franck,cap12_edit,carphone_pristine] [--encoder FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import facerig
from facerig.face import NoFaceError
from facerig.landmarks import detect_landmarks, load_image, to_ibug68

DATA = Path(os.environ.get("FACERIG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "real_faces_dev"
"""The labelled frames (``$FACERIG_SHARED_DATA/real_faces_dev``, default ``../shared/data``)."""
METHODS = ("mediapipe", "reconstruct", "refine", "fit")


def nme(points: np.ndarray, truth: np.ndarray) -> float:
    """Mean point error of (68, 2) ``points`` against (68, 2) ``truth``, over the outer-eye-corner
    distance |truth[36] - truth[45]| (both in pixels of the same image)."""
    d = float(np.linalg.norm(truth[36] - truth[45]))
    return float(np.linalg.norm(points - truth, axis=1).mean() / d)


def load_set(videos=None, limit=None, face_width=0.0):
    """The labelled faces: list of dicts with ``image`` (H, W, 3) uint8 RGB, ``truth`` (68, 2) px,
    ``width`` (dlib box width in px, after rescaling), ``video``, ``file``."""
    labels = json.loads((DATA / "labels.json").read_text())["faces"]
    items = []
    for f in labels:
        stem = Path(f["video"]).stem
        if videos and stem not in videos:
            continue
        img = load_image(DATA / f["file"])
        pts = np.asarray(f["points"], np.float64)
        width = float(f["box"][2])
        if face_width > 0:
            s = face_width / width
            h, w = img.shape[:2]
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            pts = (pts + 0.5) * s - 0.5
            width *= s
        items.append({"image": img, "truth": pts, "width": width, "video": stem, "file": f["file"]})
    if limit:
        # an even spread over the set rather than its first frames (one video)
        idx = np.linspace(0, len(items) - 1, min(limit, len(items))).round().astype(int)
        items = [items[i] for i in sorted(set(idx.tolist()))]
    return items


def _mediapipe68(image):
    faces = detect_landmarks(image, max_faces=1)
    if not faces:
        return None
    return np.asarray(to_ibug68(faces[0].points[:468, :2]), np.float64)


def run_method(name: str, items, refine: int, encoder="default"):
    """Per-face (NME or nan, wall s, CPU s, (68, 2) points or None) of one method over ``items``."""
    def predict(image):
        if name == "mediapipe":
            return _mediapipe68(image)
        try:
            if name == "reconstruct":
                return facerig.reconstruct(image, encoder, refine=0).landmarks68
            if name == "refine":
                return facerig.reconstruct(image, encoder, refine=refine).landmarks68
            return facerig.fit_image(image).landmarks68
        except NoFaceError:
            return None

    predict(items[0]["image"])  # warm-up: model loading, MediaPipe graphs
    out = []
    for it in items:
        t0, c0 = time.perf_counter(), time.process_time()
        pts = predict(it["image"])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out.append((nme(pts, it["truth"]) if pts is not None else float("nan"), wall, cpu, pts))
    return out


def summarise(items, results):
    e = np.array([r[0] for r in results])
    missed = int(np.isnan(e).sum())
    e = np.where(np.isnan(e), 1.0, e)
    w = np.array([it["width"] for it in items])
    vids = np.array([it["video"] for it in items])
    row = {"mean": e.mean(), "median": float(np.median(e)), "missed": missed,
           "small": e[w < 60].mean() if (w < 60).any() else float("nan"),
           "large": e[w >= 60].mean() if (w >= 60).any() else float("nan"),
           "wall_ms": 1000 * float(np.median([r[1] for r in results])),
           "cpu_ms": 1000 * float(np.median([r[2] for r in results]))}
    for v in sorted(set(vids)):
        row[v] = e[vids == v].mean()
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated torch/OpenCV thread counts (default 1,2)")
    ap.add_argument("--refine", type=int, default=5, help="refinement steps of the 'reconstruct +N' row (default 5)")
    ap.add_argument("--face-width", type=float, default=0.0,
                    help="rescale frames so the face box is this wide in px (0: native size)")
    ap.add_argument("--limit", type=int, default=0, help="use N frames spread over the set (0: all)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--videos", default="", help="comma-separated video stems to use (default: all)")
    ap.add_argument("--json", default="", help="also write the rows to this JSON file")
    ap.add_argument("--dump", default="", help="write the predicted points, truths and files to this .npz")
    ap.add_argument("--encoder", default="default",
                    help="encoder file of the reconstruct rows (default: the shipped assets/default_encoder.pt)")
    args = ap.parse_args(argv)
    if not (DATA / "labels.json").exists():
        raise SystemExit(f"no real_faces_dev data at {DATA} (see ../shared/data/README.md)")
    methods = [m for m in args.methods.split(",") if m]
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise SystemExit(f"--methods: unknown {bad}; choose from {METHODS}")
    videos = [v for v in args.videos.split(",") if v]
    items = load_set(videos, args.limit, args.face_width)
    widths = np.array([it["width"] for it in items])
    print(f"{len(items)} faces from {len(set(it['video'] for it in items))} videos; face box width px: "
          f"min {widths.min():.0f}, median {np.median(widths):.0f}, max {widths.max():.0f}; "
          f"{int((widths < 60).sum())} small (< 60 px)")
    labels = {"mediapipe": "mediapipe 68 (detections)", "reconstruct": "reconstruct (refine 0)",
              "refine": f"reconstruct +{args.refine} steps", "fit": "fit_image"}
    rows, dump = [], {"truth": np.stack([it["truth"] for it in items]), "width": widths,
                      "files": np.array([it["file"] for it in items])}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        for m in methods:
            t0 = time.perf_counter()
            results = run_method(m, items, args.refine, args.encoder)
            row = summarise(items, results)
            dump[f"{m}_{threads}"] = np.stack([r[3] if r[3] is not None else np.full((68, 2), np.nan) for r in results])
            row.update(method=labels[m], threads=threads)
            rows.append(row)
            print(f"  {labels[m]}, {threads} thread(s): NME {row['mean']:.4f} in {time.perf_counter() - t0:.0f} s", flush=True)
    vids = sorted(set(it["video"] for it in items))
    head = ["method", "threads", "NME mean", "median", "small", "large"] + vids + ["missed", "ms wall", "ms CPU"]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["method"], str(r["threads"]), f"{r['mean']:.4f}", f"{r['median']:.4f}", f"{r['small']:.4f}",
                 f"{r['large']:.4f}"] + [f"{r[v]:.4f}" for v in vids] + [str(r["missed"]), f"{r['wall_ms']:.1f}",
                                                                         f"{r['cpu_ms']:.1f}"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    if args.dump:
        np.savez_compressed(args.dump, **dump)


if __name__ == "__main__":
    main()
