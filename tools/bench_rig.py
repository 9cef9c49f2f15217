#!/usr/bin/env python
"""Benchmark of ``facerig rig`` (video -> personalised rig) on synthetic videos with ground truth.

Each clip (``--clips``, seeds ``--seed + i``):

* an ICT-FaceKit face (``../shared/data/ict-facekit``; a random identity, N(0, 0.8^2) over its 100
  modes) performing smooth random ARKit weight curves (:func:`facerig.rig.performance_curves`:
  talking-rate jawOpen, mouthSmile_L/R, blinks every 2-4 s, brow raises, three random secondary
  shapes) with head motion (yaw +-20, pitch +-10, roll +-5 degrees, a slow drift), a light that
  changes over the clip (interpolated between two random SH lights), the default model's albedo
  (a random sample at half its std, carried to the ICT mesh by nearest vertex), a scikit-image
  photo background; rendered at 640 x 480 (focal 1600 px) with FaceRenderer's styled eyes (sclera,
  iris and pupil fading to skin as the lids close) and a dark mouth interior (``--plain-render``:
  the default look, a white rim and dark centre in every hole) and written as mp4v
  (``--frames`` frames at 30 fps, >= 300 by default);
* ``facerig rig`` on the file (:func:`facerig.rig.build_rig`, default options, known focal).

Printed (mean over clips):

* **identity error**: the rig's neutral vs the true neutral at the 468 ICT surface points that
  correspond to the default model's vertices (the correspondence of ``tools/bench_fit.py``),
  after a similarity alignment, mean per-vertex distance in mm; against the neutral of a
  single-image fit of the first frame (:func:`facerig.face.fit_image`, photometric, known focal).
* **expression error**: per frame, the rig's expressed shape vs the true one (the same 468
  points, similarity-aligned per frame), mean over frames, mm.
* **weight correlation** of the recovered and true weights over time (Pearson) for jawOpen,
  eyeBlink_L/R, mouthSmile_L/R (the models share the ARKit names).
* **jitter**: mean |acceleration| (px / frame^2) of the fitted iBUG-68 landmarks over the first
  ``--jitter-frames`` frames, for the rig and for per-frame independent fitting
  (:func:`facerig.face.fit_image` on each frame: detector without tracking or smoothing, the
  full photometric fit unless ``--per-frame-iterations`` says otherwise), of the landmark
  *error* (fit - truth: noise without the true motion) for both, and of the true projected
  landmarks (the motion itself).
* **frames/s**: landmark tracking + per-frame fitting after the identity fit (the rig's two
  per-frame stages; decoding included), and the identity fit's time.

Targets: identity error <= 0.7x the single-frame fit; weight correlation >= 0.8 on
jawOpen, eyeBlink and mouthSmile; jitter <= 0.5x per-frame fitting; >= 10 frames/s at 640 x 480.

Run:  .venv/bin/python tools/bench_rig.py [--clips 2] [--frames 300] [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from facerig.face import FaceDecoder, fit_image
from facerig.face.decoder import make_camera
from facerig.face.synthetic import IctTruth, background_photos, head_rotation, random_crop, random_sh
from facerig.model.geometry import aligned_error_mm as _aligned
from facerig.rig import RigOptions, build_rig, jitter, performance_curves
from facerig.video import VideoReader, VideoWriter

REPO = Path(__file__).resolve().parents[1]
ICT_DIR = REPO.parent / "shared" / "data" / "ict-facekit"

W_IMG, H_IMG, FPS = 640, 480, 30.0
FOCAL = 2.5 * W_IMG
SHAPES = ("jawOpen", "eyeBlink_L", "eyeBlink_R", "mouthSmile_L", "mouthSmile_R")


def aligned_error_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-point distance (mm) after a similarity alignment of pred (N, 3) onto gt (N, 3), cm."""
    return float(_aligned(pred, gt).mean())


