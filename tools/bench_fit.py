#!/usr/bin/env python
"""Benchmark of analysis-by-synthesis face fitting on synthetic faces with known ground truth.

For each of ``--n`` random faces:

* identity and expression from the model's priors (expression weights |N(0, 0.5^2)| x 0.5),
  albedo from its prior at half its standard deviation (the hand-made albedo model's full spread gives green and blue faces), yaw in +-60 deg, pitch in +-30 deg, roll in +-10 deg, distance 60-80 cm,
  random SH light (ambient 0.8-1.2 plus random first- (std 0.2) and second-band (std 0.05) terms, slight colour tint);
* rendered at 256 x 256 (focal 640 px, principal point at the centre, antialiased) over a random
  crop of a scikit-image photograph (coffee, rocket, brick, grass, gravel, hubble, IHC, moon,
  coins, retina);
* landmarks from the detector (facerig.landmarks, MediaPipe Face Mesh) run on the rendered image
  (not the ground truth); renders where no face is detected are counted and skipped;
* fitted with :func:`facerig.face.fit_image` (known focal), keeping every stage:
  ``mean face`` = mean shape with the fitted pose (stage 1), ``landmarks`` = landmark-only fit
  (stage 2), ``photometric`` = the full fit (stage 3). Diagnostic row of the self-fit run:
  ``landmarks only, GT landmarks`` = the same landmark-only fitter given the exact projected 468
  model landmarks instead of the detections (separates fitter error from detector error).

Errors: per-vertex distance after a similarity (Umeyama, with scale) alignment of the fitted
camera-frame vertices onto the ground truth, over the face region = all 468 vertices of the
Face Mesh topology (it is a face mask) - mean and median over vertices, then mean / median over
faces, in mm; landmark error = mean 2D distance (px) of the fitted iBUG-68 landmarks to the
ground-truth projected ones (and to the detections).

Cross-model run (``--ict``, default on when ICT-FaceKit data is found in ../shared/data): the
ground truth is an ICT-FaceKit face (random identity N(0, 1) over the 100 modes, random ARKit
expression), rendered as its 9409-vertex face-area mesh with the default model's albedo
transferred by nearest vertex; errors are measured at the 468 ICT surface points that
correspond to the default model's vertices. The default model's build tool does not store this
correspondence, so it is recomputed here: rigid alignment of the default mean face to the ICT
neutral (landmarks, then closest-point ICP), then the closest ICT surface point (triangle +
barycentric coordinates) of every default vertex.

Self-fit render (``--gt-detail``, default on): the self-fit ground truth is the model's face on its
detail surface (:meth:`facerig.model.FaceModel.detailed`: 1833 vertices, the new ones on the ICT
surface the default model was sampled from), the surface the fitter renders from 120 px on;
``--gt-detail 0`` renders the 468-vertex mesh (the benchmark before the detail level existed).
(``--gt-subdivide``, ``--gt-smooth``): the self-fit ground truth can also be rendered
from a subdivided version of the model's mesh. ``--gt-subdivide K`` (midpoint, K levels): the
same piecewise-linear surface with its per-vertex shading sampled 4^K times more densely (closer
to per-pixel shading; the coarse 468-vertex Gouraud look is a render artefact, not a property of
the face); ``--gt-smooth K``: curved Phong-tessellation subdivision (:func:`facerig.face.synthetic.smooth_subdivide`).
The error is always measured at the model's own 468 vertices (both subdivisions keep them).
``--gt-shading pixel``: the self-fit ground truth shaded per pixel (normals interpolated, SH light per
pixel) instead of per vertex; pair it with ``--set photo_shading=pixel`` (the fitter's per-pixel
shading) for a matched self-fit. The ICT ground truth is always drawn per vertex on its dense mesh.

Times: wall-clock per fit and the process CPU time (the fair number on a shared machine; one
torch thread).

Run:  .venv/bin/python tools/bench_fit.py [--n 200] [--quick] [--threads 1] [--no-ict] [--no-self]
      [--gt-subdivide K] [--gt-shading pixel] [--set FIELD=VALUE ...]   (any FitOptions field, e.g. --set w_identity_lm=6)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from facerig.face import FaceDecoder, FitOptions, fit_image
from facerig.face.decoder import make_camera
from facerig.face.synthetic import IctTruth, SyntheticFaces, random_crop
from facerig.model.geometry import aligned_error_mm

REPO = Path(__file__).resolve().parents[1]
ICT_DIR = REPO.parent / "shared" / "data" / "ict-facekit"
SIZE = 256
GT_SUBDIVIDE = 0  # self-fit ground truth: midpoint-subdivision levels of the rendered model
GT_SMOOTH = 0  # self-fit ground truth: curved subdivision levels of the render (FaceRenderer(smooth=...))
FOCAL = 2.5 * SIZE


aligned_error = aligned_error_mm  # (N,) mm after a similarity alignment


def make_sample(rng, gen: SyntheticFaces, ict: IctTruth | None):
    """One benchmark face: a default-model face from ``gen`` or, with ``ict``, an ICT-FaceKit face under
    the same random pose, light, albedo and background. Returns (image, gt (468, 3) camera frame cm,
    gt iBUG-68 px or None, yaw, pitch, gt MediaPipe-468 px or None)."""
    if ict is None:
        s = gen.sample(rng)
        return s.image, s.vertices[:468], s.landmarks68, s.yaw, s.pitch, s.landmarks468
    m = gen.dec.model
    code, yaw, pitch, _ = gen.random_code(rng)
    bg = torch.from_numpy(random_crop(rng, gen.photos, SIZE).astype(np.float32) / 255.0)[None]
    cam = make_camera(code.focal, (SIZE, SIZE))
    shape = torch.from_numpy(ict.sample(rng)).float()[None]
    with torch.no_grad():
        verts = code.transform(shape)
        alb = m.albedo(code.albedo).clamp(0, 1)[0]
        if ict.albedo_mode == "barycentric":
            colors = (alb[ict.alb_tri] * ict.alb_bary[..., None]).sum(1)
        else:
            colors = alb[torch.from_numpy(ict.nearest)]
        out = ict.renderer(verts, colors[None], cam, (SIZE, SIZE), code.sh, bg)
    img = (out.image[0].clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return img, ict.points468(verts[0].double().numpy()), None, yaw, pitch, None


def run(n, seed, ict_model, opts, label, save_examples=None, gt_smooth=0, gt_subdivide=0, gt_shading="vertex",
        ict_albedo="nearest", gt_detail=True):
    from facerig.landmarks import detect_landmarks
    dec = FaceDecoder("default")
    gt_model = dec.model.detailed() if gt_detail and dec.model.has_detail and not ict_model else dec.model
    if ict_model or not (gt_subdivide or gt_model is not dec.model):
        gen = SyntheticFaces(dec, size=SIZE, focal=FOCAL, smooth=0 if ict_model else gt_smooth,
                             shading="vertex" if ict_model else gt_shading)
    else:  # the model's detail surface and / or a midpoint-subdivided mesh (its first 468 vertices are the model's)
        gen = SyntheticFaces(FaceDecoder(gt_model.subdivide(gt_subdivide)), size=SIZE, focal=FOCAL, smooth=gt_smooth,
                             shading=gt_shading)
    rng = np.random.default_rng(seed)
    ict = IctTruth(dec, ICT_DIR, ict_albedo) if ict_model else None
    if ict is not None:
        print(f"  [ICT correspondence: closest-point ICP residual {ict.icp_residual_mm:.3f} mm (mean over 468 vertices)]")
    rows = {"mean face (fitted pose)": [], "landmarks only": [], "photometric": []}
    keys = {"mean face (fitted pose)": "pose", "landmarks only": "landmarks", "photometric": "photometric"}
    lm_gt, lm_det, times, cpu_times, fit_times, missed, yaws = [], [], [], [], [], 0, []
    for i in range(n):
        img, gt, gt_lm, yaw, pitch, gt468 = make_sample(rng, gen, ict)
        faces = detect_landmarks(img, max_faces=1, refine=False)
        if not faces:
            missed += 1
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_image(img, dec, landmarks=faces[0], options=opts, focal=FOCAL, keep_stages=True)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        fit_times.append(fit.timings["pose"] + fit.timings["shape"] + fit.timings["photometric"])
        for name, k in keys.items():
            e = aligned_error(fit.stages[k].double().numpy(), gt)
            rows[name].append((e.mean(), np.median(e)))
        lm_det.append(fit.landmark_error_px)
        if gt_lm is not None:
            lm_gt.append(np.linalg.norm(fit.landmarks68 - gt_lm, axis=1).mean())
        yaws.append(abs(yaw))
        if gt468 is not None:  # diagnostic: the same fitter given the exact projected 468 landmarks
            o = FitOptions(**{**opts.__dict__, "photo_iterations": 0})
            fit_gt = fit_image(img, dec, landmarks=gt468, options=o, focal=FOCAL, keep_stages=True)
            rows.setdefault("landmarks only, GT landmarks", []).append(
                (lambda e: (e.mean(), np.median(e)))(aligned_error(fit_gt.stages["landmarks"].double().numpy(), gt)))
        if save_examples is not None and i < 4:
            import cv2
            ov = fit.render(img, alpha=0.6)
            cv2.imwrite(str(save_examples / f"{label}_{i}.png"), np.concatenate([img, ov], 1)[..., ::-1])
    k = len(times)
    print(f"\n{label}: {k} of {n} faces fitted ({missed} renders without a detected face)")
    print(f"  {'method':26s} {'mean err (mm)':>14s} {'median err (mm)':>16s} {'vs mean face':>13s}")
    base = np.mean([r[0] for r in rows["mean face (fitted pose)"]]) if k else float("nan")
    res = {}
    for name, r in list(rows.items()):
        a = np.asarray(r) if r else np.full((1, 2), np.nan)
        res[name] = (float(a[:, 0].mean()), float(np.median(a[:, 1])))
        print(f"  {name:26s} {a[:, 0].mean():14.3f} {np.median(a[:, 1]):16.3f} {a[:, 0].mean() / base:13.2f}x")
    print("  (mean err: mean over faces of the per-face mean vertex error; median err: median over faces of the "
          "per-face median vertex error)")
    if lm_gt:
        print(f"  landmark error, fitted iBUG-68 vs ground truth: mean {np.mean(lm_gt):.2f} px, median {np.median(lm_gt):.2f} px")
    print(f"  landmark error, fitted iBUG-68 vs detections:   mean {np.mean(lm_det):.2f} px, median {np.median(lm_det):.2f} px")
    print(f"  time per image: fit {np.mean(fit_times):.3f} s (median {np.median(fit_times):.3f}), "
          f"with crop/outputs {np.mean(times):.3f} s; process CPU time {np.mean(cpu_times):.3f} s; detection excluded")
    if k:
        ph = np.asarray([r[0] for r in rows["photometric"]])
        lo = np.asarray([r[0] for r in rows["landmarks only"]])
        yw = np.asarray(yaws)
        for a, b in ((0, 30), (30, 45), (45, 61)):
            sel = (yw >= a) & (yw < b)
            if sel.any():
                print(f"  |yaw| {a:2d}-{b:2d} deg: {sel.sum():3d} faces, landmarks-only {lo[sel].mean():.3f} mm, "
                      f"photometric {ph[sel].mean():.3f} mm")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="faces per run (default 200)")
    ap.add_argument("--quick", action="store_true", help="20 faces per run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a shared 2-core machine)")
    ap.add_argument("--no-ict", action="store_true", help="skip the cross-model (ICT-FaceKit ground truth) run")
    ap.add_argument("--no-self", action="store_true", help="skip the self-fit run")
    ap.add_argument("--scheme", choices=("midpoint", "butterfly", "detail"), default=None,
                    help="subdivision scheme of the photometric render mesh (default: FitOptions)")
    ap.add_argument("--iterations", type=int, default=None,
                    help="photometric LM iterations in total (default: FitOptions.photo_schedule, 9)")
    ap.add_argument("--solver", choices=("lm", "adam"), default=None,
                    help="photometric solver (default: FitOptions, lm; adam = the previous 40-iteration Adam stage)")
    ap.add_argument("--sigma", type=float, default=None, help="landmark noise in crop px (default: FitOptions)")
    ap.add_argument("--photo-eps", type=float, default=None, help="Charbonnier eps of the photometric term (default: FitOptions)")
    ap.add_argument("--subdivide", type=int, default=None,
                    help="midpoint subdivision levels of the photometric render mesh (default: FitOptions)")
    ap.add_argument("--subdivide-from", type=int, default=None,
                    help="render size (px) from which the photometric rounds use the subdivided mesh (default: FitOptions)")
    ap.add_argument("--gt-smooth", type=int, default=GT_SMOOTH,
                    help=f"self-fit run: curved subdivision levels of the ground-truth render (default {GT_SMOOTH}; "
                         "0 = the coarse 468-vertex mesh as rendered before)")
    ap.add_argument("--gt-subdivide", type=int, default=GT_SUBDIVIDE,
                    help=f"self-fit run: midpoint-subdivision levels of the ground-truth render (default {GT_SUBDIVIDE}: "
                         "the same surface with its shading sampled more densely; 0 = the coarse mesh as before)")
    ap.add_argument("--gt-detail", type=int, default=1, choices=(0, 1),
                    help="self-fit ground truth: render the model's detail surface (FaceModel.detailed(), 1833 "
                         "vertices on the ICT surface; default 1) or its 468-vertex mesh (0, as before)")
    ap.add_argument("--gt-shading", choices=("vertex", "pixel"), default="vertex",
                    help="self-fit ground truth: per-vertex (Gouraud, default) or per-pixel SH shading "
                         "(FaceRenderer shading); match it to --set photo_shading=... for a matched self-fit")
    ap.add_argument("--ict-albedo", choices=("nearest", "barycentric"), default="nearest",
                    help="ICT ground truth albedo: the nearest default-model vertex's (default) or the default "
                         "model's albedo interpolated at the closest surface point (no Voronoi patchwork)")
    ap.add_argument("--erode", type=int, default=None,
                    help="photometric term: pixels left out next to the rendered silhouette (default: FitOptions)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override any FitOptions field (Python literal), e.g. --set w_identity_lm=5 "
                         "--set \"photo_exclude=('mouth_opening',)\" (repeatable)")
    ap.add_argument("--examples", default=None, help="folder for a few input/overlay example images")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = 20 if args.quick else args.n
    # options given on the command line override FitOptions' defaults (the library's)
    given = {field: getattr(args, arg) for arg, field in (
        ("iterations", "photo_iterations"), ("sigma", "sigma"), ("solver", "photo_solver"),
        ("photo_eps", "photo_eps"), ("erode", "photo_erode"), ("subdivide", "photo_subdivide"),
        ("subdivide_from", "photo_subdivide_min_size"), ("scheme", "photo_subdivide_scheme"))}
    import ast
    for item in args.set:
        key, _, val = item.partition("=")
        if key not in FitOptions.__dataclass_fields__:
            ap.error(f"--set {item}: {key!r} is not a FitOptions field")
        try:
            given[key] = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            given[key] = val
    opts = FitOptions(**{k: v for k, v in given.items() if v is not None})
    ex = None
    if args.examples:
        ex = Path(args.examples)
        ex.mkdir(parents=True, exist_ok=True)
    print(f"bench_fit: {n} synthetic faces per run, {SIZE}x{SIZE}, focal {FOCAL:.0f} px, torch threads {args.threads}, "
          f"photometric solver {opts.photo_solver} " + (f"rounds (size px, iterations, landmark weight) {opts.photo_rounds()}"
          if opts.photo_solver == "lm" else f"{opts.adam_iterations} iterations")
          + f", crop {opts.crop_size} px, landmark sigma {opts.sigma} px, photometric eps {opts.photo_eps}, "
          f"photometric exclusions {opts.photo_exclude}, prior weights (LM) id {opts.w_identity_lm} exp {opts.w_expression_lm} "
          f"alb {opts.w_albedo}, render subdivision {opts.photo_subdivide} {opts.photo_subdivide_scheme} (from {opts.photo_subdivide_min_size} px), silhouette erosion {opts.photo_erode} px, "
          f"shading {opts.photo_shading}")
    if not args.no_self:
        print(f"self-fit ground truth rendered {'on the model detail surface' if args.gt_detail else 'on the 468-vertex mesh'}"
              f" with {args.gt_subdivide} level(s) of midpoint subdivision and "
              f"{args.gt_smooth} of curved subdivision (FaceRenderer smooth), {args.gt_shading} shading")
        run(n, args.seed, False, opts, "self-fit (default model generates and fits)", ex, args.gt_smooth, args.gt_subdivide,
            args.gt_shading, gt_detail=bool(args.gt_detail))
    if not args.no_ict:
        if (ICT_DIR / "ict_face_area_morphs.npz").exists():
            run(n, args.seed + 1, True, opts, "cross-model (ICT-FaceKit generates, default model fits)", ex,
                ict_albedo=args.ict_albedo)
        else:
            print(f"\ncross-model run skipped: {ICT_DIR} not found")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
