#!/usr/bin/env python
"""Benchmark of the MoFA encoder: speed per variant, accuracy against the optimisation fit, training throughput.

1. **Speed** (CPU, ``--threads``, default 1 and 2): per encoder variant (untrained weights; the
   architecture sets the cost) single-face latency (batch 1, median of many runs) and batched
   throughput (batch 64), eval + inference mode (BatchNorm folded, channels-last; ``--unfused``
   adds the plain backbones); then, for the encoder under test, end-to-end latency on a 256²
   photo: crop + encoder, detection + crop + encoder, and batched crop + encoder throughput.
   Wall-clock and process CPU time are both printed: on a shared machine the CPU time of a
   1-thread run is the better estimate of the idle-machine latency (MediaPipe's detector runs
   its own threads, so its CPU time can exceed its wall time). Targets: >= 250 faces/s batched, <= 10 ms single-face (mobile).
2. **Accuracy** on the fitting benchmark's synthetic distribution (tools/bench_fit.py: the same
   generator at 256 x 256, focal 640 px, faces drawn on the model's detail surface; ``--gt-detail 0``:
   on its 468-vertex mesh as before) with held-out seeds (``--seed``, default 1000; the
   encoder trains on seeds 0..): landmarks from the detector (MediaPipe) on the render, then
   - ``encoder``: :class:`facerig.encoder.reconstruct.Reconstructor` with ``refine=0``,
   - ``encoder + N steps`` (N = 1, 2, 5): ``refine=N`` (N Levenberg-Marquardt steps of the fitter's
     photometric stage at 80 px, landmark weight 0, :func:`facerig.encoder.reconstruct.refine_codes`;
     the last of 5 steps at 160 px; ``--compare-landmarks W`` adds a row with the previous refinement:
     5 steps all at 80 px with landmark weight W, 0.05 before),
   - ``fit``: :func:`facerig.face.fit_image` (the optimisation fit, default options),
   - ``mean face``: the fit's stage-1 result (mean shape, fitted pose), for scale;
   errors: per-vertex distance after similarity alignment (as bench_fit computes it, mm, mean
   over the 468 vertices then over faces) and the mean 2D error of the iBUG-68 landmarks against
   the ground-truth projections (px); time per face excludes detection for all methods, wall
   clock and process CPU time (the ratio to the fit is taken on CPU time, robust to other load).
   Targets: encoder alone <= 1.5x the fit's error; encoder + 5 steps <= 1.1x at >= 20x less time.
3. **Training throughput** (CPU): optimisation steps of batch 16 on pre-rendered synthetic items
   (data generation excluded; it is reported separately), mixed mode, per variant.

Run:  .venv/bin/python tools/bench_encoder.py [--quick] [--n 50] [--threads 1,2] [--unfused] [--encoder default]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from facerig.encoder.model import FaceEncoder, load_encoder
from facerig.timing import time_runs

VARIANTS = [("mobile w0.5", "mobile", {"width": 0.5}), ("mobile w1.0", "mobile", {"width": 1.0}),
            ("resnet", "resnet", {})]


def _median_time(fn, reps, clock=time.perf_counter):
    """Median seconds of ``fn`` over ``reps`` runs: wall clock, or process CPU time with ``clock=time.process_time``."""
    t = time_runs(fn, reps)
    return t.median_cpu if clock is time.process_time else t.median


def _median_cpu(fn, reps):
    """Median process CPU time (s) of ``fn``: with 1 thread, about its wall time on an idle machine."""
    return time_runs(fn, reps).median_cpu


def bench_speed(size, reps, batch=64, unfused=False):
    """Rows (variant, size, parameters, single-face ms, faces/s at ``batch``) of the bare encoder
    (untrained weights, eval, inference mode: the BatchNorm-folded channels-last path; ``unfused``:
    the plain backbone instead, for comparison)."""
    rows = []
    for name, arch, kw in VARIANTS:
        enc = FaceEncoder(arch, size, backbone=kw).eval()
        if unfused:
            enc._inference_backbone = lambda enc=enc: enc.backbone  # bypass the folded copy
            name += " (BN not folded)"
        n_par = sum(p.numel() for p in enc.parameters())
        x1, f1, p1 = torch.rand(1, size, size, 3), torch.full((1, 1), 2.5 * size), torch.full((1, 2), size / 2)
        xb, fb, pb = torch.rand(batch, size, size, 3), f1.expand(batch, 1), p1.expand(batch, 2)
        with torch.inference_mode():
            for _ in range(3):
                enc(x1, f1, p1)
            enc(xb, fb, pb)
            single = _median_time(lambda: enc(x1, f1, p1), reps * 5)
            batched = _median_time(lambda: enc(xb, fb, pb), max(3, reps // 2))
            single_cpu = _median_cpu(lambda: enc(x1, f1, p1), reps * 5)
            batched_cpu = _median_cpu(lambda: enc(xb, fb, pb), max(3, reps // 2))
        rows.append((name, size, n_par, single * 1000, batch / batched, single_cpu * 1000, batch / batched_cpu))
    return rows


def bench_end_to_end(encoder, reps, batch=32):
    """Latency of :class:`Reconstructor` on one 256x256 synthetic photo (bench_fit's generator):
    crop + encoder (landmarks given), detection + crop + encoder, and batched crop + encoder
    throughput (``energies=False``: no energy render)."""
    from bench_fit import FOCAL, SIZE

    from facerig.encoder.reconstruct import Reconstructor
    from facerig.face import FaceDecoder
    from facerig.face.synthetic import SyntheticFaces
    from facerig.landmarks import detect_landmarks

    dec = FaceDecoder("default")
    gen = SyntheticFaces(dec, size=SIZE, focal=FOCAL)
    rng = np.random.default_rng(4321)
    imgs, pts = [], []
    while len(imgs) < batch:
        s = gen.sample(rng)
        f = detect_landmarks(s.image, max_faces=1, refine=False)
        if f:
            imgs.append(s.image)
            pts.append(f[0].points)
    rec = Reconstructor(encoder, dec, batch_size=batch)
    im, p = imgs[0], pts[0]
    for _ in range(3):
        rec(im, landmarks=p, focal=FOCAL, energies=False)
        rec(im, focal=FOCAL, energies=False)
    out = []
    for clock in (time.perf_counter, time.process_time):
        crop_enc = _median_time(lambda: rec(im, landmarks=p, focal=FOCAL, energies=False), reps * 2, clock)
        full = _median_time(lambda: rec(im, focal=FOCAL, energies=False), reps * 2, clock)
        det = _median_time(lambda: detect_landmarks(im, max_faces=1, refine=False), reps * 2, clock)
        rec.from_landmarks(imgs, pts, focal=FOCAL, energies=False)
        batched = _median_time(lambda: rec.from_landmarks(imgs, pts, focal=FOCAL, energies=False), max(3, reps // 4), clock)
        out.append((crop_enc * 1000, full * 1000, det * 1000, batch / batched))
    return out


def bench_training(size, steps):
    from torch.utils.data import default_collate

    from facerig.encoder.losses import MoFALoss
    from facerig.encoder.synthetic_data import SyntheticFaceDataset
    from facerig.encoder.training import make_problem
    from facerig.energy import train
    from facerig.face import FaceDecoder

    dec = FaceDecoder("default")
    ds = SyntheticFaceDataset(32, size, seed=123, decoder=dec)
    t0 = time.perf_counter()
    items = [ds[i] for i in range(32)]
    gen_rate = 32 / (time.perf_counter() - t0)
    batches = [default_collate(items[i:i + 16]) for i in (0, 16)]
    rows = []
    for name, arch, kw in VARIANTS:
        for label, mode, render in (("mixed", {"unsupervised": 1.0, "self_supervised": 1.0}, None),
                                    ("mixed", {"unsupervised": 1.0, "self_supervised": 1.0}, 64),
                                    ("self-supervised only", "self_supervised", None)):
            enc = FaceEncoder(arch, size, backbone=kw)
            prob = make_problem(MoFALoss(dec, render_size=render))
            train(enc, prob, batches, mode=mode, steps=1, progress=False, log_every=1)  # warm-up
            t0 = time.perf_counter()
            train(enc, prob, batches, mode=mode, steps=steps, progress=False, log_every=steps)
            r = "-" if label != "mixed" else f"{render or size}²"
            rows.append((name, label, r, 16 * steps / (time.perf_counter() - t0)))
    return rows, gen_rate


def bench_accuracy(encoder, n, seed, refine_steps=(1, 2, 5), compare_landmarks=None, gt_detail=True):
    from bench_fit import FOCAL, SIZE

    from facerig.model.geometry import aligned_error_mm as aligned_error

    from facerig.encoder.reconstruct import Reconstructor
    from facerig.face import FaceDecoder, fit_image
    from facerig.face.synthetic import SyntheticFaces
    from facerig.landmarks import detect_landmarks

    dec = FaceDecoder("default")
    # the ground truth as bench_fit draws it: the model's detail surface (its first 468 vertices are the model's)
    gen = SyntheticFaces(FaceDecoder(dec.model.detailed()) if gt_detail and dec.model.has_detail else dec,
                         size=SIZE, focal=FOCAL)
    rec = Reconstructor(encoder, dec)
    rng = np.random.default_rng(seed)
    runs = [("encoder", rec, 0)] + [(f"encoder + {k} steps", rec, k) for k in refine_steps]
    if compare_landmarks is not None:
        rec_w = Reconstructor(encoder, dec, refine_landmarks=float(compare_landmarks), refine_final_size=None)
        runs.append((f"encoder + {refine_steps[-1]} steps all at 80 px, landmark weight {compare_landmarks:g}", rec_w,
                     refine_steps[-1]))
    keys = ["mean face (fitted pose)"] + [r[0] for r in runs] + ["fit"]
    res = {k: {"mm": [], "px": [], "s": [], "cpu": []} for k in keys}
    missed = 0
    # warm-up (one-off set-up costs: torch.func, mediapipe graphs)
    s0 = gen.sample(np.random.default_rng(seed + 99999))
    f0 = detect_landmarks(s0.image, max_faces=1, refine=False)
    if f0:
        fit_image(s0.image, dec, landmarks=f0[0], focal=FOCAL)
        for _key, r, k in runs:
            r(s0.image, landmarks=f0[0], focal=FOCAL, refine=k)
    for _ in range(n):
        s = gen.sample(rng)
        faces = detect_landmarks(s.image, max_faces=1, refine=False)
        if not faces:
            missed += 1
            continue
        for key, r, refine in runs:
            t0, c0 = time.perf_counter(), time.process_time()
            fit = r(s.image, landmarks=faces[0], focal=FOCAL, refine=refine)
            res[key]["cpu"].append(time.process_time() - c0)
            res[key]["s"].append(time.perf_counter() - t0)
            res[key]["mm"].append(aligned_error(fit.vertices.double().cpu().numpy(), s.vertices[:468]).mean())
            res[key]["px"].append(np.linalg.norm(fit.landmarks68 - s.landmarks68, axis=1).mean())
        t0, c0 = time.perf_counter(), time.process_time()
        fit = fit_image(s.image, dec, landmarks=faces[0], focal=FOCAL, keep_stages=True)
        res["fit"]["cpu"].append(time.process_time() - c0)
        res["fit"]["s"].append(time.perf_counter() - t0)
        res["fit"]["mm"].append(aligned_error(fit.vertices.double().cpu().numpy(), s.vertices[:468]).mean())
        res["fit"]["px"].append(np.linalg.norm(fit.landmarks68 - s.landmarks68, axis=1).mean())
        res["mean face (fitted pose)"]["mm"].append(aligned_error(fit.stages["pose"].double().cpu().numpy(), s.vertices[:468]).mean())
    return res, missed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 faces, fewer timing runs")
    ap.add_argument("--n", type=int, default=50, help="faces in the accuracy run (default 50)")
    ap.add_argument("--seed", type=int, default=1000, help="first held-out seed (default 1000)")
    ap.add_argument("--threads", default="1,2", help="torch threads of the speed runs, comma-separated (default 1,2)")
    ap.add_argument("--unfused", action="store_true", help="also time the backbones without BatchNorm folding")
    ap.add_argument("--size", type=int, default=None, help="crop size of the speed runs (default: the encoder's)")
    ap.add_argument("--encoder", default="default", help="encoder for the accuracy run (default: the shipped one)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: speed,accuracy,training")
    ap.add_argument("--compare-landmarks", type=float, default=None,
                    help="also run the previous refinement: 5 steps all at 80 px with this landmark weight (0.05 before)")
    ap.add_argument("--gt-detail", type=int, default=1, choices=(0, 1),
                    help="accuracy run: draw the faces on the model's detail surface (default 1, as bench_fit) or its "
                         "468-vertex mesh (0, the benchmark before the detail level)")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    args.threads = [int(t) for t in str(args.threads).split(",") if t]
    n = 10 if args.quick else args.n
    reps = 10 if args.quick else 40
    try:
        enc = load_encoder(args.encoder)
        enc_desc = f"{args.encoder}: {enc.arch} {enc.backbone_kwargs or ''} {enc.input_size}px"
    except FileNotFoundError as err:
        enc, enc_desc = None, f"none ({err})"
    size = args.size or (enc.input_size if enc is not None else 128)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"bench_encoder: torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f} "
          f"(1 / 5 min) at start; encoder {enc_desc}")

    if "speed" not in skip:
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f"\n**Speed** (CPU, {threads} thread(s), {size}x{size} crops, untrained weights, eval + "
                  f"inference mode; load average {os.getloadavg()[0]:.2f})\n")
            print("| variant | input | parameters | single face (ms) | batched (faces/s, batch 64) | CPU time: single (ms) / "
                  "batched (faces per CPU s) | targets (mobile, wall) |")
            print("|---|---|---|---|---|---|---|")
            rows = bench_speed(size, reps)
            if args.unfused:
                rows += bench_speed(size, reps, unfused=True)
            for name, s, npar, ms, fps, ms_cpu, fps_cpu in rows:
                tgt = ""
                if name.startswith("mobile"):
                    tgt = f"{'met' if ms <= 10 else 'missed'} (<= 10 ms) / {'met' if fps >= 250 else 'missed'} (>= 250/s)"
                print(f"| {name} | {s}² | {npar / 1e6:.2f} M | {ms:.1f} | {fps:.0f} | {ms_cpu:.1f} / {fps_cpu:.0f} | {tgt} |")
            if enc is not None:
                print(f"\nend to end ({enc_desc}; 256² photo, {threads} thread(s)), wall / CPU time:\n")
                print("| crop + encoder | detection + crop + encoder | detection alone | batched crop + encoder (batch 32) |")
                print("|---|---|---|---|")
                (ce, full, det, bps), (ce_c, full_c, det_c, bps_c) = bench_end_to_end(enc, reps)
                print(f"| {ce:.1f} / {ce_c:.1f} ms | {full:.1f} / {full_c:.1f} ms | {det:.1f} / {det_c:.1f} ms | "
                      f"{bps:.0f} / {bps_c:.0f} faces/s |")

    if "accuracy" not in skip and enc is not None:
        torch.set_num_threads(1)
        res, missed = bench_accuracy(enc, n, args.seed, compare_landmarks=args.compare_landmarks,
                                     gt_detail=bool(args.gt_detail))
        fit_mm = np.mean(res["fit"]["mm"]) if res["fit"]["mm"] else float("nan")
        fit_cpu = np.mean(res["fit"]["cpu"]) if res["fit"]["cpu"] else float("nan")
        k = len(res["fit"]["mm"])
        print(f"\n**Accuracy** ({k} of {n} held-out synthetic faces detected, seeds from {args.seed}; 256², "
              f"focal 640 px; 1 thread; detection excluded from the times; load average {os.getloadavg()[0]:.2f} at the end)\n")
        print("| method | vertex error (mm) | vs fit | landmarks-68 error (px) | time per face, wall / CPU | "
              "fit CPU time / CPU time |")
        print("|---|---|---|---|---|---|")
        for key, r in res.items():
            mm = np.mean(r["mm"]) if r["mm"] else float("nan")
            px = f"{np.mean(r['px']):.2f}" if r["px"] else "-"
            t = f"{np.mean(r['s']) * 1000:.1f} / {np.mean(r['cpu']) * 1000:.1f} ms" if r["s"] else "-"
            sp = f"{fit_cpu / np.mean(r['cpu']):.1f}x" if r["cpu"] and key != "fit" else "-"
            print(f"| {key} | {mm:.3f} | {mm / fit_mm:.2f}x | {px} | {t} | {sp} |")
        e_mm = np.mean(res["encoder"]["mm"]) / fit_mm
        r5 = f"encoder + {5} steps"
        r_mm = np.mean(res[r5]["mm"]) / fit_mm
        r_sp = fit_cpu / np.mean(res[r5]["cpu"])
        print(f"\ntargets: encoder alone <= 1.5x fit: {'met' if e_mm <= 1.5 else 'missed'} ({e_mm:.2f}x); "
              f"{r5} <= 1.1x fit: {'met' if r_mm <= 1.1 else 'missed'} ({r_mm:.2f}x) at >= 20x less time: "
              f"{'met' if r_sp >= 20 else 'missed'} ({r_sp:.0f}x)")

    if "training" not in skip:
        torch.set_num_threads(args.threads[-1])
        rows, gen_rate = bench_training(size, 3 if args.quick else 6)
        print(f"\n**Training throughput** (CPU, {args.threads[-1]} threads, batch 16, {size}² crops, pre-rendered items; "
              f"synthetic data generation alone: {gen_rate:.1f} items/s on 1 process)\n")
        print("| variant | losses | photometric render | images/s |")
        print("|---|---|---|---|")
        for name, label, r, ips in rows:
            print(f"| {name} | {label} | {r} | {ips:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