def make_clip(path: Path, seed: int, n_frames: int, ict: IctTruth, dec: FaceDecoder, renderer=None):
    """Render one ground-truth clip; returns dict with neutral468, shapes468 (T, 468, 3) model
    frame, weights (T, 53), lm68 (T, 68, 2) true projected iBUG-68 points."""
    rng = np.random.default_rng(seed)
    m = dec.model
    c = rng.standard_normal(len(ict.id_deltas)) * 0.8
    neutral_ict = ict.neutral + np.tensordot(c, ict.id_deltas, 1)
    names = list(m.expression_names)
    Wt, yaw, pitch, roll = performance_curves(n_frames, FPS, names, seed=int(rng.integers(1 << 31)))
    rot = head_rotation(yaw, pitch, roll)
    g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    alb = m.sample(1, g)["albedo"] * 0.5
    colors = m.albedo(alb).clamp(0, 1)[0][torch.from_numpy(ict.nearest)][None]
    sh0, sh1 = random_sh(rng), random_sh(rng)
    bg = random_crop(rng, background_photos(W_IMG), W_IMG)[:H_IMG]
    bg_t = torch.from_numpy(bg.astype(np.float32) / 255.0)[None]
    cam = make_camera(torch.tensor([FOCAL]), (H_IMG, W_IMG))
    drift = np.cumsum(rng.normal(0, 0.03, (n_frames, 2)), 0)
    drift = drift - drift.mean(0)
    to_model = lambda X: (X - ict.t) @ ict.R  # noqa: E731  ICT frame -> default model frame
    neutral_model = to_model(neutral_ict)
    centre = neutral_model.mean(0)
    M = np.diag([1.0, -1.0, -1.0])
    shapes468, lm68 = [], []
    ibug = m.landmarks_ibug68.indices.numpy()
    from scipy.spatial.transform import Rotation
    with VideoWriter(path, FPS, (W_IMG, H_IMG)) as vw:
        for t in range(n_frames):
            shape = to_model(neutral_ict + np.tensordot(Wt[t], ict.exp_deltas, 1))
            a = t / max(1, n_frames - 1)
            sh = (1 - a) * sh0 + a * sh1
            R = Rotation.from_rotvec(rot[t].numpy()).as_matrix()
            trans = np.array([drift[t, 0], drift[t, 1], 60.0]) - R @ M @ centre
            verts = (shape @ M.T) @ R.T + trans
            with torch.no_grad():
                out = (renderer or ict.renderer)(torch.from_numpy(verts).float()[None], colors, cam, (H_IMG, W_IMG),
                                                 sh, bg_t)
            vw.write((out.image[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8))
            p468 = ict.points468(shape)
            shapes468.append(p468)
            cam468 = ict.points468(verts)
            uv = cam468[ibug, :2] / cam468[ibug, 2:] * FOCAL + np.array([W_IMG / 2, H_IMG / 2])
            lm68.append(uv)
    return {"neutral468": ict.points468(neutral_model), "shapes468": np.stack(shapes468), "weights": Wt,
            "lm68": np.stack(lm68), "names": names}


def rig_landmarks68(rig) -> np.ndarray:
    """(T, 68, 2) projected iBUG-68 landmarks of the rig's per-frame fits."""
    dec = FaceDecoder(rig.model(torch.float64))
    H, W = rig.image_size
    with torch.no_grad():
        return dec.landmarks2d(rig.codes(), (H, W), kind="ibug68").numpy()


def per_frame_fits(video: Path, n: int, iterations: int):
    """Independent fit_image on each of the first n frames: (lm68 (n, 68, 2) with NaN rows where no
    face was found, found (n,), first-frame fit, seconds per fit)."""
    from facerig.face import NoFaceError

    lms, found, first, times = [], [], None, []
    with VideoReader(video, stop=n) as r:
        for i, rgb in r:
            t0 = time.perf_counter()
            try:
                fit = fit_image(rgb, focal=FOCAL, iterations=iterations if i else None)  # frame 0: full fit
            except NoFaceError:
                lms.append(np.full((68, 2), np.nan))
                found.append(False)
                continue
            times.append(time.perf_counter() - t0)
            if i == 0:
                first = fit
            lms.append(fit.landmarks68)
            found.append(True)
    return np.stack(lms), np.asarray(found), first, float(np.mean(times)) if times else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=2)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--jitter-frames", type=int, default=60)
    ap.add_argument("--per-frame-iterations", type=int, default=None,
                    help="photometric iterations of the per-frame baseline fits (default: fit_image's; 0 = landmarks only)")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="1 clip of 90 frames, 30 jitter frames")
    ap.add_argument("--out", default=str(REPO / "bench_out" / "rig"))
    ap.add_argument("--keep", action="store_true", help="keep the rig outputs (preview.mp4 included)")
    ap.add_argument("--plain-render", action="store_true",
                    help="render the clips with FaceRenderer's default look (every hole: white rim + dark centre) "
                         "instead of the styled eyes (fading to skin when closed) and dark mouth interior")
    args = ap.parse_args()
    if args.quick:
        args.clips, args.frames, args.jitter_frames = 1, 90, 30
    torch.set_num_threads(args.threads)
    if not (ICT_DIR / "ict_face_area_morphs.npz").exists():
        print(f"ICT-FaceKit data not found in {ICT_DIR}; nothing to benchmark")
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dec = FaceDecoder("default")
    ict = IctTruth(dec, ICT_DIR)
    renderer = None
    if not args.plain_render:
        from facerig.face.synthetic import FaceRenderer
        renderer = FaceRenderer(ict.faces, len(ict.neutral), styled=True, rest_vertices=(ict.neutral - ict.t) @ ict.R)
    rows = []
    for k in range(args.clips):
        seed = args.seed + k
        video = out / f"clip{seed}.mp4"
        t0 = time.perf_counter()
        gt = make_clip(video, seed, args.frames, ict, dec, renderer)
        print(f"clip {seed}: {args.frames} frames {W_IMG}x{H_IMG} rendered in {time.perf_counter() - t0:.0f} s "
              f"({video.stat().st_size / 1e6:.1f} MB mp4v)", flush=True)
        rig = build_rig(video, out / f"rig{seed}", focal=FOCAL, resume=False,
                        options=RigOptions(preview=args.keep), progress=False)
        T = len(rig.frames)
        ok = rig.found
        id_rig = aligned_error_mm(rig.neutral, gt["neutral468"])
        J = min(args.jitter_frames, T)
        lm_pf, found_pf, first, t_pf = per_frame_fits(video, J, args.per_frame_iterations)
        if first is not None:
            with torch.no_grad():
                neutral_1 = dec.model.shape(first.code.identity)[0].double().numpy()
            id_single = aligned_error_mm(neutral_1, gt["neutral468"])
        else:
            id_single = float("nan")
        shapes = rig.neutral[None] + np.einsum("tk,kvc->tvc", rig.weights, rig.blendshapes)
        exp_err = float(np.mean([aligned_error_mm(shapes[t], gt["shapes468"][t]) for t in range(T) if ok[t]]))
        corr = {}
        for n in SHAPES:
            j = rig.names.index(n)
            a, b = rig.weights[ok, j], gt["weights"][ok, j]
            corr[n] = float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-9 and b.std() > 1e-9 else float("nan")
        lm_rig = rig_landmarks68(rig)
        jit_rig = jitter(lm_rig[:J], ok[:J])
        jit_pf = jitter(np.nan_to_num(lm_pf), found_pf)
        jit_gt = jitter(gt["lm68"][:J])
        # jitter of the error (fit - truth): noise only, the true motion removed
        jit_err_rig = jitter(lm_rig[:J] - gt["lm68"][:J], ok[:J])
        jit_err_pf = jitter(np.nan_to_num(lm_pf) - gt["lm68"][:J], found_pf)
        t_frames = rig.timings["landmarks"] + rig.timings["tracking"]
        row = {"clip": seed, "frames": T, "found": int(ok.sum()), "id_rig": id_rig, "id_single": id_single,
               "exp_err": exp_err, **{f"r_{n}": v for n, v in corr.items()}, "jit_rig": jit_rig, "jit_pf": jit_pf,
               "jit_gt": jit_gt, "jit_err_rig": jit_err_rig, "jit_err_pf": jit_err_pf, "jit_w": rig.metrics["jitter_weights"], "fps": T / t_frames,
               "fps_landmarks": rig.metrics["landmarks_fps"], "fps_tracking": rig.metrics["tracking_fps"],
               "fps_tracking_cpu": T / max(rig.timings["tracking_cpu"], 1e-9),
               "identity_s": rig.timings["identity"], "per_frame_fit_s": t_pf,
               "lm_err": rig.metrics["landmark_error_px"]}
        rows.append(row)
        print(json.dumps({k2: (round(v, 4) if isinstance(v, float) else v) for k2, v in row.items()}), flush=True)
        if not args.keep:
            video.unlink(missing_ok=True)

    def mean(key):
        return float(np.nanmean([r[key] for r in rows]))

    n_clips = len(rows)
    print()
    print(f"facerig rig on {n_clips} synthetic ICT-FaceKit clip(s), {args.frames} frames {W_IMG}x{H_IMG} mp4v at "
          f"{FPS:g} fps, torch threads {args.threads} (means over clips)")
    print()
    print("| metric | rig | baseline | ratio | target |")
    print("|---|---|---|---|---|")
    r = mean("id_rig") / mean("id_single")
    print(f"| identity error (neutral, similarity-aligned) | {mean('id_rig'):.2f} mm | {mean('id_single'):.2f} mm "
          f"(single-image fit of frame 0) | {r:.2f}x | <= 0.7x: {'met' if r <= 0.7 else 'not met'} |")
    print(f"| expression error per frame | {mean('exp_err'):.2f} mm | | | |")
    for n in SHAPES:
        v = mean(f"r_{n}")
        print(f"| weight correlation {n} | {v:.3f} | | | >= 0.8: {'met' if v >= 0.8 else 'not met'} |")
    jr = mean("jit_rig") / mean("jit_pf")
    print(f"| landmark jitter (iBUG-68, first {args.jitter_frames} frames) | {mean('jit_rig'):.3f} px/frame² | "
          f"{mean('jit_pf'):.3f} px/frame² (fit_image per frame, "
          f"{'default' if args.per_frame_iterations is None else args.per_frame_iterations} photometric it.) | "
          f"{jr:.2f}x | <= 0.5x: {'met' if jr <= 0.5 else 'not met'} |")
    je = mean("jit_err_rig") / mean("jit_err_pf")
    print(f"| jitter of the landmark error (fit - truth) | {mean('jit_err_rig'):.3f} px/frame² | "
          f"{mean('jit_err_pf'):.3f} px/frame² | {je:.2f}x | |")
    print(f"| true landmark motion (acceleration) | {mean('jit_gt'):.3f} px/frame² | | | |")
    print(f"| weight jitter | {mean('jit_w'):.4f} /frame² | | | |")
    f = mean("fps")
    print(f"| frames/s after the identity fit (landmarks + fitting) | {f:.1f} | landmarks {mean('fps_landmarks'):.1f}, "
          f"fitting {mean('fps_tracking'):.1f} (CPU time: {mean('fps_tracking_cpu'):.1f}) | | "
          f">= 10: {'met' if f >= 10 else 'not met'} |")
    print(f"| identity fit (keyframes) | {mean('identity_s'):.1f} s | per-frame fit_image {mean('per_frame_fit_s'):.2f} s "
          f"/ frame | | |")
    print(f"| landmark error (468 points) | {mean('lm_err'):.2f} px | | | |")
    print()
    print(f"jitter = mean over frames and the 68 iBUG points of |p[t+1] - 2 p[t] + p[t-1]| (the norm of the "
          f"frame-to-frame acceleration of the fitted model's projected landmarks, px / frame²; frames "
          f"0..{args.jitter_frames - 1}, triples with a face only). It includes the true motion (row 'true landmark "
          f"motion'); 'jitter of the landmark error' applies it to fit - truth, which removes that motion. "
          f"Render: {'plain (white rim + dark centre in every hole)' if args.plain_render else 'styled eyes and mouth'}.")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
